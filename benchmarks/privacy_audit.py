"""What the exported files reveal at each timestamp precision and pseudonym scope, on a generated year.

    .venv/bin/python -m benchmarks.privacy_audit [--docs docs/privacy.md]

Builds (or reuses) the year benchmark's PostgreSQL source (benchmarks/year.py: 5 million feedback
rows over 2025, 200,000 users), exports it once through the `feedback_export` job at microsecond
precision with stable pseudonyms, then derives every other setting's cells from those files with
the pipeline's own functions (`csv_cells.exported_time`, `pseudonyms.scoped_pseudonyms`): which
rows a file holds depends on neither setting, since deduplication uses the full-precision time and
the stable pseudonym. It measures
- per precision, over the whole year with the project's `k_anonymity.measure`: the rows unique on
  (age_range, feedback_created_at, analysis_created_at), the rows in groups below 5, k and l of
  `conditions`; and k and l by pyCANON (`.venv-pycanon`, scripts/pycanon_measure.py) on one month,
  which must equal the project's on that month or the command fails;
- per pseudonym scope: how many rows and how many days one pseudonym links.
It prints the tables and, with --docs, writes them into that file between its markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import polars as pl

from benchmarks.harness import BENCH_KEY_HEX, run_export
from benchmarks.year import add_source_arguments, ensure_source, write_docs
from feedback_assets import k_anonymity
from feedback_assets.csv_cells import exported_time
from feedback_assets.pseudonyms import scoped_pseudonyms
from feedback_assets.resources import FeedbackSettings
from feedback_assets.settings import (
    DEFAULT_QUASI_IDENTIFIERS,
    PSEUDONYM_SCOPES,
    TIMESTAMP_PRECISIONS,
    PseudonymScope,
    TimestampPrecision,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PYCANON_PYTHON = REPO_ROOT / ".venv-pycanon" / "bin" / "python"
PYCANON_MEASURE = REPO_ROOT / "scripts" / "pycanon_measure.py"
START = "<!-- privacy-audit:start -->"
END = "<!-- privacy-audit:end -->"
THRESHOLD = 5
TIMES = ("feedback_created_at", "analysis_created_at")


def export_year(source_url: str, first: str, last: str, work: Path) -> Path:
    """The year's CSVs at microsecond precision with stable pseudonyms, in one ranged run."""
    settings = FeedbackSettings(
        source_url=source_url,
        export_dir=str(work / "export"),
        storage_dir=str(work / "storage"),
        timestamp_precision="microsecond",
        pseudonym_scope="stable",
    )
    home = work / "dagster_home"
    home.mkdir(parents=True)
    started = time.perf_counter()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        if not run_export(instance, settings, first, last).success:
            raise SystemExit("the export failed; see the log above")
    print(f"exported {first}..{last} in {time.perf_counter() - started:.0f} s", flush=True)
    return work / "export"


def exported_rows(export_dir: Path) -> pl.DataFrame:
    """Every exported row's pseudonym, quasi-identifiers and conditions, with its file's day."""
    files = sorted(export_dir.glob("feedback_training_*.csv"))
    frame = pl.scan_csv(files, infer_schema=False, include_file_paths="path").select(
        pl.col("path").str.extract(r"feedback_training_(\d{8})\.csv$").str.to_date("%Y%m%d").alias("partition"),
        "analysis_hash",
        "age_range",
        "conditions",
        *(pl.col(name).str.to_datetime("%Y-%m-%dT%H:%M:%S%.6fZ", time_zone="UTC", time_unit="us") for name in TIMES),
    )
    return frame.collect()


def at_precision(rows: pl.DataFrame, precision: TimestampPrecision) -> pl.DataFrame:
    return rows.select("age_range", "conditions", *(exported_time(pl.col(name), precision) for name in TIMES))


def pycanon(cells: pl.DataFrame, work: Path) -> dict[str, int]:
    path = work / "pycanon_input.csv"
    cells.write_csv(path)
    command = [str(PYCANON_PYTHON), str(PYCANON_MEASURE), "--quasi-identifiers", ",".join(DEFAULT_QUASI_IDENTIFIERS)]
    result = subprocess.run([*command, "--sensitive", "conditions", str(path)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"pyCANON failed:\n{result.stderr}")
    figures: dict[str, int] = json.loads(result.stdout)
    return figures


def precision_table(rows: pl.DataFrame, month: tuple[dt.date, dt.date], work: Path) -> list[str]:
    in_month = pl.col("partition").is_between(*month)
    lines = [
        "| precision of both times | rows unique | rows in groups below 5 | rows in groups of one condition "
        f"| k | l | k, l on {month[0]:%Y-%m}: project | pyCANON |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision in TIMESTAMP_PRECISIONS:
        started = time.perf_counter()
        cells = at_precision(rows, precision)
        year = k_anonymity.measure(cells, THRESHOLD, DEFAULT_QUASI_IDENTIFIERS)
        alone = k_anonymity.measure(cells, 2, DEFAULT_QUASI_IDENTIFIERS).rows_below_threshold
        month_cells = at_precision(rows.filter(in_month), precision)
        ours = k_anonymity.measure(month_cells, THRESHOLD, DEFAULT_QUASI_IDENTIFIERS)
        theirs = pycanon(month_cells, work)
        if (ours.rows, ours.smallest_group, ours.l_diversity) != (theirs["rows"], theirs["k"], theirs["l"]):
            raise SystemExit(f"{precision}: the project measures {ours}, pyCANON {theirs}")
        lines.append(
            f"| {precision} | {alone / year.rows:.1%} | {year.rows_below_threshold / year.rows:.1%} | "
            f"{year.rows_in_uniform_groups / year.rows:.1%} | "
            f"{year.smallest_group} | {year.l_diversity} | {ours.smallest_group}, {ours.l_diversity} | "
            f"{theirs['k']}, {theirs['l']} |"
        )
        print(lines[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
    return lines


def scope_table(rows: pl.DataFrame, key: bytes) -> list[str]:
    lines = [
        "| pseudonym scope | pseudonyms | rows one pseudonym links: median | max | days between its first and "
        "last row: median | max |",
        "|---|---|---|---|---|---|",
    ]
    scopes: tuple[PseudonymScope, ...] = PSEUDONYM_SCOPES
    for scope in scopes:
        pseudonyms = rows.select("partition", scoped_pseudonyms(rows, scope, key))
        linked = pseudonyms.group_by("analysis_hash").agg(
            rows=pl.len(), days=(pl.col("partition").max() - pl.col("partition").min()).dt.total_days()
        )
        summary = linked.select(
            pl.col("rows").median().alias("rows_median"),
            pl.col("rows").max().alias("rows_max"),
            pl.col("days").median().alias("days_median"),
            pl.col("days").max().alias("days_max"),
        ).row(0, named=True)
        lines.append(
            f"| {scope} | {linked.height:,} | {summary['rows_median']:.0f} | {summary['rows_max']} | "
            f"{summary['days_median']:.0f} | {summary['days_max']} |"
        )
        print(lines[-1], flush=True)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--month", default="2025-06", help="the month pyCANON measures too (YYYY-MM)")
    parser.add_argument("--docs", type=Path, default=None, help="write the tables into this file between its markers")
    args = parser.parse_args(argv)
    if not PYCANON_PYTHON.exists():
        raise SystemExit(f"{PYCANON_PYTHON} is missing: ./scripts/test makes it (requirements/pycanon.txt)")

    os.environ.setdefault("FEEDBACK_HMAC_KEY", BENCH_KEY_HEX)
    source = ensure_source(args.database, args.first, args.days, args.rows_per_day)
    month_start = dt.date.fromisoformat(f"{args.month}-01")
    month_end = (month_start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_dir = export_year(source.url, source.first.isoformat(), source.last.isoformat(), work)
        rows = exported_rows(export_dir)
        print(f"{rows.height:,} exported rows", flush=True)
        precisions = precision_table(rows, (month_start, month_end), work)
        scopes = scope_table(rows, bytes.fromhex(os.environ["FEEDBACK_HMAC_KEY"]))
    summary = (
        f"Measured by `.venv/bin/python -m benchmarks.privacy_audit --docs docs/privacy.md` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d}: {rows.height:,} exported rows of {source.rows:,} generated "
        f"feedback rows, {source.first}..{source.last}. Groups are over age_range and both exported times; "
        f"l counts the distinct `conditions` in the least diverse group.\n"
    )
    table = summary + "\n" + "\n".join(precisions) + "\n\n" + "\n".join(scopes) + "\n"
    print(table)
    if args.docs is not None:
        write_docs(args.docs, table, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
