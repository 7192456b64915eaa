"""The year benchmark: a year of feedback through the graph as a user runs it, held against its floors.

    .venv/bin/python -m benchmarks.year [--scaling] [--docs docs/benchmarks.md]

Builds the source in PostgreSQL on 127.0.0.1:5432 with the project's demo generator (a database per
size, reused when it already holds the rows), then measures, each Dagster run through the real
`dagster` CLI on a fresh DAGSTER_HOME (SQLite instance storage, the default):
- the source floor: COPY of every column the graph reads, all five tables, to nowhere;
- Dagster's floor: the no-op graph of the same shape (benchmarks/noop_graph.py) over the range,
  then one day again on its instance;
- the graph over the range in one run (wall time, peak RSS and CPU seconds of the process), then
  one day again on both instances, three times in turn;
- the old row-by-row exporter on one month (benchmarks/row_by_row.py);
and prints the table and its ratios; with --docs it also writes them into that file between its
markers. --scaling adds 2x and 4x the rows and the nightly day after one and after two years.
Timings belong here, never in tests; a tiny run of this command in the tests keeps it working.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg2

from benchmarks import row_by_row
from feedback_assets.demo.database import write_demo_source
from feedback_assets.schemas import READS, SOURCE_TABLES
from feedback_assets.source.sql import POSTGRESQL

SERVER = "postgresql://root@127.0.0.1:5432"
BENCH_KEY_HEX = "0123456789abcdef" * 4
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
# Each one-day figure is the median of this many runs (`days_in_turn`).
DAY_RUNS = 3
START = "<!-- benchmark:start -->"
END = "<!-- benchmark:end -->"
TARGETS = {
    "year_ratio": 1.25,
    "year_ratio_first_per_pair": 1.35,
    "baseline_ratio": 15.0,
    "peak_rss_gib": 1.5,
    "day_ratio": 1.3,
}


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_bytes: int
    events: int = 0
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class Source:
    url: str
    first: dt.date
    days: int
    rows: int

    @property
    def last(self) -> dt.date:
        return self.first + dt.timedelta(days=self.days - 1)


class Workdir:
    """One fresh DAGSTER_HOME, export and storage dir per measured graph."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root / name
        self.home = self.root / "dagster_home"
        self.home.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text(DAGSTER_YAML)

    def env(self, source: Source, scope: str) -> dict[str, str]:
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "FEEDBACK_SOURCE_URL": source.url,
            "FEEDBACK_EXPORT_DIR": str(self.root / "export"),
            "FEEDBACK_STORAGE_DIR": str(self.root / "storage"),
            "FEEDBACK_HMAC_KEY": os.environ.get("FEEDBACK_HMAC_KEY", BENCH_KEY_HEX),
            "FEEDBACK_DEDUPE_SCOPE": scope,
        }


def measured_run(argv: Sequence[str], env: Mapping[str, str], log: Path) -> Measured:
    """Run a command to completion; its wall time, and its peak resident memory and CPU seconds, read
    by a small process of its own (benchmarks/peak_rss.py: from here, wait4 would count this
    process's memory in)."""
    report = log.with_name(f"{log.name}.peak_rss")
    wrapped = [sys.executable, "-m", "benchmarks.peak_rss", str(report), "--", *argv]
    started = time.perf_counter()
    with log.open("ab") as out:
        finished = subprocess.run(wrapped, env=dict(env), stdout=out, stderr=subprocess.STDOUT, check=False)
    returncode = finished.returncode
    seconds = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({returncode}); its output is in {log}")
    peak, cpu = report.read_text().split()
    return Measured(seconds, int(peak), cpu_seconds=float(cpu))


def materialize(module: str, work: Workdir, env: Mapping[str, str], days: str, flag: str) -> Measured:
    """`dagster asset materialize` of every asset of `module` for `days`, as a user runs it."""
    dagster = str(Path(sys.executable).parent / "dagster")
    argv = [dagster, "asset", "materialize", "-m", module, "--select", "*", flag, days]
    result = measured_run(argv, env, work.root / "dagster.log")
    with dg.DagsterInstance.from_config(str(work.home)) as instance:
        runs = instance.get_runs(limit=1)
        events = len(instance.all_logs(runs[0].run_id)) if runs else 0
    return dataclasses.replace(result, events=events)


def ensure_source(database: str, first: dt.date, days: int, rows_per_day: int, url: str | None = None) -> Source:
    """The source database, generated unless it already holds this range at this size."""
    url = url or f"{SERVER}/{database}"
    expected = None
    # Not `with connect(...)`: that opens a transaction even in autocommit, and CREATE DATABASE refuses one.
    admin = psycopg2.connect(f"{SERVER}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.rsplit("/", 1)[1],))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
    admin.close()
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('recommendation_feedback') IS NOT NULL")
        row = cur.fetchone()
        if row is not None and row[0]:
            cur.execute("SELECT min(created_at)::date, max(created_at)::date, count(*) FROM recommendation_feedback")
            expected = cur.fetchone()
    conn.close()
    last = first + dt.timedelta(days=days - 1)
    if expected is None or expected[0] != first or expected[1] != last or expected[2] < days * rows_per_day:
        started = time.perf_counter()
        data = write_demo_source(url, end_date=last, days=days, rows_per_day=rows_per_day, replace=True)
        rows = data.recommendation_feedback.height
        print(f"generated {rows} feedback rows ({first}..{last}) in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        rows = int(expected[2])
    return Source(url, first, days, rows)


class _Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return len(data) if isinstance(data, bytes | bytearray | memoryview) else 0


def source_floor(source: Source) -> float:
    """Seconds to stream every column the graph reads out of the source with COPY, as text."""
    dialect = POSTGRESQL
    started = time.perf_counter()
    with psycopg2.connect(source.url) as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        for read in READS.values():
            columns = ", ".join(dialect.text("t", c) for c in read.source_columns)
            table = SOURCE_TABLES[read.table].name
            cur.copy_expert(f"COPY (SELECT {columns} FROM {table} t) TO STDOUT WITH (FORMAT csv)", _Discard())
    conn.close()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Result:
    label: str
    source: Source
    scope: str
    floor_seconds: float
    noop_year: Measured
    noop_day: Measured
    year: Measured
    day: Measured
    baseline_rows: int
    baseline_seconds: float

    @property
    def year_ratio(self) -> float:
        return self.year.seconds / (self.noop_year.seconds + self.floor_seconds)

    @property
    def day_ratio(self) -> float:
        return self.day.seconds / self.noop_day.seconds

    @property
    def data_path_cpu_seconds(self) -> float:
        return self.year.cpu_seconds - self.noop_year.cpu_seconds

    @property
    def year_ratio_at_full_cores(self) -> float:
        """The ratio if the data path's CPU seconds kept every core busy: what its amount of work
        allows on this machine at best, however it were spread over threads."""
        cores = os.cpu_count() or 1
        return (self.noop_year.seconds + self.data_path_cpu_seconds / cores) / (
            self.noop_year.seconds + self.floor_seconds
        )

    @property
    def data_path_rows_per_second(self) -> float:
        return self.source.rows / max(self.year.seconds - self.noop_year.seconds, 1e-9)

    @property
    def baseline_rows_per_second(self) -> float:
        return self.baseline_rows / self.baseline_seconds

    @property
    def baseline_ratio(self) -> float:
        return self.data_path_rows_per_second / self.baseline_rows_per_second


def days_in_turn(noop: Workdir, graph: Workdir, source: Source, scope: str, day: str) -> tuple[Measured, Measured]:
    """One day re-run DAY_RUNS times on each graph's instance, the two graphs in turn; each side's
    median run. A single run of a few seconds moves by a third from one minute to the next on these
    shared machines (docs/benchmarks.md, the run after lesson 19)."""
    runs: dict[str, list[Measured]] = {"noop": [], "graph": []}
    for _ in range(DAY_RUNS):
        for name, module, work in (
            ("noop", "benchmarks.noop_graph", noop),
            ("graph", "feedback_assets.definitions", graph),
        ):
            runs[name].append(materialize(module, work, work.env(source, scope), day, "--partition"))
    noop_day, graph_day = (sorted(runs[name], key=lambda m: m.seconds)[DAY_RUNS // 2] for name in ("noop", "graph"))
    return noop_day, graph_day


def measure(source: Source, scope: str, day: dt.date, month_days: int, root: Path, label: str) -> Result:
    floor = source_floor(source)
    span = f"{source.first}...{source.last}"
    noop = Workdir(root, f"{label}-noop-{scope}")
    noop_year = materialize("benchmarks.noop_graph", noop, noop.env(source, scope), span, "--partition-range")
    graph = Workdir(root, f"{label}-graph-{scope}")
    year = materialize("feedback_assets.definitions", graph, graph.env(source, scope), span, "--partition-range")
    noop_day, one_day = days_in_turn(noop, graph, source, scope, day.isoformat())
    month_first = max(source.first, day - dt.timedelta(days=month_days - 1))
    baseline_rows, baseline_seconds = row_by_row.rows_per_second(
        source.url, month_first, min(month_days, source.days), bytes.fromhex(BENCH_KEY_HEX), root / f"{label}-old"
    )
    return Result(label, source, scope, floor, noop_year, noop_day, year, one_day, baseline_rows, baseline_seconds)


def nightly_after(source: Source, root: Path) -> Nightly:
    """Both graphs backfill the whole history, then re-run one day 60 days before its end (`days_in_turn`)."""
    span = f"{source.first}...{source.last}"
    late = (source.last - dt.timedelta(days=60)).isoformat()
    work = {}
    for module, name in (("benchmarks.noop_graph", "noop"), ("feedback_assets.definitions", "graph")):
        work[name] = Workdir(root, f"{source.days}d-{name}")
        materialize(module, work[name], work[name].env(source, "exact"), span, "--partition-range")
    noop_day, graph_day = days_in_turn(work["noop"], work["graph"], source, "exact", late)
    return Nightly(source.days, source.rows, noop_day, graph_day)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def commit_of_checkout() -> str:
    """' at commit <short hash>' of the checkout measured, with '+changes' if it had any; '' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        changes = subprocess.run(status, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" at commit {head.stdout.strip()}{'+changes' if changes.stdout.strip() else ''}"


@dataclass(frozen=True)
class Nightly:
    """One day re-run on an instance that holds `history_days` of history, by both graphs."""

    history_days: int
    rows: int
    noop_day: Measured
    day: Measured

    @property
    def ratio(self) -> float:
        return self.day.seconds / self.noop_day.seconds


def report(results: Sequence[Result], scaling: Sequence[Result], nightly: Sequence[Nightly]) -> str:
    main = results[0]
    n = main.source.days
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC{commit_of_checkout()} on {platform.node()} "
        f"({os.cpu_count()} cores, "
        f"Python {platform.python_version()}), PostgreSQL on 127.0.0.1, SQLite instance storage, "
        f"by `python -m benchmarks.year{' --scaling' if scaling else ' --history' if nightly else ''}`.",
        f"Source: {main.source.rows:,} feedback rows over {n} days ({main.source.first}..{main.source.last}).",
        "",
        "| figure | exact | first_per_pair |",
        "|---|---|---|",
    ]
    by_scope = {r.scope: r for r in results}

    def row(name: str, value: object) -> None:
        cells = [value(by_scope[s]) if s in by_scope else "" for s in ("exact", "first_per_pair")]  # type: ignore[operator]
        lines.append(f"| {name} | {' | '.join(str(c) for c in cells)} |")

    row("source floor: COPY of the read columns", lambda r: f"{r.floor_seconds:.1f} s")
    row(
        f"no-op graph, {n} days in one run",
        lambda r: f"{r.noop_year.seconds:.1f} s, {_gib(r.noop_year.peak_rss_bytes)}",
    )
    row(f"the graph, {n} days in one run", lambda r: f"{r.year.seconds:.1f} s, {_gib(r.year.peak_rss_bytes)}")
    row(
        "CPU seconds (user + system), no-op / graph",
        lambda r: f"{r.noop_year.cpu_seconds:.1f} s / {r.year.cpu_seconds:.1f} s",
    )
    row(
        "ratio: graph / (no-op + source floor)",
        lambda r: (
            f"{r.year_ratio:.2f} (target {TARGETS['year_ratio' if r.scope == 'exact' else 'year_ratio_first_per_pair']}"
            f": {_mark(r.year_ratio <= TARGETS['year_ratio' if r.scope == 'exact' else 'year_ratio_first_per_pair'])})"
        ),
    )
    row(
        "peak RSS of the graph's run",
        lambda r: (
            f"{_gib(r.year.peak_rss_bytes)} (target {TARGETS['peak_rss_gib']} GiB: "
            f"{_mark(r.year.peak_rss_bytes <= TARGETS['peak_rss_gib'] * 2**30)})"
        ),
    )
    row(
        f"the ratio if the data path's CPU seconds kept all {os.cpu_count()} cores busy",
        lambda r: f"{r.year_ratio_at_full_cores:.2f}",
    )
    row("Dagster events per day, no-op / graph", lambda r: f"{r.noop_year.events / n:.1f} / {r.year.events / n:.1f}")
    row(
        f"one day again on that instance (median of {DAY_RUNS}, in turn), no-op / graph",
        lambda r: (
            f"{r.noop_day.seconds:.1f} s / {r.day.seconds:.1f} s: {r.day_ratio:.2f} "
            f"(target {TARGETS['day_ratio']}: {_mark(r.day_ratio <= TARGETS['day_ratio'])})"
        ),
    )
    row(
        "row-by-row exporter, one month",
        lambda r: f"{r.baseline_rows:,} rows in {r.baseline_seconds:.1f} s: {r.baseline_rows_per_second:,.0f} rows/s",
    )
    row(
        "the graph's data path (graph - no-op)",
        lambda r: (
            f"{r.data_path_rows_per_second:,.0f} rows/s: {r.baseline_ratio:.1f}x the baseline "
            f"(target {TARGETS['baseline_ratio']:.0f}: {_mark(r.baseline_ratio >= TARGETS['baseline_ratio'])})"
        ),
    )
    if scaling:
        lines += [
            "",
            "Scaling (exact scope, one run over the whole range):",
            "",
            "| rows | time | peak RSS |",
            "|---|---|---|",
        ]
        lines += [f"| {r.source.rows:,} | {r.year.seconds:.1f} s | {_gib(r.year.peak_rss_bytes)} |" for r in scaling]
    if nightly:
        lines += [
            "",
            f"The nightly day (one day re-run, 60 days before the end of the history, median of {DAY_RUNS} "
            "runs in turn), exact scope:",
            "",
            "| history | no-op day | graph day | ratio |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {n.history_days} days, {n.rows:,} rows | {n.noop_day.seconds:.1f} s | {n.day.seconds:.1f} s "
            f"| {n.ratio:.2f} |"
            for n in nightly
        ]
        first, last = nightly[0], nightly[-1]
        growth = last.day.seconds / first.day.seconds - 1
        lines += [
            "",
            f"After {last.history_days} days against {first.history_days}: the graph's day {growth:+.0%} "
            f"(target within 10%: {_mark(abs(growth) <= 0.10)}), the no-op day "
            f"{last.noop_day.seconds / first.noop_day.seconds - 1:+.0%}, the ratio {last.ratio:.2f} "
            f"(target {TARGETS['day_ratio']}: {_mark(last.ratio <= TARGETS['day_ratio'])}).",
        ]
    return "\n".join(lines) + "\n"


def write_docs(path: Path, table: str, start: str = START, end: str = END) -> None:
    """Put `table` between the markers `start` and `end` of the file, adding them when missing."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{table}{end}{after}")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The generated year's options, shared by the benchmarks that build it (`ensure_source`)."""
    parser.add_argument("--first", type=dt.date.fromisoformat, default=dt.date(2025, 1, 1))
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows-per-day", type=int, default=13_700)
    parser.add_argument("--database", default="feedback_bench", help="PostgreSQL database of the source")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--source-url", default=None, help="use this PostgreSQL database instead")
    parser.add_argument("--scope", choices=("exact", "first_per_pair", "both"), default="both")
    parser.add_argument("--month-days", type=int, default=30, help="days the row-by-row baseline exports")
    parser.add_argument("--scaling", action="store_true", help="also 2x and 4x the rows, and two years of history")
    parser.add_argument("--history", action="store_true", help="also two years of history (part of --scaling)")
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--docs", type=Path, default=None, help="write the table into this file between its markers")
    args = parser.parse_args(argv)

    root = args.workdir.resolve() / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    root.mkdir(parents=True)
    source = ensure_source(args.database, args.first, args.days, args.rows_per_day, args.source_url)
    # The day a nightly run re-exports: two months before the end, as a late correction would.
    day = max(source.first, source.last - dt.timedelta(days=60))
    scopes = ("exact", "first_per_pair") if args.scope == "both" else (args.scope,)
    results = [measure(source, scope, day, args.month_days, root, "1x") for scope in scopes]
    print(report(results, [], []), flush=True)
    scaling: list[Result] = []
    nightly: list[Nightly] = []
    if args.scaling:
        scaling.append(results[0])
        for times in (2, 4):
            bigger = ensure_source(f"{args.database}_x{times}", args.first, args.days, args.rows_per_day * times)
            scaling.append(measure(bigger, "exact", day, 1, root, f"{times}x"))
            print(report(results, scaling, []), flush=True)
    if args.scaling or args.history:
        exact = next(r for r in results if r.scope == "exact")
        # Two years, or as many of their days as lie before today: the partitions end yesterday.
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        history_days = min(2 * args.days, (yesterday - args.first).days + 1)
        two_years = ensure_source(f"{args.database}_2y", args.first, history_days, args.rows_per_day)
        nightly = [
            Nightly(source.days, source.rows, exact.noop_day, exact.day),
            nightly_after(two_years, root),
        ]
    table = report(results, scaling, nightly)
    print(table)
    if args.docs is not None:
        write_docs(args.docs, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
