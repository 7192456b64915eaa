"""Bounded slices of a run's days: a ranged run works through its days a slice at a time, so its
memory follows the size of a slice, not of the range (docs/decisions.md, "Bounded slices of days").
No Dagster here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# Smaller slices cost time (every slice scans the dimension tables once more), larger ones memory:
# a year of 5M rows peaked at 2.04 GiB with 750,000 rows a slice and 0.84 GiB with 400,000, while
# its source read took 34 s and 45 s (docs/benchmarks.md).
ROWS_PER_SLICE = 500_000
# Before the first slice nothing is known about the days' sizes: a week is small on any source.
FIRST_SLICE_DAYS = 7


def in_slices(
    days: Sequence[str], work: Callable[[list[str]], int], rows_per_slice: int | None = None
) -> list[list[str]]:
    """Call `work` on consecutive slices of `days`, in order; `work` returns how many rows it
    handled, and the next slice is sized from the rows per day of the one before. Returns the slices."""
    rows_per_slice = ROWS_PER_SLICE if rows_per_slice is None else rows_per_slice
    slices: list[list[str]] = []
    start, size = 0, FIRST_SLICE_DAYS
    while start < len(days):
        batch = list(days[start : start + size])
        rows = work(batch)
        slices.append(batch)
        start += len(batch)
        size = max(1, int(rows_per_slice * len(batch) / max(rows, 1)))
    return slices
