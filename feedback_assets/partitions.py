"""The one partitioning every asset shares: UTC days from FEEDBACK_PARTITIONS_START (2025-01-01)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import dagster as dg

from feedback_assets.settings import DEFAULT_PARTITIONS_START, ConfigError


def partitions_start(env: Mapping[str, str] | None = None) -> str:
    """The first day of the partitions, from FEEDBACK_PARTITIONS_START.

    The one setting read when the code location loads rather than when a run starts: Dagster needs
    the partitions to load the definitions at all. A bad value stops the load with this message,
    which the UI shows as the code location's error.
    """
    raw = ((os.environ if env is None else env).get("FEEDBACK_PARTITIONS_START") or "").strip()
    if not raw:
        return DEFAULT_PARTITIONS_START
    try:
        day = dt.date.fromisoformat(raw) if len(raw) == len("YYYY-MM-DD") else None
    except ValueError:
        day = None
    if day is None:
        raise ConfigError(f"FEEDBACK_PARTITIONS_START must be a date written YYYY-MM-DD, not {raw!r}")
    if day >= dt.datetime.now(dt.UTC).date():
        raise ConfigError(
            f"FEEDBACK_PARTITIONS_START is {raw}, not before today: the first partition must be a day that has ended"
        )
    return day.isoformat()


def backfill_days_per_run(env: Mapping[str, str] | None = None) -> int | None:
    """FEEDBACK_BACKFILL_DAYS_PER_RUN: the most days one run of a backfill takes; None (unset) for
    the whole range in one run. Read when the code location loads, like the partitions it splits."""
    raw = ((os.environ if env is None else env).get("FEEDBACK_BACKFILL_DAYS_PER_RUN") or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"FEEDBACK_BACKFILL_DAYS_PER_RUN must be a whole number of days, 1 or more, not {raw!r}")
    return int(raw)


Setting = TypeVar("Setting")


def _at_load(read: Callable[[], Setting], default: Setting) -> tuple[Setting, str | None]:
    """A setting read when the code location loads: its value, or the default and the problem.

    A bad value must not stop the load: the UI, the daemon and every job (erasure included) would
    be gone with it. The runs that depend on the value fail instead, with the message
    (`load_problems`), through the partition store every export step opens."""
    try:
        return read(), None
    except ConfigError as exc:
        return default, f"Configuration error: {exc}; fix it and reload the code location"


_START, _START_PROBLEM = _at_load(partitions_start, DEFAULT_PARTITIONS_START)
_DAYS_PER_RUN, _DAYS_PER_RUN_PROBLEM = _at_load(backfill_days_per_run, None)


def load_problems() -> list[str]:
    """What was wrong with the settings read when the code location loaded (empty when nothing)."""
    return [problem for problem in (_START_PROBLEM, _DAYS_PER_RUN_PROBLEM) if problem is not None]


daily_partitions = dg.DailyPartitionsDefinition(start_date=_START, timezone="UTC")


def backfill_policy_for(days_per_run: int | None) -> dg.BackfillPolicy:
    """By default every asset takes a whole partition range in one run: one run per day would spend
    hours of Dagster overhead on a year's backfill (docs/decisions.md, "One run for a range of
    days"). With FEEDBACK_BACKFILL_DAYS_PER_RUN a backfill fans out over runs of that many days,
    which the run coordinator may run side by side (on several machines, with shared storage)."""
    if days_per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=days_per_run)


backfill_policy = backfill_policy_for(_DAYS_PER_RUN)


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
