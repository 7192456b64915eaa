"""How long a run takes to get through a source outage, or to give up on it.

    .venv/bin/python -m benchmarks.source_outage [--outage 20 150] [--budget 120]

For each outage length: a small generated PostgreSQL source on 127.0.0.1:5432, reached through a
loopback proxy (feedback_assets_tests/tcp_proxy.py, its own process group) that refuses every
connection for that many seconds, then forwards them, as a failover does; one day of the graph
runs through it with FEEDBACK_SOURCE_RETRY_SECONDS=--budget. Prints the outcome, the seconds the
run took and the retry lines it logged.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from benchmarks.harness import BENCH_KEY_HEX, run_export
from benchmarks.year import SERVER, ensure_source
from feedback_assets.resources import FeedbackSettings

DAY = dt.date(2025, 3, 3)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def through_outage(source_url: str, outage: float, budget: int, work: Path) -> str:
    port = free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "feedback_assets_tests.tcp_proxy", "--port", str(port), "--refuse-seconds", str(outage)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        settings = FeedbackSettings(
            source_url=source_url.replace(SERVER, f"postgresql://root@127.0.0.1:{port}"),
            export_dir=str(work / "export"),
            storage_dir=str(work / "storage"),
            source_retry_seconds=budget,
        )
        home = work / "dagster_home"
        home.mkdir(parents=True)
        with dg.DagsterInstance.local_temp(str(home)) as instance:
            started = time.perf_counter()
            try:
                outcome = "succeeded" if run_export(instance, settings, DAY.isoformat()).success else "failed"
            except dg.Failure as failure:
                outcome = f"failed: {failure.description}"
            seconds = time.perf_counter() - started
            tries = [
                e.user_message
                for e in instance.all_logs(instance.get_runs()[0].run_id)
                if "trying again" in e.user_message
            ]
    finally:
        os.killpg(proxy.pid, signal.SIGTERM)
        proxy.wait(timeout=30)
    return f"outage {outage:.0f} s, budget {budget} s: {outcome} after {seconds:.1f} s, {len(tries)} retries logged"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage", type=float, nargs="+", default=[20.0, 150.0])
    parser.add_argument("--budget", type=int, default=120)
    args = parser.parse_args(argv)
    os.environ.setdefault("FEEDBACK_HMAC_KEY", BENCH_KEY_HEX)
    source = ensure_source("feedback_outage", DAY - dt.timedelta(days=2), 3, 2_000)
    for outage in args.outage:
        with tempfile.TemporaryDirectory() as tmp:
            print(through_outage(source.url, outage, args.budget, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
