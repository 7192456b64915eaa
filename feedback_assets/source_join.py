"""The source's tables joined into one row per feedback row (docs/contract.md, section 5): each
row's user, analysis and record attached, its ids checked for ownership, and what must not be
stored blanked. Pure Polars, like transforms.py, which classifies and exports these rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from feedback_assets.schemas import REPEATED_IDS_SCHEMA


@dataclass(frozen=True)
class SourceFrames:
    """The source rows one run needs, one frame per contract table, typed as in `schemas`.

    `repeated_ids` are the feedback ids of the rows read that the source table holds more than once
    (`schemas.REPEATED_IDS_SCHEMA`); none when its id is a key."""

    feedback: pl.DataFrame
    users: pl.DataFrame
    analyses: pl.DataFrame
    records: pl.DataFrame
    erasures: pl.DataFrame
    repeated_ids: pl.DataFrame = field(default_factory=REPEATED_IDS_SCHEMA.to_frame)


def _one_row_per_id(frame: pl.DataFrame, key: str, found: str, ambiguous: str) -> pl.DataFrame:
    """`frame` with one row per `key`, so that a join never multiplies feedback rows, and `found`.

    An id held by several rows is `ambiguous` and keeps none of their values: which row is meant is
    unknowable, and taking the first would make the outcome depend on the order the rows come in.
    """
    twice = frame[key].is_duplicated()
    if not twice.any():
        return frame.with_columns(pl.lit(True).alias(found), pl.lit(False).alias(ambiguous))
    values = [name for name in frame.columns if name != key]
    blanked = frame.with_columns(
        *(pl.when(twice).then(None).otherwise(pl.col(name)).alias(name) for name in values),
        pl.lit(True).alias(found),
        twice.alias(ambiguous),
    )
    # The rows of an ambiguous id are now equal in every column: any one of them will do.
    return blanked.unique(key, keep="any")


# What `join_source` says about a row's ids, which `classify` needs (contract version 3).
OWNERSHIP_FLAGS = ("ambiguous", "mismatched")
# The per-table flags `join_source` folds into `ambiguous`.
_AMBIGUOUS_IDS = ("user_ambiguous", "analysis_ambiguous", "record_ambiguous")


def join_source(frames: SourceFrames) -> pl.DataFrame:
    """One row per feedback row with its user, analysis and record attached (null where missing).

    `ambiguous`: the row's user, analysis, record or own id is held by more than one source row.
    `mismatched`: its analysis belongs to another user or its record to another analysis; the
    owners' ids are compared here and dropped, so the joined rows never hold another person's id.
    """
    users = _one_row_per_id(frames.users, "user_id", "user_found", "user_ambiguous")
    analyses = _one_row_per_id(frames.analyses, "analysis_id", "analysis_found", "analysis_ambiguous")
    records = _one_row_per_id(frames.records, "recommendation_id", "record_found", "record_ambiguous")
    erased = frames.erasures.unique("user_id").with_columns(erasure_requested=pl.lit(True))
    feedback_id = pl.col("feedback_id")
    repeated_id = feedback_id.is_duplicated() | feedback_id.is_in(frames.repeated_ids["feedback_id"].implode())
    mismatched = (pl.col("analysis_found") & pl.col("analysis_user_id").ne_missing(pl.col("user_id"))) | (
        pl.col("record_found") & pl.col("record_analysis_id").ne_missing(pl.col("analysis_id"))
    )
    return (
        frames.feedback.join(users, on="user_id", how="left")
        .join(analyses, on="analysis_id", how="left")
        .join(records, on="recommendation_id", how="left")
        .join(erased, on="user_id", how="left")
        .with_columns(
            pl.col("user_found", "analysis_found", "record_found", "erasure_requested", *_AMBIGUOUS_IDS).fill_null(
                False
            ),
        )
        .with_columns(
            ambiguous=pl.any_horizontal(*_AMBIGUOUS_IDS) | repeated_id.fill_null(False),
            mismatched=mismatched,
        )
        .drop(*_AMBIGUOUS_IDS, "analysis_user_id", "record_analysis_id")
        .sort("feedback_id")
    )


PERSONAL_COLUMNS = ("user_id", "age", "conditions", "image_url")


def redact_excluded(raw: pl.DataFrame) -> pl.DataFrame:
    """Blank the personal fields of users who refused consent or asked to be erased, and of rows
    that are ambiguous or mismatched.

    Their rows stay, flagged, so each day still counts them as excluded or rejected; but the stored
    partition must not keep what the erasure job has to remove, or a re-run would bring it back,
    nor another person's conditions or image that a mismatched analysis would bring in.
    """
    excluded = (
        pl.col("erasure_requested")
        | ~pl.col("ml_training_consent").fill_null(False)
        | pl.col("ambiguous")
        | pl.col("mismatched")
    )
    return raw.with_columns(
        pl.when(excluded).then(None).otherwise(pl.col(name)).alias(name) for name in PERSONAL_COLUMNS
    )


def raw_rows(frames: SourceFrames, *, with_history: bool) -> pl.DataFrame:
    """What raw_feedback stores: the joined rows, the personal fields of refusing and erased users and
    of ambiguous and mismatched rows blanked, and with `with_history` each day's earlier rows of its
    pairs (`first_per_pair`)."""
    raw = redact_excluded(join_source(frames))
    return add_history(raw) if with_history else raw


def add_history(raw: pl.DataFrame) -> pl.DataFrame:
    """Give each partition, as `is_history` rows, the earlier rows of the pairs it holds.

    `raw` holds a run's window rows and the source's earlier rows of the window's pairs (read with
    `is_history`). In a ranged run a day's history includes window rows of earlier days in the
    range, so each partition carries everything its `first_per_pair` decision needs.
    """
    window = raw.filter(~pl.col("is_history"))
    pairs = window.select("user_id", "recommendation_id", pl.col("partition").alias("for_partition")).unique()
    earlier = (
        raw.join(pairs, on=["user_id", "recommendation_id"], how="inner")
        .filter(pl.col("partition") < pl.col("for_partition"))
        .with_columns(partition=pl.col("for_partition"), is_history=pl.lit(True))
        .drop("for_partition")
        .unique(["partition", "feedback_id"], keep="first")
    )
    return pl.concat([window, earlier]).sort("partition", "is_history", "feedback_id")
