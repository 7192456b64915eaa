"""Writing small literal source databases (SQLite file or PostgreSQL database) for the asset tests,
and building their rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from feedback_assets.demo.database import create_schema, load
from feedback_assets.demo.generate import DemoData
from feedback_assets.schemas import SOURCE_TABLES

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
    load(
        url,
        DemoData(
            users=table("users", users),
            analyses=table("analyses", analyses),
            recommendation_records=table("recommendation_records", records),
            recommendation_feedback=table("recommendation_feedback", feedback),
            erasure_requests=table("erasure_requests", erasures),
        ),
    )
