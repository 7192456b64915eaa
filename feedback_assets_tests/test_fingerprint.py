"""The source's fingerprint per day: its SQL, and that it changes exactly when a row the day's export
reads changes, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from feedback_assets.fingerprint import EMPTY, day_query, fingerprint_query, read_fingerprints, watched_days
from feedback_assets.partitions import daily_partitions
from feedback_assets.schemas import READS
from feedback_assets.settings import parse_source_url
from feedback_assets_tests.late_rows import execute
from feedback_assets_tests.sources import rating, write_source

DAY = dt.date(2025, 10, 20)
NEXT = dt.date(2025, 10, 21)
OTHER = dt.date(2025, 10, 22)


def test_each_day_is_read_through_its_own_created_at_range_in_one_statement() -> None:
    sql = fingerprint_query([NEXT, DAY, NEXT], "postgresql")
    assert sql.count("UNION ALL") == 1
    assert "f.created_at >= '2025-10-20 00:00:00+00' AND f.created_at < '2025-10-21 00:00:00+00'" in sql
    assert "f.created_at >= '2025-10-21 00:00:00+00' AND f.created_at < '2025-10-22 00:00:00+00'" in sql
    sqlite = day_query(DAY, "sqlite")
    assert "f.created_at >= '2025-10-20 00:00:00' AND f.created_at < '2025-10-21 00:00:00'" in sqlite
    # Every read of the feedback table is bounded by a day's range.
    assert all("WHERE f.created_at >=" in part for part in sql.split("UNION ALL"))


def test_the_fingerprint_covers_every_column_the_export_reads_and_nothing_else() -> None:
    sql = day_query(DAY, "postgresql")
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
    with pytest.raises(ValueError, match="no fingerprint for a mysql source"):
        fingerprint_query([DAY], "mysql")


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


def _fingerprints(url: str) -> dict[str, str]:
    return read_fingerprints(parse_source_url(url), [DAY, NEXT, OTHER])


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
