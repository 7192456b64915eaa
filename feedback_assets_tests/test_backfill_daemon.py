"""A backfill launched the way users launch one: through the webserver's GraphQL API, run by dagster-daemon.

The real `dagster-webserver` and `dagster-daemon` run as subprocesses on a temporary DAGSTER_HOME;
the backfill must become a single ranged run (BackfillPolicy.single_run) whose files are byte for
byte those of an in-process ranged run over the same source.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.definitions import defs
from feedback_assets.demo.database import write_demo_source
from feedback_assets_tests.daemon import (
    BACKFILL_RUNS,
    GraphQL,
    clear_feedback_settings,
    exported,
    free_port,
    launch_backfill,
    logs,
    server_env,
    start_daemon,
    start_webserver,
    wait_for_backfill,
)
from feedback_assets_tests.graph import ALL_ASSETS, materialize, settings_for
from feedback_assets_tests.processes import Processes

pytestmark = pytest.mark.slow


FIRST = dt.date(2025, 10, 20)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(5)]

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


@pytest.mark.usefixtures("hmac_key")
def test_backfill_launched_through_graphql_is_one_run_with_the_in_process_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_feedback_settings(monkeypatch)
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=7, rows_per_day=40, seed=5)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    backfilled = tmp_path / "backfilled"
    env = server_env(home, source_url, backfilled)
    graphql = GraphQL(free_port())
    reference = tmp_path / "in_process"
    (reference / "dagster_home").mkdir(parents=True)

    try:
        with Processes(tmp_path, env) as processes:
            start_webserver(processes, graphql, tmp_path)
            backfill_id = launch_backfill(graphql, DAYS[0], DAYS[-1], "test_backfill_daemon")
            daemon = start_daemon(processes, tmp_path)
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
