"""The code location Dagster loads (`dagster dev`, workspace.yaml, `dagster job execute -m`)."""

from __future__ import annotations

import dagster as dg

from feedback_assets.alert_sensor import feedback_run_failed
from feedback_assets.assets import FEEDBACK_ASSETS, FEEDBACK_CHECKS
from feedback_assets.audit_job import audit_history, weekly_history_audit
from feedback_assets.erasure_job import erase_subjects
from feedback_assets.freshness import training_csv_freshness, training_csv_freshness_sensor
from feedback_assets.resources import FeedbackSettings
from feedback_assets.schedules import feedback_export_job, nightly_feedback_export

defs = dg.Definitions(
    assets=FEEDBACK_ASSETS,
    asset_checks=[*FEEDBACK_CHECKS, *training_csv_freshness],
    jobs=[feedback_export_job, erase_subjects, audit_history],
    schedules=[nightly_feedback_export, weekly_history_audit],
    sensors=[feedback_run_failed, training_csv_freshness_sensor],
    # The key is resolved when a run starts; the UI shows the variable's name, never its value.
    resources={"feedback_settings": FeedbackSettings(hmac_key=dg.EnvVar("FEEDBACK_HMAC_KEY"))},
    # Polars already uses every core inside a step; a process per step only adds seconds of
    # start-up to every run (docs/decisions.md, "In-process executor": 20 s against 4.8 s).
    executor=dg.in_process_executor,
)
