"""A process that takes the storage lock and reports each step of holding it on one line of an events
file (appended, so several holders share one file in the order things happened), for the tests that
race real processes for the lock (test_storage_lock.py).

    python -m feedback_assets_tests.lock_holder EVENTS NAME (--database URL | --lease-seconds S) LOCATION ...

Events: `NAME waited`, `NAME in`, `NAME wrote N` (with --write-every), `NAME out`, `NAME lost: <message>`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from dagster_postgres.run_storage import PostgresRunStorage

from feedback_assets.storage import ObjectStorage
from feedback_assets.storage.lock import LockLostError, storage_lease
from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets.storage_lock import advisory_lock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("events", type=Path)
    parser.add_argument("name")
    parser.add_argument("location")
    parser.add_argument("--database", help="an instance database: the advisory lock on LOCATION's key")
    parser.add_argument("--lease-seconds", type=float, help="the lease under LOCATION, an object storage prefix")
    parser.add_argument("--exclusive", action="store_true")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock second to start at, to race others")
    parser.add_argument("--release", type=Path, required=True, help="held until this file exists")
    parser.add_argument("--write-every", type=float, help="while held, write LOCATION/written/NAME-N this often")
    args = parser.parse_args()

    def note(event: str) -> None:
        fd = os.open(args.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{args.name} {event}\n".encode())
        finally:
            os.close(fd)

    time.sleep(max(0.0, args.start_at - time.time()))
    try:
        with _lock(args, lambda: note("waited")):
            note("in")
            written = 0
            while not args.release.exists():
                if args.write_every is not None:
                    (ObjectPath.parse(args.location) / "written" / f"{args.name}-{written}").write_bytes(b"x")
                    note(f"wrote {written}")
                    written += 1
                time.sleep(args.write_every or 0.05)
            note("out")
    except LockLostError as exc:
        note(f"lost: {exc}")
        raise SystemExit(3) from None


def _lock(args: argparse.Namespace, on_wait: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
    if args.database:
        # The test made the instance's tables already; holders racing to make them would collide.
        storage = PostgresRunStorage(args.database, should_autocreate_tables=False)
        return advisory_lock(storage, args.location, exclusive=args.exclusive, on_wait=on_wait)
    return storage_lease(
        ObjectStorage(ObjectPath.parse(args.location)),
        exclusive=args.exclusive,
        on_wait=on_wait,
        lease_seconds=args.lease_seconds,
    )


if __name__ == "__main__":
    main()
