"""Dagster's own floor: a code location of the real graph's exact shape whose steps do nothing.

Every asset, check, dependency, partitioning, backfill policy, pool and the executor are copied from
`feedback_assets.definitions` itself, so the floor stays in step with the graph; a test compares
the two. Each step only reports what the real one reports per day (one materialization per asset
and day, one metadata entry per day), so the difference between a run of this graph and a run of
the real one is the data path.

    dagster asset materialize -m benchmarks.noop_graph --select '*' --partition-range A...B
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition time.
from collections.abc import Iterator

import dagster as dg

from feedback_assets import definitions
from feedback_assets.assets import FEEDBACK_ASSETS, FEEDBACK_CHECKS
from feedback_assets.freshness import training_csv_freshness
from feedback_assets.volume_check import feedback_volume


def _noop_asset(real: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @dg.multi_asset(
        name=real.node_def.name,
        specs=list(real.specs),
        backfill_policy=real.backfill_policy,
        pool=real.node_def.pool if isinstance(real.node_def, dg.OpDefinition) else None,
    )
    def noop(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        for key in [spec.key for spec in real.specs]:
            for day in context.partition_keys:
                context.add_asset_metadata({"dagster/row_count": 0}, asset_key=key, partition_key=day)
            yield dg.MaterializeResult(asset_key=key)

    return noop


def _noop_check(real: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    (spec,) = real.check_specs

    @dg.asset_check(asset=spec.asset_key, name=spec.name, blocking=spec.blocking)
    def noop() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return noop


defs = dg.Definitions(
    assets=[_noop_asset(real) for real in FEEDBACK_ASSETS],
    # The freshness check only reads Dagster's own records, so the floor runs the real one.
    asset_checks=[*(_noop_check(real) for real in (*FEEDBACK_CHECKS, feedback_volume)), *training_csv_freshness],
    executor=definitions.defs.executor,
)
