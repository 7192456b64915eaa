"""The persisted dedupe state (`seen_pair_hashes`): which partition owns each exported dedupe key.

One Parquet file per owning partition, holding only that partition's keys: a key is stored once,
so the state grows with the number of distinct keys, and a run replaces exactly its own days'
files, so runs on different days never overwrite each other's state. Files are per dedupe scope
and per HMAC key id, because keys made under another scope or key mean nothing here.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from feedback_assets.files import write_atomically
from feedback_assets.storage import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

STATE_SCHEMA = pl.Schema({"dedupe_key": pl.String, "partition": pl.Date})


class DedupeStateStore:
    def __init__(self, root: Path, scope: str, key_id: str) -> None:
        self.directory = root / "seen_pair_hashes" / f"scope={scope}" / f"key_id={key_id}"

    def path(self, partition: str) -> Path:
        return self.directory / f"{partition}.parquet"

    def partitions(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.parquet")) if self.directory.is_dir() else []

    def _scan(self, excluding: list[str]) -> pl.LazyFrame | None:
        files = [self.path(p) for p in self.partitions() if p not in set(excluding)]
        return pl.scan_parquet(files, schema=STATE_SCHEMA) if files else None

    def owners(self, keys: pl.Series, excluding: list[str]) -> pl.DataFrame:
        """The partitions outside `excluding` that own any of `keys` (vectorised scan, no per-row reads)."""
        scan = self._scan(excluding)
        if scan is None or keys.is_empty():
            return STATE_SCHEMA.to_frame()
        return scan.filter(pl.col("dedupe_key").is_in(keys.implode())).collect()

    def write(self, owned: dict[str, pl.DataFrame]) -> None:
        """Replace the state of each given partition with the keys it now owns."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        for partition, frame in owned.items():
            data = frame.select(STATE_SCHEMA.names()).sort("dedupe_key")
            write_atomically(self.path(partition), data.write_parquet, PRIVATE_FILE_MODE)

    def all_keys(self) -> pl.DataFrame:
        scan = self._scan([])
        return scan.collect() if scan is not None else STATE_SCHEMA.to_frame()
