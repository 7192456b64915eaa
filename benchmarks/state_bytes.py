"""Bytes the object store sends for one nightly dedupe lookup over a year of state.

    .venv/bin/python -m benchmarks.state_bytes [--days 365] [--keys-per-day 13700] [--stale-days 15]

A year of dedupe state (`--days` day files of `--keys-per-day` keys, the year benchmark's 5 million
rows) is written to a real S3-protocol server (`moto_server`, on 127.0.0.1, stopped by its pid), its
index built, then `--stale-days` more days written after the index, as between two of its rebuilds.
The lookups then talk to the server through a loopback proxy in this process that counts every
byte the server sends back: the lookup of one new day's keys (`owners`, what deduplication asks),
and the whole state's key count (`key_count`, what the step reports), each counted on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import tempfile
import threading
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.object_storage import pointed_at
from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.storage import storage_for
from feedback_assets_tests.daemon import free_port
from feedback_assets_tests.s3_server import running_s3_server

HOST = "127.0.0.1"


class CountingProxy:
    """A loopback TCP proxy to `target_port` counting the bytes the target sends back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.received = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="counting proxy", daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if count:
                    with self._lock:
                        self.received += len(data)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(HOST, self.target_port)
        await asyncio.gather(
            self._pipe(client_reader, server_writer, count=False), self._pipe(server_reader, client_writer, count=True)
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._forward, HOST, self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def counted(self) -> int:
        with self._lock:
            return self.received


HEX_DIGITS = np.array(list("0123456789abcdef"))


def day_keys(rng: np.random.Generator, day: dt.date, n: int) -> pl.DataFrame:
    """`n` random 64-digit hex keys, like the HMAC digests they stand for, owned by `day`."""
    keys = HEX_DIGITS[rng.integers(0, 16, size=(n, 64))].view("<U64").ravel()
    return pl.DataFrame({"dedupe_key": keys, "partition": [day] * n})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--keys-per-day", type=int, default=13_700)
    parser.add_argument("--stale-days", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(24)
    first = dt.date(2025, 1, 1)
    days = [first + dt.timedelta(days=i) for i in range(args.days + args.stale_days + 1)]
    with tempfile.TemporaryDirectory() as logs, running_s3_server(Path(logs)) as server:
        bucket = server.new_bucket()
        with pointed_at(server.environment()):
            state = DedupeStateStore(storage_for(f"s3://{bucket}/storage"), "exact", "bench")
            for start in range(0, args.days, 31):
                state.write({d.isoformat(): day_keys(rng, d, args.keys_per_day) for d in days[start : start + 31]})
            state.rebuild_index()
            stale = days[args.days : args.days + args.stale_days]
            state.write({d.isoformat(): day_keys(rng, d, args.keys_per_day) for d in stale})
        tonight = days[-1]
        probes = day_keys(rng, tonight, args.keys_per_day)["dedupe_key"]
        port = int(server.endpoint.rpartition(":")[2])
        with (
            CountingProxy(port) as proxy,
            pointed_at({**server.environment(), "AWS_ENDPOINT_URL": f"http://{HOST}:{proxy.port}"}),
        ):
            state = DedupeStateStore(storage_for(f"s3://{bucket}/storage"), "exact", "bench")
            before = proxy.counted()
            state.owners(probes, excluding=[tonight.isoformat()])
            looked_up = proxy.counted() - before
            before = proxy.counted()
            total = state.key_count()
            counted = proxy.counted() - before
    print(f"state: {args.days} days indexed + {args.stale_days} written since, {total} keys")
    print(f"owners(one day's {args.keys_per_day} keys): {looked_up} bytes received ({looked_up / 2**20:.1f} MiB)")
    print(f"key_count(): {counted} bytes received ({counted / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
