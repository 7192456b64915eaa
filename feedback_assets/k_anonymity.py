"""k-anonymity of the exported rows over their quasi-identifiers (pure Polars, no Dagster).

A row whose (age_range, conditions) combination is shared by fewer than k rows singles out a small
group of people; the check reports the smallest group and how many rows sit in groups below the
threshold, and the opt-in suppression drops those rows from a day's file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

QUASI_IDENTIFIERS = ("age_range", "conditions")


@dataclass(frozen=True)
class KAnonymity:
    rows: int
    smallest_group: int
    rows_below_threshold: int


def group_size() -> pl.Expr:
    return pl.len().over(QUASI_IDENTIFIERS)


def measure(rows: pl.DataFrame | pl.LazyFrame, threshold: int) -> KAnonymity:
    """The smallest group size k (0 for no rows) and the rows in groups smaller than `threshold`."""
    # Streaming: a year of files is counted in batches, never held whole in memory.
    sizes = rows.lazy().group_by(QUASI_IDENTIFIERS).len().collect(engine="streaming")
    if sizes.is_empty():
        return KAnonymity(rows=0, smallest_group=0, rows_below_threshold=0)
    small = sizes.filter(pl.col("len") < threshold)
    return KAnonymity(
        rows=int(sizes["len"].sum()),
        smallest_group=int(sizes["len"].min()),  # type: ignore[arg-type]
        rows_below_threshold=int(small["len"].sum()),
    )


def suppress_small_groups(rows: pl.DataFrame, threshold: int) -> tuple[pl.DataFrame, int]:
    """The rows whose group has at least `threshold` members, and how many were dropped."""
    kept = rows.filter(group_size() >= threshold)
    return kept, rows.height - kept.height


def quasi_identifiers(files: list[Path]) -> pl.LazyFrame:
    """The quasi-identifier columns of every row of `files`, as text."""
    if not files:
        return pl.LazyFrame(schema=dict.fromkeys(QUASI_IDENTIFIERS, pl.String))
    return pl.scan_csv(files, infer_schema=False).select(QUASI_IDENTIFIERS)
