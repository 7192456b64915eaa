"""The nightly export: at 02:00 UTC the whole graph for the day that just ended, and by 06:00 UTC
that day's training file, checked by Dagster's partition freshness check on `training_csv` and its
sensor. Four hours after the 02:00 run leave time for one repair; past the deadline the check fails
on the asset's page until the day is exported."""

from __future__ import annotations

import warnings

import dagster as dg

from feedback_assets.asset_runs import EXPORT_JOB, GROUP, TRAINING_CSV

FRESHNESS_DEADLINE_CRON = "0 6 * * *"
# The check only changes at the 06:00 deadline or when a file arrives; Dagster's default of 30 s
# wrote a compute-log file per evaluation, about 2,900 a day.
FRESHNESS_SENSOR_INTERVAL_SECONDS = 600

# Dagster 1.13 marks these builders superseded by FreshnessPolicy; they are kept because they check
# a time partition (the day that ended) against a deadline, which is the promise here, and the
# warning would otherwise print at every load of the code location.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    training_csv_freshness = dg.build_time_partition_freshness_checks(
        assets=[TRAINING_CSV],
        deadline_cron=FRESHNESS_DEADLINE_CRON,
        timezone="UTC",
        severity=dg.AssetCheckSeverity.ERROR,
    )
    # On by default, like the alert: lateness is noticed by the daemon, not by whoever opens the UI.
    training_csv_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=training_csv_freshness,
        name="training_csv_freshness",
        minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )


feedback_export_job = dg.define_asset_job(
    EXPORT_JOB,
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

defs = dg.Definitions(
    jobs=[feedback_export_job],
    schedules=[nightly_feedback_export],
    asset_checks=training_csv_freshness,
    sensors=[training_csv_freshness_sensor],
)
