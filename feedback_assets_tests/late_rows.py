"""Small sources for the late-row tests: one user, analysis and record per feedback row, and SQL
run against either kind of source, as the app would write it."""

from __future__ import annotations

import datetime as dt

from feedback_assets.connections import postgres_connection, sqlite_connection
from feedback_assets.settings import parse_source_url
from feedback_assets_tests.sources import rating, write_source


def row(fid: int, day: dt.date, hour: int, rating_value: int = 4) -> dict[str, object]:
    """Feedback `fid` of user `fid` on analysis `fid` and record `rec_<fid>`, at `hour` of `day`."""
    return rating(fid, fid, fid, f"rec_{fid}", f"{day.isoformat()} {hour:02d}:00:00", rating_value, 4, 60, True)


def write_rows(url: str, feedback: list[dict[str, object]]) -> None:
    """A source holding `feedback` and, for each row, its consenting user, analysis and record."""
    ids = sorted({int(str(r["id"])) for r in feedback})
    write_source(
        url,
        users=[{"id": i, "age": 30 + i, "ml_training_consent": True, "image_sharing_consent": False} for i in ids],
        analyses=[{"id": i, "user_id": i, "conditions": "acne"} for i in ids],
        records=[{"id": f"rec_{i}", "analysis_id": i, "rules_applied": "spf", "timeframe": "4w"} for i in ids],
        feedback=feedback,
    )


def execute(url: str, *statements: str) -> None:
    """Run `statements` in one transaction on the source, as the app writes."""
    location = parse_source_url(url)
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn, conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
            conn.commit()
    else:
        with sqlite_connection(location, read_only=False) as db:
            for sql in statements:
                db.execute(sql)
            db.commit()


def insert_late_row(url: str, fid: int, day: dt.date, hour: int) -> None:
    """A feedback row synced late for `day`, with its new user, analysis and record."""
    created = "'2025-01-01 00:00:00'"
    execute(
        url,
        "INSERT INTO users (id, age, ml_training_consent, image_sharing_consent, created_at) "
        f"VALUES ({fid}, 33, (1 = 1), (1 = 0), {created})",
        f"INSERT INTO analyses (id, user_id, conditions, created_at) VALUES ({fid}, {fid}, 'acne', {created})",
        "INSERT INTO recommendation_records (id, analysis_id, rules_applied, timeframe, created_at) "
        f"VALUES ('rec_{fid}', {fid}, 'spf', '4w', {created})",
        "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
        f"product_satisfaction, created_at) VALUES ({fid}, {fid}, {fid}, 'rec_{fid}', 5, 5, "
        f"'{day.isoformat()} {hour:02d}:00:00')",
    )
