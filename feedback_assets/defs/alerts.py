"""The sensor that raises an alert when any run of this code location fails or crashes, whatever
launched it: the schedules, a sensor, the Launchpad, the CLI, or the asset pages and backfills,
which run as Dagster's hidden asset job (`alerts.py` says what an alert holds). It runs in
dagster-daemon (or `dagster dev`), on by default: an export that fails at night must not wait for
someone to open the UI.

No `from __future__ import annotations` here: Dagster inspects the sensor's context annotation.
"""

import dagster as dg

from feedback_assets import alerts
from feedback_assets.partitions import days_of_run
from feedback_assets.resources import AlertSettingsResource

# Runs launched from the asset catalog, an asset page, the lineage graph or a backfill belong to
# Dagster's hidden asset job, whose name means nothing to an operator.
ASSET_JOB_PREFIX = "__ASSET_JOB"
ASSET_RUN = "assets"


def _days(tags: dict[str, str]) -> str:
    days = sorted(days_of_run(tags))
    if len(days) < 2:
        return "".join(days)
    return f"{days[0]}..{days[-1]}"


def alert_for(context: dg.RunFailureSensorContext, ui_url: str) -> alerts.Alert:
    run = context.dagster_run
    failed_step, reason = "the run", context.failure_event.message or "the run failed"
    for event in context.get_step_failure_events():
        failed_step = event.step_key or failed_step
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            reason = data.user_failure_data.description
        elif data.error is not None:
            reason = f"{data.error.cls_name} (the message is in the run's log)"
        break
    return alerts.Alert(
        run_id=run.run_id,
        job=ASSET_RUN if run.job_name.startswith(ASSET_JOB_PREFIX) else run.job_name,
        days=_days(dict(run.tags)),
        failed_step=failed_step,
        reason=reason.strip().splitlines()[0],
        run_page=alerts.run_page(ui_url, run.run_id),
    )


# No monitored_jobs: Dagster then watches every job of this code location, the hidden asset job
# included; a list of the named jobs missed every run launched from the asset pages.
@dg.run_failure_sensor(
    name="feedback_run_failed",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs one ALERT line for every failed or crashed run of this code location (schedules, "
    "sensors, Launchpad, asset pages, backfills, CLI) and, with FEEDBACK_ALERT_WEBHOOK_URL set, posts it as "
    "JSON (run, job or 'assets', days, failed step, reason, link to the run).",
)
def feedback_run_failed(
    context: dg.RunFailureSensorContext, alert_settings: dg.ResourceParam[AlertSettingsResource]
) -> None:
    # A bad value is said in the log, never raised: the sensor must keep watching.
    settings, problems = alert_settings.read()
    if "ui_url" in problems:
        context.log.error(f"feedback_assets ALERT: run {context.dagster_run.run_id} failed; {problems['ui_url']}")
        return
    alert = alert_for(context, settings.ui_url)
    context.log.error(alert.line())
    if "alert_webhook_url" in problems:
        context.log.error(problems["alert_webhook_url"])
    elif settings.alert_webhook_url:
        try:
            alerts.post(settings.alert_webhook_url, alert)
        except ConnectionError as exc:
            context.log.error(str(exc))


defs = dg.Definitions(sensors=[feedback_run_failed])
