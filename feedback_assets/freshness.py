"""Whether the day that ended has its training file by 06:00 UTC: Dagster's partition freshness
check on `training_csv`, run by its sensor. Four hours after the 02:00 nightly run leave time for
one repair; past the deadline the check fails on the asset's page until the day is exported."""

from __future__ import annotations

import warnings

import dagster as dg

from feedback_assets.assets import training_csv

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
        assets=[training_csv],
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
