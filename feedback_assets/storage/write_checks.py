"""The checks run before every request that changes a stored file: before each object PUT and
DELETE (object_paths.py) and before the rename that commits a local file (local.py). The storage
lock adds its holder's check while held (lock.py), so a process whose lock was lost writes nothing
more."""

from __future__ import annotations

from collections.abc import Callable

WRITE_CHECKS: list[Callable[[], None]] = []


def check_writes() -> None:
    for check in tuple(WRITE_CHECKS):
        check()
