"""Running the package's own `feedback_export` job for the benchmarks, as a user's run would, and
reading back what each day's materializations recorded. Nothing here comes from the tests."""

from __future__ import annotations

import dagster as dg

from feedback_assets.definitions import defs
from feedback_assets.resources import FeedbackSettings, resources_for

EXPORT_JOB = "feedback_export"
# A fixed pseudonymisation key for the benchmarks' throwaway exports (set as FEEDBACK_HMAC_KEY unless one is set).
BENCH_KEY_HEX = "0123456789abcdef" * 4


def run_export(
    instance: dg.DagsterInstance, settings: FeedbackSettings, first: str, last: str | None = None
) -> dg.ExecuteInProcessResult:
    """One run of the feedback_export job over the days first..last (one partition when last is None)."""
    job = defs.resolve_job_def(EXPORT_JOB)
    resources = resources_for(settings)
    if last is None:
        return job.execute_in_process(instance=instance, resources=resources, partition_key=first)
    return job.execute_in_process(
        instance=instance,
        resources=resources,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict[str, object]:
    """The metadata of the asset's latest materialization for one day, as plain values."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        raise LookupError(f"{asset} {partition} was never materialized")
    metadata = records[0].asset_materialization.metadata
    return {key: getattr(value, "value", value) for key, value in metadata.items()}
