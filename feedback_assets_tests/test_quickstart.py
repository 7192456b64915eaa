"""`./scripts/demo` (python -m feedback_assets.demo) from an empty directory, as a newcomer runs it."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

from feedback_assets.demo.quickstart import DEMO_INSTANCE_YAML

REPO_ROOT = Path(__file__).resolve().parents[1]


def demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, "-m", "feedback_assets.demo", "--history-days", "4"]
    return subprocess.run(
        [*command, "--rows-per-day", "40"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def served_job_snapshot_id(cwd: Path, printed: str) -> str:
    """The export job's snapshot id in a process set up as the demo tells the user to set up the UI."""
    exports = dict(
        line.strip().removeprefix("export ").split("=", 1) for line in printed.splitlines() if "export " in line
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_"))}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        DAGSTER_HOME=exports["DAGSTER_HOME"],
        FEEDBACK_PARTITIONS_START=exports["FEEDBACK_PARTITIONS_START"],
        FEEDBACK_HMAC_KEY=(cwd / ".feedback_hmac_key").read_text().strip(),
    )
    code = (
        "from feedback_assets.definitions import defs\n"
        "print(defs.resolve_job_def('feedback_export').get_job_snapshot().snapshot_id)"
    )
    served = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return served.stdout.strip()


def test_the_demo_exports_recent_days_on_an_instance_set_up_as_the_readme_recommends(tmp_path: Path) -> None:
    first = demo(tmp_path)
    assert first.returncode == 0, first.stderr
    # The days as the demo chose them: a clock read here could be on the other side of midnight UTC.
    exported_days = re.search(r"^training CSVs for (\S+) \.\. (\S+):", first.stdout, re.MULTILINE)
    assert exported_days is not None, first.stdout
    yesterday = dt.date.fromisoformat(exported_days.group(2))
    # Every day the partitions show is exported, so the UI's first view has no missing day.
    days = [yesterday - dt.timedelta(days=back) for back in range(4)]
    exported = sorted(path.name for path in (tmp_path / "ml" / "feedback_training").glob("*.csv"))
    assert exported == sorted(f"feedback_training_{day:%Y%m%d}.csv" for day in days)
    assert (tmp_path / ".feedback_hmac_key").stat().st_mode & 0o777 == 0o600
    # The partitions begin with the demo's four days of history, and the UI is told so.
    assert f"export FEEDBACK_PARTITIONS_START={yesterday - dt.timedelta(days=3)}" in first.stdout

    home = tmp_path / ".dagster_home"
    assert (home / "dagster.yaml").read_text() == DEMO_INSTANCE_YAML
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300
        assert instance.event_log_storage.get_pool_config().default_pool_limit == 1
        (run,) = instance.get_runs()
    # The run belongs to the code location the UI serves, so the Timeline and the job's page list
    # it, and its job is the very version `dagster dev` loads with the printed settings.
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.remote_job_origin is not None
    assert run.remote_job_origin.location_name == "feedback_assets"
    assert run.remote_job_origin.job_name == "feedback_export"
    assert run.job_snapshot_id == served_job_snapshot_id(tmp_path, first.stdout)

    # A dagster.yaml the user changed is theirs: a second demo leaves it alone.
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    again = demo(tmp_path)
    assert again.returncode == 0, again.stderr
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
