"""The pinned release (issue 25; docs/ml.md): `training_dataset`, one unpartitioned asset after every
day of `training_csv`, writes release.json and records its `version` as the asset's data version, so
a model's training run in the ML team's own code location can depend on it and Dagster shows that
run stale as soon as any file of the export changes.

No `from __future__ import annotations` here: Dagster resolves the `context` annotation at definition time."""

import warnings

import dagster as dg

from feedback_assets.asset_names import AssetName
from feedback_assets.asset_runs import TRAINING_CSV
from feedback_assets.export_release import rows_per_split, write_release
from feedback_assets.failures import explained_failures
from feedback_assets.resources import FeedbackSettings, StorageResource

# Apart from the daily export's group, which the nightly feedback_export job selects: that job exports a
# day, while the release hashes every file of the export dir.
RELEASE_GROUP = "ml_release"


def _training_dataset(
    context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.MaterializeResult:
    settings = feedback_settings.settings
    exports = feedback_storage.exports()
    # Held as the export steps hold it: no erasure rewrites a file between its hash and the release.
    with explained_failures(), feedback_storage.writing(context.log.info, context.instance):
        pinned = write_release(exports, settings)
    version = str(pinned["version"])
    days = dict(pinned["days"])  # type: ignore[call-overload]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "version": version,
            "path": dg.MetadataValue.path(exports.location("release.json")),
            "files": len(pinned["files"]),  # type: ignore[arg-type]
            "first_day": days["first"] or "",
            "last_day": days["last"] or "",
            **{f"{split}_rows": rows for split, rows in rows_per_split(pinned).items()},
        },
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
