"""Where the intermediate partitions live: one Parquet file per asset and day under the storage dir,
owner-only (it holds personal data until anonymized_pairs)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

import polars as pl

from feedback_assets.files import (
    OBJECT_STORE_ERRORS,
    DamagedFileError,
    concurrently,
    first_line_of,
    reading,
    rematerialize_command,
)
from feedback_assets.storage.base import WRITES, Sink, Storage, files_matching, read_text, write_bytes, write_parquet

STATS_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.stats\.json")
# The whole name: temporary files and the statistics beside the partitions do not match.
PARTITION_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.parquet")
# A rewritten day's statistics, from the day, its statistics before and the rows that remain.
StatsAfter = Callable[[str, Mapping[str, int], pl.DataFrame], dict[str, int]]


class MissingPartitionError(RuntimeError):
    """An upstream partition a run needs was never written, or its file is gone."""


def _file(partition: str) -> str:
    return f"{partition}.parquet"


def _stats_file(partition: str) -> str:
    return f"{partition}.stats.json"


@dataclass(frozen=True)
class Split:
    """A day file's rows split in those that stay and those that go."""

    remaining: pl.DataFrame
    gone: pl.DataFrame


@dataclass(frozen=True)
class Rewritten:
    """What rewriting days without some of their rows did: rows removed and new statistics, by day."""

    removed: dict[str, int]
    stats: dict[str, dict[str, int]]


class PartitionStore:
    def __init__(self, storage: Storage, sink: Sink = WRITES) -> None:
        self.storage = storage
        # Every write and temporary-file removal goes there: a recording sink makes a dry run.
        self.sink = sink

    def location(self, asset: str, partition: str) -> str:
        return (self.storage / asset).location(_file(partition))

    def has(self, asset: str, partition: str) -> bool:
        return (self.storage / asset).exists(_file(partition))

    def write(self, asset: str, frames: dict[str, pl.DataFrame]) -> None:
        """Write one file per partition key; each replaces exactly its own day. Without column
        statistics: a day's file is only ever read whole."""
        directory = self.storage / asset
        self.sink.prepare(directory)
        concurrently(
            lambda day: write_parquet(directory, _file(day[0]), day[1], statistics=False, sink=self.sink),
            frames.items(),
        )

    def read(self, asset: str, partitions: list[str]) -> pl.DataFrame:
        """The rows of several partitions in one frame; fails naming the first missing day."""
        directory = self.storage / asset
        for partition in partitions:
            if not directory.exists(_file(partition)):
                raise MissingPartitionError(
                    f"{asset} has no stored partition {partition} (expected {directory.location(_file(partition))}); "
                    f"materialize {asset} for {partition} first"
                )
        try:
            return directory.scan_parquet([_file(p) for p in partitions]).collect()
        except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS):
            # Only now is each file opened on its own, to name the one that is damaged.
            for partition in partitions:
                try:
                    directory.scan_parquet([_file(partition)]).collect()
                except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS) as exc:
                    raise DamagedFileError(
                        f"{directory.location(_file(partition))} is damaged and cannot be read "
                        f"({first_line_of(exc)}); rebuild it with {rematerialize_command(asset, partition)}"
                    ) from None
            raise

    def has_stats(self, asset: str, partition: str) -> bool:
        return (self.storage / asset).exists(_stats_file(partition))

    def write_stats(self, asset: str, stats: dict[str, dict[str, int]]) -> None:
        directory = self.storage / asset
        concurrently(
            lambda day: write_bytes(
                directory, _stats_file(day[0]), json.dumps(day[1], sort_keys=True).encode(), sink=self.sink
            ),
            stats.items(),
        )

    def stats_days(self, asset: str) -> list[str]:
        """The days (YYYY-MM-DD) whose statistics `asset` has written, in order."""
        return sorted(match.group(1) for _, match in files_matching(self.storage / asset, STATS_FILE))

    def read_stats(self, asset: str, partition: str) -> dict[str, int]:
        directory, name = self.storage / asset, _stats_file(partition)
        if not directory.exists(name):
            raise MissingPartitionError(
                f"{asset} has no statistics for partition {partition} (expected {directory.location(name)}); "
                f"materialize {asset} for {partition} again"
            )
        with reading(directory.location(name), f"rebuild it with {rematerialize_command(asset, partition)}"):
            counts = json.loads(read_text(directory, name))
            if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
                raise ValueError("not a JSON object of counts")
        return counts

    def days(self, asset: str) -> list[str]:
        """The days (YYYY-MM-DD) whose file `asset` holds, in the listing's order."""
        return [match.group(1) for _, match in files_matching(self.storage / asset, PARTITION_FILE)]

    def _erasable_files(self, asset: str, days: Collection[str] | None) -> Iterator[tuple[str, str, str]]:
        """Each day of `asset` among `days` (None: every day), with its file's name and what to do
        if the file cannot be read."""
        for day in self.days(asset):
            if days is None or day in days:
                repair = f"rebuild it with {rematerialize_command(asset, day)}, then run erase_subjects again"
                yield day, _file(day), repair

    def selected(self, asset: str, rows: pl.Expr, column: str, days: Collection[str] | None = None) -> pl.Series | None:
        """`column` of the rows `rows` selects in the files of `asset` (of `days`; None: every day),
        read a file at a time; None when no file holds one."""
        directory, found = self.storage / asset, []
        for _day, name, repair in self._erasable_files(asset, days):
            with reading(directory.location(name), repair):
                values = directory.scan_parquet([name]).filter(rows).select(column).collect().to_series()
            if values.len():
                found.append(values)
        return pl.concat(found) if found else None

    def _splits(self, asset: str, rows: pl.Expr, days: Collection[str] | None) -> Iterator[tuple[str, Split]]:
        """The days of `asset` (among `days`; None: every day) whose file holds rows that `rows`
        selects, each split in the rows that stay and those that go. Each file is first scanned for
        the columns `rows` reads only: most files hold none of the rows, and those are neither read
        whole nor rewritten."""
        directory = self.storage / asset
        for day, name, repair in self._erasable_files(asset, days):
            with reading(directory.location(name), repair):
                scan = directory.scan_parquet([name])
                if not scan.select(rows.sum()).collect().item():
                    continue
                frame = scan.collect()
            yield day, Split(frame.filter(~rows), frame.filter(rows))

    def rewrite(
        self, asset: str, splits: Iterable[tuple[str, Split]], stats_after: StatsAfter | None = None
    ) -> Rewritten:
        """Write each day's remaining rows; first, for a day that has statistics, those `stats_after`
        makes of them. Statistics recomputed from what the file holds, written before it: a re-run
        after a crash between the two counts nothing twice."""
        removed, stats = {}, {}
        for day, split in splits:
            if stats_after is not None and self.has_stats(asset, day):
                stats[day] = stats_after(day, self.read_stats(asset, day), split.remaining)
                self.write_stats(asset, {day: stats[day]})
            self.write(asset, {day: split.remaining})
            removed[day] = split.gone.height
        return Rewritten(removed, stats)

    def update(
        self, asset: str, days: Collection[str], change: Callable[[pl.DataFrame], tuple[pl.DataFrame, int]]
    ) -> dict[str, int]:
        """Rewrite the files of `days` that `change` changes (it gives the new rows and how many
        cells changed; 0: the file stays as it is); how many changed by day. Missing days are skipped."""
        directory, changed = self.storage / asset, {}
        for day in sorted(days):
            name = _file(day)
            if not directory.exists(name):
                continue
            repair = f"rebuild it with {rematerialize_command(asset, day)}, then run erase_subjects again"
            with reading(directory.location(name), repair):
                frame = directory.scan_parquet([name]).collect()
            new, count = change(frame)
            if count:
                self.write(asset, {day: new})
                changed[day] = count
        return changed

    def erase(
        self, asset: str, rows: pl.Expr, days: Collection[str] | None = None, stats_after: StatsAfter | None = None
    ) -> Rewritten:
        """Remove the rows `rows` selects from the files of `asset` (of `days`; None: every day)
        that hold any, leaving the others untouched: `split` then `rewrite`, a day at a time, so
        only one day's rows are in memory."""
        return self.rewrite(asset, self._splits(asset, rows, days), stats_after)


def split_by_partition(frame: pl.DataFrame, partitions: list[str]) -> dict[str, pl.DataFrame]:
    """One frame per partition key, days without rows included as empty frames."""
    parts = {key.isoformat(): part for (key,), part in frame.partition_by("partition", as_dict=True).items()}
    return {key: parts.get(key, frame.clear()) for key in partitions}
