"""The production instance, deploy/dagster.yaml, as deployed: copied unchanged into DAGSTER_HOME with
its DAGSTER_PG_* variables pointing at a fresh PostgreSQL database.

The real `dagster-webserver` and `dagster-daemon` run on it. A one-day run of `feedback_export` and
a 5-day backfill, both launched through the webserver's GraphQL API the way the UI launches them,
must wait in the run queue for the daemon, succeed, leave their runs and materializations in
PostgreSQL (and nothing in SQLite), and export byte for byte the files of in-process runs.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from contextlib import closing
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from feedback_assets.asset_runs import DEDUPE_STATE_POOL
from feedback_assets.demo.database import write_demo_source
from feedback_assets_tests.daemon import (
    BACKFILL_RUNS,
    GraphQL,
    clear_feedback_settings,
    exported,
    free_port,
    launch_backfill,
    launch_partition_run,
    logs,
    server_env,
    start_daemon,
    start_webserver,
    wait_for_backfill,
    wait_for_run,
)
from feedback_assets_tests.graph import ALL_ASSETS, materialize, settings_for
from feedback_assets_tests.processes import Processes

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_YAML = REPO_ROOT / "deploy" / "dagster.yaml"

# The nightly run's day, then a backfill of the five days after it: the backfill's dedupe reads the
# state the first run left, so the two runs must share one instance as they would in production.
ONE_DAY = "2025-10-19"
FIRST = dt.date(2025, 10, 20)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(5)]


def rows(database_url: str, query: str, *params: str) -> list[tuple[object, ...]]:
    with closing(psycopg2.connect(database_url, connect_timeout=10)) as connection, connection.cursor() as cur:
        cur.execute(query, params)
        return [tuple(row) for row in cur.fetchall()]


@pytest.mark.usefixtures("hmac_key")
def test_the_production_instance_queues_a_run_and_a_backfill_for_the_daemon_and_keeps_them_in_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    clear_feedback_settings(monkeypatch)
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=7, rows_per_day=40, seed=5)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PRODUCTION_YAML, home / "dagster.yaml")
    database = make_url(postgres_url)
    assert database.host and database.port and database.username and database.database
    daemon_side = tmp_path / "daemon_side"
    env = server_env(
        home,
        source_url,
        daemon_side,
        DAGSTER_PG_USERNAME=database.username,
        # The test server trusts loopback connections; production sets a real password.
        DAGSTER_PG_PASSWORD=database.password or "",
        DAGSTER_PG_HOST=database.host,
        DAGSTER_PG_PORT=str(database.port),
        DAGSTER_PG_DB=database.database,
    )
    graphql = GraphQL(free_port())
    reference = tmp_path / "in_process"
    (reference / "dagster_home").mkdir(parents=True)

    try:
        with Processes(tmp_path, env) as processes:
            # The webserver creates the instance's tables in the empty database before the daemon
            # starts, so the two never race to create them.
            start_webserver(processes, graphql, tmp_path)
            daemon = start_daemon(processes, tmp_path)
            one_day_run = launch_partition_run(graphql, "feedback_export", ONE_DAY)["runId"]
            # The reference is made while the daemon works: the same two runs in process, in the
            # same order, on an instance of their own.
            with dg.instance_for_test(temp_dir=str(reference / "dagster_home")) as instance:
                settings = settings_for(reference, source_url)
                assert materialize(instance, settings, ONE_DAY).success
                assert materialize(instance, settings, DAYS[0], DAYS[-1]).success
            assert wait_for_run(graphql, one_day_run, daemon) == "SUCCESS"
            # The daemon is already running, so the backfill waits for the backfill daemon's next
            # iteration (its loop is a fixed 30 s) to get its run, and for the one after to be done.
            backfill_id = launch_backfill(graphql, DAYS[0], DAYS[-1], "test_production_instance")
            status = wait_for_backfill(graphql, backfill_id, daemon)
            backfill_runs = graphql(BACKFILL_RUNS, backfillId=backfill_id)["runsOrError"]

        assert status == "COMPLETED_SUCCESS"
        assert backfill_runs["__typename"] == "Runs", backfill_runs
        # BackfillPolicy.single_run(): the five days are one run.
        (backfill_run,) = (run["runId"] for run in backfill_runs["results"])

        # Everything the instance stored is in the fresh database: both runs, and besides them only
        # the freshness sensor's check runs (the day before today is overdue in a 2025 source) ...
        stored_runs = {
            run_id: (job, run_status)
            for run_id, job, run_status in rows(postgres_url, "SELECT run_id, pipeline_name, status FROM runs")
        }
        freshness_runs = {
            run_id
            for (run_id,) in rows(
                postgres_url,
                "SELECT run_id FROM run_tags WHERE key = 'dagster/sensor_name' AND value = %s",
                "training_csv_freshness",
            )
        }
        assert stored_runs.keys() - freshness_runs == {one_day_run, backfill_run}
        assert stored_runs[one_day_run] == ("feedback_export", "SUCCESS")
        assert stored_runs[backfill_run][1] == "SUCCESS"
        # ... each held in the queue until the daemon launched it, whoever submitted it (Dagster
        # 1.13 records no PIPELINE_DEQUEUED: the daemon's launch is PIPELINE_STARTING) ...
        lifecycle = rows(
            postgres_url,
            "SELECT run_id, dagster_event_type FROM event_logs WHERE run_id IN (%s, %s) AND dagster_event_type LIKE %s"
            " ORDER BY id",
            one_day_run,
            backfill_run,
            "PIPELINE\\_%",
        )
        for run_id in (one_day_run, backfill_run):
            assert [event for run, event in lifecycle if run == run_id] == [
                "PIPELINE_ENQUEUED",
                "PIPELINE_STARTING",
                "PIPELINE_START",
                "PIPELINE_SUCCESS",
            ]
        # ... one materialization per asset and day, each recorded by the run that made it ...
        materialized = Counter(
            (run_id, dg.AssetKey.from_db_string(str(asset_key)), partition)
            for run_id, asset_key, partition in rows(
                postgres_url,
                "SELECT run_id, asset_key, partition FROM event_logs WHERE dagster_event_type = %s",
                "ASSET_MATERIALIZATION",
            )
        )
        assert materialized == {
            **{(one_day_run, dg.AssetKey(asset), ONE_DAY): 1 for asset in ALL_ASSETS},
            **{(backfill_run, dg.AssetKey(asset), day): 1 for asset in ALL_ASSETS for day in DAYS},
        }
        # ... the dedupe pool limited to one slot by the file's default limit ...
        assert rows(
            postgres_url,
            'SELECT concurrency_key, "limit" FROM concurrency_limits WHERE concurrency_key = %s',
            DEDUPE_STATE_POOL,
        ) == [(DEDUPE_STATE_POOL, 1)]
        # ... and no SQLite storage beside it in DAGSTER_HOME.
        assert sorted(home.rglob("*.db")) == []

        files = exported(daemon_side / "export")
        assert list(files) == [f"feedback_training_{day.replace('-', '')}.csv" for day in [ONE_DAY, *DAYS]]
        assert all(len(content.splitlines()) > 1 for content in files.values())
        assert files == exported(reference / "export")
    except BaseException:
        print(logs(tmp_path))
        raise
