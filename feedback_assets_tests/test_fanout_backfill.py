"""A backfill fanned out over several runs (FEEDBACK_BACKFILL_DAYS_PER_RUN), two of them at a time,
launched through the webserver's GraphQL API and run by dagster-daemon, its files and state on object
storage (a real S3-protocol server on loopback): the files are byte for byte those of one ranged run
on local disk, and no dedupe key is owned by two days.

first_per_pair is the scope where runs could disagree: a pair's first row may be in one run's days
and its repeats in another's, and the runs finish in any order.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.demo.database import write_demo_source
from feedback_assets.storage import storage_for
from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets_tests.daemon import (
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
from feedback_assets_tests.s3_server import S3Server

pytestmark = pytest.mark.slow


FIRST = dt.date(2025, 10, 7)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(20)]
DAYS_PER_RUN = 5
RUNS_AT_ONCE = 2

# The queued coordinator (Dagster's default) with two runs at a time; the dedupe steps one at a
# time, as in production (deploy/dagster.yaml). The queue is looked at every second.
DAGSTER_YAML = f"""\
concurrency:
  runs:
    max_concurrent_runs: {RUNS_AT_ONCE}
  pools:
    default_limit: 1
run_queue:
  dequeue_interval_seconds: 1
telemetry:
  enabled: false
"""

BACKFILL_RUN_TIMES = """
query BackfillRunTimes($backfillId: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $backfillId}]}) {
    __typename
    ... on Runs {
      results { runId status startTime endTime tags { key value } assetSelection { path } }
    }
  }
}
"""


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of the (start, end) spans that overlap at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.usefixtures("hmac_key")
def test_a_backfill_fanned_out_over_runs_of_five_days_gives_the_files_of_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: S3Server, s3_bucket: ObjectPath
) -> None:
    clear_feedback_settings(monkeypatch)
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=22, rows_per_day=40, seed=8)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    fanned_export, fanned_storage = s3_bucket / "export", s3_bucket / "storage"
    # The AWS_* variables s3_bucket set reach the webserver, the daemon and their run workers.
    env = server_env(
        home,
        source_url,
        tmp_path / "unused",
        FEEDBACK_EXPORT_DIR=str(fanned_export),
        FEEDBACK_STORAGE_DIR=str(fanned_storage),
        FEEDBACK_DEDUPE_SCOPE="first_per_pair",
        FEEDBACK_BACKFILL_DAYS_PER_RUN=str(DAYS_PER_RUN),
    )
    graphql = GraphQL(free_port())
    reference = tmp_path / "one_run"
    (reference / "dagster_home").mkdir(parents=True)

    try:
        with Processes(tmp_path, env) as processes:
            start_webserver(processes, graphql, tmp_path)
            backfill_id = launch_backfill(graphql, DAYS[0], DAYS[-1], "test_fanout_backfill")
            daemon = start_daemon(processes, tmp_path)
            with dg.instance_for_test(temp_dir=str(reference / "dagster_home")) as instance:
                one_run = settings_for(reference, source_url, dedupe_scope="first_per_pair")
                assert materialize(instance, one_run, DAYS[0], DAYS[-1]).success
            status = wait_for_backfill(graphql, backfill_id, daemon)
            runs = graphql(BACKFILL_RUN_TIMES, backfillId=backfill_id)["runsOrError"]

        assert status == "COMPLETED_SUCCESS"
        assert runs["__typename"] == "Runs", runs
        results = runs["results"]
        # Every asset of a day in the same run (they share partitions and policy), five days a run.
        ranges = sorted(
            (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
            for tags in ({tag["key"]: tag["value"] for tag in run["tags"]} for run in results)
        )
        assert ranges == [(DAYS[i], DAYS[i + DAYS_PER_RUN - 1]) for i in range(0, len(DAYS), DAYS_PER_RUN)]
        assert all(run["status"] == "SUCCESS" for run in results), results
        assert all(sorted(key["path"][-1] for key in run["assetSelection"]) == sorted(ALL_ASSETS) for run in results)
        # Never more runs at once than the coordinator allows. Whether two runs' own execution
        # windows (about a second each here, after their processes start) overlap depends on start-up
        # times, so overlap itself is not promised.
        assert 1 <= most_at_once([(run["startTime"], run["endTime"]) for run in results]) <= RUNS_AT_ONCE
        wall = max(run["endTime"] for run in results) - min(run["startTime"] for run in results)
        print(f"fan-out on object storage: {len(results)} runs, first start to last end {wall:.1f} s")

        files = {name: data for name, data in sorted(s3_server.objects(fanned_export).items()) if name.endswith(".csv")}
        assert list(files) == [f"feedback_training_{day.replace('-', '')}.csv" for day in DAYS]
        assert all(len(content.splitlines()) > 1 for content in files.values())
        assert files == exported(reference / "export")
        assert not (tmp_path / "unused").exists()
        state = DedupeStateStore(storage_for(fanned_storage), "first_per_pair", "k1")
        assert state.partitions() == DAYS
        assert state.shared_keys().is_empty()
    except BaseException:
        print(logs(tmp_path))
        raise
