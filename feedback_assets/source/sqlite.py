"""The reader of a SQLite source: every query's values as text, through the standard library."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import polars as pl

from feedback_assets.connections import sqlite_connection
from feedback_assets.schemas import READS
from feedback_assets.source.parsing import (
    consent_frame,
    erasure_ids,
    fingerprints_from_texts,
    source_frames,
    text_frame,
)
from feedback_assets.source.reader import SourceReader, WindowReader, columns_by_table, consent_chunks
from feedback_assets.source.sql import (
    REPEATED_IDS,
    SQLITE,
    SQLITE_TABLES,
    Query,
    erasure_requests_query,
    fingerprint_query,
    repeated_ids_query,
    sqlite_consent_query,
    window_bounds,
    window_queries,
)
from feedback_assets.source_join import SourceFrames
from feedback_assets.source_url import SourceLocation
from feedback_assets.storage import Storage


def id_is_key(db: sqlite3.Connection) -> bool:
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


@contextmanager
def reading(location: SourceLocation) -> Iterator[sqlite3.Connection]:
    """A connection whose text values are never refused: the app may have stored bytes that are not
    UTF-8, and they must not stop the read."""
    with sqlite_connection(location) as db:
        db.text_factory = lambda raw: raw.decode("utf-8", "replace")
        yield db


class SqliteSource(SourceReader):
    """A `FeedbackSource` of a SQLite file: each window read on its own, in one transaction."""

    def read_window(self, start: dt.datetime, end: dt.datetime, *, with_history: bool) -> SourceFrames:
        queries = window_queries(SQLITE, with_history, self.include_image_urls)
        if not self.id_is_key():
            queries[REPEATED_IDS] = repeated_ids_query(SQLITE, with_history)
        texts = self.retry.run(lambda: self._run(queries, window_bounds(start, end)))
        return source_frames(texts, start, end)

    @contextmanager
    def reading_run(
        self, start: dt.datetime, end: dt.datetime, *, with_history: bool, scratch_root: Storage
    ) -> Iterator[WindowReader]:
        """Each window read on its own (`read_window`): no scratch, no run-wide state."""
        yield lambda first, last: self.read_window(first, last, with_history=with_history)

    def read_erasure_requests(self) -> pl.Series:
        query = erasure_requests_query(SQLITE)
        return erasure_ids(self.retry.run(lambda: self._run({"erasures": query}, {}))["erasures"])

    def read_user_consent(self, user_ids: pl.Series) -> pl.DataFrame:
        chunks = consent_chunks(user_ids)

        def read() -> list[tuple[str | None, ...]]:
            with reading(self.location) as db:
                return [row for chunk in chunks for row in db.execute(sqlite_consent_query(len(chunk)), chunk)]

        return consent_frame(self.retry.run(read) if chunks else [])

    def read_fingerprints(self, days: Sequence[dt.date]) -> dict[str, str]:
        with reading(self.location) as db:
            rows = db.execute(fingerprint_query(days, SQLITE)).fetchall()
        return fingerprints_from_texts(
            pl.DataFrame(rows, schema={"day": pl.String, "row_text": pl.String}, orient="row")
        )

    def read_id_is_key(self) -> bool:
        with sqlite_connection(self.location) as db:
            return id_is_key(db)

    def read_columns(self) -> dict[str, set[str]]:
        with sqlite_connection(self.location) as db:
            tables = [row[0] for row in db.execute(SQLITE_TABLES)]
            return columns_by_table((t, r[1]) for t in tables for r in db.execute(f'PRAGMA table_info("{t}")'))

    def _run(self, queries: Mapping[str, Query], bounds: Mapping[str, str]) -> dict[str, pl.DataFrame]:
        """Each query's rows as a frame of text columns c0, c1, ..., all read in one transaction."""
        with reading(self.location) as db:
            db.execute("BEGIN")
            out = {
                name: text_frame(db.execute(query.sql, dict(bounds)).fetchall(), query.width)
                for name, query in queries.items()
            }
            db.rollback()
        return out
