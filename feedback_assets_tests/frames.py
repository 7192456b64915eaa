"""Small literal source frames for the pure-function tests: every column has a sensible default,
so a test names only what it is about."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import polars as pl

from feedback_assets.schemas import (
    ANALYSES_SCHEMA,
    ERASURES_SCHEMA,
    FEEDBACK_SCHEMA,
    RECORDS_SCHEMA,
    USERS_SCHEMA,
)
from feedback_assets.source_join import SourceFrames

KEY = bytes.fromhex("0123456789abcdef" * 4)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


FEEDBACK_DEFAULTS: dict[str, Any] = {
    "user_id": 1,
    "analysis_id": 10,
    "recommendation_id": "rec_1",
    "helpful_rating": 4,
    "product_satisfaction": 5,
    "routine_completion_pct": 80,
    "would_recommend": True,
    "created_at": utc("2025-10-25 12:00:00"),
    "malformed": False,
    "is_history": False,
}


def feedback(*rows: Mapping[str, Any]) -> pl.DataFrame:
    """Feedback rows; each needs at least `feedback_id`."""
    full = [{**FEEDBACK_DEFAULTS, **row} for row in rows]
    for row in full:
        row.setdefault("partition", row["created_at"].date())
    return pl.DataFrame(full, schema=FEEDBACK_SCHEMA)


def users(*rows: Mapping[str, Any]) -> pl.DataFrame:
    defaults = {"age": 30, "ml_training_consent": True, "image_sharing_consent": False}
    return pl.DataFrame([{**defaults, **row} for row in rows], schema=USERS_SCHEMA)


def analyses(*rows: Mapping[str, Any]) -> pl.DataFrame:
    """Analyses rows; each needs `analysis_id`, and belongs to user 1 unless `analysis_user_id` says otherwise."""
    defaults = {
        "analysis_user_id": 1,
        "conditions": "acne",
        "image_url": None,
        "analysis_created_at": utc("2025-10-24 09:30:00"),
    }
    return pl.DataFrame([{**defaults, **row} for row in rows], schema=ANALYSES_SCHEMA)


def records(*rows: Mapping[str, Any]) -> pl.DataFrame:
    """Record rows; each needs `recommendation_id`; of analysis 10 unless `record_analysis_id` says otherwise."""
    defaults = {"record_analysis_id": 10, "rules_applied": "spf_daily", "timeframe": "4w"}
    return pl.DataFrame([{**defaults, **row} for row in rows], schema=RECORDS_SCHEMA)


def erasures(user_ids: Sequence[int] = ()) -> pl.DataFrame:
    return pl.DataFrame({"user_id": list(user_ids)}, schema=ERASURES_SCHEMA)


def source(
    feedback_rows: pl.DataFrame,
    *,
    user_rows: pl.DataFrame | None = None,
    analysis_rows: pl.DataFrame | None = None,
    record_rows: pl.DataFrame | None = None,
    erased: Sequence[int] = (),
) -> SourceFrames:
    """Feedback with, by default, a consenting user 1, analysis 10 and record rec_1."""
    return SourceFrames(
        feedback=feedback_rows,
        users=user_rows if user_rows is not None else users({"user_id": 1}),
        analyses=analysis_rows if analysis_rows is not None else analyses({"analysis_id": 10}),
        records=record_rows if record_rows is not None else records({"recommendation_id": "rec_1"}),
        erasures=erasures(erased),
    )


def own(user_id: int) -> dict[str, Any]:
    """The ids of a feedback row of `user_id` that refers to the analysis and record `owned_by` gives them."""
    return {"user_id": user_id, "analysis_id": 10 * user_id, "recommendation_id": f"rec_{user_id}"}


class OwnedRows(TypedDict):
    analysis_rows: pl.DataFrame
    record_rows: pl.DataFrame


def owned_by(*user_ids: int, **analysis_values: Any) -> OwnedRows:
    """`source`'s analysis_rows and record_rows giving each user an analysis (10 x the user id) and a
    record (rec_<user id>) of their own; user 1's are the defaults, analysis 10 and rec_1."""
    return OwnedRows(
        analysis_rows=analyses(*({"analysis_id": 10 * u, "analysis_user_id": u, **analysis_values} for u in user_ids)),
        record_rows=records(*({"recommendation_id": f"rec_{u}", "record_analysis_id": 10 * u} for u in user_ids)),
    )
