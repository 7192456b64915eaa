"""The day that ended must have its training file by 06:00 UTC: the freshness check fails until it
does, and passes once it is exported (issue 9)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg

from feedback_assets.definitions import defs
from feedback_assets.defs.nightly_export import training_csv_freshness
from feedback_assets.demo.database import write_demo_source
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets_tests.graph import materialize, settings_for


def freshness(instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    job = dg.Definitions(
        assets=defs.assets,
        asset_checks=list(training_csv_freshness),
        jobs=[dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(*training_csv_freshness))],
        # The assets are there for the check's asset key; the check itself reads only the instance.
        resources=resources_for(FeedbackSettings()),
    ).resolve_job_def("freshness")
    (evaluation,) = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    return evaluation


def test_the_file_of_the_day_that_ended_is_late_until_it_is_exported(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    assert not freshness(instance).passed

    # Before 06:00 UTC the deadline that passed last is yesterday's: its day is the one before.
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=yesterday, days=2, rows_per_day=20)
    settings = settings_for(tmp_path, url)
    assert materialize(
        instance, settings, (yesterday - dt.timedelta(days=1)).isoformat(), yesterday.isoformat()
    ).success
    assert freshness(instance).passed


def test_the_check_and_its_sensor_are_in_the_code_location() -> None:
    sensor = defs.resolve_sensor_def("training_csv_freshness")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # Evaluated at most every 10 minutes: each evaluation leaves a compute-log file behind.
    assert sensor.minimum_interval_seconds == 600
