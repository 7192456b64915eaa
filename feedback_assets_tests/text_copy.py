"""The oracle the PostgreSQL reader is compared with: every column rendered as text on the server
(`sql.POSTGRESQL`), streamed out with psycopg2's text COPY, parsed in Polars.

It was the reader's own path before the rows came through ADBC in their own types (docs/decisions.md,
"Feedback rows through ADBC"); it stays here because it types nothing on the server, so it says what
a text read makes of any column type the app chose.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping

import polars as pl
import psycopg2.extensions

from feedback_assets.connections import postgres_connection
from feedback_assets.source.parsing import source_frames
from feedback_assets.source.postgres_sessions import begin_read
from feedback_assets.source.sql import (
    POSTGRESQL,
    REPEATED_IDS,
    Query,
    erasure_requests_query,
    postgres_bounds,
    repeated_ids_query,
    window_queries,
)
from feedback_assets.source_join import SourceFrames
from feedback_assets.source_url import SourceLocation


def read_text_csv(data: bytes, width: int) -> pl.DataFrame:
    schema = {f"c{i}": pl.String for i in range(width)}
    if not data:
        return pl.DataFrame(schema=schema)
    return pl.read_csv(io.BytesIO(data), has_header=False, schema=schema)


def copy_out(
    conn: psycopg2.extensions.connection, queries: Mapping[str, Query], parameters: Mapping[str, str]
) -> dict[str, pl.DataFrame]:
    """Each query's rows as text columns c0, c1, ..."""
    out: dict[str, pl.DataFrame] = {}
    with conn.cursor() as cur:
        for name, query in queries.items():
            # COPY takes no bind parameters; mogrify binds them client-side, quoted by psycopg2.
            statement = cur.mogrify(query.sql, dict(parameters)).decode()
            buffer = io.BytesIO()
            cur.copy_expert(f"COPY ({statement}) TO STDOUT WITH (FORMAT csv)", buffer)
            out[name] = read_text_csv(buffer.getvalue(), query.width)
    return out


def text_copies(
    location: SourceLocation, queries: Mapping[str, Query], parameters: Mapping[str, str]
) -> dict[str, pl.DataFrame]:
    """`copy_out` in one read-only transaction of its own."""
    with postgres_connection(location) as conn:
        begin_read(conn)
        texts = copy_out(conn, queries, parameters)
        conn.rollback()
    return texts


def text_read_window(
    location: SourceLocation, start: dt.datetime, end: dt.datetime, *, with_history: bool, include_image_urls: bool
) -> SourceFrames:
    """What `FeedbackSource.read_window` reads of [start, end), every value read as text; the
    repeated ids always looked for (none when the id is a key)."""
    queries = window_queries(POSTGRESQL, with_history, include_image_urls)
    queries[REPEATED_IDS] = repeated_ids_query(POSTGRESQL, with_history)
    return source_frames(text_copies(location, queries, postgres_bounds(start, end)), start, end)


def text_erasure_requests(location: SourceLocation) -> pl.DataFrame:
    """The erasure requests' query, as text."""
    return text_copies(location, {"erasures": erasure_requests_query(POSTGRESQL)}, {})["erasures"]
