"""A source connection lost mid-read is retried, and the retry writes the right files (issue 5).

The read is held at a known point for real: another session locks `users`, so the pipeline's
query on it waits; then the test terminates that backend, or restarts the whole server, and
releases the lock.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from feedback_assets.connections import APPLICATION_NAME
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import materialize, settings_for

pytestmark = pytest.mark.slow

WAIT_SECONDS = 60


def _blocked_pipeline_pid(url: str) -> int:
    """The backend of the pipeline's read once it waits on the lock."""
    deadline = time.monotonic() + WAIT_SECONDS
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while time.monotonic() < deadline:
                cur.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (APPLICATION_NAME,),
                )
                row = cur.fetchone()
                if row:
                    return int(row[0])
                time.sleep(0.05)
    finally:
        conn.close()
    raise AssertionError("the pipeline never waited on the lock")


def _terminate(url: str, pid: int) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.close()


def _restart_server(url: str, pid: int) -> None:
    del url, pid
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120)


def _interrupt_read(
    tmp_path: Path, url: str, instance: dg.DagsterInstance, fault: Callable[[str, int], None]
) -> dg.ExecuteInProcessResult:
    write_crafted_source(url)
    blocker = psycopg2.connect(url)
    with blocker.cursor() as cur:
        cur.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    outcome: dict[str, dg.ExecuteInProcessResult | BaseException] = {}

    def run() -> None:
        try:
            outcome["result"] = materialize(instance, settings_for(tmp_path, url), "2025-10-25")
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        fault(url, _blocked_pipeline_pid(url))
    finally:
        if not blocker.closed:
            # After a server restart the blocker's session is gone with its lock.
            with contextlib.suppress(psycopg2.Error):
                blocker.rollback()
            blocker.close()
        worker.join(timeout=180)
    assert not worker.is_alive()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert isinstance(result, dg.ExecuteInProcessResult)
    return result


def _retried(result: dg.ExecuteInProcessResult) -> bool:
    return any(event.event_type_value == "STEP_RESTARTED" for event in result.all_events) or any(
        event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events
    )


@pytest.mark.parametrize(
    "fault", [pytest.param(_terminate, id="pg_terminate_backend"), pytest.param(_restart_server, id="restart")]
)
def test_a_lost_connection_mid_read_is_retried_and_the_output_is_right(
    tmp_path: Path, postgres_url: str, hmac_key: str, instance: dg.DagsterInstance, fault: Callable[[str, int], None]
) -> None:
    result = _interrupt_read(tmp_path, postgres_url, instance, fault)
    assert result.success
    assert _retried(result)
    assert (tmp_path / "export" / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025
