"""One run's reads of a PostgreSQL source: every slice from one snapshot, the dimension tables read
once for the run's whole window.

Read per slice, PostgreSQL finds a slice's dimension rows with a hash semi-join over a scan of each
whole table, so ten slices scanned `recommendation_records` ten times (docs/benchmarks.md, lesson
9). Here the run's dimension rows are copied once, straight to files in a private scratch directory
and turned into Parquet there without passing through memory whole; each slice reads its feedback
rows in the same snapshot and takes its dimension rows from those files. The snapshot stays open for
the run. After a fault the next try opens a new one and reads the dimension tables again, so a
slice's rows always come from one snapshot.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import adbc_driver_manager.dbapi
import polars as pl
import psycopg2.extensions

from feedback_assets.connections import postgres_arrow_session, postgres_connection
from feedback_assets.files import PARQUET_COMPRESSION
from feedback_assets.schemas import REPEATED_IDS_SCHEMA
from feedback_assets.source import postgres_sessions as pg
from feedback_assets.source.parsing import DIMENSIONS, typed_dimension, typed_feedback, typed_repeated_ids
from feedback_assets.source.retry import RetryPolicy
from feedback_assets.source.sql import POSTGRESQL, Query, covers_most_feedback, postgres_bounds, repeated_ids_query
from feedback_assets.source_join import SourceFrames
from feedback_assets.source_url import SourceLocation

# The dimension queries in two groups of about equal cost, one per session: records alone is about
# as costly as the other three together (2025 through ADBC, each alone: 3.6 s against 3.4 s).
DIMENSION_GROUPS = (("records",), ("analyses", "users", "erasures"))
# The dimension tables' ids: integers, or text (recommendation ids).
Key = int | str


@dataclass(frozen=True)
class Sessions:
    """A run's three sessions on one snapshot: `leader` exports it and binds the queries' parameters;
    `arrow` and `second` read the dimension tables in their own types, each on its own core on the
    server, then `arrow` the slices' feedback rows."""

    leader: psycopg2.extensions.connection
    arrow: adbc_driver_manager.dbapi.Connection
    second: adbc_driver_manager.dbapi.Connection


class RunSnapshot:
    """The reads of one run's window [start, end) of `location`, tried again by `retry`."""

    def __init__(
        self,
        location: SourceLocation,
        include_image_urls: bool,
        retry: RetryPolicy,
        start: dt.datetime,
        end: dt.datetime,
        *,
        with_history: bool,
        scratch: Path,
    ) -> None:
        self.location = location
        self.include_image_urls = include_image_urls
        self.retry = retry
        self.with_history = with_history
        # Made when the snapshot opens, from the feedback table's column types (`sql.native_postgresql`).
        self.feedback_queries: dict[str, Query] = {}
        self.run_start, self.run_end = start, end
        self.run_bounds = postgres_bounds(start, end)
        self.scratch = scratch
        # The run's feedback ids that the table holds twice, found when the snapshot opens.
        self.repeated_ids = REPEATED_IDS_SCHEMA.to_frame()
        # Each dimension's scratch files with the smallest and largest key each holds.
        self._key_ranges: dict[str, list[tuple[Path, Key | None, Key | None]]] = {}
        self._sessions: Sessions | None = None
        self._stack = ExitStack()

    def read(self, start: dt.datetime, end: dt.datetime) -> SourceFrames:
        return self.retry.run(lambda: self._read(start, end))

    def close(self) -> None:
        self._sessions = None
        self._stack.close()
        self._stack = ExitStack()

    def _read(self, start: dt.datetime, end: dt.datetime) -> SourceFrames:
        try:
            sessions = self._sessions or self._open()
            texts = pg.fetch_arrow(sessions.leader, sessions.arrow, self.feedback_queries, postgres_bounds(start, end))
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

    def _open(self) -> Sessions:
        leader = self._stack.enter_context(postgres_connection(self.location))
        arrow = self._stack.enter_context(postgres_arrow_session(self.location))
        second = self._stack.enter_context(postgres_arrow_session(self.location))
        snapshot = pg.begin_shared_read(leader)
        pg.begin_arrow_read(arrow, snapshot)
        pg.begin_arrow_read(second, snapshot)
        self.feedback_queries = pg.native_feedback_queries(leader, self.with_history, self.include_image_urls)
        queries = pg.native_dimension_queries(
            leader,
            self.with_history,
            self.include_image_urls,
            whole_dimensions=covers_most_feedback(pg.feedback_span(leader), self.run_start, self.run_end),
        )
        statements = {name: pg.bound(leader, query, self.run_bounds) for name, query in queries.items()}
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
        self._sessions = Sessions(leader, arrow, second)
        return self._sessions

    def _repeated_ids(self, leader: psycopg2.extensions.connection) -> pl.DataFrame:
        if pg.id_is_key(leader):
            return REPEATED_IDS_SCHEMA.to_frame()
        query = repeated_ids_query(POSTGRESQL, self.with_history)
        return typed_repeated_ids(pg.fetch_text(leader, query, self.run_bounds))

    def _copy_dimensions(
        self, session: adbc_driver_manager.dbapi.Connection, names: Sequence[str], statements: Mapping[str, str]
    ) -> None:
        """Each dimension table's rows, a batch at a time from the server into a Parquet file of the
        scratch directory: never a whole table in memory."""
        for name in names:
            directory = self._path(name)
            # A try after a fault starts over from a new snapshot.
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir()
            _, key = DIMENSIONS[name]
            ranges = []
            for number, batch in enumerate(pg.arrow_batches(session, statements[name])):
                rows = typed_dimension(name, batch)
                path = directory / f"{number:06d}.parquet"
                # Read whole by the slices that need it: no column statistics, LZ4 as for intermediates.
                rows.write_parquet(path, compression=PARQUET_COMPRESSION, statistics=False)
                keys = rows.get_column(key)
                ranges.append((path, _key(keys.min()), _key(keys.max())))
            self._key_ranges[name] = ranges

    def _path(self, name: str) -> Path:
        return self.scratch / name

    def _rows_of(self, name: str, ids: pl.DataFrame) -> pl.DataFrame:
        """The run's rows of one dimension table that the slice's `ids` refer to, from only the
        scratch files whose key range holds one of them: the server sends a table in the order its
        rows were stored, so where ids grow with time (serial numbers, dated or time-ordered ids) a
        slice's ids lie in a few files; where they do not (random UUIDs) every file is read, as before."""
        schema, key = DIMENSIONS[name]
        wanted = ids.get_column(key).drop_nulls().sort()
        files = [path for path, low, high in self._key_ranges.get(name, []) if _holds_one_of(wanted, low, high)]
        if not files:
            return schema.to_frame()
        rows = pl.scan_parquet(files).join(ids.lazy(), on=key, how="semi")
        return rows.collect(engine="streaming")


def _key(value: object) -> Key | None:
    """A dimension key (an integer or text id) as `Series.min` and `max` give it; None for no rows."""
    return value if isinstance(value, int | str) else None


def _holds_one_of(ordered: pl.Series, low: Key | None, high: Key | None) -> bool:
    """Whether a value of `ordered` (sorted, no nulls) lies in [low, high]; a file without keys holds none."""
    if low is None or high is None:
        return False
    first = ordered.search_sorted(low, side="left")
    return bool(ordered.search_sorted(high, side="right") > first)
