"""Reading the app's feedback tables (docs/contract.md, section 1) for a window of days.

Each table is read on its own, only the columns `schemas.READS` names, only the rows the window
needs (feedback through the created_at index, dimension rows through a semi-join on the window's
ids), and joined in Polars: the four-table SQL join is the slow path (docs/decisions.md, "Reading
the tables separately").

Values come out of the database as text and are typed in Polars with `strict=False`, so a value
the app stored wrongly (a rating that is not a number, an unparseable timestamp) marks its row
`malformed` instead of failing the read. The exception: a PostgreSQL run's feedback rows come in
the database's own types through ADBC where a column's type is the contract's kind
(docs/decisions.md, "Feedback rows through ADBC").
"""

from __future__ import annotations

import datetime as dt
import io
import math
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import adbc_driver_manager
import adbc_driver_manager.dbapi
import nanoarrow
import polars as pl
import psycopg2
import psycopg2.extensions

from feedback_assets.connections import (
    SourceUnreachableError,
    is_transient,
    postgres_arrow_session,
    postgres_connection,
    sqlite_connection,
)
from feedback_assets.files import PARQUET_COMPRESSION, first_line_of
from feedback_assets.fingerprint import read_fingerprints
from feedback_assets.schemas import (
    ANALYSES_SCHEMA,
    ERASURES_SCHEMA,
    FEEDBACK_SCHEMA,
    READS,
    RECORDS_SCHEMA,
    REPEATED_IDS_SCHEMA,
    SOURCE_TABLES,
    USERS_SCHEMA,
    Column,
)
from feedback_assets.settings import SourceLocation
from feedback_assets.storage import Storage
from feedback_assets.transforms import SourceFrames

# The tables and columns a source must have: those the reader reads.
REQUIRED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    table: tuple(read.columns) for table in SOURCE_TABLES for read in READS.values() if read.table == table
}
# The feedback columns as read; `malformed` and `partition` are derived from them.
FEEDBACK_READ_SCHEMA = pl.Schema({k: v for k, v in FEEDBACK_SCHEMA.items() if k not in ("partition", "malformed")})
TRUE_TEXT = ("1", "t", "true")
FALSE_TEXT = ("0", "f", "false")


Result = TypeVar("Result")
# Reads the source rows of a window [start, end) of a run's days.
WindowReader = Callable[[dt.datetime, dt.datetime], SourceFrames]


class SourceSchemaError(ValueError):
    """The source lacks a table or column the contract names."""


@dataclass(frozen=True)
class Dialect:
    """How one driver takes the window's bounds and renders a column as text."""

    name: str
    start: str
    end: str
    # For a driver that hands over typed Arrow columns: the columns it reads in the database's own
    # types; any other column is rendered as text, as for a text read.
    native: frozenset[str] | None = None

    def text(self, alias: str, column: Column) -> str:
        """PostgreSQL renders timestamps in the session's zone, set to UTC on connect; SQLite already
        stores UTC text, and CAST keeps a wrongly typed value readable. A native column is left as is."""
        expression = f"{alias}.{column.name}"
        if self.native is not None and column.name in self.native:
            return expression
        if self.name == "postgresql":
            if column.kind == "timestamp":
                # to_char drops the era: a year BC keeps its mark, so it fails the parse as the
                # native read's range check fails it, rather than passing for a year AD.
                stamp = f"{expression}::timestamptz"
                era = f"CASE WHEN {stamp} < '0001-01-01 00:00:00+00' THEN ' BC' ELSE '' END"
                return f"to_char({stamp}, 'YYYY-MM-DD HH24:MI:SS.US') || {era}"
            if column.kind == "boolean":
                return f"CAST(CAST({expression} AS INTEGER) AS TEXT)"
        return f"CAST({expression} AS TEXT)"


# Each driver's own parameter style: psycopg2 binds pyformat, sqlite3 named parameters. The slices'
# feedback queries on PostgreSQL are bound by psycopg2 too (mogrify), then run through ADBC.
DIALECTS = {
    "postgresql": Dialect("postgresql", "%(start)s", "%(end)s"),
    "sqlite": Dialect("sqlite", ":start", ":end"),
}
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
    return Dialect("postgresql", "%(start)s", "%(end)s", native=native)


@dataclass(frozen=True)
class Query:
    sql: str
    width: int


def _in_window(dialect: Dialect, alias: str) -> str:
    return f"{alias}.created_at >= {dialect.start} AND {alias}.created_at < {dialect.end}"


def _earlier_of_window_pairs(dialect: Dialect) -> str:
    """Feedback rows `f` before the window of the (user, recommendation) pairs the window holds."""
    return (
        f"f.created_at < {dialect.start} AND EXISTS (SELECT 1 FROM recommendation_feedback w "
        f"WHERE {_in_window(dialect, 'w')} AND w.user_id = f.user_id AND w.recommendation_id = f.recommendation_id)"
    )


def _queries(
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

    def window(alias: str) -> str:
        return _in_window(dialect, alias)

    def ids_in_window(column: str) -> str:
        return f"SELECT w.{column} FROM recommendation_feedback w WHERE {window('w')}"

    history = _earlier_of_window_pairs(dialect)
    analysis_ids = ids_in_window("analysis_id")
    if with_history:
        # A pair's user and record are the window's own, so only analyses need the history's ids too.
        analysis_ids += f" UNION SELECT f.analysis_id FROM recommendation_feedback f WHERE {history}"

    def select(name: str, alias: str, rest: str, *extra: str) -> Query:
        selected = [*columns(name, alias), *extra]
        return Query(f"SELECT {', '.join(selected)} {rest}", len(selected))

    def among(condition: str) -> str:
        return "" if whole_dimensions else f" WHERE {condition}"

    queries = {
        # The last column is `is_history`.
        "feedback": select("feedback", "f", f"FROM recommendation_feedback f WHERE {window('f')}", "'0'"),
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


# The query of the read's feedback ids that the table holds more than once (`repeated_ids_query`).
REPEATED_IDS = "repeated_ids"


def repeated_ids_query(dialect: Dialect, with_history: bool) -> Query:
    """The ids of the feedback rows a read takes (the window's, with history also the earlier rows of
    its pairs) that recommendation_feedback holds more than once. Without a key on id the same id can
    sit on two days, only one of them read: every row of it is then ambiguous (docs/contract.md,
    section 5). Only run when no unique index covers id (`_sqlite_id_is_key`, `_postgres_id_is_key`)."""
    feedback_id = dialect.text("d", SOURCE_TABLES["recommendation_feedback"].column("id"))
    read = f"SELECT f.id FROM recommendation_feedback f WHERE {_in_window(dialect, 'f')}"
    if with_history:
        # The history rows' condition as an uncorrelated IN of the window's pairs: SQLite runs the
        # EXISTS form once per earlier row, a scan of the window's rows each time.
        pairs = f"SELECT w.user_id, w.recommendation_id FROM recommendation_feedback w WHERE {_in_window(dialect, 'w')}"
        read += (
            f" UNION SELECT f.id FROM recommendation_feedback f WHERE f.created_at < {dialect.start}"
            f" AND (f.user_id, f.recommendation_id) IN ({pairs})"
        )
    repeated = f"FROM recommendation_feedback d WHERE d.id IN ({read}) GROUP BY d.id HAVING COUNT(*) > 1"
    return Query(f"SELECT {feedback_id} {repeated}", 1)


def _repeated_ids(texts: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """The typed result of the repeated-ids query, if it ran; an id that does not parse is left out
    (its rows are malformed anyway)."""
    if REPEATED_IDS not in texts:
        return REPEATED_IDS_SCHEMA.to_frame()
    return _typed(_frame_from_text(REPEATED_IDS_SCHEMA, texts[REPEATED_IDS]), REPEATED_IDS_SCHEMA).drop_nulls()


def _sqlite_id_is_key(db: sqlite3.Connection) -> bool:
    """Whether recommendation_feedback.id alone is its primary key or has a unique index (not a
    partial one), so that no id can occur twice."""
    table = READS["feedback"].table
    key = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")') if row[5]]
    if key == ["id"]:
        return True
    for _, name, unique, _, partial in db.execute(f'PRAGMA index_list("{table}")'):
        if unique and not partial:
            columns = [row[2] for row in db.execute(f'PRAGMA index_info("{name}")')]
            if columns == ["id"]:
                return True
    return False


# A valid, non-partial unique index (a primary key has one) on recommendation_feedback.id alone.
POSTGRES_ID_IS_KEY = (
    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    "AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass('recommendation_feedback') AND i.indisunique "
    "AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL AND a.attname = 'id')"
)


def _postgres_id_is_key(session: psycopg2.extensions.connection) -> bool:
    with session.cursor() as cur:
        cur.execute(POSTGRES_ID_IS_KEY)
        row = cur.fetchone()
    return bool(row and row[0])


def _window_bounds(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    return {
        "start": start.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "end": end.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }


def _parse_bool(text: pl.Expr) -> pl.Expr:
    lowered = text.str.strip_chars().str.to_lowercase()
    return pl.when(lowered.is_in(TRUE_TEXT)).then(True).when(lowered.is_in(FALSE_TEXT)).then(False).otherwise(None)


def _parse_timestamp(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars().str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us", time_zone="UTC")


# The times a text read parses (years 1 to 9999), in microseconds since 1970.
READABLE_MICROSECONDS = (
    int((dt.datetime(1, 1, 1) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000,
    int((dt.datetime(9999, 12, 31, 23, 59, 59) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000 + 999_999,
)


def _typing(schema: pl.Schema, read: pl.Schema | None = None) -> list[pl.Expr]:
    """Casts of the columns as `read` (text, unless said otherwise) to the schema; a value that does
    not parse becomes null. A column the database typed itself (`native_postgresql`: only of the
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
            casts.append(_parse_bool(column).alias(name))
        elif isinstance(dtype, pl.Datetime):
            casts.append(_parse_timestamp(column).alias(name))
        elif dtype == pl.String:
            casts.append(column.alias(name))
        else:
            casts.append(column.str.strip_chars().cast(dtype, strict=False).alias(name))
    return casts


def _typed(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return frame.select(_typing(schema, frame.schema))


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
    typed = _typed(text, FEEDBACK_READ_SCHEMA)
    failed = [
        text[name].is_not_null() & typed[name].is_null()
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
    is_history = typed["is_history"].fill_null(False)
    parsed_day = typed["created_at"].dt.date()
    # A timestamp the database typed itself was compared as a time, so its day is the day read for.
    read_for = (
        day_read_for(text["created_at"].fill_null(""), days) if text["created_at"].dtype == pl.String else parsed_day
    )
    day = pl.select(pl.when(is_history).then(parsed_day).otherwise(read_for)).to_series()
    return typed.with_columns(
        malformed=pl.any_horizontal(failed) | required_missing | (parsed_day != day).fill_null(False),
        is_history=is_history,
        partition=day,
    )


# The queries that read feedback rows: the window's, and with history the earlier rows of its pairs.
FEEDBACK_QUERIES = ("feedback", "history")


def feedback_queries(queries: Mapping[str, Query]) -> dict[str, Query]:
    return {name: query for name, query in queries.items() if name in FEEDBACK_QUERIES}


def typed_feedback(texts: Mapping[str, pl.DataFrame], start: dt.datetime, end: dt.datetime) -> pl.DataFrame:
    """The feedback rows (window and history) of one read of [start, end), typed."""
    read = pl.concat([texts[name] for name in FEEDBACK_QUERIES if name in texts])
    return type_feedback(_frame_from_text(FEEDBACK_READ_SCHEMA, read), window_days(start, end))


def _frame_from_text(schema: pl.Schema, text: pl.DataFrame) -> pl.DataFrame:
    return text.rename(dict(zip(text.columns, schema.names(), strict=True)))


# What withdrawal reads of a user (`FeedbackSource.read_user_consent`), and how many ids one query
# names: SQLite binds at most 32,766 parameters.
CONSENT_COLUMNS = ("id", "ml_training_consent", "image_sharing_consent")
CONSENT_READ_SCHEMA = pl.Schema(
    {"id": pl.Int64(), "ml_training_consent": pl.Boolean(), "image_sharing_consent": pl.Boolean()}
)
CONSENT_IDS_PER_QUERY = 10_000


# The waits between tries after a transient fault: doubling from 1 s, at most 15 s, until the budget
# (FEEDBACK_SOURCE_RETRY_SECONDS) is spent.
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 15.0


class FeedbackSource:
    """The source database for one run: check its shape, then read windows of feedback.

    Each read is tried again after a transient fault (`connections.is_transient`: a refused or
    dropped connection, a server starting up or shutting down, too many connections, a
    serialization failure) for up to `retry_seconds` from the first fault, reporting every fault to
    `log`; a read has no side effect, so trying it again is safe. Past the budget, or on any other
    fault, the error goes up.
    """

    def __init__(
        self,
        location: SourceLocation,
        include_image_urls: bool,
        *,
        retry_seconds: int = 120,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.location = location
        self.include_image_urls = include_image_urls
        self.retry_seconds = retry_seconds
        self.log = log or (lambda message: None)
        self._id_is_key: bool | None = None

    def _retrying(self, read: Callable[[], Result]) -> Result:
        first_fault: float | None = None
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                return read()
            except (SourceUnreachableError, psycopg2.Error, adbc_driver_manager.Error, sqlite3.Error) as exc:
                if not is_transient(exc):
                    raise
                first_fault = time.monotonic() if first_fault is None else first_fault
                waited = time.monotonic() - first_fault
                left = self.retry_seconds - waited
                fault = str(exc) if isinstance(exc, SourceUnreachableError) else first_line_of(exc)
                if left <= 0:
                    raise SourceUnreachableError(
                        f"{fault} (the {self.location.describe()} was unreachable for {waited:.0f} s, "
                        f"FEEDBACK_SOURCE_RETRY_SECONDS={self.retry_seconds}); the run wrote nothing for the days "
                        "it could not read: run them again once the database is back"
                    ) from None
                wait = min(pause, left)
                self.log(
                    f"reading the {self.location.describe()} failed: {fault}; trying again in {wait:.0f} s "
                    f"({left:.0f} s of FEEDBACK_SOURCE_RETRY_SECONDS={self.retry_seconds} left)"
                )
                time.sleep(wait)
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

    def check_schema(self) -> None:
        """Fail with the missing table or column named, before anything is read."""
        present = self._retrying(self._columns)
        for table, columns in REQUIRED_COLUMNS.items():
            if table not in present:
                raise SourceSchemaError(f"the source ({self.location.describe()}) has no table {table!r}")
            missing = [c for c in columns if c not in present[table]]
            if missing:
                raise SourceSchemaError(
                    f"the source ({self.location.describe()}) table {table!r} lacks column(s) {', '.join(missing)}"
                )

    def read_window(self, start: dt.datetime, end: dt.datetime, *, with_history: bool) -> SourceFrames:
        """Feedback created in [start, end) UTC, the dimension rows it refers to, and with
        `with_history` the earlier feedback rows of the same (user, recommendation) pairs."""
        dialect = DIALECTS[self.location.dialect]
        queries = _queries(dialect, with_history, self.include_image_urls)
        if not self.id_is_key():
            queries[REPEATED_IDS] = repeated_ids_query(dialect, with_history)
        texts = self._retrying(lambda: self._run(queries, _window_bounds(start, end)))
        return SourceFrames(
            feedback=typed_feedback(texts, start, end),
            users=_typed(_frame_from_text(USERS_SCHEMA, texts["users"]), USERS_SCHEMA),
            analyses=_typed(_frame_from_text(ANALYSES_SCHEMA, texts["analyses"]), ANALYSES_SCHEMA),
            records=_typed(_frame_from_text(RECORDS_SCHEMA, texts["records"]), RECORDS_SCHEMA),
            erasures=_typed(_frame_from_text(ERASURES_SCHEMA, texts["erasures"]), ERASURES_SCHEMA),
            repeated_ids=_repeated_ids(texts),
        )

    def id_is_key(self) -> bool:
        """Whether the source's feedback ids are a key (no id can occur twice), looked up once."""
        if self._id_is_key is None:
            self._id_is_key = self._retrying(self._look_up_id_key)
        return self._id_is_key

    def _look_up_id_key(self) -> bool:
        if self.location.dialect == "postgresql":
            with postgres_connection(self.location) as conn:
                return _postgres_id_is_key(conn)
        with sqlite_connection(self.location) as db:
            return _sqlite_id_is_key(db)

    @contextmanager
    def reading_run(
        self, start: dt.datetime, end: dt.datetime, *, with_history: bool, scratch_root: Storage
    ) -> Iterator[WindowReader]:
        """A reader of windows within [start, end), one run's whole range, for a run that reads it a
        slice at a time. On PostgreSQL every slice is read from one snapshot and the dimension
        tables are read once for the run (`_RunSnapshot`); SQLite reads each window on its own."""
        if self.location.dialect != "postgresql":
            yield lambda first, last: self.read_window(first, last, with_history=with_history)
            return
        with scratch_root.scratch(self.log) as scratch:
            run = _RunSnapshot(self, start, end, with_history=with_history, scratch=scratch)
            try:
                yield run.read
            finally:
                run.close()

    def fingerprints(self, days: Sequence[dt.date]) -> dict[str, str]:
        """Each day's fingerprint (`fingerprint.py`), tried again after transient faults like a read."""
        return self._retrying(lambda: read_fingerprints(self.location, days))

    def read_erasure_requests(self) -> pl.Series:
        """Every user id in erasure_requests (the erasure job removes them from what was exported);
        null for each distinct stored value that does not read as an id."""
        user_id = DIALECTS[self.location.dialect].text("e", SOURCE_TABLES["erasure_requests"].column("user_id"))
        query = Query(f"SELECT DISTINCT {user_id} FROM erasure_requests e", 1)
        text = self._retrying(lambda: self._run({"erasures": query}, {}))["erasures"]
        return _typed(_frame_from_text(ERASURES_SCHEMA, text), ERASURES_SCHEMA)["user_id"]

    def read_user_consent(self, user_ids: pl.Series) -> pl.DataFrame:
        """The `users` rows of `user_ids` (withdrawal looks up the users the stored days hold):
        `user_id`, `ml_training_consent`, `image_sharing_consent`, one row per row found, so an id
        that occurs twice comes out twice. A consent that does not parse is null."""
        dialect = DIALECTS[self.location.dialect]
        users = SOURCE_TABLES["users"]
        columns = ", ".join(dialect.text("u", users.column(name)) for name in CONSENT_COLUMNS)
        ids = [int(i) for i in user_ids.drop_nulls().unique().sort().to_list()]
        chunks = [ids[i : i + CONSENT_IDS_PER_QUERY] for i in range(0, len(ids), CONSENT_IDS_PER_QUERY)]

        def read() -> list[tuple[str | None, ...]]:
            if self.location.dialect == "postgresql":
                with postgres_connection(self.location) as conn:
                    _begin_read(conn)
                    with conn.cursor() as cur:
                        rows = []
                        for chunk in chunks:
                            cur.execute(f"SELECT {columns} FROM users u WHERE u.id = ANY(%(ids)s)", {"ids": chunk})
                            rows += cur.fetchall()
                    conn.rollback()
                return rows
            with sqlite_connection(self.location) as db:
                db.text_factory = lambda raw: raw.decode("utf-8", "replace")
                return [
                    row
                    for chunk in chunks
                    for row in db.execute(
                        f"SELECT {columns} FROM users u WHERE u.id IN ({', '.join('?' * len(chunk))})", chunk
                    )
                ]

        rows = self._retrying(read) if ids else []
        text = pl.DataFrame(rows, schema=dict.fromkeys(CONSENT_COLUMNS, pl.String), orient="row")
        return _typed(text, CONSENT_READ_SCHEMA).rename({"id": "user_id"})

    def _columns(self) -> dict[str, set[str]]:
        if self.location.dialect == "postgresql":
            with postgres_connection(self.location) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = ANY(current_schemas(false))"
                )
                rows = cur.fetchall()
        else:
            with sqlite_connection(self.location) as db:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
                rows = [(t, r[1]) for t in tables for r in db.execute(f'PRAGMA table_info("{t}")')]
        present: dict[str, set[str]] = {}
        for table, column in rows:
            present.setdefault(table, set()).add(column)
        return present

    def _run(self, queries: Mapping[str, Query], bounds: Mapping[str, str]) -> dict[str, pl.DataFrame]:
        """Each query's rows as a frame of text columns c0, c1, ..., all read in one transaction."""
        if self.location.dialect == "postgresql":
            return self._run_postgres(queries, bounds)
        return self._run_sqlite(queries, bounds)

    def _run_postgres(self, queries: Mapping[str, Query], bounds: Mapping[str, str]) -> dict[str, pl.DataFrame]:
        parameters = {name: f"{value}+00" for name, value in bounds.items()}
        groups = [[name for name in group if name in queries] for group in SESSION_GROUPS]
        with postgres_connection(self.location) as leader, postgres_connection(self.location) as follower:
            snapshot = _begin_read(leader, share=True)
            _begin_read(follower, snapshot=snapshot)
            # The server turns rows into text on one core per session: two sessions, two cores.
            with ThreadPoolExecutor(max_workers=2) as pool:
                parts = list(
                    pool.map(
                        lambda session, names: _copy_out(session, {n: queries[n] for n in names}, parameters),
                        (leader, follower),
                        groups,
                    )
                )
            leader.rollback()
            follower.rollback()
        return {name: frame for part in parts for name, frame in part.items()}

    def _run_sqlite(self, queries: Mapping[str, Query], bounds: Mapping[str, str]) -> dict[str, pl.DataFrame]:
        out: dict[str, pl.DataFrame] = {}
        with sqlite_connection(self.location) as conn:
            # The app may have stored bytes that are not UTF-8; they must not stop the read.
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            conn.execute("BEGIN")
            for name, query in queries.items():
                rows = conn.execute(query.sql, dict(bounds)).fetchall()
                out[name] = pl.DataFrame(
                    rows, schema=dict.fromkeys((f"c{i}" for i in range(query.width)), pl.String), orient="row"
                )
            conn.rollback()
        return out


# The queries split in two groups of about equal cost (measured on two months of the benchmark
# source), one per session.
SESSION_GROUPS = (("feedback", "records", "history", REPEATED_IDS), ("analyses", "users", "erasures"))


def _begin_read(
    conn: psycopg2.extensions.connection, *, share: bool = False, snapshot: str | None = None
) -> str | None:
    """Open a read-only REPEATABLE READ transaction; with `share`, return its snapshot's id for another
    session to join (`snapshot`), so that every table is read from one consistent snapshot."""
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with conn.cursor() as cur:
        if snapshot is not None:
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))
        # With the default random_page_cost (4, tuned for spinning disks) the planner seq-scans
        # the millions of analyses and records to find a day's few thousand ids: 1.7 s against
        # 70 ms through the primary key (docs/decisions.md, "Planner cost on the source").
        cur.execute("SET LOCAL random_page_cost = 1.1")
        if share:
            cur.execute("SELECT pg_export_snapshot()")
            row = cur.fetchone()
            return str(row[0]) if row else None
    return None


def _copy_out(
    conn: psycopg2.extensions.connection, queries: Mapping[str, Query], parameters: Mapping[str, str]
) -> dict[str, pl.DataFrame]:
    out: dict[str, pl.DataFrame] = {}
    with conn.cursor() as cur:
        for name, query in queries.items():
            # COPY takes no bind parameters; mogrify binds them client-side, quoted by psycopg2.
            statement = cur.mogrify(query.sql, parameters).decode()
            buffer = io.BytesIO()
            cur.copy_expert(f"COPY ({statement}) TO STDOUT WITH (FORMAT csv)", buffer)
            out[name] = _read_text_csv(buffer.getvalue(), query.width)
    return out


@dataclass(frozen=True)
class _Sessions:
    """A run's three sessions on one snapshot: `leader` exports it and binds the queries' parameters;
    `arrow` and `second` read the dimension tables in their own types, each on its own core on the
    server, then `arrow` the slices' feedback rows."""

    leader: psycopg2.extensions.connection
    arrow: adbc_driver_manager.dbapi.Connection
    second: adbc_driver_manager.dbapi.Connection


def _column_types(session: psycopg2.extensions.connection, table: str) -> dict[str, str]:
    with session.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ANY(current_schemas(false)) AND table_name = %s",
            (table,),
        )
        return {str(name): str(kind) for name, kind in cur.fetchall()}


def native_feedback_queries(
    session: psycopg2.extensions.connection, with_history: bool, include_image_urls: bool
) -> dict[str, Query]:
    """The feedback queries for the Arrow session, for the feedback table's column types as they are."""
    types = _column_types(session, READS["feedback"].table)
    return feedback_queries(_queries(native_postgresql(types), with_history, include_image_urls))


def native_dimension_queries(
    session: psycopg2.extensions.connection, with_history: bool, include_image_urls: bool, *, whole_dimensions: bool
) -> dict[str, Query]:
    """The dimension queries for an Arrow session, each for its own table's column types."""
    return {
        name: _queries(
            native_postgresql(_column_types(session, READS[name].table), name),
            with_history,
            include_image_urls,
            whole_dimensions=whole_dimensions,
        )[name]
        for name in DIMENSIONS
    }


def _begin_arrow_read(session: adbc_driver_manager.dbapi.Connection, snapshot: str) -> None:
    """`_begin_read` for the Arrow session, which runs in autocommit and so opens its transaction itself."""
    with session.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The id is the server's own (pg_export_snapshot), never input; ADBC binds no parameters here.
        cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        cur.execute("SET LOCAL random_page_cost = 1.1")


def _fetch_arrow(
    binder: psycopg2.extensions.connection,
    arrow: adbc_driver_manager.dbapi.Connection,
    queries: Mapping[str, Query],
    parameters: Mapping[str, str],
) -> dict[str, pl.DataFrame]:
    """Each query's rows as typed columns c0, c1, ...: bound by psycopg2 (COPY, which ADBC turns each
    query into, takes no parameters), run through the Arrow session."""
    out: dict[str, pl.DataFrame] = {}
    with binder.cursor() as bind:
        for name, query in queries.items():
            batches = list(_arrow_batches(arrow, bind.mogrify(query.sql, parameters).decode()))
            frame = pl.concat(batches, rechunk=False)
            out[name] = frame.rename(dict(zip(frame.columns, (f"c{i}" for i in range(query.width)), strict=True)))
    return out


def _arrow_batches(arrow: adbc_driver_manager.dbapi.Connection, sql: str) -> Iterator[pl.DataFrame]:
    """The rows of `sql` through the Arrow session, a batch at a time, at least one (empty, typed).

    Batch by batch through nanoarrow, because Polars reads a C stream only whole. A batch that fails
    arrives as nanoarrow's RuntimeError, which says nothing of its cause; the session is asked then:
    if it is gone the connection was lost, a SourceUnreachableError in the batch's words (transient,
    so the read is tried again), else the batch's own error goes up.
    """
    with arrow.cursor() as cur:
        cur.execute(sql)
        stream = nanoarrow.ArrayStream(cur.fetch_arrow())
        empty = True
        try:
            for batch in stream.iter_chunks():
                empty = False
                yield pl.DataFrame(batch)
        except RuntimeError as exc:
            if _lost(arrow):
                # libpq's words after nanoarrow's and ADBC's bracketed prefixes.
                raise SourceUnreachableError(first_line_of(exc).rpartition("]")[2].lstrip(": ")) from None
            raise
        if empty:
            yield pl.DataFrame(nanoarrow.c_array([], stream.schema))


def _lost(arrow: adbc_driver_manager.dbapi.Connection) -> bool:
    """Whether the Arrow session's connection is gone (a failed read leaves a live one refusing
    commands until its transaction ends, which is not transient)."""
    try:
        with arrow.cursor() as probe:
            probe.execute("SELECT 1")
            probe.fetch_arrow()
    except adbc_driver_manager.Error as exc:
        return is_transient(exc)
    return False


def _read_text_csv(data: bytes, width: int) -> pl.DataFrame:
    schema = {f"c{i}": pl.String for i in range(width)}
    if not data:
        return pl.DataFrame(schema=schema)
    return pl.read_csv(io.BytesIO(data), has_header=False, schema=schema)


# What the per-slice reads take from the dimension files, and on which column.
DIMENSIONS: Mapping[str, tuple[pl.Schema, str]] = {
    "users": (USERS_SCHEMA, "user_id"),
    "analyses": (ANALYSES_SCHEMA, "analysis_id"),
    "records": (RECORDS_SCHEMA, "recommendation_id"),
    "erasures": (ERASURES_SCHEMA, "user_id"),
}
# The dimension queries in two groups of about equal cost, one per session: records alone is about
# as costly as the other three together (2025 through ADBC, each alone: 3.6 s against 3.4 s).
DIMENSION_GROUPS = (("records",), ("analyses", "users", "erasures"))


class _RunSnapshot:
    """One run's reads of a PostgreSQL source: every slice from one snapshot, the dimension tables
    read once for the run's whole window.

    Read per slice, PostgreSQL finds a slice's dimension rows with a hash semi-join over a scan of
    each whole table, so ten slices scanned `recommendation_records` ten times (docs/benchmarks.md,
    lesson 9). Here the run's dimension rows are copied once, straight to files in a private scratch
    directory and turned into Parquet there without passing through memory whole; each slice reads
    its feedback rows in the same snapshot and takes its dimension rows from those files. The
    snapshot stays open for the run. After a fault the next try opens a new one and reads the
    dimension tables again, so a slice's rows always come from one snapshot.
    """

    def __init__(
        self, source: FeedbackSource, start: dt.datetime, end: dt.datetime, *, with_history: bool, scratch: Path
    ) -> None:
        self.source = source
        self.with_history = with_history
        # Made when the snapshot opens, from the feedback table's column types (`native_postgresql`).
        self.feedback_queries: dict[str, Query] = {}
        self.run_start, self.run_end = start, end
        self.run_bounds = _postgres_bounds(start, end)
        self.scratch = scratch
        # The run's feedback ids that the table holds twice, found when the snapshot opens.
        self.repeated_ids = REPEATED_IDS_SCHEMA.to_frame()
        self._sessions: _Sessions | None = None
        self._stack = ExitStack()

    def read(self, start: dt.datetime, end: dt.datetime) -> SourceFrames:
        return self.source._retrying(lambda: self._read(start, end))

    def close(self) -> None:
        self._sessions = None
        self._stack.close()
        self._stack = ExitStack()

    def _read(self, start: dt.datetime, end: dt.datetime) -> SourceFrames:
        try:
            sessions = self._sessions or self._open()
            texts = _fetch_arrow(sessions.leader, sessions.arrow, self.feedback_queries, _postgres_bounds(start, end))
        except BaseException:
            self.close()
            raise
        typed = typed_feedback(texts, start, end)
        window = typed.filter(~pl.col("is_history"))
        ids = {
            "users": window.select("user_id"),
            "analyses": typed.select("analysis_id"),
            "records": window.select("recommendation_id"),
            "erasures": window.select("user_id"),
        }
        # Not made unique first: a semi-join keeps each dimension row once however often its id
        # appears, and the uniques doubled the slice's lookups (docs/benchmarks.md, lesson 19).
        dimensions = {name: self._rows_of(name, frame) for name, frame in ids.items()}
        return SourceFrames(feedback=typed, **dimensions, repeated_ids=self.repeated_ids)

    def _open(self) -> _Sessions:
        leader = self._stack.enter_context(postgres_connection(self.source.location))
        arrow = self._stack.enter_context(postgres_arrow_session(self.source.location))
        second = self._stack.enter_context(postgres_arrow_session(self.source.location))
        snapshot = _begin_read(leader, share=True)
        if snapshot is None:
            raise RuntimeError("PostgreSQL exported no snapshot")
        _begin_arrow_read(arrow, snapshot)
        _begin_arrow_read(second, snapshot)
        self.feedback_queries = native_feedback_queries(leader, self.with_history, self.source.include_image_urls)
        queries = native_dimension_queries(
            leader,
            self.with_history,
            self.source.include_image_urls,
            whole_dimensions=_covers_most_feedback(leader, self.run_start, self.run_end),
        )
        with leader.cursor() as bind:
            statements = {name: bind.mogrify(query.sql, self.run_bounds).decode() for name, query in queries.items()}
        # The server sends each session's rows on one core: two sessions, two cores.
        with ThreadPoolExecutor(max_workers=2) as pool:
            copies = pool.map(
                lambda session, names: self._copy_dimensions(session, names, statements),
                (arrow, second),
                DIMENSION_GROUPS,
            )
            # Meanwhile, on the leader: once for the run's whole window, which holds every slice's ids.
            self.repeated_ids = self._repeated_ids(leader)
            list(copies)
        self._sessions = _Sessions(leader, arrow, second)
        return self._sessions

    def _repeated_ids(self, leader: psycopg2.extensions.connection) -> pl.DataFrame:
        if _postgres_id_is_key(leader):
            return REPEATED_IDS_SCHEMA.to_frame()
        query = repeated_ids_query(DIALECTS["postgresql"], self.with_history)
        return _repeated_ids(_copy_out(leader, {REPEATED_IDS: query}, self.run_bounds))

    def _copy_dimensions(
        self, session: adbc_driver_manager.dbapi.Connection, names: Sequence[str], statements: Mapping[str, str]
    ) -> None:
        """Each dimension table's rows, a batch at a time from the server into a Parquet file of the
        scratch directory: never a whole table in memory."""
        for name in names:
            schema, _ = DIMENSIONS[name]
            directory = self._path(name)
            # A try after a fault starts over from a new snapshot.
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            for number, batch in enumerate(_arrow_batches(session, statements[name])):
                typed = _typed(_frame_from_text(schema, batch), schema)
                # Scratch read whole by every slice: no column statistics, LZ4 as for intermediates.
                typed.write_parquet(
                    directory / f"{number:06d}.parquet", compression=PARQUET_COMPRESSION, statistics=False
                )

    def _path(self, name: str) -> Path:
        return self.scratch / name

    def _rows_of(self, name: str, ids: pl.DataFrame) -> pl.DataFrame:
        """The run's rows of one dimension table that the slice's `ids` refer to."""
        _, key = DIMENSIONS[name]
        batches = sorted(self._path(name).glob("*.parquet"))
        rows = pl.scan_parquet(batches).join(ids.lazy(), on=key, how="semi")
        return rows.collect(engine="streaming")


# Reading a dimension table whole costs about half of finding a year's ids in it (records over 2025:
# 2.7 s against 5.9 s, the semi-join hashing millions of ids), and far more than finding a day's.
WHOLE_DIMENSIONS_SHARE = 0.5


def _covers_most_feedback(session: psycopg2.extensions.connection, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether [start, end) spans at least WHOLE_DIMENSIONS_SHARE of the time the feedback covers,
    from the two ends of the created_at index: a cheap stand-in for the share of rows. As seconds
    since 1970, so that a column without time zone, or an infinity the app stored, cannot stop it."""
    with session.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM min(created_at))::float8, extract(epoch FROM max(created_at))::float8 "
            "FROM recommendation_feedback"
        )
        row = cur.fetchone()
    if row is None or row[0] is None or row[1] is None:
        return False
    first, last = float(row[0]), float(row[1])
    if not (math.isfinite(first) and math.isfinite(last)) or last <= first:
        return False
    covered = min(end.timestamp(), last) - max(start.timestamp(), first)
    return covered >= WHOLE_DIMENSIONS_SHARE * (last - first)


def _postgres_bounds(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    return {name: f"{value}+00" for name, value in _window_bounds(start, end).items()}
