"""The source's fingerprint per day (docs/contract.md, section 7): a digest of the rows that day's
export reads, to tell which exported days the app changed since.

A day's rows are its feedback rows, as the reader's window for the day takes them (created_at from
the day's 00:00 UTC to the next day's, through the created_at index), each with the columns
`schemas.READS` takes of it and of its user, analysis and recommendation record. The digest is of
the rows in a fixed order, so it changes when a row is added, removed or changed in a column the
export reads, and only then. Columns the export never reads (feedback_text) are not in it.

PostgreSQL builds each day's digest itself (the sum of its rows' md5s); SQLite 3.40 has no hash and
no ordered aggregate, so it returns the day's row texts and the digest is made here, one md5 per day
over the texts sorted and joined by Polars.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence

import polars as pl

from feedback_assets.connections import postgres_connection, sqlite_connection
from feedback_assets.partitions import daily_partitions
from feedback_assets.schemas import READS, Column
from feedback_assets.settings import SourceLocation

# The fingerprint of a day without feedback rows.
EMPTY = "0"
# raw_feedback's metadata of a day: the fingerprint of the rows its export read.
FINGERPRINT_METADATA = "source_fingerprint"
# Each dimension read joined to the feedback row: (read, alias, the feedback column its id matches).
JOINED = (("users", "u", "user_id"), ("analyses", "a", "analysis_id"), ("records", "r", "recommendation_id"))
SEPARATOR = {"postgresql": "chr(31)", "sqlite": "char(31)"}


def watched_days(today: dt.date, lookback_days: int) -> list[dt.date]:
    """The `lookback_days` days that ended before `today` (UTC), from the first partition on."""
    first = daily_partitions.start.date()
    return [day for day in (today - dt.timedelta(days=n) for n in range(lookback_days, 0, -1)) if day >= first]


def watched_columns() -> list[tuple[str, Column]]:
    """(alias, column) of every source column a day's export reads, feedback first."""
    watched = [("f", column) for column in READS["feedback"].source_columns]
    for read, alias, _ in JOINED:
        watched += [(alias, column) for column in READS[read].source_columns]
    return watched


def row_text(dialect: str) -> str:
    """One row as text: each value marked present ('v' and its text) or absent ('n'), so that a null
    and an empty or 'n' text differ, separated by a control character no exported value contains."""
    values = [f"coalesce('v' || CAST({alias}.{column.name} AS TEXT), 'n')" for alias, column in watched_columns()]
    return f" || {SEPARATOR[dialect]} || ".join(values)


def _bound(day: dt.date, dialect: str) -> str:
    """A day's 00:00 UTC as the reader binds it: an untyped literal, which PostgreSQL takes in the
    column's own type, so the created_at index serves timestamp and timestamptz alike."""
    text = f"{day.isoformat()} 00:00:00"
    return f"'{text}+00'" if dialect == "postgresql" else f"'{text}'"


def _rows_of_day(day: dt.date, dialect: str) -> str:
    source = READS["feedback"].table
    tables = [f"FROM {source} f"]
    for read, alias, feedback_column in JOINED:
        tables.append(f"LEFT JOIN {READS[read].table} {alias} ON {alias}.id = f.{feedback_column}")
    window = f"f.created_at >= {_bound(day, dialect)} AND f.created_at < {_bound(day + dt.timedelta(days=1), dialect)}"
    return f"SELECT {row_text(dialect)} AS row_text {' '.join(tables)} WHERE {window}"


def day_query(day: dt.date, dialect: str) -> str:
    """The query of one day: on PostgreSQL its row count and digest, on SQLite its row texts."""
    if dialect == "postgresql":
        # The sum of each row's md5 (its first 60 bits): the same for the same rows in any order,
        # without sorting or joining a day's texts (an ordered md5 of them spilled to disk).
        return (
            f"SELECT '{day.isoformat()}' AS day, count(*) AS rows, "
            "sum(('x' || substr(md5(x.row_text), 1, 15))::bit(60)::bigint)::text AS digest "
            f"FROM ({_rows_of_day(day, dialect)}) x"
        )
    return f"SELECT '{day.isoformat()}' AS day, x.row_text FROM ({_rows_of_day(day, dialect)}) x"


def fingerprint_query(days: Sequence[dt.date], dialect: str) -> str:
    """One statement for all `days`: each day's own index range, never the whole table."""
    if dialect not in SEPARATOR:
        raise ValueError(f"no fingerprint for a {dialect} source")
    # SQLite takes no parenthesised member of a UNION, only subqueries in FROM.
    return " UNION ALL ".join(
        f"SELECT * FROM ({day_query(day, dialect)}) d{number}" for number, day in enumerate(sorted(set(days)))
    )


def _value(rows: int, digest: str | None) -> str:
    return EMPTY if rows == 0 or digest is None else f"{rows}:{digest}"


def fingerprints_from_texts(texts: pl.DataFrame) -> dict[str, str]:
    """SQLite's (day, row_text) rows as each day's fingerprint: the count and the md5 of the texts
    in byte order, joined by newlines (as PostgreSQL's "C" collation orders them)."""
    per_day = texts.group_by("day").agg(
        pl.len().alias("rows"), pl.col("row_text").sort().str.join("\n").alias("joined")
    )
    return {
        day: _value(rows, hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest())
        for day, rows, joined in per_day.iter_rows()
    }


# The planner's settings for the observation's transaction. The default random_page_cost (4, for
# spinning disks) prefers scanning the dimension tables whole to finding a day's few thousand ids
# through their primary keys, as for the reader; a merge or hash join would read a whole dimension
# table for every day; and the 35 days' plan costs enough to be compiled by JIT, which took 35 s of
# a 45 s observation of the benchmark year (docs/benchmarks.md, "One observation of the source").
PLANNER_SETTINGS = (
    "SET LOCAL random_page_cost = 1.1",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL jit = off",
)


def read_fingerprints(location: SourceLocation, days: Sequence[dt.date]) -> dict[str, str]:
    """Each of `days` (YYYY-MM-DD) with its fingerprint, read in one read-only transaction."""
    if not days:
        return {}
    sql = fingerprint_query(days, location.dialect)
    found: Mapping[str, str]
    if location.dialect == "postgresql":
        with postgres_connection(location) as conn:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                for setting in PLANNER_SETTINGS:
                    cur.execute(setting)
                cur.execute(sql)
                found = {str(day): _value(int(rows), digest) for day, rows, digest in cur.fetchall()}
            conn.rollback()
    else:
        with sqlite_connection(location) as conn:
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            rows = conn.execute(sql).fetchall()
        found = fingerprints_from_texts(
            pl.DataFrame(rows, schema={"day": pl.String, "row_text": pl.String}, orient="row")
        )
    return {day.isoformat(): found.get(day.isoformat(), EMPTY) for day in sorted(set(days))}
