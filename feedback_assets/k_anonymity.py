"""k-anonymity and l-diversity of the exported rows (pure Polars, no Dagster).

Rows that share every quasi-identifier (by default age_range and the two exported times: what an
attacker may know of a person) form a group. k is the smallest group: a row in a group of one
singles a person out. l is the smallest number of distinct `conditions` (the sensitive attribute,
health data) within a group: a group whose rows all hold the same conditions tells an attacker who
places a person in it that person's conditions, however large it is. The check reports both and the
rows in groups below the threshold; the opt-in suppression drops those rows from a day's file.
Cells are compared as the CSV shows them, an empty cell being one value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from feedback_assets.settings import SENSITIVE_ATTRIBUTE
from feedback_assets.storage import Storage
from feedback_assets.typed_export import csv_text


@dataclass(frozen=True)
class KAnonymity:
    rows: int
    smallest_group: int
    rows_below_threshold: int
    # Distinct sensitive values in the least diverse group (0 for no rows).
    l_diversity: int = 0
    groups: int = 0
    # Rows whose group holds one `conditions` value only: placing a person in it reveals theirs.
    rows_in_uniform_groups: int = 0


def _as_cells(names: Sequence[str]) -> list[pl.Expr]:
    return [pl.col(name).cast(pl.String).fill_null("") for name in names]


def group_size(quasi_identifiers: Sequence[str]) -> pl.Expr:
    return pl.len().over(_as_cells(quasi_identifiers))


def measure(
    rows: pl.DataFrame | pl.LazyFrame,
    threshold: int,
    quasi_identifiers: Sequence[str],
) -> KAnonymity:
    """k (the smallest group; 0 for no rows), the rows in groups smaller than `threshold`, and l."""
    # Streaming: a year of files is counted in batches, never held whole in memory.
    sizes = (
        rows.lazy()
        .select(*_as_cells(quasi_identifiers), *_as_cells([SENSITIVE_ATTRIBUTE]))
        .group_by(quasi_identifiers)
        .agg(pl.len(), pl.col(SENSITIVE_ATTRIBUTE).n_unique().alias("distinct_sensitive"))
        .collect(engine="streaming")
    )
    if sizes.is_empty():
        return KAnonymity(rows=0, smallest_group=0, rows_below_threshold=0)
    small = sizes.filter(pl.col("len") < threshold)
    return KAnonymity(
        rows=int(sizes["len"].sum()),
        smallest_group=int(sizes["len"].min()),  # type: ignore[arg-type]
        rows_below_threshold=int(small["len"].sum()),
        l_diversity=int(sizes["distinct_sensitive"].min()),  # type: ignore[arg-type]
        groups=sizes.height,
        rows_in_uniform_groups=int(sizes.filter(pl.col("distinct_sensitive") == 1)["len"].sum()),
    )


def suppress_small_groups(
    rows: pl.DataFrame, threshold: int, quasi_identifiers: Sequence[str]
) -> tuple[pl.DataFrame, int]:
    """The rows whose group has at least `threshold` members, and how many were dropped."""
    kept = rows.filter(group_size(quasi_identifiers) >= threshold)
    return kept, rows.height - kept.height


def exported_cells(exports: Storage, files: Sequence[str], quasi_identifiers: Sequence[str]) -> pl.LazyFrame:
    """The quasi-identifier and sensitive columns of every row of `files` in `exports`, as the CSV's
    text, scanned file by file: a year of files is never fetched or held at once. `files` are CSVs,
    and for a day exported as Parquet alone its typed files (`day_files.measured_files`)."""
    names = [*quasi_identifiers, SENSITIVE_ATTRIBUTE]
    csvs = [name for name in files if not name.endswith(".parquet")]
    typed = [name for name in files if name.endswith(".parquet")]
    scans = [exports.scan_csv(csvs).select(names)] if csvs else []
    if typed:
        scans.append(exports.scan_parquet(typed).select(csv_text(names)))
    return pl.concat(scans) if scans else pl.LazyFrame(schema=dict.fromkeys(names, pl.String))
