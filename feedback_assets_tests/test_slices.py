"""Slices of days: every day once, in order, sized from the rows per day seen so far."""

from __future__ import annotations

from feedback_assets.slices import FIRST_SLICE_DAYS, in_slices

DAYS = [f"2025-01-{d:02d}" for d in range(1, 32)]


def test_every_day_is_handled_once_in_order_and_slices_follow_the_rows_per_day() -> None:
    seen: list[str] = []

    def work(batch: list[str]) -> int:
        seen.extend(batch)
        return 100 * len(batch)

    slices = in_slices(DAYS, work, rows_per_slice=1_000)
    assert seen == DAYS
    assert [len(s) for s in slices] == [FIRST_SLICE_DAYS, 10, 10, 4]


def test_a_day_larger_than_a_slice_is_a_slice_of_its_own_and_empty_days_widen_the_next() -> None:
    sizes = {day: (5_000 if day == "2025-01-03" else 0) for day in DAYS}
    slices = in_slices(DAYS[:10], lambda batch: sum(sizes[d] for d in batch), rows_per_slice=1_000)
    assert slices[0] == DAYS[:7]
    assert [len(s) for s in slices[1:]] == [1, 2]
    slices = in_slices(DAYS[:3], lambda batch: 10**9, rows_per_slice=1_000)
    assert slices == [DAYS[:3]]
    assert [len(s) for s in in_slices(DAYS, lambda batch: 10**6 * len(batch), rows_per_slice=1)][:3] == [7, 1, 1]
