"""The benchmark stays runnable and its floor stays the real graph's shape; no timing is asserted here."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from benchmarks import feedback_reads, object_storage, year
from benchmarks.noop_graph import defs as noop_defs
from feedback_assets.definitions import defs as real_defs


def shape(defs: dg.Definitions) -> dict[str, object]:
    graph = defs.resolve_asset_graph()
    nodes = {key: graph.get(key) for key in graph.get_all_asset_keys()}
    return {
        "assets": {
            key.to_user_string(): (
                sorted(parent.to_user_string() for parent in node.parent_keys),
                node.partitions_def,
                node.backfill_policy,
            )
            for key, node in nodes.items()
        },
        "checks": {(check.asset_key.to_user_string(), check.name) for check in graph.asset_check_keys},
        "blocking": {
            (spec.asset_key.to_user_string(), spec.name)
            for checks in defs.asset_checks or []
            if isinstance(checks, dg.AssetChecksDefinition)
            for spec in checks.check_specs
            if spec.blocking
        },
        "steps": sorted(
            (
                definition.node_def.name,
                sorted(k.to_user_string() for k in definition.keys),
                sorted(definition.node_def.pools),
            )
            for definition in graph.assets_defs
        ),
        "executor": defs.executor,
    }


def test_the_noop_floor_has_the_real_graphs_assets_checks_partitions_policies_and_steps() -> None:
    assert shape(noop_defs) == shape(real_defs)


@pytest.fixture
def new_database(postgres_url: str) -> Iterator[str]:
    """The name of a PostgreSQL database that does not exist yet; dropped afterwards if made, with
    the two years' database the benchmark makes beside it (`<name>_2y`)."""
    name = f"{postgres_url.rsplit('/', 1)[1]}_bench"
    yield name
    admin = psycopg2.connect(dbname="test", host="127.0.0.1", port=5432, user="root")
    admin.autocommit = True
    with admin.cursor() as cur:
        for made in (name, f"{name}_2y"):
            cur.execute(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')
    admin.close()


@pytest.mark.slow
def test_a_tiny_benchmark_run_writes_its_table(tmp_path: Path, new_database: str) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nprose kept\n\n<!-- benchmark:start -->\nold\n<!-- benchmark:end -->\n\nafter\n")
    argv = ["--database", new_database, "--first", "2025-03-01", "--days", "3", "--rows-per-day", "30"]
    argv += ["--month-days", "2", "--workdir", str(tmp_path / "work"), "--docs", str(docs)]
    assert year.main([*argv, "--history"]) == 0
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nprose kept\n") and text.endswith("<!-- benchmark:end -->\n\nafter\n")
    assert "old" not in text
    for figure in (
        "source floor",
        "no-op graph, 3 days",
        "ratio: graph / (no-op + source floor)",
        "CPU seconds (user + system), no-op / graph",
        "CPU seconds kept all",
        "one day again on that instance (median of 3, in turn)",
        "row-by-row",
    ):
        assert figure in text
    assert f"over 3 days ({dt.date(2025, 3, 1)}..{dt.date(2025, 3, 3)})" in text
    # Two years of history: twice the days, both graphs' nightly day, and their growth.
    assert "| 3 days, " in text and "| 6 days, " in text
    assert "After 6 days against 3: the graph's day " in text and "the no-op day " in text


@pytest.mark.slow
def test_a_tiny_object_storage_benchmark_times_both_sides(
    tmp_path: Path, new_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--database", new_database, "--first", "2025-03-01", "--days", "3", "--rows-per-day", "30"]
    argv += ["--window-first", "2025-03-02", "--window-days", "2", "--repeats", "1", "--workdir", str(tmp_path)]
    assert object_storage.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("run 1: local disk ") and " s, object storage " in lines[-2]
    assert lines[-1].startswith(
        f"2 days (2025-03-02..2025-03-03) of {new_database}, one ranged run each, median of 1: local disk "
    )
    assert ", ratio " in lines[-1]


def test_a_tiny_feedback_reads_benchmark_reads_the_same_rows_both_ways(
    new_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--database", new_database, "--first", "2025-03-01", "--days", "3", "--rows-per-day", "30"]
    assert feedback_reads.main([*argv, "--slice-days", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()[-4:]
    assert [line.split(":")[0] for line in lines] == [
        f"{scope}, run 1, {side}"
        for scope in ("exact", "first_per_pair")
        for side in ("text (psycopg2)", "own types (ADBC)")
    ]
    rows = [line.split(": ", 1)[1].split(" in ")[0] for line in lines]
    assert rows[0] == rows[1] and rows[2] == rows[3] and rows[0].startswith("2 slices, ")
    assert int(rows[0].split(", ")[1].split()[0]) >= 90


def test_the_peak_memory_reported_is_the_commands_not_the_benchmarks_own(tmp_path: Path) -> None:
    """A benchmark that has just generated a large source holds gigabytes; a child's ru_maxrss read
    from it would count them in (lesson 13), so the figure must come from the small wrapper. The
    same wrapper reports the command's CPU seconds, in seconds."""
    busy = year.measured_run([sys.executable, "-c", "sum(range(2 * 10**7))"], dict(os.environ), tmp_path / "busy.log")
    assert 0.05 < busy.cpu_seconds <= busy.seconds * (os.cpu_count() or 1), busy
    held = bytearray(1024**3)
    held[::4096] = b"\x01" * len(held[::4096])
    measured = year.measured_run([sys.executable, "-c", "pass"], dict(os.environ), tmp_path / "run.log")
    assert measured.peak_rss_bytes < 200 * 1024**2, measured
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert usage.ru_maxrss * 1024 > 1024**3, "wait4 from a large process no longer counts it in: revisit lesson 13"
    del held
