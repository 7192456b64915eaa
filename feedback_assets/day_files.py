"""A day's files in every format of FEEDBACK_EXPORT_FORMATS (docs/ml.md): the CSV, the typed Parquet of
each split, and the manifest that lists them. No Dagster here.

The Parquet is made from the same rows as the CSV, after the same k-anonymity suppression, in the
same order, but from the cells before the spreadsheet escape, and split by the split those rows
carry, drawn from the stable pseudonym (`csv_cells.source_columns`), which never reaches a file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import polars as pl

from feedback_assets.csv_cells import EXPORTED_TIMES, SPLIT_COLUMN, SplitsOf, unescaped, untexted
from feedback_assets.schemas import TEXT_COLUMNS
from feedback_assets.splits import SPLIT_NAMES, Split, SplitDraws, SplitName, assign_splits, split_counts
from feedback_assets.storage import Storage
from feedback_assets.storage.base import write_bytes
from feedback_assets.training_csv import csv_bytes, csv_name, manifest_name, training_files
from feedback_assets.typed_export import (
    PARQUET_DIR,
    parquet_name,
    split_frames,
    typed_files,
    typed_rows,
    write_typed_parquet,
)

# The manifest's format: what it lists beyond the CSV's fields of docs/contract.md, section 4.
MANIFEST_PARQUET: Final = "parquet"
MANIFEST_SPLIT_COUNTS: Final = "split_counts"


@dataclass(frozen=True)
class DayFormats:
    """What shapes a day's files besides its rows: the formats, and for the Parquet the split and key.
    One per run: it keeps the draws of the users the run's days met (`splits.SplitDraws`)."""

    formats: tuple[str, ...]
    split: Split
    master_key: bytes = field(repr=False)
    draws: SplitDraws = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "draws", SplitDraws(self.master_key))

    @property
    def csv(self) -> bool:
        return "csv" in self.formats

    @property
    def parquet(self) -> bool:
        return "parquet" in self.formats

    def splits_of(self, stable_pseudonyms: pl.Series) -> pl.Series:
        """The split of each row by its stable pseudonym (`splits.assign_splits`), with the run's draws."""
        return assign_splits(stable_pseudonyms, self.split, self.master_key, self.draws)

    @property
    def sources(self) -> SplitsOf | None:
        """What `csv_cells.training_rows_by_day` needs to add the typed export's sources: none without Parquet."""
        return self.splits_of if self.parquet else None


@dataclass(frozen=True)
class DayFiles:
    """What one day's export wrote: the CSV's name (None without CSV) and rows per split (empty without Parquet)."""

    csv: str | None
    rows: int
    split_counts: dict[SplitName, int]


def remove_stale_temp_files(exports: Storage) -> None:
    """The temporary files killed runs left in the export dir and beside each split's files."""
    exports.remove_stale_temp_files()
    for split in SPLIT_NAMES:
        (exports / PARQUET_DIR / split).remove_stale_temp_files()


def measured_files(exports: Storage) -> dict[str, list[str]]:
    """The files holding each exported day's rows once, oldest day first: its CSV, or where the day
    has none (FEEDBACK_EXPORT_FORMATS=parquet) its typed files, so a privacy measure sees every day."""
    by_day: dict[str, list[str]] = {day: list(files.values()) for day, files in typed_files(exports).items()}
    by_day.update({day: [name] for day, name in training_files(exports).items()})
    return dict(sorted(by_day.items()))


def csv_cells(rows: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """The CSV's columns of rows that may also carry the sources."""
    return rows.select(columns)


def typed_day(rows: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """The typed frame of the day's rows, from the text before the escape and the times before they were text."""

    def source(name: str) -> pl.Expr:
        if name in TEXT_COLUMNS:
            return pl.col(unescaped(name)).alias(name)
        if name in EXPORTED_TIMES:
            return pl.col(untexted(name)).alias(name)
        return pl.col(name)

    return typed_rows(rows.select(source(name) for name in columns), escaped=False)


def write_day(
    exports: Storage,
    partition: str,
    rows: pl.DataFrame,
    columns: Sequence[str],
    facts: Mapping[str, object],
    day_formats: DayFormats,
) -> DayFiles:
    """Write the day's CSV, then its Parquet files (one per split, empty or not, so every day has its
    three and a split's glob never misses a day), then the manifest describing them, each atomically.

    `rows` are the CSV's rows in its order, with `csv_cells.source_columns` when Parquet is written."""
    exports.ensure()
    manifest: dict[str, object] = {**facts, "export_formats": list(day_formats.formats)}
    cells = csv_cells(rows, columns)
    name: str | None = None
    data = b""
    if day_formats.csv:
        name = csv_name(partition)
        data = csv_bytes(cells)
        write_bytes(exports, name, data)
    counts: dict[SplitName, int] = {}
    if day_formats.parquet:
        splits = rows[SPLIT_COLUMN]
        counts = split_counts(splits)
        listed = []
        for split, frame in split_frames(typed_day(rows, columns), splits, SPLIT_NAMES).items():
            path = parquet_name(split, partition)
            sha256 = write_typed_parquet(exports, path, frame)
            listed.append({"split": split, "path": path, "rows": frame.height, "sha256": sha256})
        manifest.update({"split": str(day_formats.split), MANIFEST_SPLIT_COUNTS: counts, MANIFEST_PARQUET: listed})
    manifest.update(
        {"csv": name, "row_count": cells.height, "sha256": hashlib.sha256(data).hexdigest() if name else None}
    )
    write_bytes(exports, manifest_name(partition), json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n")
    return DayFiles(name, cells.height, counts)
