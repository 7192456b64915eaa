"""The one partitioning every asset shares: UTC days from FEEDBACK_PARTITIONS_START (2025-01-01)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import dagster as dg

from feedback_assets.settings import LoadSettings
from feedback_assets.settings_fields import read_leniently, read_setting


def partitions_start(env: Mapping[str, str] | None = None) -> str:
    """The first day of the partitions, from FEEDBACK_PARTITIONS_START; a ConfigError when it is wrong."""
    start: str = read_setting(LoadSettings, "partitions_start", env)
    return start


def backfill_days_per_run(env: Mapping[str, str] | None = None) -> int | None:
    """FEEDBACK_BACKFILL_DAYS_PER_RUN: the most days one run of a backfill takes; None (unset) for
    the whole range in one run."""
    days: int | None = read_setting(LoadSettings, "backfill_days_per_run", env)
    return days


# Read when the code location loads: Dagster needs the partitions, and the backfill policy that
# splits them, to load the definitions at all. A bad value must not stop the load: the UI, the
# daemon and every job (erasure included) would be gone with it. It leaves the default in place,
# and the runs that depend on the value fail instead, with the message (`load_problems`), through
# the partition store every export step opens.
LOADED, _PROBLEMS = read_leniently(LoadSettings)


def load_problems() -> list[str]:
    """What was wrong with the settings read when the code location loaded (empty when nothing)."""
    return [
        f"Configuration error: {_PROBLEMS[field]}; fix it and reload the code location"
        for field in ("partitions_start", "backfill_days_per_run")
        if field in _PROBLEMS
    ]


daily_partitions = dg.DailyPartitionsDefinition(start_date=LOADED.partitions_start, timezone="UTC")


def backfill_policy_for(days_per_run: int | None) -> dg.BackfillPolicy:
    """By default every asset takes a whole partition range in one run: one run per day would spend
    hours of Dagster overhead on a year's backfill (docs/decisions.md, "One run for a range of
    days"). With FEEDBACK_BACKFILL_DAYS_PER_RUN a backfill fans out over runs of that many days,
    which the run coordinator may run side by side (on several machines, with shared storage)."""
    if days_per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=days_per_run)


backfill_policy = backfill_policy_for(LOADED.backfill_days_per_run)


def days_of_run(tags: Mapping[str, str]) -> set[str]:
    """A run's days as YYYY-MM-DD, from the partition tags Dagster puts on every partitioned run."""
    if "dagster/partition" in tags:
        return {tags["dagster/partition"]}
    first, last = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if not (first and last):
        return set()
    return set(daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last)))


def window_of(days: Sequence[str]) -> tuple[dt.datetime, dt.datetime]:
    """[first day 00:00, the day after the last 00:00) in UTC, for consecutive day keys."""
    first = daily_partitions.time_window_for_partition_key(days[0])
    last = daily_partitions.time_window_for_partition_key(days[-1])
    return first.start, last.end
