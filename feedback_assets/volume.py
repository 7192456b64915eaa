"""Whether a day's feedback volume looks like the app kept writing feedback (the check `feedback_volume`).

A release bug or a broken sync can stop the app from writing feedback while every run still
succeeds: a day with a twentieth of the usual rows is a valid day to every other check. Each day's
count of source feedback rows is compared with the median of the days before it that had any,
and a day far below or above it is flagged. Plain Python over one number per day; no Dagster here.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# How many earlier days with feedback make the baseline, and how few of them are too few to judge.
BASELINE_DAYS = 14
MIN_BASELINE_DAYS = 7
DEFAULT_LOW_RATIO = 0.2
DEFAULT_HIGH_RATIO = 5.0


@dataclass(frozen=True)
class DayVolume:
    """One day's source feedback rows against its baseline; `baseline` is None while fewer than
    MIN_BASELINE_DAYS earlier days had feedback (nothing to judge against yet)."""

    day: str
    rows: int
    baseline: float | None
    baseline_days: int
    low_ratio: float
    high_ratio: float

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        return self.rows / self.baseline

    @property
    def too_low(self) -> bool:
        return self.ratio is not None and self.ratio < self.low_ratio

    @property
    def too_high(self) -> bool:
        return self.ratio is not None and self.ratio > self.high_ratio

    @property
    def odd(self) -> bool:
        return self.too_low or self.too_high

    def describe(self) -> str:
        if self.baseline is None:
            return f"{self.day}: {self.rows} row(s); only {self.baseline_days} earlier day(s) with feedback, not judged"
        verdict = "below" if self.too_low else "above" if self.too_high else "within"
        return (
            f"{self.day}: {self.rows} row(s), {self.ratio:.2f} times the median {self.baseline:g} of the "
            f"{self.baseline_days} earlier day(s) with feedback, {verdict} the expected "
            f"{self.low_ratio:g}..{self.high_ratio:g}"
        )


def day_volumes(
    rows_by_day: Mapping[str, int],
    days: Sequence[str],
    *,
    low_ratio: float = DEFAULT_LOW_RATIO,
    high_ratio: float = DEFAULT_HIGH_RATIO,
) -> list[DayVolume]:
    """Each of `days` (YYYY-MM-DD, present in `rows_by_day`) against the median of the BASELINE_DAYS
    latest earlier days of `rows_by_day` with at least one row. Days without feedback stay out of
    the baseline, so an outage does not lower the bar for the days after it."""
    with_feedback = sorted(day for day, rows in rows_by_day.items() if rows > 0)
    judged = []
    for day in days:
        earlier = [d for d in with_feedback if d < day][-BASELINE_DAYS:]
        baseline = statistics.median(rows_by_day[d] for d in earlier) if len(earlier) >= MIN_BASELINE_DAYS else None
        judged.append(DayVolume(day, rows_by_day[day], baseline, len(earlier), low_ratio, high_ratio))
    return judged
