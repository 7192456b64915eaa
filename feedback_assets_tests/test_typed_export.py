"""The typed Parquet frame (issue 25): the CSV's rows with typed cells, unescaped text, the same order."""

from __future__ import annotations

import datetime as dt
import io
import stat
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedback_assets import csv_cells, schemas
from feedback_assets import transforms as t
from feedback_assets.day_files import typed_day
from feedback_assets.settings import TimestampPrecision
from feedback_assets.source_join import join_source
from feedback_assets.splits import DEFAULT_SPLIT, assign_splits, parse_split
from feedback_assets.storage import EXPORT, LocalStorage
from feedback_assets.training_csv import csv_bytes
from feedback_assets.typed_export import (
    TYPED_IMAGE_SCHEMA,
    TYPED_SCHEMA,
    csv_text,
    parquet_name,
    split_frames,
    typed_rows,
    write_typed_parquet,
)
from feedback_assets_tests.frames import KEY, analyses, feedback, records, source, utc

HASH = "ab" * 32
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"


def csv_frame(**columns: list[object]) -> pl.DataFrame:
    """Rows as `csv_cells.training_rows` makes them (ratings Int64, a Boolean, the rest text)."""
    n = len(next(iter(columns.values())))
    defaults: dict[str, list[object]] = {
        "analysis_hash": [HASH] * n,
        "recommendation_id": ["rec_1"] * n,
        "helpful_rating": [4] * n,
        "product_satisfaction": [5] * n,
        "routine_completion_pct": [80] * n,
        "would_recommend": [True] * n,
        "conditions": ["acne"] * n,
        "rules_applied": ["spf_daily"] * n,
        "timeframe": ["4w"] * n,
        "age_range": ["25-35"] * n,
        "feedback_created_at": ["2025-10-25T00:00:00.000000Z"] * n,
        "analysis_created_at": ["2025-10-24T00:00:00.000000Z"] * n,
    }
    dtypes = {name: pl.Int64 for name in ("helpful_rating", "product_satisfaction", "routine_completion_pct")}
    schema = {name: dtypes.get(name, pl.Boolean if name == "would_recommend" else pl.String) for name in defaults}
    if "image_url" in columns:
        schema["image_url"] = pl.String
    return pl.DataFrame({**defaults, **columns}, schema=schema)


def typed_frame(**columns: list[object]) -> pl.DataFrame:
    n = len(next(iter(columns.values())))
    defaults: dict[str, list[object]] = {
        "analysis_hash": [HASH] * n,
        "recommendation_id": ["rec_1"] * n,
        "helpful_rating": [4] * n,
        "product_satisfaction": [5] * n,
        "routine_completion_pct": [80] * n,
        "would_recommend": [True] * n,
        "conditions": ["acne"] * n,
        "rules_applied": ["spf_daily"] * n,
        "timeframe": ["4w"] * n,
        "age_range": ["25-35"] * n,
        "feedback_created_at": [utc("2025-10-25 00:00:00")] * n,
        "analysis_created_at": [utc("2025-10-24 00:00:00")] * n,
    }
    schema = TYPED_IMAGE_SCHEMA if "image_url" in columns else TYPED_SCHEMA
    return pl.DataFrame({**defaults, **columns}, schema=schema)


def test_cells_become_types_and_escaped_text_is_unescaped_in_the_same_order() -> None:
    rows = csv_frame(
        recommendation_id=["'=rec", "rec_2", "'+1", "'-x", "'@me", "'\tx", "'\rx"],
        helpful_rating=[None, 1, 5, 2, 3, 4, 5],
        routine_completion_pct=[0, 100, 50, None, 1, 2, 3],
        would_recommend=[False, None, True, True, True, True, True],
        conditions=["", "acne,rosacea", "'=cmd|' /C calc'!A0", "a", "b", "c", "d"],
        rules_applied=[None, "'x", "''=y", "a, b", "r", "r", "r"],
        age_range=[None, "<18", "50+", "18-25", "25-35", "35-50", "50+"],
    )
    expected = typed_frame(
        recommendation_id=["=rec", "rec_2", "+1", "-x", "@me", "\tx", "\rx"],
        helpful_rating=[None, 1, 5, 2, 3, 4, 5],
        routine_completion_pct=[0, 100, 50, None, 1, 2, 3],
        would_recommend=[False, None, True, True, True, True, True],
        # Empty text is null, as the CSV's empty cell is; a quote not before a formula character stays.
        conditions=[None, "acne,rosacea", "=cmd|' /C calc'!A0", "a", "b", "c", "d"],
        rules_applied=[None, "'x", "''=y", "a, b", "r", "r", "r"],
        age_range=[None, "<18", "50+", "18-25", "25-35", "35-50", "50+"],
    )
    assert_frame_equal(typed_rows(rows), expected)


def test_cells_taken_before_the_escape_keep_their_text_exactly() -> None:
    before_escape = csv_frame(recommendation_id=["'=rec", "=rec"], conditions=["", "'-a"])
    typed = typed_rows(before_escape, escaped=False)
    assert typed["recommendation_id"].to_list() == ["'=rec", "=rec"]
    assert typed["conditions"].to_list() == [None, "'-a"]


@pytest.mark.parametrize(
    ("precision", "feedback_cell", "feedback_time"),
    [
        ("microsecond", "2025-10-25T13:47:09.123456Z", dt.datetime(2025, 10, 25, 13, 47, 9, 123456, dt.UTC)),
        ("second", "2025-10-25T13:47:09.000000Z", dt.datetime(2025, 10, 25, 13, 47, 9, tzinfo=dt.UTC)),
        ("minute", "2025-10-25T13:47:00.000000Z", dt.datetime(2025, 10, 25, 13, 47, tzinfo=dt.UTC)),
        ("hour", "2025-10-25T13:00:00.000000Z", dt.datetime(2025, 10, 25, 13, tzinfo=dt.UTC)),
        ("day", "2025-10-25T00:00:00.000000Z", dt.datetime(2025, 10, 25, tzinfo=dt.UTC)),
    ],
)
def test_times_are_utc_datetimes_at_the_exports_precision(
    precision: TimestampPrecision, feedback_cell: str, feedback_time: dt.datetime
) -> None:
    literal = typed_rows(csv_frame(feedback_created_at=[feedback_cell]))
    assert_frame_equal(literal, typed_frame(feedback_created_at=[feedback_time]))
    frames = source(
        feedback({"feedback_id": 1, "created_at": utc("2025-10-25 13:47:09.123456")}),
        analysis_rows=analyses({"analysis_id": 10, "conditions": "=Acne", "analysis_created_at": utc("2025-10-24")}),
        record_rows=records({"recommendation_id": "rec_1"}),
    )
    pairs = t.anonymize(t.classify(join_source(frames), 1), KEY, include_image_urls=False)
    deduplicated = t.deduplicate(t.with_dedupe_key(pairs, "exact"))
    csv_format = csv_cells.CsvFormat(timestamp_precision=precision)
    exported = csv_cells.training_rows(deduplicated, csv_format)
    typed = typed_rows(exported)
    assert typed.schema == TYPED_SCHEMA
    assert typed.row(0, named=True)["feedback_created_at"] == feedback_time
    assert typed.row(0, named=True)["conditions"] == "=acne"
    assert exported.row(0, named=True)["conditions"] == "'=acne"
    # The export's own path takes the times as truncated, before they were text: the same frame.
    with_sources = csv_cells.training_rows_by_day(deduplicated, csv_format, ["2025-10-25"], splits=splits_of)
    assert_frame_equal(typed_day(with_sources["2025-10-25"], csv_format.columns), typed)


def splits_of(stable: pl.Series) -> pl.Series:
    return assign_splits(stable, parse_split("FEEDBACK_SPLIT", DEFAULT_SPLIT), KEY)


def test_rows_one_in_the_csv_but_not_in_their_source_text_keep_one_order_whatever_their_order_before() -> None:
    """A text the escape changed (`=acne`) and one whose source already read so (`'=acne`) are one
    cell: the rows tie on every cell, and the typed file still has one order, its bytes one hash."""
    frames = source(
        feedback({"feedback_id": 1, "created_at": utc("2025-10-25 13:47:09")}),
        analysis_rows=analyses({"analysis_id": 10, "conditions": "=acne"}),
        record_rows=records({"recommendation_id": "rec_1"}),
    )
    one = t.deduplicate(t.with_dedupe_key(t.anonymize(t.classify(join_source(frames), 1), KEY, False), "exact"))
    tied = pl.concat([one, one.with_columns(conditions=pl.lit("'=acne"))])
    csv_format = csv_cells.CsvFormat()
    orders = []
    for rows in (tied, tied.reverse()):
        [day] = csv_cells.training_rows_by_day(rows, csv_format, ["2025-10-25"], splits=splits_of).values()
        assert day["conditions"].to_list() == ["'=acne", "'=acne"]
        assert_frame_equal(day.select(csv_format.columns), csv_cells.training_rows(rows, csv_format))
        orders.append(typed_day(day, csv_format.columns))
    assert orders[0]["conditions"].to_list() == ["'=acne", "=acne"]
    assert_frame_equal(orders[0], orders[1])


def test_a_csv_read_back_as_text_gives_the_same_typed_frame() -> None:
    rows = csv_frame(
        recommendation_id=["'=rec", "r,2"],
        helpful_rating=[None, 1],
        would_recommend=[None, False],
        conditions=["", 'say "hi"'],
        image_url=["'-https://x", None],
    )
    text = pl.read_csv(io.BytesIO(csv_bytes(rows)), infer_schema=False)
    assert_frame_equal(typed_rows(text), typed_rows(rows))
    assert typed_rows(rows).schema == TYPED_IMAGE_SCHEMA
    assert typed_rows(rows)["image_url"].to_list() == ["-https://x", None]


def test_typed_columns_spelled_as_the_csv_give_back_its_cells() -> None:
    """`csv_text` undoes `typed_rows`, so a day with Parquet alone is measured as its CSV would be."""
    rows = csv_frame(
        recommendation_id=["'=rec", "'+1", "plain"],
        helpful_rating=[None, 1, 5],
        would_recommend=[None, False, True],
        conditions=["", "'@acne", 'say "hi"'],
        feedback_created_at=["2025-10-25T13:04:05.123456Z", "", "2025-12-31T23:59:59.000000Z"],
        image_url=["'-https://x", None, "'\t"],
    )
    text = pl.read_csv(io.BytesIO(csv_bytes(rows)), infer_schema=False)
    spelled = typed_rows(text).select(csv_text(text.columns))
    assert_frame_equal(spelled, text)
    before_escape = typed_rows(rows.with_columns(recommendation_id=pl.lit("=x")), escaped=False)
    assert before_escape.select(csv_text(["recommendation_id"]))["recommendation_id"].to_list() == ["'=x"] * 3


def test_a_frame_that_is_not_the_csvs_is_refused() -> None:
    with pytest.raises(ValueError, match="not the training CSV's columns"):
        typed_rows(csv_frame(helpful_rating=[1]).drop("timeframe"))
    with pytest.raises(ValueError, match="not the training CSV's columns"):
        typed_rows(csv_frame(helpful_rating=[1]).select(reversed(schemas.TRAINING_COLUMNS)))


def test_a_cell_the_type_cannot_hold_fails_rather_than_becoming_null() -> None:
    with pytest.raises(pl.exceptions.InvalidOperationError):
        typed_rows(csv_frame(helpful_rating=[70_000]))
    with pytest.raises(pl.exceptions.InvalidOperationError):
        typed_rows(csv_frame(would_recommend=[True]).with_columns(pl.lit("yes").alias("would_recommend")))


def test_each_split_keeps_the_days_order_and_an_empty_split_gets_an_empty_frame() -> None:
    typed = typed_frame(helpful_rating=[1, 2, 3, 4])
    splits = pl.Series(["test", "train", "test", "train"], dtype=pl.Enum(["train", "validation", "test"]))
    parts = split_frames(typed, splits, ["train", "validation", "test"])
    assert parts["train"]["helpful_rating"].to_list() == [2, 4]
    assert parts["test"]["helpful_rating"].to_list() == [1, 3]
    assert parts["validation"].is_empty() and parts["validation"].schema == TYPED_SCHEMA


def test_a_typed_file_is_written_with_zstd_in_its_split_folder(tmp_path: Path) -> None:
    exports = LocalStorage(tmp_path / "exports", EXPORT)
    typed = typed_frame(helpful_rating=[1, None, 3])
    name = parquet_name("validation", "2025-10-25")
    assert name == "parquet/validation/feedback_training_20251025.parquet"
    write_typed_parquet(exports, name, typed)
    path = tmp_path / "exports" / name
    assert_frame_equal(pl.read_parquet(path), typed)
    assert ZSTD_FRAME_MAGIC in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750
    assert [p.name for p in path.parent.iterdir()] == [path.name]
