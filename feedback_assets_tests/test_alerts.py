"""A failed run raises an alert: one log line, and a JSON POST to FEEDBACK_ALERT_WEBHOOK_URL, here a
real HTTP server on loopback started by the test. The alert names the run, days, step and reason,
and holds no secret and nothing of any row."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.definitions import defs
from feedback_assets.defs.alerts import feedback_run_failed
from feedback_assets.resources import AlertSettingsResource, resources_for
from feedback_assets_tests.daemon import (
    BACKFILL_RUNS,
    CODE_LOCATION_NAME,
    REPOSITORY_NAME,
    GraphQL,
    clear_feedback_settings,
    free_port,
    launch_backfill,
    logs,
    server_env,
    start_daemon,
    start_webserver,
    wait_for_backfill,
)
from feedback_assets_tests.graph import KEY_HEX, settings_for
from feedback_assets_tests.processes import Processes


class Webhook(HTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Receiver)
        self.received: list[dict[str, str]] = []


class Receiver(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    server = Webhook()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def failed_export(tmp_path: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The nightly job for one day against a source file that does not exist."""
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'gone.sqlite'}")
    result = defs.resolve_job_def("feedback_export").execute_in_process(
        instance=instance, resources=resources_for(settings), partition_key="2025-10-25", raise_on_error=False
    )
    assert not result.success
    return result


def evaluate(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> None:
    (failure,) = [e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"]
    context = dg.build_run_status_sensor_context(
        sensor_name="feedback_run_failed",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alert_settings": AlertSettingsResource()},
    ).for_run_failure()
    feedback_run_failed(context)


def test_a_failed_export_posts_one_alert_naming_the_run_day_step_and_reason(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"http://127.0.0.1:{webhook.server_port}/hooks/s3cret-token"
    monkeypatch.setenv("FEEDBACK_ALERT_WEBHOOK_URL", url)
    monkeypatch.setenv("FEEDBACK_UI_URL", "https://dagster.example.org/")
    result = failed_export(tmp_path, instance)
    evaluate(instance, result)

    (alert,) = webhook.received
    assert alert == {
        "source": "feedback_assets",
        "status": "failed",
        "run_id": result.run_id,
        "job": "feedback_export",
        "days": "2025-10-25",
        "failed_step": "raw_feedback",
        "reason": f"FEEDBACK_SOURCE_URL: the sqlite file {tmp_path / 'gone.sqlite'} does not exist",
        "run_page": f"https://dagster.example.org/runs/{result.run_id}",
    }
    text = json.dumps(alert)
    assert KEY_HEX not in text and "s3cret-token" not in text


def test_without_a_webhook_the_alert_is_logged_and_a_bad_webhook_is_named_not_shown(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("FEEDBACK_ALERT_WEBHOOK_URL", raising=False)
    result = failed_export(tmp_path, instance)
    capfd.readouterr()
    evaluate(instance, result)
    # Dagster's console logger writes the sensor's log to standard error.
    alerts = [line for line in capfd.readouterr().err.splitlines() if "feedback_assets ALERT" in line]
    assert len(alerts) == 1 and f"run {result.run_id} of feedback_export for 2025-10-25" in alerts[0]

    monkeypatch.setenv("FEEDBACK_ALERT_WEBHOOK_URL", "http://127.0.0.1:1/hooks/s3cret-token")
    evaluate(instance, result)  # a webhook that refuses: said in the log, the sensor does not fail
    logged = capfd.readouterr().err
    assert "FEEDBACK_ALERT_WEBHOOK_URL did not take the alert" in logged
    assert "s3cret-token" not in logged


def test_the_sensor_is_in_the_code_location_and_on_by_default() -> None:
    sensor = defs.resolve_sensor_def("feedback_run_failed")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 50) { status timestamp } } }
    ... on Error { message }
  }
}
"""
ALERT_TIMEOUT = 240.0
# After the alert, the sensor must have looked at the failed run again this often without a second alert.
TICKS_AFTER_ALERT = 2
DAGSTER_YAML = "run_queue:\n  dequeue_interval_seconds: 1\ntelemetry:\n  enabled: false\n"


def sensor_ticks(graphql: GraphQL) -> list[dict[str, object]]:
    selector = {
        "repositoryLocationName": CODE_LOCATION_NAME,
        "repositoryName": REPOSITORY_NAME,
        "sensorName": "feedback_run_failed",
    }
    sensor = graphql(SENSOR_TICKS, selector=selector)["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    ticks: list[dict[str, object]] = sensor["sensorState"]["ticks"]
    return ticks


@pytest.mark.slow
@pytest.mark.usefixtures("hmac_key")
def test_a_failed_asset_backfill_launched_as_the_ui_does_posts_one_alert_through_the_daemon(
    tmp_path: Path, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill from the asset pages runs as Dagster's hidden asset job, not one of the named jobs:
    its failure must alert all the same, once, with its days and step."""
    clear_feedback_settings(monkeypatch)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    hook = f"http://127.0.0.1:{webhook.server_port}/hooks/s3cret-token"
    env = server_env(home, f"sqlite:///{tmp_path / 'gone.sqlite'}", tmp_path / "files", FEEDBACK_ALERT_WEBHOOK_URL=hook)
    graphql = GraphQL(free_port())
    try:
        with Processes(tmp_path, env) as processes:
            start_webserver(processes, graphql, tmp_path)
            backfill_id = launch_backfill(graphql, "2025-10-20", "2025-10-22", "test_alerts")
            daemon = start_daemon(processes, tmp_path)
            assert wait_for_backfill(graphql, backfill_id, daemon) == "COMPLETED_FAILED"
            (run,) = graphql(BACKFILL_RUNS, backfillId=backfill_id)["runsOrError"]["results"]
            assert run["status"] == "FAILURE", run
            deadline = time.monotonic() + ALERT_TIMEOUT
            while not webhook.received and time.monotonic() < deadline:
                assert daemon.poll() is None, "dagster-daemon exited"
                time.sleep(1)
            assert webhook.received, f"no alert within {ALERT_TIMEOUT:.0f} s of the failed backfill"
            ticks_at_alert = len(sensor_ticks(graphql))
            while len(sensor_ticks(graphql)) < ticks_at_alert + TICKS_AFTER_ALERT and time.monotonic() < deadline:
                time.sleep(1)
            assert len(sensor_ticks(graphql)) >= ticks_at_alert + TICKS_AFTER_ALERT, "the sensor stopped ticking"
    except BaseException:
        print(logs(tmp_path))
        raise

    (alert,) = webhook.received
    assert alert == {
        "source": "feedback_assets",
        "status": "failed",
        "run_id": run["runId"],
        "job": "assets",
        "days": "2025-10-20..2025-10-22",
        "failed_step": "raw_feedback",
        "reason": f"FEEDBACK_SOURCE_URL: the sqlite file {tmp_path / 'gone.sqlite'} does not exist",
        "run_page": f"http://127.0.0.1:3000/runs/{run['runId']}",
    }
    assert "s3cret-token" not in json.dumps(alert) and KEY_HEX not in json.dumps(alert)
