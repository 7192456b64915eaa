"""Atomic file writes: a reader sees a file as it was before or complete, never half-written."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
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


LOCK_NAME = ".feedback.lock"


@contextlib.contextmanager
def storage_lock(storage_dir: Path, *, exclusive: bool, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold the storage dir's lock: shared by the export steps, exclusive for erasure.

    Erasure rewrites the files the export steps write; with the lock, an erasure never runs while a
    step is between reading and writing them, so no step writes back rows erasure removed, and two
    erasures never interleave their audit entries. `on_wait` is called once if the lock is taken.
    An flock lives as long as its open file, so a killed process never leaves it held. It covers the
    processes of one machine; runs on several machines also share the dedupe-state pool.
    """
    ensure_dir(storage_dir, PRIVATE_DIR_MODE)
    fd = os.open(storage_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


class DamagedFileError(RuntimeError):
    """A file the pipeline wrote cannot be read back (truncated, corrupt, edited by hand); the
    message names it and the command that rebuilds it."""


def first_line_of(exc: BaseException) -> str:
    """The first line of an error's message: the rest may quote a connection string or a file's bytes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def rematerialize_command(asset: str, partition: str) -> str:
    """The CLI command that rebuilds `asset` and everything after it for one day."""
    return f"dagster asset materialize -m feedback_assets.definitions --select '{asset}*' --partition {partition}"


@contextlib.contextmanager
def reading(path: Path, repair: str) -> Iterator[None]:
    """Turn a failure to read or parse `path` into a DamagedFileError naming it and saying `repair`."""
    try:
        yield
    except (pl.exceptions.PolarsError, ValueError, OSError) as exc:
        raise DamagedFileError(f"{path} is damaged and cannot be read ({first_line_of(exc)}); {repair}") from None


class OutputWriteError(OSError):
    """The disk refused a write: full, read-only, or not ours to write."""


# What to do about each refusal of the disk; any other OSError is not the disk's state and goes up as is.
DISK_REFUSALS = {
    errno.ENOSPC: "free space on that filesystem",
    errno.EDQUOT: "raise the quota or free space",
    errno.EROFS: "remount the filesystem read-write or point the setting at a writable directory",
    errno.EACCES: "give the user running Dagster write access to the directory",
    errno.EPERM: "give the user running Dagster write access to the directory",
}


def _disk_refusal(exc: BaseException) -> OSError | None:
    """The OSError of a full, read-only or forbidden disk behind `exc`, if there is one (a library
    writing through a file handle may wrap it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_REFUSALS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def write_atomically(path: Path, write: Callable[[BinaryIO], object], mode: int) -> None:
    """Write through `write` into a temporary file beside `path`, sync it, then rename it into place.

    If anything fails the temporary file is removed and `path` is as it was; a full, read-only or
    forbidden disk becomes an OutputWriteError naming the directory and the errno.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with open(temp, "xb") as handle:
            os.chmod(temp, mode)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        refusal = _disk_refusal(exc)
        if refusal is None or refusal.errno is None:
            raise
        code = refusal.errno
        raise OutputWriteError(
            code,
            f"cannot write {path.name} in {path.parent}: {os.strerror(code)} ({errno.errorcode[code]}); "
            f"the files already there are as they were and no temporary file is left: {DISK_REFUSALS[code]}, "
            "then run the same days again",
        ) from None
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


SCRATCH_DIR = ".scratch"
ABANDONED_UNLOCKED_SCRATCH_SECONDS = 3600


@contextlib.contextmanager
def private_scratch(storage_dir: Path) -> Iterator[Path]:
    """A private directory for one step's working files, removed when the step ends.

    Its files hold source rows (user ids among them), so it lives in the private storage dir and
    goes away with the step. A killed step cannot clean up after itself: each scratch directory is
    flocked by its step for as long as it lives, and the next step removes every one whose lock is free.
    """
    root = storage_dir / SCRATCH_DIR
    ensure_dir(root, PRIVATE_DIR_MODE)
    remove_abandoned_scratch(storage_dir)
    directory = root / f"{_writer_id()}-{uuid.uuid4().hex}"
    ensure_dir(directory, PRIVATE_DIR_MODE)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)


def remove_abandoned_scratch(storage_dir: Path) -> None:
    """Remove the scratch directories of steps that were killed; those of running steps stay."""
    root = storage_dir / SCRATCH_DIR
    if root.is_dir():
        for directory in root.iterdir():
            _remove_if_abandoned(directory)


def _remove_if_abandoned(directory: Path) -> None:
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        # A step between making its directory and locking it, or one killed right there: only the
        # latter is ever an hour old.
        with contextlib.suppress(FileNotFoundError):
            if time.time() - directory.stat().st_mtime > ABANDONED_UNLOCKED_SCRATCH_SECONDS:
                shutil.rmtree(directory, ignore_errors=True)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return
    else:
        shutil.rmtree(directory, ignore_errors=True)
    finally:
        os.close(fd)
