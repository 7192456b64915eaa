"""The one partitioning every asset shares: UTC days from 2025-01-01."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import dagster as dg

PARTITIONS_START = "2025-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")

# Every asset takes a whole partition range in one run: one run per day would spend hours of
# Dagster overhead on a year's backfill (docs/decisions.md, "One run for a range of days").
single_run_backfill = dg.BackfillPolicy.single_run()


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
