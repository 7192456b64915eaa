"""The nightly run: at 02:00 UTC, the whole graph for the day that just ended."""

from __future__ import annotations

import dagster as dg

from feedback_assets.asset_runs import GROUP
from feedback_assets.freshness import training_csv_freshness

feedback_export_job = dg.define_asset_job(
    "feedback_export",
    # The freshness check runs on its own sensor's schedule, not as a step of every export.
    selection=dg.AssetSelection.groups(GROUP) - dg.AssetSelection.checks(*training_csv_freshness),
    description="Materialize the whole feedback export graph for the selected day(s).",
)

# Two hours after midnight leaves the app time to commit the day's late writes.
nightly_feedback_export = dg.build_schedule_from_partitioned_job(
    feedback_export_job,
    hour_of_day=2,
    minute_of_hour=0,
    name="nightly_feedback_export",
    description="At 02:00 UTC, runs feedback_export for the day that just ended (its CSV is due by the 06:00 "
    "freshness deadline). Off until switched on under Automation; needs the daemon (dagster dev runs one).",
)
