"""A day's feedback volume against the days before it (volume.py): the figures behind `feedback_volume`."""

from __future__ import annotations

import datetime as dt

import pytest

from feedback_assets.volume import day_volumes

FIRST = dt.date(2025, 10, 1)


def days(counts: list[int]) -> dict[str, int]:
    """Consecutive days from FIRST with these row counts."""
    return {(FIRST + dt.timedelta(days=i)).isoformat(): n for i, n in enumerate(counts)}


def last(rows_by_day: dict[str, int]) -> str:
    return max(rows_by_day)


@pytest.mark.parametrize(
    ("today", "odd", "low", "high"),
    [
        (39, True, True, False),
        (40, False, False, False),
        (200, False, False, False),
        (999, False, False, False),
        (1001, True, False, True),
    ],
)
def test_a_day_far_below_or_above_the_median_of_earlier_days_is_odd(
    today: int, odd: bool, low: bool, high: bool
) -> None:
    counts = days([100, 300, 200, 250, 150, 220, 180, today])
    (volume,) = day_volumes(counts, [last(counts)])
    assert volume.baseline == 200
    assert (volume.odd, volume.too_low, volume.too_high) == (odd, low, high)


def test_fewer_than_seven_earlier_days_with_feedback_are_not_judged() -> None:
    counts = days([100, 100, 0, 100, 100, 100, 100, 1])
    (volume,) = day_volumes(counts, [last(counts)])
    assert volume.baseline is None and volume.baseline_days == 6
    assert not volume.odd
    assert "not judged" in volume.describe()


def test_days_without_feedback_stay_out_of_the_baseline() -> None:
    """After a three-day outage the next day is judged against days that had feedback."""
    counts = days([100] * 7 + [0, 0, 0] + [3])
    judged = {volume.day: volume for volume in day_volumes(counts, sorted(counts))}
    outage = [judged[day] for day in sorted(counts)[7:10]]
    assert all(volume.too_low and volume.baseline == 100 for volume in outage)
    recovered = judged[last(counts)]
    assert recovered.baseline == 100 and recovered.baseline_days == 7 and recovered.too_low


def test_only_the_latest_fourteen_earlier_days_make_the_baseline() -> None:
    counts = days([10_000] * 10 + [100] * 14 + [30])
    (volume,) = day_volumes(counts, [last(counts)])
    assert volume.baseline == 100 and volume.baseline_days == 14
    assert not volume.odd


def test_the_bounds_are_settings() -> None:
    counts = days([100] * 7 + [40])
    (default,) = day_volumes(counts, [last(counts)])
    (strict,) = day_volumes(counts, [last(counts)], low_ratio=0.5, high_ratio=2)
    assert not default.odd and strict.too_low
    assert strict.describe() == (
        "2025-10-08: 40 row(s), 0.40 times the median 100 of the 7 earlier day(s) with feedback, below the "
        "expected 0.5..2"
    )
