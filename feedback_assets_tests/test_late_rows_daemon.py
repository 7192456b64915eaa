"""The promise of docs/contract.md section 7, kept by the real `dagster-daemon` alone: a late row
written into an exported day of the source is in that day's CSV after a while, with no one starting
a run; the days around it and a day older than the lookback are not rewritten."""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.defs.source_watch import REASON_TAG
from feedback_assets.training_csv import csv_name, manifest_name
from feedback_assets_tests.daemon import clear_feedback_settings, logs, server_env, start_daemon
from feedback_assets_tests.graph import materialize, settings_for
from feedback_assets_tests.late_rows import insert_late_row, row, write_rows
from feedback_assets_tests.processes import Processes

pytestmark = pytest.mark.slow

TODAY = dt.datetime.now(dt.UTC).date()
LOOKBACK = 5
OLD, D1, D2, D3 = (TODAY - dt.timedelta(days=n) for n in (LOOKBACK + 2, 3, 2, 1))
LATE_ID = 90
# Generous: a sensor tick a minute, the queued run's start-up and the run itself, on a busy machine.
DEADLINE_SECONDS = 420.0
POLL_SECONDS = 2.0
DAGSTER_YAML = """\
run_queue:
  dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""


def _recommendations(path: Path) -> set[str]:
    with path.open(newline="") as handle:
        return {line["recommendation_id"] for line in csv.DictReader(handle)}


def _written(export: Path, day: dt.date) -> tuple[int, str]:
    """The CSV's modification time and the run that wrote it, from its manifest."""
    manifest = json.loads((export / manifest_name(day.isoformat())).read_text())
    return (export / csv_name(day.isoformat())).stat().st_mtime_ns, str(manifest["run_id"])


@pytest.mark.usefixtures("hmac_key")
def test_a_late_row_reaches_its_days_csv_with_only_the_daemon_running(
    tmp_path: Path, source_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_feedback_settings(monkeypatch)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    files = tmp_path / "files"
    export = files / "export"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FEEDBACK_LOOKBACK_DAYS", str(LOOKBACK))
    write_rows(source_url, [row(1, OLD, 9), row(2, D1, 9), row(3, D2, 9), row(4, D3, 9)])

    with dg.DagsterInstance.get() as instance:
        settings = settings_for(files, source_url)
        assert materialize(instance, settings, OLD.isoformat()).success
        assert materialize(instance, settings, D1.isoformat(), D3.isoformat()).success
    before = {day: _written(export, day) for day in (OLD, D1, D2, D3)}

    insert_late_row(source_url, LATE_ID, D2, 14)
    insert_late_row(source_url, LATE_ID + 1, OLD, 14)
    written_at = time.monotonic()
    env = server_env(home, source_url, files, FEEDBACK_LOOKBACK_DAYS=str(LOOKBACK), FEEDBACK_SOURCE_CHECK_MINUTES="1")
    try:
        with Processes(tmp_path, env) as processes:
            daemon = start_daemon(processes, tmp_path)
            deadline = written_at + DEADLINE_SECONDS
            while f"rec_{LATE_ID}" not in _recommendations(export / csv_name(D2.isoformat())):
                assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
                assert time.monotonic() < deadline, f"the late row was not exported within {DEADLINE_SECONDS:.0f} s"
                time.sleep(POLL_SECONDS)
            seconds = time.monotonic() - written_at
            with dg.DagsterInstance.get() as instance:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={REASON_TAG: "source_changed"}))
                while runs[0].status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE):
                    assert time.monotonic() < deadline, "the sensor's run did not finish"
                    time.sleep(POLL_SECONDS)
                    runs = instance.get_runs(filters=dg.RunsFilter(tags={REASON_TAG: "source_changed"}))
    except BaseException:
        print(logs(tmp_path))
        raise
    # A measurement to report, not a promise: the time from the late write to its day's CSV.
    print(f"late row exported {seconds:.1f} s after it was written ({source_url.split(':', 1)[0]})")

    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
    assert runs[0].tags.get("dagster/partition") == D2.isoformat()
    assert runs[0].tags.get("dagster/sensor_name") == "feedback_source_changes"
    after = {day: _written(export, day) for day in (OLD, D1, D2, D3)}
    assert after[D2][1] == runs[0].run_id
    assert {day: after[day] for day in (OLD, D1, D3)} == {day: before[day] for day in (OLD, D1, D3)}
    assert f"rec_{LATE_ID + 1}" not in _recommendations(export / csv_name(OLD.isoformat()))
