"""The readers' SQL as strings (`feedback_assets.source.sql`): no database involved."""

from __future__ import annotations

import datetime as dt

from feedback_assets.schemas import SOURCE_TABLES
from feedback_assets.source import sql

SQLITE_WINDOW = "w.created_at >= :start AND w.created_at < :end"
POSTGRES_WINDOW = "w.created_at >= %(start)s AND w.created_at < %(end)s"
FEEDBACK_ID = SOURCE_TABLES["recommendation_feedback"].column("id")
CREATED_AT = SOURCE_TABLES["recommendation_feedback"].column("created_at")
WOULD_RECOMMEND = SOURCE_TABLES["recommendation_feedback"].column("would_recommend")


def test_sqlite_casts_every_column_to_text() -> None:
    assert sql.SQLITE.text("f", CREATED_AT) == "CAST(f.created_at AS TEXT)"
    assert sql.SQLITE.text("f", WOULD_RECOMMEND) == "CAST(f.would_recommend AS TEXT)"


def test_postgresql_renders_times_in_utc_with_their_era_and_booleans_as_numbers() -> None:
    stamp = "f.created_at::timestamptz"
    assert sql.POSTGRESQL.text("f", CREATED_AT) == (
        f"to_char({stamp}, 'YYYY-MM-DD HH24:MI:SS.US') || "
        f"CASE WHEN {stamp} < '0001-01-01 00:00:00+00' THEN ' BC' ELSE '' END"
    )
    assert sql.POSTGRESQL.text("f", WOULD_RECOMMEND) == "CAST(CAST(f.would_recommend AS INTEGER) AS TEXT)"
    assert sql.POSTGRESQL.text("f", FEEDBACK_ID) == "CAST(f.id AS TEXT)"


def test_a_native_read_takes_only_the_columns_whose_type_is_of_their_kind() -> None:
    dialect = sql.native_postgresql(
        {"id": "bigint", "created_at": "timestamp without time zone", "helpful_rating": "numeric", "user_id": "text"}
    )
    assert dialect.native == frozenset({"id", "created_at"})
    assert (dialect.start, dialect.end) == (sql.POSTGRESQL.start, sql.POSTGRESQL.end)
    assert dialect.text("f", CREATED_AT) == "f.created_at"
    assert dialect.text("f", WOULD_RECOMMEND) == "CAST(CAST(f.would_recommend AS INTEGER) AS TEXT)"


def test_the_window_queries_of_sqlite() -> None:
    queries = sql.window_queries(sql.SQLITE, with_history=False, include_image_urls=False)
    assert list(queries) == ["feedback", "users", "analyses", "records", "erasures"]
    feedback = queries["feedback"]
    assert feedback.width == 10
    assert feedback.sql == (
        "SELECT CAST(f.id AS TEXT), CAST(f.user_id AS TEXT), CAST(f.analysis_id AS TEXT), "
        "CAST(f.recommendation_id AS TEXT), CAST(f.helpful_rating AS TEXT), CAST(f.product_satisfaction AS TEXT), "
        "CAST(f.routine_completion_pct AS TEXT), CAST(f.would_recommend AS TEXT), CAST(f.created_at AS TEXT), '0' "
        "FROM recommendation_feedback f WHERE f.created_at >= :start AND f.created_at < :end"
    )
    # The image URL is never read unless it is exported, but its column stays, typed, as nulls.
    assert queries["analyses"].sql == (
        "SELECT CAST(a.id AS TEXT), CAST(a.user_id AS TEXT), CAST(a.conditions AS TEXT), CAST(NULL AS TEXT), "
        "CAST(a.created_at AS TEXT) FROM analyses a WHERE a.id IN "
        f"(SELECT w.analysis_id FROM recommendation_feedback w WHERE {SQLITE_WINDOW})"
    )
    assert queries["erasures"].sql == (
        "SELECT CAST(e.user_id AS TEXT) FROM erasure_requests e WHERE e.user_id IN "
        f"(SELECT w.user_id FROM recommendation_feedback w WHERE {SQLITE_WINDOW})"
    )


def test_with_history_the_earlier_rows_of_the_windows_pairs_and_their_analyses_are_read() -> None:
    queries = sql.window_queries(sql.POSTGRESQL, with_history=True, include_image_urls=True)
    earlier = (
        "f.created_at < %(start)s AND EXISTS (SELECT 1 FROM recommendation_feedback w "
        f"WHERE {POSTGRES_WINDOW} AND w.user_id = f.user_id AND w.recommendation_id = f.recommendation_id)"
    )
    assert queries["history"].sql.endswith(f", '1' FROM recommendation_feedback f WHERE {earlier}")
    assert queries["history"].width == queries["feedback"].width
    assert queries["analyses"].sql.endswith(
        f"WHERE a.id IN (SELECT w.analysis_id FROM recommendation_feedback w WHERE {POSTGRES_WINDOW} "
        f"UNION SELECT f.analysis_id FROM recommendation_feedback f WHERE {earlier})"
    )
    assert "CAST(a.image_url AS TEXT)" in queries["analyses"].sql
    assert sql.feedback_queries(queries).keys() == {"feedback", "history"}


def test_whole_dimensions_drop_the_semi_join() -> None:
    queries = sql.window_queries(sql.POSTGRESQL, with_history=False, include_image_urls=False, whole_dimensions=True)
    assert queries["users"].sql.endswith(" FROM users u")
    assert queries["records"].sql.endswith(" FROM recommendation_records r")
    assert "WHERE" in queries["feedback"].sql


def test_the_repeated_ids_query() -> None:
    window = "f.created_at >= :start AND f.created_at < :end"
    assert sql.repeated_ids_query(sql.SQLITE, with_history=False) == sql.Query(
        "SELECT CAST(d.id AS TEXT) FROM recommendation_feedback d WHERE d.id IN "
        f"(SELECT f.id FROM recommendation_feedback f WHERE {window}) GROUP BY d.id HAVING COUNT(*) > 1",
        1,
    )
    with_history = sql.repeated_ids_query(sql.SQLITE, with_history=True).sql
    assert (
        " UNION SELECT f.id FROM recommendation_feedback f WHERE f.created_at < :start AND "
        "(f.user_id, f.recommendation_id) IN (SELECT w.user_id, w.recommendation_id FROM recommendation_feedback w "
        f"WHERE {SQLITE_WINDOW})) GROUP BY d.id"
    ) in with_history


def test_the_erasure_and_consent_queries() -> None:
    assert sql.erasure_requests_query(sql.POSTGRESQL) == sql.Query(
        "SELECT DISTINCT CAST(e.user_id AS TEXT) FROM erasure_requests e", 1
    )
    assert sql.POSTGRES_CONSENT_QUERY == (
        "SELECT CAST(u.id AS TEXT), CAST(CAST(u.ml_training_consent AS INTEGER) AS TEXT), "
        "CAST(CAST(u.image_sharing_consent AS INTEGER) AS TEXT) FROM users u WHERE u.id = ANY(%(ids)s)"
    )
    assert sql.sqlite_consent_query(3) == (
        "SELECT CAST(u.id AS TEXT), CAST(u.ml_training_consent AS TEXT), CAST(u.image_sharing_consent AS TEXT) "
        "FROM users u WHERE u.id IN (?, ?, ?)"
    )


def test_the_bounds_are_utc_text_and_postgresql_marks_them_utc() -> None:
    start = dt.datetime(2025, 10, 25, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    end = dt.datetime(2025, 10, 26, tzinfo=dt.UTC)
    assert sql.window_bounds(start, end) == {"start": "2025-10-25 00:00:00", "end": "2025-10-26 00:00:00"}
    assert sql.postgres_bounds(start, end) == {"start": "2025-10-25 00:00:00+00", "end": "2025-10-26 00:00:00+00"}


def test_the_dimension_tables_are_read_whole_when_the_run_spans_half_the_feedback() -> None:
    day = 86_400.0
    start = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    span = (0.0, 10 * day)
    assert sql.covers_most_feedback(span, start, start + dt.timedelta(days=5))
    assert not sql.covers_most_feedback(span, start, start + dt.timedelta(days=4))
    # Only the part of the run the feedback covers counts.
    assert not sql.covers_most_feedback(span, start - dt.timedelta(days=30), start + dt.timedelta(days=4))
    for odd in (None, (0.0, 0.0), (0.0, float("inf")), (float("-inf"), day)):
        assert not sql.covers_most_feedback(odd, start, start + dt.timedelta(days=5))
