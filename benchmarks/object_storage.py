"""The same days exported to local disk and to object storage, one ranged run each.

    .venv/bin/python -m benchmarks.object_storage [--window-first 2025-06-01] [--window-days 30] [--repeats 2]

The source is the year benchmark's PostgreSQL database (`feedback_bench`, generated when absent:
5 million rows over 2025). The object store is a real S3-protocol server, `moto_server` from
PyPI, started here on 127.0.0.1 in its own process group and stopped by its pid; it keeps the
objects in its memory, so its figures are the cost of the protocol and the client (one request per
file, every read a GET), not of a remote network. Each run is the `feedback_export` job over the
whole window on a fresh Dagster instance with fresh, empty directories or prefixes; the sides
alternate, and every run's seconds are printed with the median of each side and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from benchmarks.harness import BENCH_KEY_HEX, run_export
from benchmarks.year import SERVER, add_source_arguments, ensure_source
from feedback_assets.resources import FeedbackSettings
from feedback_assets_tests.s3_server import running_s3_server


@contextmanager
def pointed_at(environment: Mapping[str, str]) -> Iterator[None]:
    """The store client's variables set for the runs, and put back as they were afterwards."""
    previous = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def timed_run(source_url: str, export_dir: str, storage_dir: str, first: str, last: str, home: Path) -> float:
    settings = FeedbackSettings(source_url=source_url, export_dir=export_dir, storage_dir=storage_dir)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        started = time.perf_counter()
        if not run_export(instance, settings, first, last).success:
            raise RuntimeError(f"the export of {first}..{last} to {export_dir} failed")
        return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_arguments(parser)
    parser.add_argument("--window-first", type=dt.date.fromisoformat, default=dt.date(2025, 6, 1))
    parser.add_argument("--window-days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("FEEDBACK_HMAC_KEY", BENCH_KEY_HEX)
    source = ensure_source(args.database, args.first, args.days, args.rows_per_day)
    first, last = args.window_first, args.window_first + dt.timedelta(days=args.window_days - 1)
    window = (first.isoformat(), last.isoformat())
    seconds: dict[str, list[float]] = {"local disk": [], "object storage": []}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        with running_s3_server(work) as server, pointed_at(server.environment()):
            for repeat in range(args.repeats):
                local = work / f"local-{repeat}"
                seconds["local disk"].append(
                    timed_run(source.url, str(local / "export"), str(local / "storage"), *window, local / "home")
                )
                bucket = f"s3://{server.new_bucket()}"
                seconds["object storage"].append(
                    timed_run(
                        source.url, f"{bucket}/export", f"{bucket}/storage", *window, work / f"object-{repeat}" / "home"
                    )
                )
                print(
                    f"run {repeat + 1}: local disk {seconds['local disk'][-1]:.1f} s, "
                    f"object storage {seconds['object storage'][-1]:.1f} s",
                    flush=True,
                )
    local_median, object_median = (statistics.median(values) for values in seconds.values())
    print(
        f"{args.window_days} days ({first}..{last}) of {source.url.removeprefix(SERVER + '/')}, one ranged run each, "
        f"median of {args.repeats}: local disk {local_median:.1f} s, object storage (moto_server on loopback) "
        f"{object_median:.1f} s, ratio {object_median / local_median:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
