"""Atomic file writes: a reader sees a file as it was before or complete, never half-written."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

import polars as pl

# The storage dir holds personal data (raw_feedback keeps user ids and ages until pseudonymised):
# owner only. The exports are for the data science team's group to read.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
EXPORT_DIR_MODE = 0o750
EXPORT_FILE_MODE = 0o640

# Intermediates and state are written once and read once or twice by the next steps: LZ4 writes a
# day's Parquet in about half the time of Polars' default zstd (0.34 s against 0.59 s for two
# months of pairs), and the private storage dir is not where disk space matters.
PARQUET_COMPRESSION: Final = "lz4"

TEMP_PREFIX = ".tmp-"
# Another machine's writer cannot be asked whether it still lives; none takes a day to write a file.
FOREIGN_TEMP_MAX_AGE_SECONDS = 24 * 3600


def _writer_id() -> str:
    """Host and process of this writer, so two machines sharing a directory never take each other's
    temporary files for a dead writer's."""
    host = socket.gethostname().replace(".", "_") or "localhost"
    return f"{host}-{os.getpid()}"


def temp_path_for(path: Path) -> Path:
    # Hidden and without the final suffix, so nothing that globs for exports can take it for one.
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{_writer_id()}.{uuid.uuid4().hex}")


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


def write_atomically(path: Path, write: Callable[[BinaryIO], object], mode: int) -> None:
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


def write_parquet_atomically(path: Path, frame: pl.DataFrame, mode: int) -> None:
    write_atomically(path, lambda handle: frame.write_parquet(handle, compression=PARQUET_COMPRESSION), mode)


def write_bytes_atomically(path: Path, data: bytes, mode: int) -> None:
    write_atomically(path, lambda handle: handle.write(data), mode)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_is_alive(temp: Path) -> bool:
    parts = temp.name.rsplit(".", 2)
    host, _, pid = parts[1].rpartition("-") if len(parts) == 3 else ("", "", "")
    if not pid.isdigit():
        return False
    if host != _writer_id().rpartition("-")[0]:
        return time.time() - temp.stat().st_mtime < FOREIGN_TEMP_MAX_AGE_SECONDS
    return int(pid) != os.getpid() and _pid_alive(int(pid))


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temporary files left by writers that died (killed runs); returns how many.

    A temporary name carries its writer's host and process id, so files of a live writer (another
    run writing right now) are left alone.
    """
    if not directory.is_dir():
        return 0
    removed = 0
    for temp in directory.glob(f"{TEMP_PREFIX}*"):
        try:
            if _writer_is_alive(temp):
                continue
        except FileNotFoundError:
            continue
        temp.unlink(missing_ok=True)
        removed += 1
    return removed
