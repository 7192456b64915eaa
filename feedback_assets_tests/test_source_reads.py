"""A run's slices read their feedback rows from PostgreSQL in the database's own types (ADBC,
binary COPY); the rows must be what the text reads (`text_copy.py`, the oracle) make of the same
tables, whatever types the app gave its columns, and a slice whose session is lost is read again
from a new snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import adbc_driver_manager
import polars as pl
import psycopg2
import pytest
from polars.testing import assert_frame_equal

from feedback_assets.connections import APPLICATION_NAME, SourceUnreachableError, is_transient, postgres_arrow_session
from feedback_assets.settings import ConfigError, parse_source_url
from feedback_assets.source import FeedbackSource, open_source
from feedback_assets.source.postgres_sessions import arrow_batches
from feedback_assets.source_join import SourceFrames
from feedback_assets.storage import storage_for
from feedback_assets_tests.crafted_source import write_crafted_source
from feedback_assets_tests.text_copy import text_read_window

FIRST = dt.datetime(2025, 10, 24, tzinfo=dt.UTC)
SPLIT = dt.datetime(2025, 10, 25, tzinfo=dt.UTC)
END = dt.datetime(2025, 10, 27, tzinfo=dt.UTC)
FRAMES = ("feedback", "users", "analyses", "records", "erasures")


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def assert_same_rows(ours: SourceFrames, theirs: SourceFrames) -> None:
    for name in FRAMES:
        assert_frame_equal(_sorted(getattr(ours, name)), _sorted(getattr(theirs, name)))


def _run_slices(source: FeedbackSource, tmp_path: Path, with_history: bool) -> list[SourceFrames]:
    with source.reading_run(FIRST, END, with_history=with_history, scratch_root=storage_for(tmp_path)) as read:
        return [read(FIRST, SPLIT), read(SPLIT, END)]


def _text_reads(source: FeedbackSource, with_history: bool) -> list[SourceFrames]:
    """The same windows read on their own: every column as text, parsed in Polars."""
    return [
        text_read_window(
            source.location, first, end, with_history=with_history, include_image_urls=source.include_image_urls
        )
        for first, end in ((FIRST, SPLIT), (SPLIT, END))
    ]


def _execute(url: str, *statements: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


@pytest.mark.parametrize("with_history", [False, True], ids=["exact", "first_per_pair"])
def test_a_runs_typed_reads_equal_the_text_reads(tmp_path: Path, postgres_url: str, with_history: bool) -> None:
    write_crafted_source(postgres_url)
    source = open_source(parse_source_url(postgres_url), include_image_urls=True)
    ours, theirs = _run_slices(source, tmp_path, with_history), _text_reads(source, with_history)
    for slice_ours, slice_theirs in zip(ours, theirs, strict=True):
        assert_same_rows(slice_ours, slice_theirs)
    # Not a comparison of two empty reads: the 25th's 12 rows and the 26th's 2, and with history the
    # earlier row of their pair (6, rec_f): the 24th's 1013, which the first slice reads as its own.
    window = ours[1].feedback.filter(~pl.col("is_history"))
    assert window.height == 14
    history = set(ours[1].feedback.filter(pl.col("is_history"))["feedback_id"])
    assert history == ({1013} if with_history else set())


def test_other_column_types_and_impossible_times_read_as_the_text_reads_read_them(
    tmp_path: Path, postgres_url: str
) -> None:
    """A created_at without time zone (taken as UTC), a numeric rating, an integer would_recommend
    holding 2, and times no text read can give (infinities, a year BC): null and malformed alike.
    The dimension tables likewise: a numeric age, an integer consent holding 2, an analysis time
    without time zone, one at infinity and one BC, and a varchar timeframe."""
    write_crafted_source(postgres_url)
    _execute(
        postgres_url,
        "ALTER TABLE users ALTER COLUMN age TYPE numeric(5, 0)",
        "ALTER TABLE users ALTER COLUMN ml_training_consent TYPE smallint USING ml_training_consent::int",
        "UPDATE users SET ml_training_consent = 2 WHERE id = 4",
        "ALTER TABLE analyses ALTER COLUMN created_at TYPE timestamp USING created_at AT TIME ZONE 'UTC'",
        "UPDATE analyses SET created_at = 'infinity' WHERE id = 10",
        "UPDATE analyses SET created_at = '0200-06-01 12:00:00 BC' WHERE id = (SELECT max(id) FROM analyses)",
        "ALTER TABLE recommendation_records ALTER COLUMN timeframe TYPE varchar(40)",
        "ALTER TABLE recommendation_feedback ALTER COLUMN created_at TYPE timestamp "
        "USING created_at AT TIME ZONE 'UTC'",
        "ALTER TABLE recommendation_feedback ALTER COLUMN helpful_rating TYPE numeric(6, 0)",
        "ALTER TABLE recommendation_feedback ALTER COLUMN would_recommend TYPE smallint USING would_recommend::int",
        "UPDATE recommendation_feedback SET would_recommend = 2 WHERE id = 1004",
        "UPDATE recommendation_feedback SET created_at = '-infinity' WHERE id = 1013",
        "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
        "created_at) VALUES (1020, 1, 10, 'rec_a', 4, '0100-01-01 00:00:00 BC')",
    )
    source = open_source(parse_source_url(postgres_url), include_image_urls=False)
    for with_history in (False, True):
        ours, theirs = _run_slices(source, tmp_path, with_history), _text_reads(source, with_history)
        for slice_ours, slice_theirs in zip(ours, theirs, strict=True):
            assert_same_rows(slice_ours, slice_theirs)
    malformed = set(ours[1].feedback.filter(pl.col("malformed"))["feedback_id"])
    # 1004's would_recommend of 2; with history, the pairs (6, rec_f) and (1, rec_a) bring back 1013
    # and 1020, whose times (minus infinity, a year BC) no reader may take for a day.
    assert malformed == {1004, 1013, 1020}
    assert ours[1].feedback.filter(pl.col("feedback_id") == 1003)["created_at"].item() == dt.datetime(
        2025, 10, 25, 23, 59, 59, 999999, tzinfo=dt.UTC
    )
    # Not a comparison of nulls alone: what the text reads make of the dimension tables' odd values.
    users = ours[1].users
    assert users.filter(pl.col("user_id") == 4)["ml_training_consent"].item() is None
    assert users.filter(pl.col("user_id") == 1)["age"].item() == 30
    analyses = ours[1].analyses
    assert analyses.filter(pl.col("analysis_id") == 10)["analysis_created_at"].item() is None
    assert analyses["analysis_created_at"].drop_nulls().len() >= 1


def test_a_window_read_on_its_own_equals_the_text_reads(postgres_url: str) -> None:
    write_crafted_source(postgres_url)
    _execute(postgres_url, "ALTER TABLE recommendation_feedback ALTER COLUMN helpful_rating TYPE numeric(6, 0)")
    source = open_source(parse_source_url(postgres_url), include_image_urls=True)
    for with_history in (False, True):
        ours = [
            source.read_window(FIRST, SPLIT, with_history=with_history),
            source.read_window(SPLIT, END, with_history=with_history),
        ]
        for slice_ours, slice_theirs in zip(ours, _text_reads(source, with_history), strict=True):
            assert_same_rows(slice_ours, slice_theirs)
        assert ours[1].feedback.filter(~pl.col("is_history")).height == 14


def _pipeline_arrow_backends(url: str) -> list[int]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s",
            (APPLICATION_NAME, "%FORMAT binary%"),
        )
        pids = [int(row[0]) for row in cur.fetchall()]
    conn.close()
    return pids


def test_a_slice_whose_arrow_session_is_lost_is_read_again_from_a_new_snapshot(
    tmp_path: Path, postgres_url: str
) -> None:
    write_crafted_source(postgres_url)
    faults: list[str] = []
    source = open_source(parse_source_url(postgres_url), include_image_urls=True, log=faults.append)
    with source.reading_run(FIRST, END, with_history=True, scratch_root=storage_for(tmp_path)) as read:
        first = read(FIRST, SPLIT)
        # The two Arrow sessions: both read dimension tables, the first then reads the slices.
        backends = _pipeline_arrow_backends(postgres_url)
        assert len(backends) == 2
        _execute(postgres_url, *(f"SELECT pg_terminate_backend({pid})" for pid in backends))
        second = read(SPLIT, END)
    assert len(faults) == 1 and "trying again in 1 s" in faults[0], faults
    for ours, theirs in zip((first, second), _text_reads(source, True), strict=True):
        assert_same_rows(ours, theirs)


def _rows_from_a_stream_then(postgres_url: str, fault: str) -> tuple[int, BaseException]:
    """Batches of a long result through `arrow_batches` until `fault` strikes: the rows read first
    and the error raised."""
    location = parse_source_url(postgres_url)
    rows = 0
    with postgres_arrow_session(location) as arrow:
        with arrow.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = pl.DataFrame(cur.fetch_arrow()).item()
        # Division by zero at the 3,000,000th row, long after the first batches have arrived.
        sql = "SELECT g, 1 / (g - 3000000) AS q FROM generate_series(1, 4000000) g"
        try:
            for batch in arrow_batches(arrow, sql):
                if rows == 0 and fault == "lost":
                    _execute(postgres_url, f"SELECT pg_terminate_backend({pid})")
                rows += batch.height
        except (RuntimeError, adbc_driver_manager.Error) as exc:
            return rows, exc
    raise AssertionError("the stream ended without a fault")


def test_a_stream_whose_connection_is_lost_midway_fails_as_transient(postgres_url: str) -> None:
    rows, raised = _rows_from_a_stream_then(postgres_url, "lost")
    assert 0 < rows < 3_000_000
    assert isinstance(raised, SourceUnreachableError) and is_transient(raised)
    # In libpq's words, without the prefixes of the libraries in between.
    assert "connection" in str(raised) and "[" not in str(raised) and not str(raised).startswith(":")


def test_a_stream_that_the_server_stops_with_an_error_fails_as_that_error(postgres_url: str) -> None:
    rows, raised = _rows_from_a_stream_then(postgres_url, "division by zero")
    assert 0 < rows < 3_000_000
    assert not isinstance(raised, SourceUnreachableError) and not is_transient(raised)
    assert "division by zero" in str(raised)


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [("40001", True), ("57P01", True), ("08006", True), ("42501", False), ("22P02", False)],
)
def test_errors_through_the_arrow_session_are_sorted_by_their_sqlstate(
    postgres_url: str, sqlstate: str, transient: bool
) -> None:
    with (
        postgres_arrow_session(parse_source_url(postgres_url)) as session,
        session.cursor() as cur,
        pytest.raises(adbc_driver_manager.Error) as raised,
    ):
        cur.execute(f"DO $$ BEGIN RAISE EXCEPTION 'fault' USING ERRCODE = '{sqlstate}'; END $$")
    assert raised.value.sqlstate == sqlstate
    assert is_transient(raised.value) is transient


def test_an_arrow_session_that_cannot_connect_says_whether_it_may_pass(postgres_url: str) -> None:
    missing = parse_source_url(postgres_url.rsplit("/", 1)[0] + "/no_such_database")
    with (
        pytest.raises(ConfigError, match='database "no_such_database" does not exist'),
        postgres_arrow_session(missing),
    ):
        pass
    refused = parse_source_url("postgresql://root@127.0.0.1:1/test")
    with pytest.raises(SourceUnreachableError, match="Connection refused") as raised, postgres_arrow_session(refused):
        pass
    assert "[libpq]" not in str(raised.value)
