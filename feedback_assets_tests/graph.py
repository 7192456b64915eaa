"""Materializing the real asset graph in-process on a temporary Dagster instance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from feedback_assets.defs.assets import FEEDBACK_ASSETS
from feedback_assets.defs.checks import feedback_volume, k_anonymity_of_exports, no_key_owned_twice
from feedback_assets.resources import FeedbackSettings, resources_for

KEY_HEX = "0123456789abcdef" * 4
ALL_ASSETS = (
    "raw_feedback",
    "rejected_feedback",
    "anonymized_pairs",
    "deduplicated_pairs",
    "seen_pair_hashes",
    "training_csv",
)


def settings_for(tmp_path: Path, source_url: str, **overrides: str | int | bool) -> FeedbackSettings:
    """Settings for a run under tmp_path; `overrides` may be raw config text ("true", "exact")."""
    values = {
        "source_url": source_url,
        "export_dir": str(tmp_path / "export"),
        "storage_dir": str(tmp_path / "storage"),
        **overrides,
    }
    # Pydantic coerces raw config values as Dagster's run config would.
    return FeedbackSettings(**values)


def selection(assets: tuple[str, ...] = ALL_ASSETS) -> list[dg.AssetsDefinition | dg.AssetChecksDefinition]:
    """The definitions that make `assets`, with the checks on them (one step may make several)."""
    wanted = {dg.AssetKey(name) for name in assets}
    selected: list[dg.AssetsDefinition | dg.AssetChecksDefinition] = [
        definition for definition in FEEDBACK_ASSETS if wanted & set(definition.keys)
    ]
    if "anonymized_pairs" in assets:
        selected.append(feedback_volume)
    if "seen_pair_hashes" in assets:
        selected.append(no_key_owned_twice)
    if "training_csv" in assets:
        selected.append(k_anonymity_of_exports)
    return selected


def materialize(
    instance: dg.DagsterInstance,
    settings: FeedbackSettings,
    first: str,
    last: str | None = None,
    assets: tuple[str, ...] = ALL_ASSETS,
    tags: Mapping[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """One run over the days first..last (one partition when last is None), failing loudly."""
    selected = selection(assets)
    if last is None:
        return dg.materialize(
            selected,
            instance=instance,
            resources=resources_for(settings),
            partition_key=first,
            tags=dict(tags or {}),
        )
    return dg.materialize(
        selected,
        instance=instance,
        resources=resources_for(settings),
        tags={**(tags or {}), "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict[str, Any]:
    """The metadata of the asset's latest materialization for one day, as plain values of whatever
    type the asset recorded (counts, seconds, paths, a TableSchema)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{asset} {partition} was never materialized"
    materialization = records[0].asset_materialization
    assert materialization is not None
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}
