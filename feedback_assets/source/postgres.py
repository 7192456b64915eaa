"""The reader of a PostgreSQL source: rows in the database's own types through ADBC, a run's slices
from one snapshot (`run_snapshot.py`), the small reads (ids, consents, the schema) through psycopg2."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import polars as pl

from feedback_assets.connections import postgres_arrow_session, postgres_connection
from feedback_assets.source import postgres_sessions as pg
from feedback_assets.source.parsing import consent_frame, erasure_ids, fingerprints_from_digests, source_frames
from feedback_assets.source.reader import SourceReader, WindowReader, columns_by_table, consent_chunks
from feedback_assets.source.run_snapshot import RunSnapshot
from feedback_assets.source.sql import (
    FINGERPRINT_PLANNER_SETTINGS,
    POSTGRES_COLUMNS,
    POSTGRES_CONSENT_QUERY,
    POSTGRESQL,
    REPEATED_IDS,
    Query,
    erasure_requests_query,
    fingerprint_query,
    postgres_bounds,
    repeated_ids_query,
)
from feedback_assets.source_join import SourceFrames
from feedback_assets.storage import Storage


class PostgresSource(SourceReader):
    """A `FeedbackSource` of a PostgreSQL database."""

    def read_window(self, start: dt.datetime, end: dt.datetime, *, with_history: bool) -> SourceFrames:
        """One window on its own, from one snapshot: the rows through ADBC, as a run's slices read
        them, the dimension rows found by the window's ids."""
        repeated = None if self.id_is_key() else repeated_ids_query(POSTGRESQL, with_history)
        bounds = postgres_bounds(start, end)

        def read() -> dict[str, pl.DataFrame]:
            with postgres_connection(self.location) as leader, postgres_arrow_session(self.location) as arrow:
                pg.begin_arrow_read(arrow, pg.begin_shared_read(leader))
                queries = {
                    **pg.native_feedback_queries(leader, with_history, self.include_image_urls),
                    **pg.native_dimension_queries(
                        leader, with_history, self.include_image_urls, whole_dimensions=False
                    ),
                }
                frames = pg.fetch_arrow(leader, arrow, queries, bounds)
                if repeated is not None:
                    frames[REPEATED_IDS] = pg.fetch_text(leader, repeated, bounds)
                leader.rollback()
            return frames

        return source_frames(self.retry.run(read), start, end)

    @contextmanager
    def reading_run(
        self, start: dt.datetime, end: dt.datetime, *, with_history: bool, scratch_root: Storage
    ) -> Iterator[WindowReader]:
        """Every slice from one snapshot, the dimension tables read once for the run (`RunSnapshot`)."""
        with scratch_root.scratch(self.retry.log) as scratch:
            run = RunSnapshot(
                self.location,
                self.include_image_urls,
                self.retry,
                start,
                end,
                with_history=with_history,
                scratch=scratch,
            )
            try:
                yield run.read
            finally:
                run.close()

    def read_erasure_requests(self) -> pl.Series:
        return erasure_ids(self.retry.run(lambda: self._read_text(erasure_requests_query(POSTGRESQL))))

    def read_user_consent(self, user_ids: pl.Series) -> pl.DataFrame:
        chunks = consent_chunks(user_ids)

        def read() -> list[tuple[str | None, ...]]:
            rows: list[tuple[str | None, ...]] = []
            with postgres_connection(self.location) as conn:
                pg.begin_read(conn)
                with conn.cursor() as cur:
                    for chunk in chunks:
                        cur.execute(POSTGRES_CONSENT_QUERY, {"ids": chunk})
                        rows += cur.fetchall()
                conn.rollback()
            return rows

        return consent_frame(self.retry.run(read) if chunks else [])

    def read_fingerprints(self, days: Sequence[dt.date]) -> dict[str, str]:
        with postgres_connection(self.location) as conn:
            conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with conn.cursor() as cur:
                for setting in FINGERPRINT_PLANNER_SETTINGS:
                    cur.execute(setting)
                cur.execute(fingerprint_query(days, POSTGRESQL))
                found = fingerprints_from_digests(cur.fetchall())
            conn.rollback()
        return found

    def _read_text(self, query: Query) -> pl.DataFrame:
        with postgres_connection(self.location) as conn:
            pg.begin_read(conn)
            text = pg.fetch_text(conn, query, {})
            conn.rollback()
        return text

    def read_id_is_key(self) -> bool:
        with postgres_connection(self.location) as conn:
            return pg.id_is_key(conn)

    def read_columns(self) -> dict[str, set[str]]:
        with postgres_connection(self.location) as conn, conn.cursor() as cur:
            cur.execute(POSTGRES_COLUMNS)
            return columns_by_table(cur.fetchall())
