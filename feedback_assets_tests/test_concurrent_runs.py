"""Runs at the same moment in separate processes: two exports of neighbouring days keep every key
once and lose no state; an erasure beside an export of the same days leaves nothing of the subject."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import sqlite3
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.defs.erasure import EraseConfig, erase_subjects
from feedback_assets.demo.database import write_demo_source
from feedback_assets.pseudonyms import pseudonym
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets.storage import storage_for
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for

pytestmark = pytest.mark.slow

# What erases: without it, erase_subjects only reports what it would remove.
CONFIRM = dg.RunConfig(ops={"erase_requested_subjects": EraseConfig(confirm=True)})
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

    state = DedupeStateStore(storage_for(shared / "storage"), SCOPE, "k1")
    assert state.shared_keys().is_empty()
    assert state.partitions() == DAYS

    sequential = tmp_path / "sequential"
    sequential_home = tmp_path / "sequential_home"
    sequential_home.mkdir()
    with dg.instance_for_test(temp_dir=str(sequential_home)) as instance:
        for day in DAYS:
            assert materialize(instance, settings_for(sequential, source_url, dedupe_scope=SCOPE), day).success
    expected_state = DedupeStateStore(storage_for(sequential / "storage"), SCOPE, "k1").all_keys().sort("dedupe_key")
    assert state.all_keys().sort("dedupe_key").equals(expected_state)
    for day in DAYS:
        name = f"feedback_training_{day.replace('-', '')}.csv"
        assert (shared / "export" / name).read_bytes() == (sequential / "export" / name).read_bytes(), name


ERASE_DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(14)]


def _in_process(home: str, root: str, source_url: str, barrier: Barrier) -> tuple[dg.DagsterInstance, FeedbackSettings]:
    """A separate process's instance and settings on the shared DAGSTER_HOME, once all are ready."""
    os.environ["DAGSTER_HOME"] = home
    os.environ["FEEDBACK_HMAC_KEY"] = KEY_HEX
    instance = dg.DagsterInstance.get()
    barrier.wait(timeout=120)
    return instance, settings_for(Path(root), source_url)


def _export_range(home: str, root: str, source_url: str, barrier: Barrier) -> None:
    instance, settings = _in_process(home, root, source_url, barrier)
    with instance:
        if not materialize(instance, settings, ERASE_DAYS[0], ERASE_DAYS[-1]).success:
            raise SystemExit(1)


def _erase(home: str, root: str, source_url: str, barrier: Barrier) -> None:
    instance, settings = _in_process(home, root, source_url, barrier)
    with instance:
        result = erase_subjects.execute_in_process(
            instance=instance, resources=resources_for(settings), run_config=CONFIRM
        )
        if not result.success:
            raise SystemExit(1)


def _together(*targets: tuple[Callable[..., None], tuple[object, ...]]) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(targets))
    workers = [context.Process(target=target, args=(*args, barrier)) for target, args in targets]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)


def test_an_erasure_started_with_an_export_of_the_same_days_leaves_nothing_of_the_subject(
    tmp_path: Path, hmac_key: str
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    data = write_demo_source(
        source_url, end_date=dt.date.fromisoformat(ERASE_DAYS[-1]), days=14, rows_per_day=400, seed=4
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POOL_LIMIT_YAML)
    shared = tmp_path / "shared"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert materialize(instance, settings_for(shared, source_url), ERASE_DAYS[0], ERASE_DAYS[-1]).success
    # The user with the most feedback asks to be erased; an export and the erasure start together,
    # twice, the second time with a second erasure beside them.
    busiest = data.recommendation_feedback.group_by("user_id").len().sort("len", descending=True)["user_id"][0]
    with sqlite3.connect(tmp_path / "source.sqlite") as db:
        db.execute("INSERT INTO erasure_requests (user_id, requested_at) VALUES (?, '2025-11-03 00:00:00')", (busiest,))
    args = (str(home), str(shared), source_url)
    _together((_export_range, args), (_erase, args))
    _together((_export_range, args), (_erase, args), (_erase, args))

    hashed = pseudonym(int(busiest), bytes.fromhex(KEY_HEX))
    for path in (shared / "export").glob("*.csv"):
        assert hashed not in path.read_text(), path
    for path in (shared / "storage").rglob("*.parquet"):
        frame = pl.read_parquet(path)
        for column in ("user_id", "analysis_hash"):
            if column in frame.columns:
                assert busiest not in frame[column].to_list() and hashed not in frame[column].to_list(), path
    entries = [json.loads(line) for line in (shared / "storage" / "audit" / "erasures.jsonl").read_text().splitlines()]
    assert len(entries) == 3, "an erasure's audit entry was lost"

    # The same files as exporting after the request, day by day: nothing half-erased, nothing written back.
    sequential = tmp_path / "sequential"
    (tmp_path / "sequential_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "sequential_home")) as instance:
        assert materialize(instance, settings_for(sequential, source_url), ERASE_DAYS[0], ERASE_DAYS[-1]).success
    for day in ERASE_DAYS:
        name = f"feedback_training_{day.replace('-', '')}.csv"
        assert (shared / "export" / name).read_bytes() == (sequential / "export" / name).read_bytes(), name
