"""The PostgreSQL reader's sessions: psycopg2 for the snapshot, the bound parameters and the small
reads; ADBC for the rows, which arrive as Arrow columns of their own types (docs/decisions.md,
"Feedback rows through ADBC")."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import adbc_driver_manager
import adbc_driver_manager.dbapi
import nanoarrow
import polars as pl
import psycopg2.extensions

from feedback_assets.connections import SourceUnreachableError, is_transient
from feedback_assets.files import first_line_of
from feedback_assets.schemas import READS
from feedback_assets.source.parsing import DIMENSIONS, text_frame
from feedback_assets.source.sql import (
    POSTGRES_COLUMN_TYPES,
    POSTGRES_FEEDBACK_SPAN,
    POSTGRES_ID_IS_KEY,
    Query,
    feedback_queries,
    native_postgresql,
    window_queries,
)

# With the default random_page_cost (4, tuned for spinning disks) the planner seq-scans the millions
# of analyses and records to find a day's few thousand ids: 1.7 s against 70 ms through the primary
# key (docs/decisions.md, "Planner cost on the source").
PLANNER_COST = "SET LOCAL random_page_cost = 1.1"


def begin_read(conn: psycopg2.extensions.connection, *, share: bool = False) -> str | None:
    """Open a read-only REPEATABLE READ transaction; with `share`, return its snapshot's id for
    another session to join (`begin_arrow_read`), so that every table is read from one snapshot."""
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    with conn.cursor() as cur:
        cur.execute(PLANNER_COST)
        if share:
            cur.execute("SELECT pg_export_snapshot()")
            row = cur.fetchone()
            return str(row[0]) if row else None
    return None


def begin_shared_read(conn: psycopg2.extensions.connection) -> str:
    """`begin_read` sharing its snapshot: the snapshot's id."""
    snapshot = begin_read(conn, share=True)
    if snapshot is None:
        raise RuntimeError("PostgreSQL exported no snapshot")
    return snapshot


def begin_arrow_read(session: adbc_driver_manager.dbapi.Connection, snapshot: str) -> None:
    """`begin_read` for an Arrow session, which runs in autocommit and so opens its transaction
    itself, on the snapshot of another session."""
    with session.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # The id is the server's own (pg_export_snapshot), never input; ADBC binds no parameters here.
        cur.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        cur.execute(PLANNER_COST)


def fetch_text(session: psycopg2.extensions.connection, query: Query, parameters: Mapping[str, object]) -> pl.DataFrame:
    """The rows of a query of text columns (a few: ids, consents) as a frame of columns c0, c1, ..."""
    with session.cursor() as cur:
        cur.execute(query.sql, dict(parameters))
        return text_frame(cur.fetchall(), query.width)


def id_is_key(session: psycopg2.extensions.connection) -> bool:
    """Whether recommendation_feedback.id alone has a unique index (`sql.POSTGRES_ID_IS_KEY`)."""
    with session.cursor() as cur:
        cur.execute(POSTGRES_ID_IS_KEY)
        row = cur.fetchone()
    return bool(row and row[0])


def feedback_span(session: psycopg2.extensions.connection) -> tuple[float, float] | None:
    """The first and last created_at of the feedback as seconds since 1970, if it has any."""
    with session.cursor() as cur:
        cur.execute(POSTGRES_FEEDBACK_SPAN)
        row = cur.fetchone()
    if row is None or row[0] is None or row[1] is None:
        return None
    return float(row[0]), float(row[1])


def column_types(session: psycopg2.extensions.connection, table: str) -> dict[str, str]:
    with session.cursor() as cur:
        cur.execute(POSTGRES_COLUMN_TYPES, (table,))
        return {str(name): str(kind) for name, kind in cur.fetchall()}


def native_feedback_queries(
    session: psycopg2.extensions.connection, with_history: bool, include_image_urls: bool
) -> dict[str, Query]:
    """The feedback queries for the Arrow session, for the feedback table's column types as they are."""
    types = column_types(session, READS["feedback"].table)
    return feedback_queries(window_queries(native_postgresql(types), with_history, include_image_urls))


def native_dimension_queries(
    session: psycopg2.extensions.connection, with_history: bool, include_image_urls: bool, *, whole_dimensions: bool
) -> dict[str, Query]:
    """The dimension queries for an Arrow session, each for its own table's column types."""
    return {
        name: window_queries(
            native_postgresql(column_types(session, READS[name].table), name),
            with_history,
            include_image_urls,
            whole_dimensions=whole_dimensions,
        )[name]
        for name in DIMENSIONS
    }


def bound(binder: psycopg2.extensions.connection, query: Query, parameters: Mapping[str, str]) -> str:
    """The query with its parameters bound, quoted by psycopg2: the COPY that ADBC turns each query
    into takes no parameters."""
    with binder.cursor() as bind:
        return bind.mogrify(query.sql, dict(parameters)).decode()


def fetch_arrow(
    binder: psycopg2.extensions.connection,
    arrow: adbc_driver_manager.dbapi.Connection,
    queries: Mapping[str, Query],
    parameters: Mapping[str, str],
) -> dict[str, pl.DataFrame]:
    """Each query's rows as typed columns c0, c1, ...: bound by psycopg2, run through the Arrow session."""
    out: dict[str, pl.DataFrame] = {}
    for name, query in queries.items():
        frame = pl.concat(list(arrow_batches(arrow, bound(binder, query, parameters))), rechunk=False)
        out[name] = frame.rename(dict(zip(frame.columns, (f"c{i}" for i in range(query.width)), strict=True)))
    return out


def arrow_batches(arrow: adbc_driver_manager.dbapi.Connection, sql: str) -> Iterator[pl.DataFrame]:
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
