"""Reading the app's feedback tables (CONTRACT section 1) for a window of days.

Each table is read on its own, only the columns the export needs, only the rows the window needs
(feedback through the created_at index, dimension rows through a semi-join on the window's ids),
and joined in Polars: FACTS.md measured the four-table SQL join as the slow path.

Values come out of the database as text and are typed in Polars with `strict=False`, so a value
the app stored wrongly (a rating that is not a number, an unparseable timestamp) marks its row
`malformed` instead of failing the read.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence

import polars as pl
from psycopg2 import sql

from feedback_assets.connections import postgres_connection, sqlite_connection
from feedback_assets.settings import SourceLocation
from feedback_assets.transforms import (
    ANALYSES_SCHEMA,
    ERASURES_SCHEMA,
    FEEDBACK_SCHEMA,
    RECORDS_SCHEMA,
    USERS_SCHEMA,
    SourceFrames,
)

FEEDBACK_COLUMNS = (
    "id",
    "user_id",
    "analysis_id",
    "recommendation_id",
    "helpful_rating",
    "product_satisfaction",
    "routine_completion_pct",
    "would_recommend",
    "created_at",
)
REQUIRED_COLUMNS: Mapping[str, Sequence[str]] = {
    "users": ("id", "age", "ml_training_consent", "image_sharing_consent"),
    "analyses": ("id", "conditions", "image_url", "created_at"),
    "recommendation_records": ("id", "rules_applied", "timeframe"),
    "recommendation_feedback": FEEDBACK_COLUMNS,
    "erasure_requests": ("user_id",),
}
# The feedback columns as read; `malformed` and `partition` are derived from them.
FEEDBACK_READ_SCHEMA = pl.Schema({k: v for k, v in FEEDBACK_SCHEMA.items() if k not in ("partition", "malformed")})
TRUE_TEXT = ("1", "t", "true")
FALSE_TEXT = ("0", "f", "false")


class SourceSchemaError(ValueError):
    """The source lacks a table or column the contract names."""


def _as_text(column: str, dialect: str, kind: str = "text") -> str:
    """Render a column as text. PostgreSQL renders timestamps in the session's zone, set to UTC on
    connect; SQLite already stores UTC text, and CAST keeps a wrongly typed value readable."""
    if dialect == "postgresql":
        if kind == "timestamp":
            return f"to_char({column}::timestamptz, 'YYYY-MM-DD HH24:MI:SS.US')"
        if kind == "bool":
            return f"CAST({column} AS INTEGER)"
    return f"CAST({column} AS TEXT)"


def _window(alias: str) -> str:
    return f"{alias}.created_at >= :start AND {alias}.created_at < :end"


def _select(columns: Sequence[str], rest: str) -> tuple[str, int]:
    return f"SELECT {', '.join(columns)} {rest}", len(columns)


def _queries(dialect: str, with_history: bool, include_image_urls: bool) -> dict[str, tuple[str, int]]:
    """One SELECT per table and its column count; `:start`/`:end` mark the window bounds."""

    def text(column: str, kind: str = "text") -> str:
        return _as_text(column, dialect, kind)

    feedback_columns = [
        *(text(f"f.{c}") for c in FEEDBACK_COLUMNS[:7]),
        text("f.would_recommend", "bool"),
        text("f.created_at", "timestamp"),
    ]
    in_window = f"SELECT {{}} FROM recommendation_feedback w WHERE {_window('w')}"
    history_filter = (
        "f.created_at < :start AND EXISTS (SELECT 1 FROM recommendation_feedback w "
        f"WHERE {_window('w')} AND w.user_id = f.user_id AND w.recommendation_id = f.recommendation_id)"
    )
    analysis_ids = in_window.format("w.analysis_id")
    if with_history:
        # A pair's user and record are the window's own, so only analyses need the history's ids too.
        analysis_ids += f" UNION SELECT f.analysis_id FROM recommendation_feedback f WHERE {history_filter}"
    queries = {
        "feedback": _select([*feedback_columns, "'0'"], f"FROM recommendation_feedback f WHERE {_window('f')}"),
        "users": _select(
            [
                text("u.id"),
                text("u.age"),
                text("u.ml_training_consent", "bool"),
                text("u.image_sharing_consent", "bool"),
            ],
            f"FROM users u WHERE u.id IN ({in_window.format('w.user_id')})",
        ),
        "analyses": _select(
            [
                text("a.id"),
                text("a.conditions"),
                text("a.image_url") if include_image_urls else "NULL",
                text("a.created_at", "timestamp"),
            ],
            f"FROM analyses a WHERE a.id IN ({analysis_ids})",
        ),
        "records": _select(
            [text("r.id"), text("r.rules_applied"), text("r.timeframe")],
            f"FROM recommendation_records r WHERE r.id IN ({in_window.format('w.recommendation_id')})",
        ),
        "erasures": _select(
            [text("e.user_id")],
            f"FROM erasure_requests e WHERE e.user_id IN ({in_window.format('w.user_id')})",
        ),
    }
    if with_history:
        queries["history"] = _select(
            [*feedback_columns, "'1'"], f"FROM recommendation_feedback f WHERE {history_filter}"
        )
    return queries


def _window_text(start: dt.datetime, end: dt.datetime) -> tuple[str, str]:
    return (
        start.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        end.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    )


def _parse_bool(text: pl.Expr) -> pl.Expr:
    lowered = text.str.strip_chars().str.to_lowercase()
    return pl.when(lowered.is_in(TRUE_TEXT)).then(True).when(lowered.is_in(FALSE_TEXT)).then(False).otherwise(None)


def _parse_timestamp(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars().str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us", time_zone="UTC")


def _typed(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Cast text columns to the schema; a value that does not parse becomes null."""
    casts = []
    for name, dtype in schema.items():
        column = pl.col(name)
        if dtype == pl.Boolean:
            casts.append(_parse_bool(column).alias(name))
        elif isinstance(dtype, pl.Datetime):
            casts.append(_parse_timestamp(column).alias(name))
        elif dtype == pl.String:
            casts.append(column)
        else:
            casts.append(column.str.strip_chars().cast(dtype, strict=False).alias(name))
    return frame.select(casts)


def type_feedback(text: pl.DataFrame) -> pl.DataFrame:
    """Type the feedback rows; `malformed` marks a row whose stored values do not parse."""
    typed = _typed(text, FEEDBACK_READ_SCHEMA)
    failed = [
        text[name].is_not_null() & typed[name].is_null()
        for name in FEEDBACK_READ_SCHEMA.names()
        if name not in ("is_history", "recommendation_id")
    ]
    required_missing = pl.any_horizontal(
        pl.col(name).is_null() for name in ("feedback_id", "user_id", "analysis_id", "recommendation_id", "created_at")
    )
    # The window selects rows by comparing created_at, which SQLite stores as text: a row belongs to
    # the day whose window its text falls in, even if it does not parse ('2025-10-26' sorts before
    # '2025-10-26 00:00:00', so the 25th's window reads it), and a parsed time on another day than
    # its text says (a leap second '23:59:60') is malformed rather than moved to a day outside the run.
    stored = text["created_at"].str.strip_chars()
    text_day = stored.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    before_midnight = stored < text_day.dt.strftime("%Y-%m-%d") + " 00:00:00"
    day = pl.select(pl.when(before_midnight).then(text_day - dt.timedelta(days=1)).otherwise(text_day)).to_series()
    parsed_day = typed["created_at"].dt.date()
    return typed.with_columns(
        malformed=pl.any_horizontal(failed) | required_missing | (parsed_day != day).fill_null(False),
        is_history=typed["is_history"].fill_null(False),
        partition=day,
    )


def _frame_from_text(columns: Sequence[str], text: pl.DataFrame) -> pl.DataFrame:
    return text.rename(dict(zip(text.columns, columns, strict=True)))


class FeedbackSource:
    """The source database for one run: check its shape, then read windows of feedback."""

    def __init__(self, location: SourceLocation, include_image_urls: bool) -> None:
        self.location = location
        self.include_image_urls = include_image_urls

    def check_schema(self) -> None:
        """Fail with the missing table or column named, before anything is read."""
        present = self._columns()
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
        queries = _queries(self.location.dialect, with_history, self.include_image_urls)
        bounds = _window_text(start, end)
        texts = self._run(queries, bounds)
        feedback_text = texts["feedback"]
        if "history" in texts:
            feedback_text = pl.concat([feedback_text, texts["history"]])
        feedback = type_feedback(_frame_from_text(FEEDBACK_READ_SCHEMA.names(), feedback_text))
        return SourceFrames(
            feedback=feedback,
            users=_typed(_frame_from_text(USERS_SCHEMA.names(), texts["users"]), USERS_SCHEMA),
            analyses=_typed(_frame_from_text(ANALYSES_SCHEMA.names(), texts["analyses"]), ANALYSES_SCHEMA),
            records=_typed(_frame_from_text(RECORDS_SCHEMA.names(), texts["records"]), RECORDS_SCHEMA),
            erasures=_typed(_frame_from_text(ERASURES_SCHEMA.names(), texts["erasures"]), ERASURES_SCHEMA),
        )

    def read_erasure_requests(self) -> pl.Series:
        """Every user id in erasure_requests (the erasure job removes them from what was exported)."""
        query = (f"SELECT DISTINCT {_as_text('e.user_id', self.location.dialect)} FROM erasure_requests e", 1)
        text = self._run({"erasures": query}, ("", ""))["erasures"]
        return _typed(_frame_from_text(ERASURES_SCHEMA.names(), text), ERASURES_SCHEMA)["user_id"].drop_nulls()

    def _columns(self) -> dict[str, set[str]]:
        if self.location.dialect == "postgresql":
            with postgres_connection(self.location) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = ANY(current_schemas(false))"
                )
                rows = cur.fetchall()
        else:
            with sqlite_connection(self.location) as conn:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
                rows = [(t, r[1]) for t in tables for r in conn.execute(f'PRAGMA table_info("{t}")')]
        present: dict[str, set[str]] = {}
        for table, column in rows:
            present.setdefault(table, set()).add(column)
        return present

    def _run(self, queries: Mapping[str, tuple[str, int]], bounds: tuple[str, str]) -> dict[str, pl.DataFrame]:
        if self.location.dialect == "postgresql":
            return self._run_postgres(queries, bounds)
        return self._run_sqlite(queries, bounds)

    def _run_postgres(self, queries: Mapping[str, tuple[str, int]], bounds: tuple[str, str]) -> dict[str, pl.DataFrame]:
        start, end = (sql.Literal(f"{b}+00") for b in bounds)
        out: dict[str, pl.DataFrame] = {}
        # One REPEATABLE READ transaction: every table is read from the same snapshot.
        with postgres_connection(self.location) as conn:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                # With the default random_page_cost (4, tuned for spinning disks) the planner seq-scans
                # the millions of analyses and records to find a day's few thousand ids: 1.7 s against
                # 70 ms through the primary key, measured on the 5M-row benchmark source.
                cur.execute("SET LOCAL random_page_cost = 1.1")
                for name, (query, width) in queries.items():
                    statement = sql.SQL(query.replace(":start", "{start}").replace(":end", "{end}")).format(
                        start=start, end=end
                    )
                    buffer = io.BytesIO()
                    cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(statement), buffer)
                    out[name] = _read_text_csv(buffer.getvalue(), width)
            conn.rollback()
        return out

    def _run_sqlite(self, queries: Mapping[str, tuple[str, int]], bounds: tuple[str, str]) -> dict[str, pl.DataFrame]:
        out: dict[str, pl.DataFrame] = {}
        with sqlite_connection(self.location) as conn:
            # The app may have stored bytes that are not UTF-8; they must not stop the read.
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            conn.execute("BEGIN")
            for name, (query, width) in queries.items():
                rows = conn.execute(query, {"start": bounds[0], "end": bounds[1]}).fetchall()
                out[name] = pl.DataFrame(
                    rows, schema=dict.fromkeys((f"c{i}" for i in range(width)), pl.String), orient="row"
                )
            conn.rollback()
        return out


def _read_text_csv(data: bytes, width: int) -> pl.DataFrame:
    schema = {f"c{i}": pl.String for i in range(width)}
    if not data:
        return pl.DataFrame(schema=schema)
    return pl.read_csv(io.BytesIO(data), has_header=False, schema=schema)
