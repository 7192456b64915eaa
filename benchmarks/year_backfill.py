"""A generated year exported in one ranged run, then its k-anonymity figures.

    .venv/bin/python -m benchmarks.year_backfill [--source-url URL] [--workdir DIR]

By default it uses the PostgreSQL database `feedback_bench` that benchmarks.year loads
(5 million feedback rows over 2025). Prints the run's wall time and rows per second, then, over
the exported CSVs, the smallest k-anonymity group per day (min, median, max over the year), the
days whose smallest group is below the threshold, and k for the whole year.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl

from benchmarks.harness import BENCH_KEY_HEX, latest_metadata, run_export
from feedback_assets import k_anonymity
from feedback_assets.resources import FeedbackSettings

THRESHOLD = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-url", default="postgresql://root@127.0.0.1:5432/feedback_bench")
    parser.add_argument("--first", default="2025-01-01")
    parser.add_argument("--last", default="2025-12-31")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("FEEDBACK_HMAC_KEY", BENCH_KEY_HEX)
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        settings = FeedbackSettings(
            source_url=args.source_url, export_dir=str(work / "export"), storage_dir=str(work / "storage")
        )
        home = work / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        with dg.DagsterInstance.local_temp(str(home)) as instance:
            started = time.perf_counter()
            assert run_export(instance, settings, args.first, args.last).success
            seconds = time.perf_counter() - started
            last = latest_metadata(instance, "training_csv", args.last)
        files = sorted((work / "export").glob("feedback_training_*.csv"))
        per_day = {
            f.stem.removeprefix("feedback_training_"): k_anonymity.measure(
                pl.scan_csv(f, infer_schema=False).select(k_anonymity.QUASI_IDENTIFIERS), THRESHOLD
            )
            for f in files
        }
        whole = k_anonymity.measure(
            pl.scan_csv(files, infer_schema=False).select(k_anonymity.QUASI_IDENTIFIERS), THRESHOLD
        )
    rows = sum(m.rows for m in per_day.values())
    smallest = [m.smallest_group for m in per_day.values() if m.rows]
    print(f"{len(files)} days, {rows} exported rows, one ranged run: {seconds:.1f} s")
    print(f"last day's statistics: {last}")
    print(
        f"smallest group per day: min {min(smallest)}, median {statistics.median(smallest)}, max {max(smallest)}; "
        f"days with a group below {THRESHOLD}: {sum(1 for m in per_day.values() if m.rows_below_threshold)}; "
        f"rows in groups below {THRESHOLD}, summed over days: {sum(m.rows_below_threshold for m in per_day.values())}"
    )
    print(
        f"whole year: k = {whole.smallest_group}, rows in groups below {THRESHOLD}: {whole.rows_below_threshold} "
        f"of {whole.rows}"
    )


if __name__ == "__main__":
    main()
