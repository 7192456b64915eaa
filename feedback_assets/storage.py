"""Where the intermediate partitions live: one Parquet file per asset and day under the storage dir,
owner-only (it holds personal data until anonymized_pairs)."""

from __future__ import annotations

import json
import re

import polars as pl

from feedback_assets.files import (
    OBJECT_STORE_ERRORS,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    DamagedFileError,
    StoragePath,
    children,
    concurrently,
    ensure_dir,
    first_line_of,
    readable,
    readable_all,
    reading,
    rematerialize_command,
    remove_stale_temp_files,
    write_bytes_atomically,
    write_parquet_atomically,
)

STATS_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.stats\.json")


class MissingPartitionError(RuntimeError):
    """An upstream partition a run needs was never written, or its file is gone."""


class PartitionStore:
    def __init__(self, root: StoragePath) -> None:
        self.root = root

    def path(self, asset: str, partition: str) -> StoragePath:
        return self.root / asset / f"{partition}.parquet"

    def write(self, asset: str, frames: dict[str, pl.DataFrame]) -> None:
        """Write one file per partition key; each replaces exactly its own day. Without column
        statistics: a day's file is only ever read whole."""
        directory = self.root / asset
        ensure_dir(directory, PRIVATE_DIR_MODE)
        remove_stale_temp_files(directory)
        concurrently(
            lambda day: write_parquet_atomically(self.path(asset, day[0]), day[1], PRIVATE_FILE_MODE, statistics=False),
            frames.items(),
        )

    def read(self, asset: str, partitions: list[str]) -> pl.DataFrame:
        """The rows of several partitions in one frame; fails naming the first missing day."""
        paths = [self.path(asset, p) for p in partitions]
        for partition, path in zip(partitions, paths, strict=True):
            if not path.is_file():
                raise MissingPartitionError(
                    f"{asset} has no stored partition {partition} (expected {path}); "
                    f"materialize {asset} for {partition} first"
                )
        try:
            return pl.read_parquet(readable_all(paths))
        except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS):
            # Only now is each file opened on its own, to name the one that is damaged.
            for partition, path in zip(partitions, paths, strict=True):
                try:
                    pl.read_parquet(readable(path))
                except (pl.exceptions.PolarsError, *OBJECT_STORE_ERRORS) as exc:
                    raise DamagedFileError(
                        f"{path} is damaged and cannot be read ({first_line_of(exc)}); rebuild it with "
                        f"{rematerialize_command(asset, partition)}"
                    ) from None
            raise

    def stats_path(self, asset: str, partition: str) -> StoragePath:
        return self.root / asset / f"{partition}.stats.json"

    def write_stats(self, asset: str, stats: dict[str, dict[str, int]]) -> None:
        concurrently(
            lambda day: write_bytes_atomically(
                self.stats_path(asset, day[0]), json.dumps(day[1], sort_keys=True).encode(), PRIVATE_FILE_MODE
            ),
            stats.items(),
        )

    def stats_days(self, asset: str) -> list[str]:
        """The days (YYYY-MM-DD) whose statistics `asset` has written, in order."""
        return sorted(
            match.group(1) for path in children(self.root / asset) if (match := STATS_FILE.fullmatch(path.name))
        )

    def read_stats(self, asset: str, partition: str) -> dict[str, int]:
        path = self.stats_path(asset, partition)
        if not path.is_file():
            raise MissingPartitionError(
                f"{asset} has no statistics for partition {partition} (expected {path}); "
                f"materialize {asset} for {partition} again"
            )
        with reading(path, f"rebuild it with {rematerialize_command(asset, partition)}"):
            counts = json.loads(path.read_text())
            if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
                raise ValueError("not a JSON object of counts")
        return counts


def split_by_partition(frame: pl.DataFrame, partitions: list[str]) -> dict[str, pl.DataFrame]:
    """One frame per partition key, days without rows included as empty frames."""
    parts = {key.isoformat(): part for (key,), part in frame.partition_by("partition", as_dict=True).items()}
    return {key: parts.get(key, frame.clear()) for key in partitions}
