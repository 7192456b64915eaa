"""Driving a real `dagster-webserver` and `dagster-daemon` from a test: the webserver's GraphQL API
(the way the UI launches runs and backfills) and polling until the daemon has done the work."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from feedback_assets_tests.graph import ALL_ASSETS, KEY_HEX
from feedback_assets_tests.processes import BIN_DIR, Processes

WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"

# Only guards against a hang: a busy machine is waited for. Each is just under pytest's own per-test
# timeout (600 s), so a stuck wait still fails with its own message and the servers' logs.
SERVER_START_TIMEOUT = 540.0
BACKFILL_TIMEOUT = 540.0
RUN_TIMEOUT = 540.0
POLL_SECONDS = 1.0

# Definitions(...) puts a code location's jobs in a repository of this name.
REPOSITORY_NAME = "__repository__"
CODE_LOCATION_NAME = "feedback_assets"

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

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
    ... on PythonError { stack }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } }
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
# Statuses a run does not leave by itself.
RUN_FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def clear_feedback_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings the developer's shell may carry would reach one side only: the subprocesses get the
    environment `server_env` builds, the in-process reference reads os.environ."""
    for name in list(os.environ):
        if name.startswith("FEEDBACK_") and name != "FEEDBACK_HMAC_KEY":
            monkeypatch.delenv(name)


def server_env(home: Path, source_url: str, files: Path, **settings: str) -> dict[str, str]:
    """The environment of the test's webserver and daemon: the instance in `home`, the source, the
    export and storage dirs under `files`, and `settings`; no outer DAGSTER_* or FEEDBACK_* value."""
    return {
        **{name: value for name, value in os.environ.items() if not name.startswith(("FEEDBACK_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "FEEDBACK_HMAC_KEY": KEY_HEX,
        "FEEDBACK_SOURCE_URL": source_url,
        "FEEDBACK_EXPORT_DIR": str(files / "export"),
        "FEEDBACK_STORAGE_DIR": str(files / "storage"),
        **settings,
    }


def start_webserver(processes: Processes, graphql: GraphQL, logs_dir: Path) -> subprocess.Popen[bytes]:
    """The real dagster-webserver on 127.0.0.1 with the project's workspace, once it serves the code location."""
    port = graphql.base.rsplit(":", 1)[1]
    webserver = processes.start(
        [str(BIN_DIR / "dagster-webserver"), "-h", "127.0.0.1", "-p", port, "-w", str(WORKSPACE)],
        logs_dir / "webserver.log",
    )
    wait_for_code_location(graphql, webserver)
    return webserver


def start_daemon(processes: Processes, logs_dir: Path) -> subprocess.Popen[bytes]:
    return processes.start([str(BIN_DIR / "dagster-daemon"), "run", "-w", str(WORKSPACE)], logs_dir / "daemon.log")


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
    """Until the webserver serves the code location: the mutations check jobs and asset keys against it."""
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


def launch_backfill(graphql: GraphQL, first: str, last: str, title: str) -> str:
    """A backfill of every asset over the days first..last, as the UI's *Launch backfill* makes it."""
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": [asset]}, "partitions": {"ranges": [{"start": first, "end": last}]}}
            for asset in ALL_ASSETS
        ],
        "title": title,
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


def launch_partition_run(graphql: GraphQL, job: str, partition: str) -> dict[str, str]:
    """One run of `job` for one day, as the UI's launchpad submits it; its runId and first status."""
    params = {
        "selector": {
            "repositoryLocationName": CODE_LOCATION_NAME,
            "repositoryName": REPOSITORY_NAME,
            "jobName": job,
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
    }
    result = graphql(LAUNCH_RUN, executionParams=params)["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    run: dict[str, str] = result["run"]
    return run


def wait_for_run(graphql: GraphQL, run_id: str, daemon: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        assert daemon.poll() is None, f"dagster-daemon exited with {daemon.returncode}"
        run = graphql(RUN_STATUS, runId=run_id)["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in RUN_FINISHED:
            status: str = run["status"]
            return status
        time.sleep(POLL_SECONDS)
    pytest.fail(f"run {run_id} did not finish within {RUN_TIMEOUT:.0f} s")


def exported(export_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(export_dir.glob("*.csv"))}


def logs(tmp_path: Path) -> str:
    return "\n".join(
        f"===== {log.name} =====\n{log.read_text(errors='replace')}" for log in sorted(tmp_path.glob("*.log"))
    )
