"""What taking the storage lock costs a step: uncontended acquire and release of each of its forms.

    .venv/bin/python -m benchmarks.storage_lock [--repeats 30]

The advisory lock in a throwaway database on the PostgreSQL server at 127.0.0.1:5432 (dropped
afterwards); the lease on `moto_server` on loopback, started here and stopped by its pid. The
median of each form is printed, in milliseconds.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from pathlib import Path

import psycopg2
from dagster_postgres.run_storage import PostgresRunStorage

from benchmarks.year import SERVER
from feedback_assets.storage import ObjectStorage
from feedback_assets.storage.lock import storage_lease
from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets.storage_lock import advisory_lock
from feedback_assets_tests.s3_server import running_s3_server


def median_ms(lock: Callable[[], AbstractContextManager[None]], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        with lock():
            pass
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    database = f"feedback_lock_bench_{uuid.uuid4().hex[:8]}"
    with closing(psycopg2.connect(f"{SERVER}/postgres")) as admin:
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {database}")
        try:
            url = f"{SERVER}/{database}".replace("postgresql://", "postgresql+psycopg2://", 1)
            run_storage = PostgresRunStorage(url)
            for exclusive in (False, True):
                lock = functools.partial(advisory_lock, run_storage, "/storage", exclusive=exclusive, on_wait=print)
                ms = median_ms(lock, args.repeats)
                print(f"advisory lock, {'exclusive' if exclusive else 'shared'}: {ms:.1f} ms")
        finally:
            admin.cursor().execute(f"DROP DATABASE {database} WITH (FORCE)")
    with tempfile.TemporaryDirectory() as tmp, running_s3_server(Path(tmp)) as server:
        os.environ.update(server.environment())
        storage = ObjectStorage(ObjectPath(f"s3://{server.new_bucket()}", "storage"))
        for exclusive in (False, True):
            ms = median_ms(functools.partial(storage_lease, storage, exclusive=exclusive, on_wait=print), args.repeats)
            print(f"lease, {'exclusive' if exclusive else 'shared'}: {ms:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
