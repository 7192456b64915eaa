"""The ML team's own loader (issue 25): Hugging Face `datasets.load_dataset(EXPORT_DIR)`, offline,
finds the card's three splits in an export dir made by the typed-export, split and card functions."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedback_assets.dataset_card import CARD_NAME, CardFacts, card_text
from feedback_assets.pseudonyms import pseudonym
from feedback_assets.splits import SPLIT_NAMES, Split, SplitName, assign_splits
from feedback_assets.storage import EXPORT, LocalStorage
from feedback_assets.storage.base import write_bytes
from feedback_assets.training_csv import csv_bytes, csv_name
from feedback_assets.typed_export import parquet_name, split_frames, typed_rows, write_typed_parquet
from feedback_assets_tests.frames import KEY

DAYS = ("2025-10-24", "2025-10-25", "2025-10-26")
SPLIT = Split(0.6, 0.2, 0.2)


def day_rows(day: str, users: range) -> pl.DataFrame:
    """A day's CSV rows as `csv_cells.training_rows` makes them, for the stable pseudonym scope."""
    n = len(users)
    return pl.DataFrame(
        {
            "analysis_hash": [pseudonym(uid, KEY) for uid in users],
            "recommendation_id": [f"'=rec_{uid}" if uid % 7 == 0 else f"rec_{uid}" for uid in users],
            "helpful_rating": [None if uid % 5 == 0 else uid % 5 + 1 for uid in users],
            "product_satisfaction": [uid % 5 + 1 for uid in users],
            "routine_completion_pct": [uid % 101 for uid in users],
            "would_recommend": [uid % 3 == 0 for uid in users],
            "conditions": ["" if uid % 4 == 0 else "acne" for uid in users],
            "rules_applied": ["spf_daily"] * n,
            "timeframe": ["4w"] * n,
            "age_range": ["25-35"] * n,
            "feedback_created_at": [f"{day}T00:00:00.000000Z"] * n,
            "analysis_created_at": ["2025-10-01T00:00:00.000000Z"] * n,
        },
        schema_overrides={"helpful_rating": pl.Int64, "product_satisfaction": pl.Int64},
    )


def build_export(root: Path) -> dict[SplitName, pl.DataFrame]:
    """Every day's typed rows per split written as the layout says, and the card; the rows expected
    of each split, day after day."""
    exports = LocalStorage(root, EXPORT)
    expected: dict[SplitName, list[pl.DataFrame]] = {name: [] for name in SPLIT_NAMES}
    rows_per_day: dict[str, dict[SplitName, int]] = {}
    for offset, day in enumerate(DAYS):
        rows = day_rows(day, range(offset * 40, offset * 40 + 120))
        parts = split_frames(typed_rows(rows), assign_splits(rows["analysis_hash"], SPLIT, KEY), SPLIT_NAMES)
        for name, part in parts.items():
            write_typed_parquet(exports, parquet_name(name, day), part)
            expected[name].append(part)
        rows_per_day[day] = {name: part.height for name, part in parts.items()}
        # The CSVs lie at the root of a real export: only the card's configs make the loader take the Parquet.
        write_bytes(exports, csv_name(day), csv_bytes(rows))
    facts = CardFacts(False, "day", "stable", "k1", 5, False, SPLIT, rows_per_day, measured_k=1, measured_l=1)
    write_bytes(exports, CARD_NAME, card_text(facts).encode())
    return {name: pl.concat(frames) for name, frames in expected.items()}


def test_load_dataset_gives_the_three_splits_with_the_rows_of_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `datasets` reads its cache and offline settings when imported: set first, so nothing is written
    # outside tmp_path and nothing is asked of the Hub.
    for variable in ("HF_HOME", "HF_DATASETS_CACHE"):
        monkeypatch.setenv(variable, str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = importlib.import_module("datasets")
    export_dir = tmp_path / "export"
    expected = build_export(export_dir)
    loaded = datasets.load_dataset(str(export_dir), cache_dir=str(tmp_path / "hf" / "datasets"))
    assert sorted(loaded) == sorted(SPLIT_NAMES)
    for name in SPLIT_NAMES:
        frame = pl.from_arrow(loaded[name].data.table)
        assert isinstance(frame, pl.DataFrame)
        assert frame.height == expected[name].height > 0
        assert_frame_equal(frame, expected[name])
    # The card is one that Hugging Face's own parser reads, and its features are what the loader found.
    card = importlib.import_module("huggingface_hub").DatasetCard.load(export_dir / CARD_NAME).data.to_dict()
    assert [split["split"] for split in card["configs"][0]["data_files"]] == list(SPLIT_NAMES)
    declared = {feature["name"]: datasets.Value(feature["dtype"]) for feature in card["dataset_info"]["features"]}
    assert loaded["train"].features == datasets.Features(declared)
    seen = [set(expected[name]["analysis_hash"].to_list()) for name in SPLIT_NAMES]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    train = pl.scan_parquet(str(export_dir / "parquet" / "train" / "*.parquet")).collect()
    assert_frame_equal(train, expected["train"])
    assert train["feedback_created_at"].min() == dt.datetime(2025, 10, 24, tzinfo=dt.UTC)
