"""What a reader of the source offers (`FeedbackSource`), and what both readers share."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import polars as pl

from feedback_assets.schemas import READS, SOURCE_TABLES
from feedback_assets.source.parsing import fingerprints_of
from feedback_assets.source.retry import RetryPolicy
from feedback_assets.source.sql import CONSENT_IDS_PER_QUERY
from feedback_assets.source_join import SourceFrames
from feedback_assets.source_url import SourceLocation
from feedback_assets.storage import Storage

# The tables and columns a source must have: those the reader reads.
REQUIRED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    table: tuple(read.columns) for table in SOURCE_TABLES for read in READS.values() if read.table == table
}
# Reads the source rows of a window [start, end) of a run's days.
WindowReader = Callable[[dt.datetime, dt.datetime], SourceFrames]


class SourceSchemaError(ValueError):
    """The source lacks a table or column the contract names."""


class FeedbackSource(Protocol):
    """The source database for one run: check its shape, then read windows of feedback.

    Every read is tried again after a transient fault (`retry.RetryPolicy`); past the budget, or on
    any other fault, the error goes up.
    """

    location: SourceLocation
    include_image_urls: bool

    def check_schema(self) -> None:
        """Fail with the missing table or column named, before anything is read."""

    def id_is_key(self) -> bool:
        """Whether the source's feedback ids are a key (no id can occur twice), looked up once."""

    def read_window(self, start: dt.datetime, end: dt.datetime, *, with_history: bool) -> SourceFrames:
        """Feedback created in [start, end) UTC, the dimension rows it refers to, and with
        `with_history` the earlier feedback rows of the same (user, recommendation) pairs."""

    def reading_run(
        self, start: dt.datetime, end: dt.datetime, *, with_history: bool, scratch_root: Storage
    ) -> AbstractContextManager[WindowReader]:
        """A reader of windows within [start, end), one run's whole range, for a run that reads it
        a slice at a time; its working files, if any, under `scratch_root`."""

    def fingerprints(self, days: Sequence[dt.date], *, once: bool = False) -> dict[str, str]:
        """Each of `days` (YYYY-MM-DD, in order) with its fingerprint (`fingerprint.py`), read in one
        read-only transaction. With `once`, one try and no retry: the sensor's next tick is its retry,
        and a tick must never wait out the budget."""

    def read_erasure_requests(self) -> pl.Series:
        """Every user id in erasure_requests (the erasure job removes them from what was exported);
        null for each distinct stored value that does not read as an id."""

    def read_user_consent(self, user_ids: pl.Series) -> pl.DataFrame:
        """The `users` rows of `user_ids` (withdrawal looks up the users the stored days hold):
        `user_id`, `ml_training_consent`, `image_sharing_consent`, one row per row found, so an id
        that occurs twice comes out twice. A consent that does not parse is null."""


class SourceReader(ABC):
    """What both readers share: the source, the retry policy every read goes through, and the reads
    that differ only in how a driver lists the columns and finds the id's key."""

    def __init__(self, location: SourceLocation, include_image_urls: bool, retry: RetryPolicy) -> None:
        self.location = location
        self.include_image_urls = include_image_urls
        self.retry = retry
        self._id_is_key: bool | None = None

    def check_schema(self) -> None:
        check_columns(self.retry.run(self.read_columns), self.location)

    def id_is_key(self) -> bool:
        if self._id_is_key is None:
            self._id_is_key = self.retry.run(self.read_id_is_key)
        return self._id_is_key

    def fingerprints(self, days: Sequence[dt.date], *, once: bool = False) -> dict[str, str]:
        if not days:
            return {}
        found = self.read_fingerprints(days) if once else self.retry.run(lambda: self.read_fingerprints(days))
        return fingerprints_of(days, found)

    @abstractmethod
    def read_columns(self) -> dict[str, set[str]]:
        """Every table and view of the source with its columns: one try, which `check_schema` repeats."""

    @abstractmethod
    def read_fingerprints(self, days: Sequence[dt.date]) -> dict[str, str]:
        """The fingerprint of each of `days` that has rows (`sql.fingerprint_query`): one try, which
        `fingerprints` repeats."""

    @abstractmethod
    def read_id_is_key(self) -> bool:
        """Whether recommendation_feedback.id alone has a unique index: one try, which `id_is_key` repeats."""


def check_columns(present: Mapping[str, set[str]], location: SourceLocation) -> None:
    """Fail with the first table or column of REQUIRED_COLUMNS that `present` lacks."""
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in present:
            raise SourceSchemaError(f"the source ({location.describe()}) has no table {table!r}")
        missing = [c for c in columns if c not in present[table]]
        if missing:
            raise SourceSchemaError(
                f"the source ({location.describe()}) table {table!r} lacks column(s) {', '.join(missing)}"
            )


def columns_by_table(rows: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    present: dict[str, set[str]] = {}
    for table, column in rows:
        present.setdefault(table, set()).add(column)
    return present


def consent_chunks(user_ids: pl.Series) -> list[list[int]]:
    """The distinct ids, sorted, in chunks of at most CONSENT_IDS_PER_QUERY."""
    ids = [int(i) for i in user_ids.drop_nulls().unique().sort().to_list()]
    return [ids[i : i + CONSENT_IDS_PER_QUERY] for i in range(0, len(ids), CONSENT_IDS_PER_QUERY)]
