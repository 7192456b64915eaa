"""Each exported day's source feedback rows, from the stored statistics, judged against the days
before it (volume.py's rules): what the `feedback_volume` check and the weekly audit report."""

from __future__ import annotations

import dagster as dg

from feedback_assets import volume
from feedback_assets.settings import ExportSettings
from feedback_assets.storage import PartitionStore

# anonymized_pairs counts every source feedback row of its days, whatever becomes of it.
COUNTED_BY = "anonymized_pairs"
SOURCE_ROWS = "total_feedback_records"


def day_volumes(
    settings: ExportSettings, store: PartitionStore, days: set[str] | None = None
) -> list[volume.DayVolume]:
    """`days` (all days with statistics when None) judged against the days before them; reads one
    small statistics file per day, never the partitions."""
    known = store.stats_days(COUNTED_BY)
    wanted = [day for day in known if days is None or day in days]
    if not wanted:
        return []
    # The baseline needs at most BASELINE_DAYS days with feedback before the first day judged; days
    # without feedback are skipped, so read back until enough are found rather than a fixed span.
    earlier = [day for day in known if day < wanted[0]]
    rows: dict[str, int] = {}
    with_feedback = 0
    for day in reversed(earlier):
        rows[day] = store.read_stats(COUNTED_BY, day).get(SOURCE_ROWS, 0)
        with_feedback += rows[day] > 0
        if with_feedback >= volume.BASELINE_DAYS:
            break
    rows.update({day: store.read_stats(COUNTED_BY, day).get(SOURCE_ROWS, 0) for day in known if day >= wanted[0]})
    return volume.day_volumes(rows, wanted, low_ratio=settings.volume_low_ratio, high_ratio=settings.volume_high_ratio)


def volume_metadata(judged: list[volume.DayVolume]) -> dict[str, dg.RawMetadataValue]:
    odd = [day for day in judged if day.odd]
    metadata: dict[str, dg.RawMetadataValue] = {
        "days_judged": sum(day.baseline is not None for day in judged),
        "days_not_judged": sum(day.baseline is None for day in judged),
        "days_below": sum(day.too_low for day in judged),
        "days_above": sum(day.too_high for day in judged),
        "by_day": dg.MetadataValue.md("\n".join(f"- {day.describe()}" for day in judged) or "no day"),
    }
    if odd:
        metadata["odd_days"] = ", ".join(day.day for day in odd)
    return metadata
