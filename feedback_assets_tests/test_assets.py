"""The whole graph materialized for real, on SQLite and on PostgreSQL, against CSVs written by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from feedback_assets_tests.crafted_source import (
    EXPECTED_20251025,
    EXPECTED_20251025_MICROSECOND,
    EXPECTED_COUNTS_20251025,
    HEADER,
    write_crafted_source,
)
from feedback_assets_tests.graph import KEY_HEX, latest_metadata, materialize, settings_for


@pytest.mark.parametrize("precision", ["day", "microsecond"])
def test_one_partition_gives_the_hand_written_csv(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance, precision: str
) -> None:
    write_crafted_source(source_url)
    overrides = {} if precision == "day" else {"timestamp_precision": precision}
    settings = settings_for(tmp_path, source_url, **overrides)
    assert materialize(instance, settings, "2025-10-25").success

    csv = tmp_path / "export" / "feedback_training_20251025.csv"
    expected = EXPECTED_20251025 if precision == "day" else EXPECTED_20251025_MICROSECOND
    assert csv.read_bytes().decode("utf-8") == expected
    metadata = latest_metadata(instance, "training_csv", "2025-10-25")
    assert {k: metadata[k] for k in EXPECTED_COUNTS_20251025} == EXPECTED_COUNTS_20251025
    assert metadata["dagster/row_count"] == 3
    assert metadata["path"] == str(csv)
    assert isinstance(metadata["step_seconds_whole_run"], float)
    assert metadata["step_seconds_day_share"] == metadata["step_seconds_whole_run"]
    column_names = [column.name for column in metadata["dagster/column_schema"].columns]
    assert column_names == HEADER.strip().split(",")


def test_no_identifier_reaches_any_output_or_metadata(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(source_url)
    assert materialize(instance, settings_for(tmp_path, source_url), "2025-10-24", "2025-10-26").success
    # Every file, the typed Parquet by its values (its bytes are compressed).
    exported = "".join(
        pl.read_parquet(p).write_csv() if p.suffix == ".parquet" else p.read_text()
        for p in sorted((tmp_path / "export").rglob("*"))
        if p.is_file()
    )
    assert "parquet/train/feedback_training_20251025.parquet" in exported
    for secret in ("calc", "line2 ü", "img.invalid", KEY_HEX):
        assert secret not in exported
    metadata_text = " ".join(
        repr(latest_metadata(instance, asset, day))
        for asset in ("raw_feedback", "anonymized_pairs", "deduplicated_pairs", "seen_pair_hashes", "training_csv")
        for day in ("2025-10-24", "2025-10-25", "2025-10-26")
    )
    assert KEY_HEX not in metadata_text and "img.invalid" not in metadata_text


@pytest.mark.parametrize("scope", ["exact", "first_per_pair"])
def test_a_ranged_run_reports_each_days_own_numbers(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance, scope: str
) -> None:
    write_crafted_source(source_url)
    settings = settings_for(tmp_path, source_url, dedupe_scope=scope)
    assert materialize(instance, settings, "2025-10-24", "2025-10-26").success

    day_24 = latest_metadata(instance, "training_csv", "2025-10-24")
    day_25 = latest_metadata(instance, "training_csv", "2025-10-25")
    day_26 = latest_metadata(instance, "training_csv", "2025-10-26")
    assert (day_24["total_feedback_records"], day_24["exported_records"]) == (1, 1)
    assert {k: day_25[k] for k in EXPECTED_COUNTS_20251025} == EXPECTED_COUNTS_20251025
    # 1014 and 1015 re-rate pairs exported on earlier days (1013, 1001): new keys in `exact`, duplicates
    # in `first_per_pair`.
    expected_26 = (2, 0, 2) if scope == "first_per_pair" else (2, 2, 0)
    assert (day_26["total_feedback_records"], day_26["exported_records"], day_26["deduplicated_records"]) == expected_26
    assert (tmp_path / "export" / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025
    seen = latest_metadata(instance, "seen_pair_hashes", "2025-10-26")
    assert seen["keys_owned_by_partition"] == expected_26[1]
    assert seen["keys_total"] == 1 + 3 + expected_26[1]


def test_a_day_without_feedback_gets_a_header_only_file(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(source_url)
    assert materialize(instance, settings_for(tmp_path, source_url), "2025-03-01").success
    assert (tmp_path / "export" / "feedback_training_20250301.csv").read_text() == HEADER


def test_image_urls_are_exported_only_when_enabled_and_consented(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(url)
    assert materialize(instance, settings_for(tmp_path, url, include_image_urls="true"), "2025-10-25").success
    with open(tmp_path / "export" / "feedback_training_20251025.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == [*HEADER.strip().split(","), "image_url"]
    # Rows of users 5, 1 and 2 (EXPECTED_20251025's order); only user 1 consented to image sharing.
    assert [row[-1] for row in rows[1:]] == ["", "https://img.invalid/1.jpg", ""]


def test_a_missing_key_stops_the_run_before_anything_is_written(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEEDBACK_HMAC_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(url)
    with pytest.raises(dg.Failure, match="FEEDBACK_HMAC_KEY is not set: set FEEDBACK_HMAC_KEY to at least 64"):
        materialize(instance, settings_for(tmp_path, url), "2025-10-25")
    assert not (tmp_path / "storage").exists()
    assert not (tmp_path / "export").exists()
