"""What every export asset's run shares: its definition (daily partitions, backfill policy, group),
its skeleton (the days in bounded slices, the storage lock held, writes behind the next slice's
work) and its report, one materialization per day with that day's own numbers."""

import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg

from feedback_assets import catalog
from feedback_assets.asset_names import AssetName
from feedback_assets.failures import explained_failures
from feedback_assets.files import WritesBehind
from feedback_assets.partitions import backfill_policy, daily_partitions
from feedback_assets.resources import StorageResource
from feedback_assets.slices import in_slices

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


class SlicedRun:
    """One export step over its days: `writing()` holds the storage lock and the writes behind,
    `over_slices` hands the work the days a slice at a time, `report` gives each day its metadata.

    Made when the step starts, so the step's reported time includes its reads before the slices."""

    def __init__(self, context: dg.AssetExecutionContext) -> None:
        self.context = context
        self.started = time.perf_counter()
        self.metadata: dict[str, dict[str, Any]] = {}

    @contextmanager
    def writing(self, feedback_storage: StorageResource) -> Iterator[WritesBehind]:
        """Domain errors become plain Failures; erasure waits while this is held; every write
        submitted behind has landed (or raised) when this ends."""
        with (
            explained_failures(),
            feedback_storage.writing(self.context.log.info, self.context.instance),
            WritesBehind() as behind,
        ):
            yield behind

    def over_slices(self, work: Callable[[list[str]], int], days: Sequence[str] | None = None) -> None:
        in_slices(list(self.context.partition_keys if days is None else days), work)

    def report(
        self, asset_key: dg.AssetKey | None = None, metadata: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dg.MaterializeResult:
        return report(
            self.context,
            self.context.asset_key if asset_key is None else asset_key,
            self.metadata if metadata is None else metadata,
            self.started,
        )
