"""The SQL the readers send, built as strings: pure, so each query is tested as text.

Each table is read on its own, only the columns `schemas.READS` names, only the rows the window
needs (feedback through the created_at index, dimension rows through a semi-join on the window's
ids), and joined in Polars: the four-table SQL join is the slow path (docs/decisions.md, "Reading
the tables separately"). A query's values come out as text (typed in Polars, `parsing.py`), except
the columns a native PostgreSQL dialect reads in the database's own types (docs/decisions.md,
"Feedback rows through ADBC"). The fingerprint's query, one statement over the watched days, is last.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from feedback_assets.schemas import READS, SOURCE_TABLES, Column


@dataclass(frozen=True)
class Dialect:
    """How one driver takes the window's bounds, renders a column as text and fingerprints a day.
    SQLite already stores UTC text, and CAST keeps a wrongly typed value readable."""

    name: str
    start: str
    end: str
    # For a driver that hands over typed Arrow columns: the columns it reads in the database's own
    # types; any other column is rendered as text, as for a text read.
    native: frozenset[str] = frozenset()
    # The character between a fingerprinted row's values (`fingerprint_row`): no exported value holds it.
    separator: ClassVar[str] = "char(31)"

    def text(self, alias: str, column: Column) -> str:
        """The column as the read takes it: as it is when native, else as text."""
        expression = f"{alias}.{column.name}"
        if column.name in self.native:
            return expression
        return self.as_text(expression, column)

    def as_text(self, expression: str, column: Column) -> str:
        return f"CAST({expression} AS TEXT)"

    def midnight(self, day: dt.date) -> str:
        """A day's 00:00 UTC as a literal the created_at index compares with."""
        return f"'{day.isoformat()} 00:00:00'"

    def day_fingerprint(self, day: dt.date, rows: str) -> str:
        """The fingerprint query of one day whose row texts `rows` selects. SQLite 3.40 has no hash
        and no ordered aggregate: it returns the texts, and the reader digests them
        (`parsing.fingerprints_from_texts`)."""
        return f"SELECT '{day.isoformat()}' AS day, x.row_text FROM ({rows}) x"


class PostgresDialect(Dialect):
    """PostgreSQL renders timestamps in the session's zone, set to UTC on connect, and booleans as
    't'/'f' unless cast to a number first."""

    separator: ClassVar[str] = "chr(31)"

    def as_text(self, expression: str, column: Column) -> str:
        if column.kind == "timestamp":
            # to_char drops the era: a year BC keeps its mark, so it fails the parse as the
            # native read's range check fails it, rather than passing for a year AD.
            stamp = f"{expression}::timestamptz"
            era = f"CASE WHEN {stamp} < '0001-01-01 00:00:00+00' THEN ' BC' ELSE '' END"
            return f"to_char({stamp}, 'YYYY-MM-DD HH24:MI:SS.US') || {era}"
        if column.kind == "boolean":
            return f"CAST(CAST({expression} AS INTEGER) AS TEXT)"
        return super().as_text(expression, column)

    def midnight(self, day: dt.date) -> str:
        """Untyped and marked UTC: PostgreSQL takes it in the column's own type, so the created_at
        index serves timestamp and timestamptz alike."""
        return f"'{day.isoformat()} 00:00:00+00'"

    def day_fingerprint(self, day: dt.date, rows: str) -> str:
        """The day's row count and digest, made by the server: the sum of each row's md5 (its first
        60 bits), the same for the same rows in any order, without sorting or joining a day's texts
        (an ordered md5 of them spilled to disk)."""
        return (
            f"SELECT '{day.isoformat()}' AS day, count(*) AS rows, "
            "sum(('x' || substr(md5(x.row_text), 1, 15))::bit(60)::bigint)::text AS digest "
            f"FROM ({rows}) x"
        )


# Each driver's own parameter style: psycopg2 binds pyformat, sqlite3 named parameters. The slices'
# feedback queries on PostgreSQL are bound by psycopg2 too (mogrify), then run through ADBC.
POSTGRESQL = PostgresDialect("postgresql", "%(start)s", "%(end)s")
SQLITE = Dialect("sqlite", ":start", ":end")
# The PostgreSQL types a native read takes as they are, per kind of contract column; a column of any
# other type (a numeric rating, a char(n) id) is rendered as text on the server, as the text reads do.
NATIVE_TYPES: Mapping[str, frozenset[str]] = {
    "timestamp": frozenset({"timestamp with time zone", "timestamp without time zone"}),
    "bigint": frozenset({"smallint", "integer", "bigint"}),
    "integer": frozenset({"smallint", "integer", "bigint"}),
    "smallint": frozenset({"smallint", "integer", "bigint"}),
    "boolean": frozenset({"boolean"}),
    "text": frozenset({"text", "character varying"}),
}


def native_postgresql(types: Mapping[str, str], read: str = "feedback") -> Dialect:
    """The dialect of a run's Arrow reads of `read` (a frame of `schemas.READS`), given its table's
    column types."""
    native = frozenset(
        column.name for column in READS[read].source_columns if types.get(column.name) in NATIVE_TYPES[column.kind]
    )
    return PostgresDialect(POSTGRESQL.name, POSTGRESQL.start, POSTGRESQL.end, native=native)


@dataclass(frozen=True)
class Query:
    sql: str
    width: int


def in_window(dialect: Dialect, alias: str) -> str:
    return f"{alias}.created_at >= {dialect.start} AND {alias}.created_at < {dialect.end}"


def earlier_of_window_pairs(dialect: Dialect) -> str:
    """Feedback rows `f` before the window of the (user, recommendation) pairs the window holds."""
    return (
        f"f.created_at < {dialect.start} AND EXISTS (SELECT 1 FROM recommendation_feedback w "
        f"WHERE {in_window(dialect, 'w')} AND w.user_id = f.user_id AND w.recommendation_id = f.recommendation_id)"
    )


def window_queries(
    dialect: Dialect, with_history: bool, include_image_urls: bool, *, whole_dimensions: bool = False
) -> dict[str, Query]:
    """One SELECT per frame of `schemas.READS` (and the history rows), with the window as parameters.
    With `whole_dimensions` the dimension tables are read whole rather than for the window's ids."""

    def columns(name: str, alias: str) -> list[str]:
        return [
            # Typed, so that a native read gets a text column of nulls.
            "CAST(NULL AS TEXT)"
            if column.name == "image_url" and not include_image_urls
            else dialect.text(alias, column)
            for column in READS[name].source_columns
        ]

    def ids_in_window(column: str) -> str:
        return f"SELECT w.{column} FROM recommendation_feedback w WHERE {in_window(dialect, 'w')}"

    history = earlier_of_window_pairs(dialect)
    analysis_ids = ids_in_window("analysis_id")
    if with_history:
        # A pair's user and record are the window's own, so only analyses need the history's ids too.
        analysis_ids += f" UNION SELECT f.analysis_id FROM recommendation_feedback f WHERE {history}"

    def select(name: str, alias: str, rest: str, *extra: str) -> Query:
        selected = [*columns(name, alias), *extra]
        return Query(f"SELECT {', '.join(selected)} {rest}", len(selected))

    def among(condition: str) -> str:
        return "" if whole_dimensions else f" WHERE {condition}"

    window = in_window(dialect, "f")
    queries = {
        # The last column is `is_history`.
        "feedback": select("feedback", "f", f"FROM recommendation_feedback f WHERE {window}", "'0'"),
        "users": select("users", "u", "FROM users u" + among(f"u.id IN ({ids_in_window('user_id')})")),
        "analyses": select("analyses", "a", "FROM analyses a" + among(f"a.id IN ({analysis_ids})")),
        "records": select(
            "records",
            "r",
            "FROM recommendation_records r" + among(f"r.id IN ({ids_in_window('recommendation_id')})"),
        ),
        "erasures": select(
            "erasures", "e", "FROM erasure_requests e" + among(f"e.user_id IN ({ids_in_window('user_id')})")
        ),
    }
    if with_history:
        queries["history"] = select("feedback", "f", f"FROM recommendation_feedback f WHERE {history}", "'1'")
    return queries


# The queries that read feedback rows: the window's, and with history the earlier rows of its pairs.
FEEDBACK_QUERIES = ("feedback", "history")
# The dimension queries of `window_queries`.
DIMENSION_QUERIES = ("users", "analyses", "records", "erasures")
# The query of the read's feedback ids that the table holds more than once (`repeated_ids_query`).
REPEATED_IDS = "repeated_ids"


def feedback_queries(queries: Mapping[str, Query]) -> dict[str, Query]:
    return {name: query for name, query in queries.items() if name in FEEDBACK_QUERIES}


def repeated_ids_query(dialect: Dialect, with_history: bool) -> Query:
    """The ids of the feedback rows a read takes (the window's, with history also the earlier rows of
    its pairs) that recommendation_feedback holds more than once. Without a key on id the same id can
    sit on two days, only one of them read: every row of it is then ambiguous (docs/contract.md,
    section 5). Only run when no unique index covers id (`sqlite.id_is_key`, `POSTGRES_ID_IS_KEY`)."""
    feedback_id = dialect.text("d", SOURCE_TABLES["recommendation_feedback"].column("id"))
    read = f"SELECT f.id FROM recommendation_feedback f WHERE {in_window(dialect, 'f')}"
    if with_history:
        # The history rows' condition as an uncorrelated IN of the window's pairs: SQLite runs the
        # EXISTS form once per earlier row, a scan of the window's rows each time.
        pairs = f"SELECT w.user_id, w.recommendation_id FROM recommendation_feedback w WHERE {in_window(dialect, 'w')}"
        read += (
            f" UNION SELECT f.id FROM recommendation_feedback f WHERE f.created_at < {dialect.start}"
            f" AND (f.user_id, f.recommendation_id) IN ({pairs})"
        )
    repeated = f"FROM recommendation_feedback d WHERE d.id IN ({read}) GROUP BY d.id HAVING COUNT(*) > 1"
    return Query(f"SELECT {feedback_id} {repeated}", 1)


def erasure_requests_query(dialect: Dialect) -> Query:
    """Every distinct user id in erasure_requests, as text."""
    user_id = dialect.text("e", SOURCE_TABLES["erasure_requests"].column("user_id"))
    return Query(f"SELECT DISTINCT {user_id} FROM erasure_requests e", 1)


# What withdrawal reads of a user (`FeedbackSource.read_user_consent`), and how many ids one query
# names: SQLite binds at most 32,766 parameters.
CONSENT_COLUMNS = ("id", "ml_training_consent", "image_sharing_consent")
CONSENT_IDS_PER_QUERY = 10_000


def consent_query(dialect: Dialect, ids: str) -> str:
    """The users rows whose id satisfies `ids` (the driver's own test of a list of ids), as text."""
    users = SOURCE_TABLES["users"]
    columns = ", ".join(dialect.text("u", users.column(name)) for name in CONSENT_COLUMNS)
    return f"SELECT {columns} FROM users u WHERE {ids}"


def sqlite_consent_query(count: int) -> str:
    return consent_query(SQLITE, f"u.id IN ({', '.join('?' * count)})")


POSTGRES_CONSENT_QUERY = consent_query(POSTGRESQL, "u.id = ANY(%(ids)s)")

# Every table and view of the source with its columns (`FeedbackSource.check_schema`).
SQLITE_TABLES = "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"
POSTGRES_COLUMNS = (
    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ANY(current_schemas(false))"
)
# One table's columns with their types (`native_postgresql`), the table as parameter.
POSTGRES_COLUMN_TYPES = (
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = ANY(current_schemas(false)) AND table_name = %s"
)
# A valid, non-partial unique index (a primary key has one) on recommendation_feedback.id alone.
POSTGRES_ID_IS_KEY = (
    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass('recommendation_feedback') AND i.indisunique "
    "AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'id')"
)
# The two ends of the created_at index, as seconds since 1970, so that a column without time zone, or
# an infinity the app stored, cannot stop the comparison (`covers_most_feedback`).
POSTGRES_FEEDBACK_SPAN = (
    "SELECT extract(epoch FROM min(created_at))::float8, extract(epoch FROM max(created_at))::float8 "
    "FROM recommendation_feedback"
)
# Reading a dimension table whole costs about half of finding a year's ids in it (records over 2025:
# 2.7 s against 5.9 s, the semi-join hashing millions of ids), and far more than finding a day's.
WHOLE_DIMENSIONS_SHARE = 0.5


def covers_most_feedback(span: tuple[float, float] | None, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether [start, end) spans at least WHOLE_DIMENSIONS_SHARE of the time the feedback covers
    (`span`, the two ends of POSTGRES_FEEDBACK_SPAN; none without feedback): a cheap stand-in for the
    share of rows."""
    if span is None:
        return False
    first, last = span
    if not (math.isfinite(first) and math.isfinite(last)) or last <= first:
        return False
    covered = min(end.timestamp(), last) - max(start.timestamp(), first)
    return covered >= WHOLE_DIMENSIONS_SHARE * (last - first)


def window_bounds(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """The window's bounds as SQLite compares them: UTC text."""
    return {
        "start": start.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "end": end.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }


def postgres_bounds(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """The window's bounds as PostgreSQL takes them: UTC text marked as UTC."""
    return {name: f"{value}+00" for name, value in window_bounds(start, end).items()}


# The fingerprint of a day (docs/contract.md, section 7; `fingerprint.py`): its feedback rows as the
# window reads them (created_at from the day's 00:00 UTC to the next day's, through the created_at
# index), each with the columns `schemas.READS` takes of it and of its user, analysis and record.
# Each dimension read joined to the feedback row: (read, alias, the feedback column its id matches).
FINGERPRINT_JOINS = (("users", "u", "user_id"), ("analyses", "a", "analysis_id"), ("records", "r", "recommendation_id"))
# The planner's settings for the PostgreSQL fingerprint's transaction. The default random_page_cost
# (4, for spinning disks) prefers scanning the dimension tables whole to finding a day's few thousand
# ids through their primary keys, as for the reader; a merge or hash join would read a whole
# dimension table for every day; and the 35 days' plan costs enough to be compiled by JIT, which took
# 35 s of a 45 s observation of the benchmark year (docs/benchmarks.md, "One observation of the source").
FINGERPRINT_PLANNER_SETTINGS = (
    "SET LOCAL random_page_cost = 1.1",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL jit = off",
)


def fingerprint_columns() -> list[tuple[str, Column]]:
    """(alias, column) of every source column a day's export reads, feedback first."""
    watched = [("f", column) for column in READS["feedback"].source_columns]
    for read, alias, _ in FINGERPRINT_JOINS:
        watched += [(alias, column) for column in READS[read].source_columns]
    return watched


def fingerprint_row(dialect: Dialect) -> str:
    """One row as text: each value marked present ('v' and its text) or absent ('n'), so that a null
    and an empty or 'n' text differ. Plain CASTs, not `Dialect.text`: the exported days carry digests
    made so, and PostgreSQL's own renderings would move every one of them."""
    values = [f"coalesce('v' || CAST({alias}.{column.name} AS TEXT), 'n')" for alias, column in fingerprint_columns()]
    return f" || {dialect.separator} || ".join(values)


def _fingerprint_rows(day: dt.date, dialect: Dialect) -> str:
    tables = [f"FROM {READS['feedback'].table} f"]
    for read, alias, feedback_column in FINGERPRINT_JOINS:
        tables.append(f"LEFT JOIN {READS[read].table} {alias} ON {alias}.id = f.{feedback_column}")
    window = (
        f"f.created_at >= {dialect.midnight(day)} AND f.created_at < {dialect.midnight(day + dt.timedelta(days=1))}"
    )
    return f"SELECT {fingerprint_row(dialect)} AS row_text {' '.join(tables)} WHERE {window}"


def day_fingerprint_query(day: dt.date, dialect: Dialect) -> str:
    """The fingerprint query of one day: on PostgreSQL its row count and digest, on SQLite its row texts."""
    return dialect.day_fingerprint(day, _fingerprint_rows(day, dialect))


def fingerprint_query(days: Sequence[dt.date], dialect: Dialect) -> str:
    """One statement for all `days`: each day's own index range, never the whole table."""
    # SQLite takes no parenthesised member of a UNION, only subqueries in FROM.
    return " UNION ALL ".join(
        f"SELECT * FROM ({day_fingerprint_query(day, dialect)}) d{number}"
        for number, day in enumerate(sorted(set(days)))
    )
