"""Bounded slices of a run's days: a ranged run works through its days a slice at a time, so its
memory follows the size of a slice, not of the range (docs/decisions.md, "Bounded slices of days").
No Dagster here."""

from __future__ import annotations

from collections.abc import Callable, Sequence

# About 0.5 GiB of working memory in the heaviest step (the source read and its join), measured on
# the benchmark's year; a year of 13,700 rows a day takes seven slices.
ROWS_PER_SLICE = 750_000
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
