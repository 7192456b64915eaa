"""Atomic file writes: a reader sees a file as it was before or complete, never half-written."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".tmp-"


def temp_path_for(path: Path) -> Path:
    # Hidden and without the final suffix, so nothing that globs for exports can take it for one.
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex}")


def ensure_dir(directory: Path, mode: int) -> None:
    """Create `directory` and any missing parents, each with exactly `mode`.

    mkdir's own mode is filtered by the umask, so the mode is set explicitly on every directory
    this creates; an existing directory keeps the mode its owner gave it.
    """
    missing = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, write: Callable[[BinaryIO], object], mode: int = 0o640) -> None:
    """Write through `write` into a temporary file beside `path`, sync it, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with open(temp, "xb") as handle:
            os.chmod(temp, mode)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomically(path: Path, data: bytes, mode: int = 0o640) -> None:
    write_atomically(path, lambda handle: handle.write(data), mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temporary files left by writers that died (killed runs); returns how many.

    A temporary name carries its writer's process id, so files of a live writer (another run
    writing right now) are left alone.
    """
    if not directory.is_dir():
        return 0
    removed = 0
    for temp in directory.glob(f"{TEMP_PREFIX}*"):
        parts = temp.name.rsplit(".", 2)
        pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        temp.unlink(missing_ok=True)
        removed += 1
    return removed
