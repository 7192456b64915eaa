"""What every export asset's run shares: its definition (daily partitions, backfill policy, group)
and its report, one materialization per day with that day's own numbers."""

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dagster as dg

from feedback_assets import catalog
from feedback_assets.asset_names import AssetName
from feedback_assets.partitions import backfill_policy, daily_partitions

GROUP = "feedback_export"
# The job that exports the graph: the schedule's and the source sensor's (defs/nightly_export.py).
EXPORT_JOB = "feedback_export"
# Steps that read or write the dedupe state share this pool; give it a limit of 1 (README) so
# only one run at a time claims keys. The state stays consistent without it (each day's claim is
# a function of the source and writes only its own file); the pool keeps claims serial anyway.
DEDUPE_STATE_POOL = "feedback_dedupe_state"

# The keys the definitions name one another by: no definitions module imports another's objects.
RAW_FEEDBACK = dg.AssetKey(AssetName.RAW_FEEDBACK.value)
ANONYMIZED_PAIRS = dg.AssetKey(AssetName.ANONYMIZED_PAIRS.value)
DEDUPLICATED_PAIRS = dg.AssetKey(AssetName.DEDUPLICATED_PAIRS.value)
SEEN_PAIR_HASHES = dg.AssetKey(AssetName.SEEN_PAIR_HASHES.value)
TRAINING_CSV = dg.AssetKey(AssetName.TRAINING_CSV.value)
APP_FEEDBACK_SOURCE = dg.AssetKey(AssetName.APP_FEEDBACK_SOURCE.value)


def report(
    context: dg.AssetExecutionContext,
    asset_key: dg.AssetKey,
    per_partition: Mapping[str, Mapping[str, Any]],
    started: float,
) -> dg.MaterializeResult:
    """One materialization per day with that day's own numbers, also in a ranged run.

    Dagster records a ranged output once per day; metadata added for a partition goes onto that
    day's event only, so no second event per day is needed (docs/decisions.md, "One event per day").
    """
    for key, metadata in per_partition.items():
        context.add_asset_metadata(dict(metadata), asset_key=asset_key, partition_key=key)
    # Each day's event carries the step's time for the whole run, named as such, and the day's even share.
    seconds = time.perf_counter() - started
    days = max(len(per_partition), 1)
    return dg.MaterializeResult(
        asset_key=asset_key,
        metadata={
            "step_seconds_whole_run": round(seconds, 3),
            "step_seconds_day_share": round(seconds / days, 3),
            "partitions_in_run": len(per_partition),
        },
    )


def export_asset(
    page: catalog.AssetPage, deps: Sequence[dg.AssetsDefinition | dg.AssetKey] | None = None
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """Every asset shares the daily partitions, the backfill policy (one run for a range, unless
    FEEDBACK_BACKFILL_DAYS_PER_RUN fans it out) and the group; `page` is what its catalog page shows
    (`catalog.page`)."""
    # Dagster warns that `backfill_policy` is beta each time the code location loads, in the server
    # and again in every run; the policy is chosen knowingly (docs/decisions.md), so that one
    # category is silenced here, where the parameter is passed, and nowhere else.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(
            partitions_def=daily_partitions,
            backfill_policy=backfill_policy,
            group_name=GROUP,
            deps=deps,
            **page,
        )
