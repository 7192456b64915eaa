"""Typing what the readers read: pure functions from frames of text (or of the database's own types)
to the frames of `schemas`.

Values come out of the database as text and are typed in Polars with `strict=False`, so a value
the app stored wrongly (a rating that is not a number, an unparseable timestamp) marks its row
`malformed` instead of failing the read. A column the database typed itself (a PostgreSQL run's
native reads) is converted instead, with the same outcome for the same stored value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence

import polars as pl

from feedback_assets.schemas import (
    ANALYSES_SCHEMA,
    ERASURES_SCHEMA,
    FEEDBACK_SCHEMA,
    RECORDS_SCHEMA,
    REPEATED_IDS_SCHEMA,
    USERS_SCHEMA,
)
from feedback_assets.source.sql import CONSENT_COLUMNS, FEEDBACK_QUERIES, REPEATED_IDS
from feedback_assets.source_join import SourceFrames

# The feedback columns as read; `malformed` and `partition` are derived from them.
FEEDBACK_READ_SCHEMA = pl.Schema({k: v for k, v in FEEDBACK_SCHEMA.items() if k not in ("partition", "malformed")})
TRUE_TEXT = ("1", "t", "true")
FALSE_TEXT = ("0", "f", "false")
# What the reads take from the dimension tables, and on which column a slice finds its rows.
DIMENSIONS: Mapping[str, tuple[pl.Schema, str]] = {
    "users": (USERS_SCHEMA, "user_id"),
    "analyses": (ANALYSES_SCHEMA, "analysis_id"),
    "records": (RECORDS_SCHEMA, "recommendation_id"),
    "erasures": (ERASURES_SCHEMA, "user_id"),
}
CONSENT_READ_SCHEMA = pl.Schema(
    {"id": pl.Int64(), "ml_training_consent": pl.Boolean(), "image_sharing_consent": pl.Boolean()}
)
# The times a text read parses (years 1 to 9999), in microseconds since 1970.
READABLE_MICROSECONDS = (
    int((dt.datetime(1, 1, 1) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000,
    int((dt.datetime(9999, 12, 31, 23, 59, 59) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + 999_999,
)


def text_frame(rows: Sequence[Sequence[str | None]], width: int) -> pl.DataFrame:
    """A driver's rows of text values as a frame of text columns c0, c1, ..."""
    return pl.DataFrame(rows, schema=dict.fromkeys((f"c{i}" for i in range(width)), pl.String), orient="row")


def frame_from_text(schema: pl.Schema, text: pl.DataFrame) -> pl.DataFrame:
    """A query's columns c0, c1, ... named as `schema` names them, in order."""
    return text.rename(dict(zip(text.columns, schema.names(), strict=True)))


def parse_bool(text: pl.Expr) -> pl.Expr:
    lowered = text.str.strip_chars().str.to_lowercase()
    return pl.when(lowered.is_in(TRUE_TEXT)).then(True).when(lowered.is_in(FALSE_TEXT)).then(False).otherwise(None)


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars().str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us", time_zone="UTC")


def typing(schema: pl.Schema, read: pl.Schema | None = None) -> list[pl.Expr]:
    """Casts of the columns as `read` (text, unless said otherwise) to the schema; a value that does
    not parse becomes null. A column the database typed itself (`sql.native_postgresql`: only of the
    schema's kind) is converted: timestamps to UTC, a smaller integer widened."""
    casts = []
    for name, dtype in schema.items():
        given = read.get(name, pl.String()) if read is not None else pl.String()
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime) and isinstance(given, pl.Datetime):
            # A timestamp without time zone is taken as UTC, as the text reads take it. PostgreSQL's
            # infinities and years BC arrive as times no text read could give: null, so malformed.
            aware = column.dt.convert_time_zone("UTC") if given.time_zone else column.dt.replace_time_zone("UTC")
            in_range = column.dt.cast_time_unit("us").cast(pl.Int64).is_between(*READABLE_MICROSECONDS)
            casts.append(pl.when(in_range).then(aware.dt.cast_time_unit("us")).alias(name))
            continue
        if given == dtype or (given.is_integer() and dtype.is_integer()):
            casts.append(column.cast(dtype).alias(name))
        elif dtype == pl.Boolean:
            casts.append(parse_bool(column).alias(name))
        elif isinstance(dtype, pl.Datetime):
            casts.append(parse_timestamp(column).alias(name))
        elif dtype == pl.String:
            casts.append(column.alias(name))
        else:
            casts.append(column.str.strip_chars().cast(dtype, strict=False).alias(name))
    return casts


def typed(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return frame.select(typing(schema, frame.schema))


def typed_as(schema: pl.Schema, frame: pl.DataFrame) -> pl.DataFrame:
    """A query's columns c0, c1, ... named and typed as `schema`."""
    return typed(frame_from_text(schema, frame), schema)


def typed_dimension(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """A dimension query's (`DIMENSIONS`) columns c0, c1, ... named and typed."""
    schema, _ = DIMENSIONS[name]
    return typed_as(schema, frame)


def window_days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The UTC days of the window [start, end), which starts and ends at midnights."""
    first, last = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
    return [first + dt.timedelta(days=i) for i in range((last - first).days)]


def day_read_for(stored: pl.Series, days: Sequence[dt.date]) -> pl.Series:
    """The day of `days` whose window the query put each stored created_at text in.

    The query compares created_at with each day's 'YYYY-MM-DD 00:00:00' (on SQLite, as text, byte by
    byte); the same comparison here finds the last day starting at or before the text. No parse is
    involved, so any text the window held (an impossible date, hour 24, a date alone) gets the day
    the database gave it, and only then is its parse checked against that day.
    """
    starts = pl.Series([f"{day.isoformat()} 00:00:00" for day in days], dtype=pl.String)
    index = (starts.search_sorted(stored, side="right").cast(pl.Int64) - 1).clip(0, len(days) - 1)
    return pl.Series(days, dtype=pl.Date).gather(index)


def type_feedback(text: pl.DataFrame, days: Sequence[dt.date]) -> pl.DataFrame:
    """Type the feedback rows read for the window of `days`; `malformed` marks a row whose stored
    values do not parse, or whose created_at parses to another day than the one it was read for."""
    typed_rows = typed(text, FEEDBACK_READ_SCHEMA)
    failed = [
        text[name].is_not_null() & typed_rows[name].is_null()
        for name in FEEDBACK_READ_SCHEMA.names()
        if name not in ("is_history", "recommendation_id")
    ]
    required_missing = pl.any_horizontal(
        pl.col(name).is_null() for name in ("feedback_id", "user_id", "analysis_id", "recommendation_id", "created_at")
    )
    # A window row belongs to the day the query read it for, even if its text does not parse
    # ('2025-10-26' sorts before '2025-10-26 00:00:00', so the 25th's window reads it), and a parsed
    # time on another day (a leap second '23:59:60') is malformed rather than moved out of the run.
    # History rows lie before the window: their own day, when it parses, places them (add_history).
    is_history = typed_rows["is_history"].fill_null(False)
    parsed_day = typed_rows["created_at"].dt.date()
    # A timestamp the database typed itself was compared as a time, so its day is the day read for.
    read_for = (
        day_read_for(text["created_at"].fill_null(""), days) if text["created_at"].dtype == pl.String else parsed_day
    )
    day = pl.select(pl.when(is_history).then(parsed_day).otherwise(read_for)).to_series()
    return typed_rows.with_columns(
        malformed=pl.any_horizontal(failed) | required_missing | (parsed_day != day).fill_null(False),
        is_history=is_history,
        partition=day,
    )


def typed_feedback(texts: Mapping[str, pl.DataFrame], start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The feedback rows (window and history) of one read of [start, end), typed."""
    read = pl.concat([texts[name] for name in FEEDBACK_QUERIES if name in texts])
    return type_feedback(frame_from_text(FEEDBACK_READ_SCHEMA, read), window_days(start, end))


def typed_repeated_ids(text: pl.DataFrame | None) -> pl.DataFrame:
    """The typed result of the repeated-ids query, none if it did not run; an id that does not parse
    is left out (its rows are malformed anyway)."""
    if text is None:
        return REPEATED_IDS_SCHEMA.to_frame()
    return typed_as(REPEATED_IDS_SCHEMA, text).drop_nulls()


def source_frames(texts: Mapping[str, pl.DataFrame], start: dt.datetime, end: dt.datetime) -> SourceFrames:
    """One read of the window [start, end) (`sql.window_queries`, and the repeated ids if they were
    read), typed."""
    return SourceFrames(
        feedback=typed_feedback(texts, start, end),
        **{name: typed_dimension(name, texts[name]) for name in DIMENSIONS},
        repeated_ids=typed_repeated_ids(texts.get(REPEATED_IDS)),
    )


def erasure_ids(text: pl.DataFrame) -> pl.Series:
    """The erasure requests' user ids (`sql.erasure_requests_query`); null for a value that does not
    read as an id."""
    return typed_as(ERASURES_SCHEMA, text)["user_id"]


def consent_frame(rows: Sequence[Sequence[str | None]]) -> pl.DataFrame:
    """The consent rows read as text (`sql.consent_query`) as `user_id` and the two consents; a
    consent that does not parse is null."""
    text = pl.DataFrame(rows, schema=dict.fromkeys(CONSENT_COLUMNS, pl.String), orient="row")
    return typed(text, CONSENT_READ_SCHEMA).rename({"id": "user_id"})


# The fingerprint of a day without feedback rows; any other day's is "<rows>:<digest>". Exports carry
# these values (`fingerprint.FINGERPRINT_METADATA`): a change to them would re-export every day.
EMPTY_FINGERPRINT = "0"


def fingerprint_value(rows: int, digest: str | None) -> str:
    return EMPTY_FINGERPRINT if rows == 0 or digest is None else f"{rows}:{digest}"


def fingerprints_from_digests(rows: Iterable[tuple[str, int, str | None]]) -> dict[str, str]:
    """PostgreSQL's (day, row count, digest) rows as each day's fingerprint."""
    return {str(day): fingerprint_value(int(count), digest) for day, count, digest in rows}


def fingerprints_from_texts(texts: pl.DataFrame) -> dict[str, str]:
    """SQLite's (day, row_text) rows as each day's fingerprint: the count and the md5 of the texts
    in byte order, joined by newlines (as PostgreSQL's "C" collation orders them)."""
    per_day = texts.group_by("day").agg(
        pl.len().alias("rows"), pl.col("row_text").sort().str.join("\n").alias("joined")
    )
    return {
        day: fingerprint_value(rows, hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest())
        for day, rows, joined in per_day.iter_rows()
    }


def fingerprints_of(days: Sequence[dt.date], found: Mapping[str, str]) -> dict[str, str]:
    """Each of `days` (YYYY-MM-DD), in order, with its fingerprint in `found`: a day the query returned
    nothing for has no rows."""
    return {day.isoformat(): found.get(day.isoformat(), EMPTY_FINGERPRINT) for day in sorted(set(days))}
