"""A backfill launched the way users launch one: through the webserver's GraphQL API, run by dagster-daemon.

The real `dagster-webserver` and `dagster-daemon` run as subprocesses on a temporary DAGSTER_HOME;
the backfill must become a single ranged run (BackfillPolicy.single_run) whose files are byte for
byte those of an in-process ranged run over the same source.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from feedback_assets.definitions import defs
from feedback_assets.demo.database import write_demo_source
from feedback_assets_tests.graph import ALL_ASSETS, KEY_HEX, materialize, settings_for
from feedback_assets_tests.processes import BIN_DIR, Processes

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = REPO_ROOT / "workspace.yaml"

FIRST = dt.date(2025, 10, 20)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(5)]

SERVER_START_TIMEOUT = 120.0
BACKFILL_TIMEOUT = 240.0
POLL_SECONDS = 1.0

# The default run coordinator is the QueuedRunCoordinator, whose runs only start when the daemon
# dequeues them: every 5 s by default, here every second. The backfill daemon's own loop is fixed
# at 30 s (dagster._daemon.backfill sleeps DEFAULT_DAEMON_INTERVAL_SECONDS; neither dagster.yaml nor
# an environment variable changes it), so the daemon is only started once the backfill exists: its
# first iteration, right at start-up, then submits the run, and the next one, 30 s later, sees it done.
DAGSTER_YAML = """\
run_queue:
  dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { status error { message stack } }
    ... on Error { message }
  }
}
"""

BACKFILL_RUNS = """
query BackfillRuns($backfillId: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfillId}]}) {
    __typename
    ... on Runs {
      results {
        runId
        status
        tags { key value }
        assetSelection { path }
        assetCheckSelection { name }
      }
    }
    ... on Error { message }
  }
}
"""

LOCATION_STATUS = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } }
      }
    }
  }
}
"""

# Statuses in which the daemon is still working on a backfill.
UNFINISHED = {"REQUESTED", "CANCELING", "FAILING"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class GraphQL:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def __call__(self, query: str, **variables: object) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(
            f"{self.base}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.load(response)
        assert not answer.get("errors"), f"GraphQL errors: {answer['errors']}"
        data: dict[str, Any] = answer["data"]
        return data

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/server_info", timeout=5) as response:
                status: int = response.status
                return status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


def wait_for_code_location(graphql: GraphQL, webserver: subprocess.Popen[bytes]) -> None:
    """Until the webserver serves the code location: the mutation checks asset keys against it."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        assert webserver.poll() is None, f"dagster-webserver exited with {webserver.returncode}"
        if graphql.answers():
            workspace = graphql(LOCATION_STATUS)["workspaceOrError"]
            assert workspace["__typename"] == "Workspace", workspace
            entries = workspace["locationEntries"]
            if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
                for entry in entries:
                    location = entry["locationOrLoadError"]
                    assert location["__typename"] == "RepositoryLocation", location
                return
        time.sleep(POLL_SECONDS)
    pytest.fail(f"dagster-webserver did not serve the code location within {SERVER_START_TIMEOUT:.0f} s")


def launch_backfill(graphql: GraphQL, first: str, last: str) -> str:
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": [asset]}, "partitions": {"ranges": [{"start": first, "end": last}]}}
            for asset in ALL_ASSETS
        ],
        "title": "test_backfill_daemon",
    }
    result = graphql(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id: str = result["backfillId"]
    assert backfill_id
    return backfill_id


def wait_for_backfill(graphql: GraphQL, backfill_id: str, daemon: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
        backfill = graphql(BACKFILL_STATUS, backfillId=backfill_id)["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in UNFINISHED:
            status: str = backfill["status"]
            assert backfill["error"] is None, backfill["error"]
            return status
        time.sleep(POLL_SECONDS)
    pytest.fail(f"backfill {backfill_id} did not finish within {BACKFILL_TIMEOUT:.0f} s")


def exported(export_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(export_dir.glob("*.csv"))}


def logs(tmp_path: Path) -> str:
    return "\n".join(
        f"===== {log.name} =====\n{log.read_text(errors='replace')}" for log in sorted(tmp_path.glob("*.log"))
    )


@pytest.mark.usefixtures("hmac_key")
def test_backfill_launched_through_graphql_is_one_run_with_the_in_process_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings the developer's shell may carry would reach one side only: the subprocesses get the
    # environment built below, the in-process reference reads os.environ.
    for name in list(os.environ):
        if name.startswith("FEEDBACK_") and name != "FEEDBACK_HMAC_KEY":
            monkeypatch.delenv(name)

    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=7, rows_per_day=40, seed=5)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    backfilled = tmp_path / "backfilled"
    env = {
        # An outer DAGSTER_HOME or DAGSTER_* tuning must not reach the instance under test.
        **{name: value for name, value in os.environ.items() if not name.startswith(("FEEDBACK_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "FEEDBACK_HMAC_KEY": KEY_HEX,
        "FEEDBACK_SOURCE_URL": source_url,
        "FEEDBACK_EXPORT_DIR": str(backfilled / "export"),
        "FEEDBACK_STORAGE_DIR": str(backfilled / "storage"),
    }
    port = free_port()
    graphql = GraphQL(port)
    reference = tmp_path / "in_process"
    (reference / "dagster_home").mkdir(parents=True)

    try:
        with Processes(tmp_path, env) as processes:
            webserver = processes.start(
                [str(BIN_DIR / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(WORKSPACE)],
                tmp_path / "webserver.log",
            )
            wait_for_code_location(graphql, webserver)
            backfill_id = launch_backfill(graphql, DAYS[0], DAYS[-1])
            daemon = processes.start(
                [str(BIN_DIR / "dagster-daemon"), "run", "-w", str(WORKSPACE)], tmp_path / "daemon.log"
            )
            # The reference is made while the daemon idles between its iterations: one in-process
            # ranged run of the same graph over the same source, on an instance of its own.
            with dg.instance_for_test(temp_dir=str(reference / "dagster_home")) as instance:
                assert materialize(instance, settings_for(reference, source_url), DAYS[0], DAYS[-1]).success
            status = wait_for_backfill(graphql, backfill_id, daemon)
            runs = graphql(BACKFILL_RUNS, backfillId=backfill_id)["runsOrError"]

        # Asset backfills end in COMPLETED_SUCCESS or COMPLETED_FAILED; plain COMPLETED is only
        # reported by job backfills.
        assert status == "COMPLETED_SUCCESS"
        assert runs["__typename"] == "Runs", runs
        # The assets share the partitions definition, BackfillPolicy.single_run() and the code
        # location, so the backfill daemon requests each one in the same run as its parents, and the
        # whole range in that run: exactly one run for all the assets and days, tagged with the range.
        assert len(runs["results"]) == 1, runs
        (run,) = runs["results"]
        assert run["status"] == "SUCCESS", run
        tags = {tag["key"]: tag["value"] for tag in run["tags"]}
        assert tags["dagster/asset_partition_range_start"] == DAYS[0]
        assert tags["dagster/asset_partition_range_end"] == DAYS[-1]
        assert sorted(key["path"][-1] for key in run["assetSelection"]) == sorted(ALL_ASSETS)
        # The checks guard the CSVs (no_key_owned_twice blocks the export); a backfill must run
        # every check of its assets, like any other run.
        checks = sorted(
            key.name for key in defs.resolve_asset_graph().asset_check_keys if key.asset_key.path[-1] in ALL_ASSETS
        )
        assert "no_key_owned_twice" in checks
        assert sorted(check["name"] for check in run["assetCheckSelection"]) == checks

        files = exported(backfilled / "export")
        assert list(files) == [f"feedback_training_{day.replace('-', '')}.csv" for day in DAYS]
        assert all(len(content.splitlines()) > 1 for content in files.values())
        assert files == exported(reference / "export")
    except BaseException:
        print(logs(tmp_path))
        raise
