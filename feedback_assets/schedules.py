"""The nightly run: at 02:00 UTC, the whole graph for the day that just ended."""

from __future__ import annotations

import dagster as dg

from feedback_assets.assets import GROUP

feedback_export_job = dg.define_asset_job(
    "feedback_export",
    selection=dg.AssetSelection.groups(GROUP),
    description="Materialize the whole feedback export graph for the selected day(s).",
)

# Two hours after midnight leaves the app time to commit the day's late writes.
nightly_feedback_export = dg.build_schedule_from_partitioned_job(
    feedback_export_job, hour_of_day=2, minute_of_hour=0, name="nightly_feedback_export"
)
