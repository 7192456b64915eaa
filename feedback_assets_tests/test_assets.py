"""The whole graph materialized for real, on SQLite and on PostgreSQL, against CSVs written by hand."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.pseudonyms import pseudonym
from feedback_assets_tests.graph import KEY_HEX, latest_metadata, materialize, settings_for
from feedback_assets_tests.sources import write_source

HEADER = (
    "analysis_hash,recommendation_id,helpful_rating,product_satisfaction,routine_completion_pct,would_recommend,"
    "conditions,rules_applied,timeframe,age_range,feedback_created_at,analysis_created_at\n"
)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def h(user_id: int) -> str:
    return pseudonym(user_id, bytes.fromhex(KEY_HEX))


def rating(
    fid: int, user: int, analysis: int, rec: str, when: str, *values: object, **extra: object
) -> dict[str, object]:
    helpful, satisfaction, completion, recommend = (*values, None, None, None, None)[:4]
    return {
        "id": fid,
        "user_id": user,
        "analysis_id": analysis,
        "recommendation_id": rec,
        "helpful_rating": helpful,
        "product_satisfaction": satisfaction,
        "routine_completion_pct": completion,
        "would_recommend": recommend,
        "created_at": at(when),
        **extra,
    }


def write_crafted_source(url: str) -> None:
    """Every awkward case of docs/contract.md, section 1 in a few rows, around the day 2025-10-25."""
    write_source(
        url,
        users=[
            {"id": 1, "age": 30, "ml_training_consent": True, "image_sharing_consent": True},
            {"id": 2, "age": 17, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 3, "age": 50, "ml_training_consent": False, "image_sharing_consent": True},
            {"id": 4, "age": 24, "ml_training_consent": True, "image_sharing_consent": True},
            {"id": 5, "age": 121, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 6, "age": None, "ml_training_consent": True, "image_sharing_consent": False},
        ],
        analyses=[
            {
                "id": 10,
                "user_id": 1,
                "conditions": " Acne, oily,acne ",
                "image_url": "https://img.invalid/1.jpg",
                "created_at": at("2025-10-24 10:00:00"),
            },
            {
                "id": 20,
                "user_id": 2,
                "conditions": 'Rosacea, "red" cheeks\nline2, 日本',
                "image_url": None,
                "created_at": at("2025-10-24 11:00:00.5"),
            },
            {"id": 30, "user_id": 3, "conditions": "dry", "created_at": at("2025-10-24 12:00:00")},
            {"id": 40, "user_id": 4, "conditions": "dry", "created_at": at("2025-10-24 12:00:00")},
            {"id": 50, "user_id": 5, "conditions": '=HYPERLINK("x")', "created_at": at("2025-10-24 13:00:00")},
            {"id": 60, "user_id": 6, "conditions": None, "created_at": at("2025-10-24 14:00:00")},
        ],
        records=[
            {"id": "rec_a", "analysis_id": 10, "rules_applied": " hydration_boost, spf_daily ", "timeframe": "4w"},
            {"id": "rec_b", "analysis_id": 20, "rules_applied": "+plus", "timeframe": None},
            {"id": "-rec_c", "analysis_id": 50, "rules_applied": "@at", "timeframe": "2w"},
        ],
        feedback=[
            rating(1001, 1, 10, "rec_a", "2025-10-25 00:00:00", 5, 4, 80, True, feedback_text='=cmd|"/c calc"'),
            rating(1002, 1, 10, "rec_a", "2025-10-25 00:00:00", 5, 4, 80, True),
            rating(1003, 2, 20, "rec_b", "2025-10-25 23:59:59.999999", 3, None, None, False),
            rating(1004, 3, 30, "rec_a", "2025-10-25 08:00:00", 4),
            rating(1005, 4, 40, "rec_a", "2025-10-25 08:00:00", 4),
            rating(1006, 5, 50, "-rec_c", "2025-10-25 09:00:00", 6),
            rating(1007, 5, 50, "-rec_c", "2025-10-25 09:30:00", 2, 2, 101),
            rating(1008, 99, 10, "rec_a", "2025-10-25 10:00:00", 4),
            rating(1009, 1, 99, "rec_a", "2025-10-25 10:00:00", 4),
            rating(1010, 1, 10, "rec_zz", "2025-10-25 10:00:00", 4),
            rating(1011, 6, 60, "rec_b", "2025-10-25 11:00:00"),
            rating(1012, 5, 50, "-rec_c", "2025-10-25 12:00:00", 1, 1, 0, None, feedback_text="line1\nline2 ü"),
            rating(1013, 6, 60, "rec_b", "2025-10-24 23:59:59.999999", 4),
            rating(1014, 6, 60, "rec_b", "2025-10-26 00:00:00", 2),
            rating(1015, 1, 10, "rec_a", "2025-10-26 09:00:00", 3),
        ],
        erasures=[{"user_id": 4}],
    )


EXPECTED_20251025 = HEADER + (
    f'{h(1)},rec_a,5,4,80,true,"acne,oily","hydration_boost, spf_daily",4w,25-35,'
    "2025-10-25T00:00:00.000000Z,2025-10-24T10:00:00.000000Z\n"
    f'{h(5)},\'-rec_c,1,1,0,,"\'=hyperlink(""x"")",\'@at,2w,,'
    "2025-10-25T12:00:00.000000Z,2025-10-24T13:00:00.000000Z\n"
    f'{h(2)},rec_b,3,,,false,"""red"" cheeks\nline2,rosacea,日本",\'+plus,,<18,'
    "2025-10-25T23:59:59.999999Z,2025-10-24T11:00:00.500000Z\n"
)

EXPECTED_COUNTS_20251025 = {
    "total_feedback_records": 12,
    "exported_records": 3,
    "deduplicated_records": 1,
    "anonymized_records": 4,
    "skipped_records": 1,
    "rejected_records": 5,
    "rejected_orphan": 3,
    "rejected_out_of_range": 2,
    "rejected_malformed": 0,
    "excluded_records": 2,
    "excluded_no_consent": 1,
    "excluded_erased": 1,
}


def test_one_partition_gives_the_hand_written_csv(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(source_url)
    settings = settings_for(tmp_path, source_url)
    assert materialize(instance, settings, "2025-10-25").success

    csv = tmp_path / "export" / "feedback_training_20251025.csv"
    assert csv.read_bytes().decode("utf-8") == EXPECTED_20251025
    metadata = latest_metadata(instance, "training_csv", "2025-10-25")
    assert {k: metadata[k] for k in EXPECTED_COUNTS_20251025} == EXPECTED_COUNTS_20251025
    assert metadata["dagster/row_count"] == 3
    assert metadata["path"] == str(csv)
    assert isinstance(metadata["execution_seconds"], float)
    column_names = [column.name for column in metadata["dagster/column_schema"].columns]  # type: ignore[attr-defined]
    assert column_names == HEADER.strip().split(",")


def test_no_identifier_reaches_any_output_or_metadata(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(source_url)
    assert materialize(instance, settings_for(tmp_path, source_url), "2025-10-24", "2025-10-26").success
    exported = "".join(p.read_text() for p in sorted((tmp_path / "export").iterdir()))
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
    assert [row[-1] for row in rows[1:]] == ["https://img.invalid/1.jpg", "", ""]


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
