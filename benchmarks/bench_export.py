"""Throughput of the whole graph on PostgreSQL: one partition, and a 30-day range in one run.

    .venv/bin/python -m benchmarks.bench_export [--days 365] [--rows-per-day 13700] [--keep-db NAME]

Loads a year of demo feedback (5 million rows by default) into a scratch database on
127.0.0.1:5432, then materializes the graph in-process on a temporary Dagster instance (SQLite, the
DAGSTER_HOME default) and prints rows per second and each step's time. Kept out of the test
suite: timings belong here, not in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import TypedDict

import dagster as dg
import psycopg2

from benchmarks.harness import BENCH_KEY_HEX, STEPS, latest_number, run_export
from feedback_assets.demo.database import write_demo_source
from feedback_assets.resources import FeedbackSettings
from feedback_assets.settings import DedupeScopeChoice


class ServerParameters(TypedDict):
    """libpq keywords for the benchmark's PostgreSQL server."""

    host: str
    port: int
    user: str


SERVER: ServerParameters = {"host": "127.0.0.1", "port": 5432, "user": "root"}


def ensure_database(name: str, days: int, rows_per_day: int, end: dt.date) -> str:
    url = f"postgresql://root@127.0.0.1:5432/{name}"
    admin = psycopg2.connect(dbname="test", **SERVER)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        exists = cur.fetchone() is not None
        if not exists:
            cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    if not exists:
        started = time.perf_counter()
        write_demo_source(url, end_date=end, days=days, rows_per_day=rows_per_day, seed=1)
        with psycopg2.connect(dbname=name, **SERVER) as conn, conn.cursor() as cur:
            cur.execute("ANALYZE")
        print(f"loaded {days} days x {rows_per_day} rows/day in {time.perf_counter() - started:.1f} s")
    return url


def run(url: str, workdir: Path, first: str, last: str | None, scope: str) -> None:
    settings = FeedbackSettings(
        source_url=url,
        export_dir=str(workdir / "export"),
        storage_dir=str(workdir / "storage"),
        dedupe_scope=DedupeScopeChoice(scope),
    )
    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        started = time.perf_counter()
        assert run_export(instance, settings, first, last).success
        seconds = time.perf_counter() - started
        days = [first] if last is None else [p for p in _days(first, last)]
        rows = sum(int(latest_number(instance, "training_csv", d, "total_feedback_records")) for d in days)
        steps = {step: latest_number(instance, asset, days[0], "execution_seconds") for step, asset in STEPS.items()}
    label = first if last is None else f"{first}...{last}"
    print(f"{scope:15} {label:23} {rows:>9} rows {seconds:7.2f} s {rows / seconds:>10.0f} rows/s  steps: {steps}")


def _days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows-per-day", type=int, default=13_700)
    parser.add_argument("--keep-db", default="feedback_bench", help="database name; reused if it exists")
    parser.add_argument("--end", default="2025-12-31")
    args = parser.parse_args()
    end = dt.date.fromisoformat(args.end)
    url = ensure_database(args.keep_db, args.days, args.rows_per_day, end)
    os.environ.setdefault("FEEDBACK_HMAC_KEY", BENCH_KEY_HEX)
    one_day = (end - dt.timedelta(days=60)).isoformat()
    range_first = (end - dt.timedelta(days=29)).isoformat()
    for scope in ("exact", "first_per_pair"):
        with tempfile.TemporaryDirectory() as tmp:
            run(url, Path(tmp) / "one", one_day, None, scope)
            run(url, Path(tmp) / "range", range_first, end.isoformat(), scope)


if __name__ == "__main__":
    main()
