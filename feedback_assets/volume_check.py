"""The asset check `feedback_volume`: each exported day's source feedback rows against the days
before it (volume.py), a warning when the app seems to have stopped writing feedback, or to write
far too much; never a failed run.

No `from __future__ import annotations` here: Dagster resolves the check's `context` annotation at
definition time."""

import dagster as dg

from feedback_assets import volume
from feedback_assets.assets import anonymized_pairs
from feedback_assets.failures import explained_failures
from feedback_assets.partitions import days_of_run
from feedback_assets.resources import FeedbackSettings
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


# Quoted: dagster exports RawMetadataValue to type checkers only, and this module's annotations are
# evaluated when it loads (see the module's docstring).
def volume_metadata(judged: list[volume.DayVolume]) -> "dict[str, dg.RawMetadataValue]":
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


@dg.asset_check(
    asset=anonymized_pairs,
    description="Each of the run's days against the median of the 14 earlier days that had feedback: warns when a "
    "day has under FEEDBACK_VOLUME_LOW_RATIO (default 0.2) or over FEEDBACK_VOLUME_HIGH_RATIO (default 5) times "
    "that many source feedback rows, figures in by_day; quiet until 7 earlier days have feedback. A warning, "
    "never a failed run: a day with a twentieth of the usual rows usually means the app stopped writing feedback "
    "(a release bug, a broken sync). What to do: ask the app team; once the rows are in the source, the day is "
    "re-exported (docs/operate.md). The weekly audit_history job judges every day.",
)
def feedback_volume(context: dg.AssetCheckExecutionContext, feedback_settings: FeedbackSettings) -> dg.AssetCheckResult:
    with explained_failures():
        store = PartitionStore(feedback_settings.storage())
        judged = day_volumes(feedback_settings.settings, store, days_of_run(context.run.tags))
    for day in judged:
        if day.odd:
            context.log.warning(f"feedback_volume: {day.describe()}")
    return dg.AssetCheckResult(
        passed=not any(day.odd for day in judged),
        severity=dg.AssetCheckSeverity.WARN,
        metadata=volume_metadata(judged),
    )
