"""Where the intermediate partitions live: one Parquet file per asset and day under the storage dir,
owner-only (it holds personal data until anonymized_pairs)."""

from __future__ import annotations

import json
import re

import polars as pl

from feedback_assets.files import (
    OBJECT_STORE_ERRORS,
    DamagedFileError,
    concurrently,
    first_line_of,
    reading,
    rematerialize_command,
)
from feedback_assets.storage.base import Storage, files_matching, read_text, write_bytes, write_parquet

STATS_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.stats\.json")


class MissingPartitionError(RuntimeError):
    """An upstream partition a run needs was never written, or its file is gone."""


def _file(partition: str) -> str:
    return f"{partition}.parquet"


def _stats_file(partition: str) -> str:
    return f"{partition}.stats.json"


class PartitionStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def location(self, asset: str, partition: str) -> str:
        return (self.storage / asset).location(_file(partition))

    def has(self, asset: str, partition: str) -> bool:
        return (self.storage / asset).exists(_file(partition))

    def write(self, asset: str, frames: dict[str, pl.DataFrame]) -> None:
        """Write one file per partition key; each replaces exactly its own day. Without column
        statistics: a day's file is only ever read whole."""
        directory = self.storage / asset
        directory.ensure()
        directory.remove_stale_temp_files()
        concurrently(lambda day: write_parquet(directory, _file(day[0]), day[1], statistics=False), frames.items())

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
            lambda day: write_bytes(directory, _stats_file(day[0]), json.dumps(day[1], sort_keys=True).encode()),
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


def split_by_partition(frame: pl.DataFrame, partitions: list[str]) -> dict[str, pl.DataFrame]:
    """One frame per partition key, days without rows included as empty frames."""
    parts = {key.isoformat(): part for (key,), part in frame.partition_by("partition", as_dict=True).items()}
    return {key: parts.get(key, frame.clear()) for key in partitions}
