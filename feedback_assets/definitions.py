"""The code location Dagster loads (`dagster dev`, workspace.yaml, `dagster job execute -m`)."""

from __future__ import annotations

import warnings

import dagster as dg

from feedback_assets.alert_sensor import feedback_run_failed
from feedback_assets.assets import FEEDBACK_ASSETS
from feedback_assets.audit_job import audit_history, weekly_history_audit
from feedback_assets.erasure_job import erase_subjects, nightly_erasure
from feedback_assets.export_checks import FEEDBACK_CHECKS
from feedback_assets.freshness import training_csv_freshness, training_csv_freshness_sensor
from feedback_assets.resources import settings_in_effect
from feedback_assets.schedules import feedback_export_job, nightly_feedback_export
from feedback_assets.source_watch import app_feedback_source, feedback_source_changes
from feedback_assets.volume_check import feedback_volume

# Links each asset's page to the file and line that define it. The helper is beta; its warning
# would print at every load of the code location and in every run.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    assets = dg.with_source_code_references(FEEDBACK_ASSETS)

defs = dg.Definitions(
    assets=[*assets, app_feedback_source],
    asset_checks=[*FEEDBACK_CHECKS, feedback_volume, *training_csv_freshness],
    jobs=[feedback_export_job, erase_subjects, audit_history],
    schedules=[nightly_feedback_export, nightly_erasure, weekly_history_audit],
    sensors=[feedback_run_failed, training_csv_freshness_sensor, feedback_source_changes],
    # The settings as the code location loads them, shown on the resource's page; the key (and a
    # source URL, which may hold a password) by the name of its variable, never its value.
    resources={"feedback_settings": settings_in_effect()},
    # Polars already uses every core inside a step; a process per step only adds seconds of
    # start-up to every run (docs/decisions.md, "In-process executor": 20 s against 4.8 s).
    executor=dg.in_process_executor,
)
