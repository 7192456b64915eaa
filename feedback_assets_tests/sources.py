"""Writing small literal source databases (SQLite file or PostgreSQL database) for the asset tests,
and building their rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from feedback_assets.connections import postgres_connection, sqlite_connection
from feedback_assets.demo.database import FEEDBACK_INDEX_DDL, create_schema, load
from feedback_assets.demo.generate import DemoData
from feedback_assets.schemas import SOURCE_TABLES
from feedback_assets.settings import parse_source_url

CREATED = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    """An ISO timestamp read as UTC."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def rating(
    fid: int, user: int, analysis: int, rec: str, when: str, *values: object, **extra: object
) -> dict[str, object]:
    """A recommendation_feedback row; `values` are helpful, satisfaction, completion, recommend, missing ones None."""
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


def table(name: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    schema = SOURCE_TABLES[name].schema
    defaults: dict[str, Any] = {"created_at": CREATED, "requested_at": CREATED}
    return pl.DataFrame(
        [{c: row.get(c, defaults.get(c)) for c in schema.names()} for row in rows], schema=schema, orient="row"
    )


def write_source(
    url: str,
    *,
    users: Sequence[Mapping[str, Any]],
    analyses: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    feedback: Sequence[Mapping[str, Any]],
    erasures: Sequence[Mapping[str, Any]] = (),
) -> None:
    create_schema(url, replace=True)
    load(url, _data(users, analyses, records, feedback, erasures))


def _data(
    users: Sequence[Mapping[str, Any]],
    analyses: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    feedback: Sequence[Mapping[str, Any]],
    erasures: Sequence[Mapping[str, Any]],
) -> DemoData:
    return DemoData(
        users=table("users", users),
        analyses=table("analyses", analyses),
        recommendation_records=table("recommendation_records", records),
        recommendation_feedback=table("recommendation_feedback", feedback),
        erasure_requests=table("erasure_requests", erasures),
    )


def write_keyless_source(
    url: str,
    *,
    users: Sequence[Mapping[str, Any]],
    analyses: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    feedback: Sequence[Mapping[str, Any]],
    erasures: Sequence[Mapping[str, Any]] = (),
) -> None:
    """As `write_source`, but with no primary key on any table, as an app's SQLite file may have none:
    an id can be held by two rows. Rows are inserted in the order given."""
    create_schema(url, replace=True)
    data = _data(users, analyses, records, feedback, erasures)
    location = parse_source_url(url)
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn:
            with conn.cursor() as cur:
                for name, source_table in SOURCE_TABLES.items():
                    if any(column.primary_key for column in source_table.columns):
                        cur.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_pkey")
                for name, frame in data.tables().items():
                    placeholders = ", ".join("%s" for _ in frame.columns)
                    statement = f"INSERT INTO {name} ({', '.join(frame.columns)}) VALUES ({placeholders})"
                    cur.executemany(statement, list(frame.iter_rows()))
            conn.commit()
        return
    with sqlite_connection(location, read_only=False) as db, db:
        for name, source_table in SOURCE_TABLES.items():
            columns = ", ".join(f"{column.name} {column.sqlite_type}" for column in source_table.columns)
            db.execute(f"DROP TABLE {name}")
            db.execute(f"CREATE TABLE {name} ({columns})")
        db.execute(FEEDBACK_INDEX_DDL)
    load(url, data)
