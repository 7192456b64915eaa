"""Two runs on different days at the same moment: no key exported twice, no state lost (issue 3)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
from multiprocessing.synchronize import Barrier
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.demo.database import write_demo_source
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for

pytestmark = pytest.mark.slow

FIRST = dt.date(2025, 10, 20)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(7)]
# Each round starts two runs on neighbouring days, which share re-rated pairs (demo data crafts one
# per day, and the bulk has more); six rounds give each neighbouring pair of days a collision.
ROUNDS = [(DAYS[i], DAYS[i + 1]) for i in range(6)]
SCOPE = "first_per_pair"
POOL_LIMIT_YAML = "concurrency:\n  pools:\n    default_limit: 1\n"


def _run_day(home: str, root: str, source_url: str, day: str, barrier: Barrier) -> None:
    """A separate process: its own imports and instance handle on the shared DAGSTER_HOME."""
    os.environ["DAGSTER_HOME"] = home
    os.environ["FEEDBACK_HMAC_KEY"] = KEY_HEX
    settings = settings_for(Path(root), source_url, dedupe_scope=SCOPE)
    with dg.DagsterInstance.get() as instance:
        barrier.wait(timeout=120)
        if not materialize(instance, settings, day).success:
            raise SystemExit(1)


def test_simultaneous_runs_on_neighbouring_days_keep_every_key_once(tmp_path: Path, hmac_key: str) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=9, rows_per_day=60, seed=9)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POOL_LIMIT_YAML)
    # The instance's SQLite storage is created once, as a deployment does: two processes creating it
    # at the same moment race in Dagster's schema migration (alembic ends with two heads).
    with dg.DagsterInstance.from_config(str(home)):
        pass
    shared = tmp_path / "shared"

    context = multiprocessing.get_context("spawn")
    for pair in ROUNDS:
        barrier = context.Barrier(len(pair))
        workers = [
            context.Process(target=_run_day, args=(str(home), str(shared), source_url, day, barrier)) for day in pair
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        assert [worker.exitcode for worker in workers] == [0, 0], f"round {pair} failed"

    state = DedupeStateStore(shared / "storage", SCOPE, "k1")
    assert state.shared_keys().is_empty()
    assert state.partitions() == DAYS

    sequential = tmp_path / "sequential"
    sequential_home = tmp_path / "sequential_home"
    sequential_home.mkdir()
    with dg.instance_for_test(temp_dir=str(sequential_home)) as instance:
        for day in DAYS:
            assert materialize(instance, settings_for(sequential, source_url, dedupe_scope=SCOPE), day).success
    expected_state = DedupeStateStore(sequential / "storage", SCOPE, "k1").all_keys().sort("dedupe_key")
    assert state.all_keys().sort("dedupe_key").equals(expected_state)
    for day in DAYS:
        name = f"feedback_training_{day.replace('-', '')}.csv"
        assert (shared / "export" / name).read_bytes() == (sequential / "export" / name).read_bytes(), name
