"""The dataset card (issue 25): a Hugging Face card whose YAML parses and names the three splits."""

from __future__ import annotations

from typing import Any

import yaml

from feedback_assets.dataset_card import COLUMN_MEANINGS, CardFacts, card_text, hf_dtype
from feedback_assets.schemas import IMAGE_URL_COLUMN, TRAINING_COLUMNS
from feedback_assets.splits import Split
from feedback_assets.typed_export import TYPED_SCHEMA


def facts(**overrides: Any) -> CardFacts:
    values: dict[str, Any] = {
        "include_image_urls": False,
        "timestamp_precision": "hour",
        "pseudonym_scope": "month",
        "hmac_key_id": "k7",
        "k_anonymity_threshold": 5,
        "suppress_small_groups": True,
        "split": Split(0.8, 0.1, 0.1),
        "rows_per_day": {
            "2025-10-26": {"train": 7, "validation": 1, "test": 0},
            "2025-10-25": {"train": 3, "validation": 0, "test": 2},
        },
        "measured_k": 6,
        "measured_l": 2,
    }
    return CardFacts(**{**values, **overrides})


def header(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    front, _, _ = text[len("---\n") :].partition("\n---\n")
    parsed = yaml.safe_load(front)
    assert isinstance(parsed, dict)
    return parsed


def test_the_yaml_header_parses_and_gives_each_split_its_glob_and_the_features() -> None:
    parsed = header(card_text(facts()))
    assert parsed["license"] == "other"
    [config] = parsed["configs"]
    assert config["config_name"] == "default"
    assert config["data_files"] == [
        {"split": "train", "path": "parquet/train/*.parquet"},
        {"split": "validation", "path": "parquet/validation/*.parquet"},
        {"split": "test", "path": "parquet/test/*.parquet"},
    ]
    info = parsed["dataset_info"]
    assert [feature["name"] for feature in info["features"]] == list(TRAINING_COLUMNS)
    assert {f["name"]: f["dtype"] for f in info["features"]}["feedback_created_at"] == "timestamp[us, tz=UTC]"
    assert {f["name"]: f["dtype"] for f in info["features"]}["would_recommend"] == "bool"
    assert set(info) == {"features"}


def test_the_card_says_the_privacy_settings_counts_days_and_how_to_load() -> None:
    text = card_text(facts())
    for line in (
        "| timestamp precision | hour |",
        "| pseudonym scope | month |",
        "| key id | k7 |",
        "| k-anonymity threshold | 5 |",
        "| last measured k | 6 |",
        "| last measured l | 2 |",
        "| train | 10 |",
        "| 2025-10-25 | 3 | 0 | 2 |",
        "| 2025-10-26 | 7 | 1 | 0 |",
        "Days: 2025-10-25 to 2025-10-26. Rows: 13.",
        'load_dataset("EXPORT_DIR")',
        'pl.scan_parquet("EXPORT_DIR/parquet/train/*.parquet")',
        'pd.read_parquet("EXPORT_DIR/parquet/train")',
        "`train` 0.8, `validation` 0.1, `test` 0.1",
    ):
        assert line in text, line
    assert text.index("| 2025-10-25 |") < text.index("| 2025-10-26 |")
    for column in TRAINING_COLUMNS:
        assert f"| {column} | {hf_dtype(TYPED_SCHEMA[column])} | {COLUMN_MEANINGS[column]} |" in text


def test_an_export_without_days_or_measurements_still_has_a_valid_card() -> None:
    text = card_text(facts(rows_per_day={}, measured_k=None, measured_l=None, include_image_urls=True))
    parsed = header(text)
    assert "| train | 0 |" in text and "| test | 0 |" in text
    assert parsed["dataset_info"]["features"][-1] == {"name": IMAGE_URL_COLUMN, "dtype": "string"}
    assert "Days: no days yet. Rows: 0." in text
    assert "| last measured k | not measured yet |" in text


def test_the_card_speaks_of_csvs_only_where_they_are_written() -> None:
    assert "`feedback_training_YYYYMMDD.csv`" in card_text(facts())
    assert "`feedback_training_YYYYMMDD.csv`" not in card_text(facts(export_formats=("parquet",)))
