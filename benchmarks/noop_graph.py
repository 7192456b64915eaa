"""Dagster's own floor: a code location of the real graph's exact shape whose steps do nothing.

Every asset, check, dependency, partitioning, backfill policy, pool and the executor are copied from
`feedback_assets.definitions` itself, so the floor stays in step with the graph; a test compares
the two. Each step only reports what the real one reports per day (one materialization per asset
and day, one metadata entry per day), so the difference between a run of this graph and a run of
the real one is the data path.

    dagster asset materialize -m benchmarks.noop_graph --select '*' --partition-range A...B
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition time.
import warnings
from collections.abc import Iterator

import dagster as dg
from dagster._core.definitions.external_asset import create_external_asset_from_source_asset

from feedback_assets import definitions
from feedback_assets.defs.assets import FEEDBACK_ASSETS
from feedback_assets.defs.checks import FEEDBACK_CHECKS
from feedback_assets.defs.nightly_export import training_csv_freshness
from feedback_assets.defs.release import training_dataset
from feedback_assets.defs.source_watch import app_feedback_source


def _noop_asset(real: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=real.node_def.name,
        specs=list(real.specs),
        backfill_policy=real.backfill_policy,
        pool=real.node_def.pool if isinstance(real.node_def, dg.OpDefinition) else None,
    )
    def noop(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        for key in [spec.key for spec in real.specs]:
            for day in context.partition_keys if real.partitions_def else []:
                context.add_asset_metadata({"dagster/row_count": 0}, asset_key=key, partition_key=day)
            yield dg.MaterializeResult(asset_key=key)

    return noop


def _noop_check(real: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    (spec,) = real.check_specs

    @dg.asset_check(asset=spec.asset_key, name=spec.name, blocking=spec.blocking)
    def noop() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return noop


def _noop_source() -> dg.AssetsDefinition:
    """The observable source asset, observing nothing: runs of the graph never observe it."""

    def observe() -> dg.DataVersionsByPartition:
        return dg.DataVersionsByPartition({})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.filterwarnings("ignore", message="Property `OpDefinition.version` is deprecated")
        return create_external_asset_from_source_asset(
            dg.observable_source_asset(
                key=app_feedback_source.key,
                partitions_def=app_feedback_source.partitions_def,
                group_name=app_feedback_source.group_names_by_key[app_feedback_source.key],
            )(observe)
        )


defs = dg.Definitions(
    assets=[*(_noop_asset(real) for real in [*FEEDBACK_ASSETS, training_dataset]), _noop_source()],
    # The freshness check only reads Dagster's own records, so the floor runs the real one.
    asset_checks=[*(_noop_check(real) for real in FEEDBACK_CHECKS), *training_csv_freshness],
    executor=definitions.defs.executor,
)
