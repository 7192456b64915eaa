"""The source's fingerprint per day: its SQL, and that it changes exactly when a row the day's export
reads changes, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest

from feedback_assets.fingerprint import watched_days
from feedback_assets.partitions import daily_partitions
from feedback_assets.schemas import READS
from feedback_assets.settings import parse_source_url
from feedback_assets.source import open_source
from feedback_assets.source.parsing import EMPTY_FINGERPRINT as EMPTY
from feedback_assets.source.sql import POSTGRESQL, SQLITE, day_fingerprint_query, fingerprint_query
from feedback_assets.source_url import SourceLocation
from feedback_assets_tests.late_rows import execute
from feedback_assets_tests.sources import rating, write_source

DAY = dt.date(2025, 10, 20)
NEXT = dt.date(2025, 10, 21)
OTHER = dt.date(2025, 10, 22)


def test_each_day_is_read_through_its_own_created_at_range_in_one_statement() -> None:
    sql = fingerprint_query([NEXT, DAY, NEXT], POSTGRESQL)
    assert sql.count("UNION ALL") == 1
    assert "f.created_at >= '2025-10-20 00:00:00+00' AND f.created_at < '2025-10-21 00:00:00+00'" in sql
    assert "f.created_at >= '2025-10-21 00:00:00+00' AND f.created_at < '2025-10-22 00:00:00+00'" in sql
    sqlite = day_fingerprint_query(DAY, SQLITE)
    assert "f.created_at >= '2025-10-20 00:00:00' AND f.created_at < '2025-10-21 00:00:00'" in sqlite
    # Every read of the feedback table is bounded by a day's range.
    assert all("WHERE f.created_at >=" in part for part in sql.split("UNION ALL"))


def test_the_fingerprint_covers_every_column_the_export_reads_and_nothing_else() -> None:
    sql = day_fingerprint_query(DAY, POSTGRESQL)
    aliases = {"feedback": "f", "users": "u", "analyses": "a", "records": "r"}
    for read, alias in aliases.items():
        for column in READS[read].source_columns:
            assert f"CAST({alias}.{column.name} AS TEXT)" in sql
    assert "feedback_text" not in sql
    assert len(re.findall(r"CAST\(", sql)) == sum(len(READS[read].columns) for read in aliases)
    assert "LEFT JOIN users u ON u.id = f.user_id" in sql
    assert "LEFT JOIN analyses a ON a.id = f.analysis_id" in sql
    assert "LEFT JOIN recommendation_records r ON r.id = f.recommendation_id" in sql


def test_a_source_of_another_kind_has_no_fingerprint() -> None:
    # The SQL is built for a dialect object only; a kind without one gets no reader to ask.
    with pytest.raises(ValueError, match="no reader for a mysql source"):
        open_source(SourceLocation("mysql", "feedback"), False).fingerprints([DAY])


def test_the_watched_days_end_yesterday_and_never_precede_the_first_partition() -> None:
    assert watched_days(dt.date(2025, 10, 23), 3) == [DAY, NEXT, OTHER]
    first = daily_partitions.start.date()
    assert watched_days(first + dt.timedelta(days=2), 35) == [first, first + dt.timedelta(days=1)]


def _source(url: str) -> None:
    write_source(
        url,
        users=[
            {"id": 1, "age": 30, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 2, "age": 41, "ml_training_consent": True, "image_sharing_consent": True},
        ],
        analyses=[{"id": 10, "user_id": 1, "conditions": "acne"}, {"id": 20, "user_id": 2, "conditions": "rosacea"}],
        records=[
            {"id": "rec_1", "analysis_id": 10, "rules_applied": "spf", "timeframe": "4w"},
            {"id": "rec_2", "analysis_id": 20, "rules_applied": "retinol", "timeframe": "8w"},
        ],
        feedback=[
            rating(1, 1, 10, "rec_1", "2025-10-20 08:00:00", 4, 5, 80, True, feedback_text="fine"),
            rating(2, 2, 20, "rec_2", "2025-10-20 23:59:59", 2),
            rating(3, 2, 20, "rec_2", "2025-10-21 10:00:00", 3),
        ],
    )


def _fingerprints(url: str, *, once: bool = False) -> dict[str, str]:
    return open_source(parse_source_url(url), False).fingerprints([DAY, NEXT, OTHER], once=once)


CHANGES_OF_THE_DAY = {
    "a late feedback row": (
        "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
        "created_at) VALUES (4, 1, 10, 'rec_1', 5, '2025-10-20 12:00:00')"
    ),
    "a removed feedback row": "DELETE FROM recommendation_feedback WHERE id = 2",
    "a changed rating": "UPDATE recommendation_feedback SET helpful_rating = 1 WHERE id = 1",
    "a rating set to null": "UPDATE recommendation_feedback SET would_recommend = NULL WHERE id = 1",
    "a withdrawn consent": "UPDATE users SET ml_training_consent = (1 = 0) WHERE id = 1",
    "a changed age": "UPDATE users SET age = 31 WHERE id = 1",
    "changed conditions": "UPDATE analyses SET conditions = 'eczema' WHERE id = 10",
    "a changed record": "UPDATE recommendation_records SET timeframe = '6w' WHERE id = 'rec_1'",
}


@pytest.mark.parametrize("change", CHANGES_OF_THE_DAY)
def test_a_change_to_a_row_the_export_reads_changes_that_days_fingerprint_only(source_url: str, change: str) -> None:
    _source(source_url)
    before = _fingerprints(source_url)
    execute(source_url, CHANGES_OF_THE_DAY[change])
    after = _fingerprints(source_url)
    assert after[DAY.isoformat()] != before[DAY.isoformat()]
    assert {day: after[day] for day in after if day != DAY.isoformat()} == {
        day: before[day] for day in before if day != DAY.isoformat()
    }


UNREAD_CHANGES = {
    "the free text": "UPDATE recommendation_feedback SET feedback_text = 'changed' WHERE id = 1",
    "a user no feedback names": "INSERT INTO users (id, age, ml_training_consent, image_sharing_consent, created_at) "
    "VALUES (3, 50, (1 = 1), (1 = 0), '2025-01-01 00:00:00')",
    "a row of a day not watched": (
        "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, created_at) "
        "VALUES (5, 1, 10, 'rec_1', '2025-10-23 00:00:00')"
    ),
}


@pytest.mark.parametrize("change", UNREAD_CHANGES)
def test_a_change_the_export_never_reads_leaves_every_fingerprint_as_it_was(source_url: str, change: str) -> None:
    _source(source_url)
    before = _fingerprints(source_url)
    execute(source_url, UNREAD_CHANGES[change])
    assert _fingerprints(source_url) == before


def test_a_day_without_rows_has_the_empty_fingerprint_and_reading_twice_gives_the_same(source_url: str) -> None:
    _source(source_url)
    first = _fingerprints(source_url)
    assert _fingerprints(source_url) == first
    assert first[OTHER.isoformat()] == EMPTY
    assert first[NEXT.isoformat()].startswith("1:")
    execute(source_url, "DELETE FROM recommendation_feedback WHERE id = 3")
    assert _fingerprints(source_url)[NEXT.isoformat()] == EMPTY


def test_the_queries_are_byte_for_byte_those_the_exported_fingerprints_were_read_with() -> None:
    assert day_fingerprint_query(DAY, POSTGRESQL) == DAY_BEFORE_POSTGRESQL
    assert day_fingerprint_query(DAY, SQLITE) == DAY_BEFORE_SQLITE
    for dialect in (POSTGRESQL, SQLITE):
        query = fingerprint_query([NEXT, DAY], dialect)
        assert hashlib.sha256(query.encode()).hexdigest() == TWO_DAYS_BEFORE[dialect.name]


def test_the_values_are_those_read_before_the_fingerprint_moved(source_url: str) -> None:
    """Every exported day carries its fingerprint: a new value for the same rows would make the
    sensor re-export every day of the lookback."""
    before = VALUES_BEFORE[parse_source_url(source_url).dialect]
    _source(source_url)
    assert _fingerprints(source_url) == _fingerprints(source_url, once=True) == before["base"]
    execute(source_url, CHANGES_OF_THE_DAY["a late feedback row"])
    assert _fingerprints(source_url) == before["late"]


# Made by the module before the fingerprint moved into the source package (commit e562102):
# exports carry the values these queries give, so they must not change by a byte.

DAY_BEFORE_POSTGRESQL = (
    "SELECT '2025-10-20' AS day, count(*) AS rows, sum(('x' || substr(md5(x.row_text), 1, "
    "15))::bit(60)::bigint)::text AS digest FROM (SELECT coalesce('v' || CAST(f.id AS TEXT), 'n') || "
    "chr(31) || coalesce('v' || CAST(f.user_id AS TEXT), 'n') || chr(31) || coalesce('v' || "
    "CAST(f.analysis_id AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(f.recommendation_id AS TEXT), "
    "'n') || chr(31) || coalesce('v' || CAST(f.helpful_rating AS TEXT), 'n') || chr(31) || coalesce('v' "
    "|| CAST(f.product_satisfaction AS TEXT), 'n') || chr(31) || coalesce('v' || "
    "CAST(f.routine_completion_pct AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(f.would_recommend "
    "AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(f.created_at AS TEXT), 'n') || chr(31) || "
    "coalesce('v' || CAST(u.id AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(u.age AS TEXT), 'n') || "
    "chr(31) || coalesce('v' || CAST(u.ml_training_consent AS TEXT), 'n') || chr(31) || coalesce('v' || "
    "CAST(u.image_sharing_consent AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(a.id AS TEXT), 'n') "
    "|| chr(31) || coalesce('v' || CAST(a.user_id AS TEXT), 'n') || chr(31) || coalesce('v' || "
    "CAST(a.conditions AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(a.image_url AS TEXT), 'n') || "
    "chr(31) || coalesce('v' || CAST(a.created_at AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(r.id "
    "AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(r.analysis_id AS TEXT), 'n') || chr(31) || "
    "coalesce('v' || CAST(r.rules_applied AS TEXT), 'n') || chr(31) || coalesce('v' || CAST(r.timeframe "
    "AS TEXT), 'n') AS row_text FROM recommendation_feedback f LEFT JOIN users u ON u.id = f.user_id "
    "LEFT JOIN analyses a ON a.id = f.analysis_id LEFT JOIN recommendation_records r ON r.id = "
    "f.recommendation_id WHERE f.created_at >= '2025-10-20 00:00:00+00' AND f.created_at < '2025-10-21 "
    "00:00:00+00') x"
)

DAY_BEFORE_SQLITE = (
    "SELECT '2025-10-20' AS day, x.row_text FROM (SELECT coalesce('v' || CAST(f.id AS TEXT), 'n') || "
    "char(31) || coalesce('v' || CAST(f.user_id AS TEXT), 'n') || char(31) || coalesce('v' || "
    "CAST(f.analysis_id AS TEXT), 'n') || char(31) || coalesce('v' || CAST(f.recommendation_id AS TEXT), "
    "'n') || char(31) || coalesce('v' || CAST(f.helpful_rating AS TEXT), 'n') || char(31) || "
    "coalesce('v' || CAST(f.product_satisfaction AS TEXT), 'n') || char(31) || coalesce('v' || "
    "CAST(f.routine_completion_pct AS TEXT), 'n') || char(31) || coalesce('v' || CAST(f.would_recommend "
    "AS TEXT), 'n') || char(31) || coalesce('v' || CAST(f.created_at AS TEXT), 'n') || char(31) || "
    "coalesce('v' || CAST(u.id AS TEXT), 'n') || char(31) || coalesce('v' || CAST(u.age AS TEXT), 'n') "
    "|| char(31) || coalesce('v' || CAST(u.ml_training_consent AS TEXT), 'n') || char(31) || "
    "coalesce('v' || CAST(u.image_sharing_consent AS TEXT), 'n') || char(31) || coalesce('v' || "
    "CAST(a.id AS TEXT), 'n') || char(31) || coalesce('v' || CAST(a.user_id AS TEXT), 'n') || char(31) "
    "|| coalesce('v' || CAST(a.conditions AS TEXT), 'n') || char(31) || coalesce('v' || CAST(a.image_url "
    "AS TEXT), 'n') || char(31) || coalesce('v' || CAST(a.created_at AS TEXT), 'n') || char(31) || "
    "coalesce('v' || CAST(r.id AS TEXT), 'n') || char(31) || coalesce('v' || CAST(r.analysis_id AS "
    "TEXT), 'n') || char(31) || coalesce('v' || CAST(r.rules_applied AS TEXT), 'n') || char(31) || "
    "coalesce('v' || CAST(r.timeframe AS TEXT), 'n') AS row_text FROM recommendation_feedback f LEFT "
    "JOIN users u ON u.id = f.user_id LEFT JOIN analyses a ON a.id = f.analysis_id LEFT JOIN "
    "recommendation_records r ON r.id = f.recommendation_id WHERE f.created_at >= '2025-10-20 00:00:00' "
    "AND f.created_at < '2025-10-21 00:00:00') x"
)

# The sha256 of each dialect's fingerprint_query([DAY, NEXT]) then.
TWO_DAYS_BEFORE = {
    "postgresql": "51e0df4672d9977a37ab182cfea377685a0a4cf36c1b788a5518afa0577cb570",
    "sqlite": "fee78360d0b1ac8f2a902aa709076a0db9d62c73626a9f67e2645a1c547ff540",
}

# What it read of `_source`, and after CHANGES_OF_THE_DAY's late row.
VALUES_BEFORE = {
    "postgresql": {
        "base": {"2025-10-20": "2:844368525895279580", "2025-10-21": "1:256817279200090829", "2025-10-22": "0"},
        "late": {"2025-10-20": "3:1430514921938885380", "2025-10-21": "1:256817279200090829", "2025-10-22": "0"},
    },
    "sqlite": {
        "base": {
            "2025-10-20": "2:ee28b581841f83a972308468ec6be7a7",
            "2025-10-21": "1:caec087b8886966aea97fdb8dad0b3c7",
            "2025-10-22": "0",
        },
        "late": {
            "2025-10-20": "3:3092dc3f227f48abb6282000bbf6cb04",
            "2025-10-21": "1:caec087b8886966aea97fdb8dad0b3c7",
            "2025-10-22": "0",
        },
    },
}
