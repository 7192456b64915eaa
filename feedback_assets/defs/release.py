"""The pinned release (issue 25; docs/ml.md): `training_dataset`, one unpartitioned asset after every
day of `training_csv`, writes release.json and records its `version` as the asset's data version, so
a model's training run in the ML team's own code location can depend on it and Dagster shows that
run stale as soon as any file of the export changes.

No `from __future__ import annotations` here: Dagster resolves the `context` annotation at definition time."""

import warnings
from collections.abc import Mapping
from typing import Any

import dagster as dg

from feedback_assets.asset_names import AssetName
from feedback_assets.asset_runs import TRAINING_CSV
from feedback_assets.export_release import rows_per_split, write_release, written_release
from feedback_assets.failures import explained_failures
from feedback_assets.release import RELEASE_NAME
from feedback_assets.resources import FeedbackSettings, StorageResource
from feedback_assets.storage import Storage

# Apart from the daily export's group, which the nightly feedback_export job selects: that job exports a
# day, while the release hashes every file of the export dir.
RELEASE_GROUP = "ml_release"
TRAINING_DATASET = dg.AssetKey(AssetName.TRAINING_DATASET.value)
# The tag Dagster reads an asset's data version from (dagster._core.definitions.data_version): a
# MaterializeResult sets it through `data_version`; a materialization logged by an op must set it itself.
DATA_VERSION_TAG = "dagster/data_version"


def release_metadata(pinned: Mapping[str, Any], exports: Storage) -> "dict[str, dg.RawMetadataValue]":
    """What a release shows on its materialization: its version, file, days and rows per split."""
    days = dict(pinned["days"])
    return {
        "version": str(pinned["version"]),
        "path": dg.MetadataValue.path(exports.location(RELEASE_NAME)),
        "files": len(pinned["files"]),
        "first_day": days["first"] or "",
        "last_day": days["last"] or "",
        **{f"{split}_rows": rows for split, rows in rows_per_split(pinned).items()},
    }


def restated_release(instance: dg.DagsterInstance, exports: Storage, cause: str) -> dg.AssetMaterialization | None:
    """A materialization of training_dataset for release.json as a run other than the asset's own
    (an erasure) left it, when its version is not the one Dagster last recorded; None otherwise.

    The erasure rewrites release.json so that no release lists a row that is gone; recording that
    file's version as the asset's data version is what makes Dagster show a training run on the
    earlier release stale at once, not only after training_dataset next runs."""
    pinned = written_release(exports)
    if pinned is None:
        return None
    version = str(pinned["version"])
    recorded = instance.get_latest_data_version_record(TRAINING_DATASET)
    last = recorded.asset_materialization if recorded is not None else None
    if last is not None and (last.tags or {}).get(DATA_VERSION_TAG) == version:
        return None
    return dg.AssetMaterialization(
        asset_key=TRAINING_DATASET,
        description=f"release.json restated by {cause}: the files it lists changed",
        metadata={**release_metadata(pinned, exports), "restated_by": cause},
        tags={DATA_VERSION_TAG: version},
    )


def _training_dataset(
    context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.MaterializeResult:
    settings = feedback_settings.settings
    exports = feedback_storage.exports()
    # Held as the export steps hold it: no erasure rewrites a file between its hash and the release.
    with explained_failures(), feedback_storage.writing(context.log.info, context.instance):
        pinned = write_release(exports, settings)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(str(pinned["version"])), metadata=release_metadata(pinned, exports)
    )


# Dagster warns at every load that `backfill_policy` is beta; the policy is chosen knowingly (asset_runs.py).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    training_dataset = dg.asset(
        name=AssetName.TRAINING_DATASET.value,
        deps=[TRAINING_CSV],
        group_name=RELEASE_GROUP,
        # One run: the CLI takes a range of days (`--select '*' --partition-range`) only when every
        # selected asset has this policy; the release is then made once, after the range's days.
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"polars", "parquet", "csv"},
        # Short enough for the UI's catalog, which cuts a description after 255 characters.
        description="release.json at the export root: every CSV and Parquet file with its SHA-256 and rows, "
        "the settings and the days, under a content-hash version that is this asset's data version: "
        "a training run on it goes stale when the files change.",
    )(_training_dataset)

defs = dg.Definitions(assets=[training_dataset])
