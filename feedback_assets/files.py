"""What every store shares beneath the storage package: the modes and format of its files, the
errors a read or write is explained by, the storage dir's lock, and the concurrent writes of a
slice's days. How a file is written, read, listed or reaped is feedback_assets.storage's."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import polars as pl
from obstore.exceptions import BaseError

# Errors of the object store a read or write can meet: a missing object, a refused request, a
# network failure. obstore raises FileNotFoundError for a missing object, and its own BaseError
# family (with builtin OSError subclasses for some) for the rest. Here, below the storage package
# (storage/object_paths.py), so every reader of stored files can name them.
OBJECT_STORE_ERRORS: Final = (BaseError, OSError)

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

# A slice's days are independent files: written a few at a time, one file's encoding (Polars,
# outside the interpreter lock) and sync overlap the others'. Over a year's 36-day slices: three at
# a time took a slice's CSVs from 1.6 s to 1.0 s; more gained nothing on two cores
# (docs/benchmarks.md, lesson 17).
CONCURRENT_WRITES: Final = 3


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


LOCK_NAME = ".feedback.lock"


@contextlib.contextmanager
def storage_lock(storage_dir: Path, *, exclusive: bool, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold the storage dir's lock: shared by the export steps, exclusive for erasure.

    Erasure rewrites the files the export steps write; with the lock, an erasure never runs while a
    step is between reading and writing them, so no step writes back rows erasure removed, and two
    erasures never interleave their audit entries. `on_wait` is called once if the lock is taken.
    An flock lives as long as its open file, so a killed process never leaves it held. It covers the
    processes of one machine; storage_lock.py picks this form for a local storage dir.
    """
    ensure_dir(storage_dir, PRIVATE_DIR_MODE)
    fd = _open_lock_file(storage_dir / LOCK_NAME, create=True)
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


class UnexpectedEntryError(RuntimeError):
    """Something the pipeline did not make sits where it keeps its own files (a symbolic link, a
    file where a directory belongs): the message names it and how to clear it. Never followed."""


def _open_lock_file(path: Path, *, create: bool) -> int:
    """A lock file's descriptor, opened without following a symbolic link: a link planted in its
    place would otherwise have the lock create or hold a file anywhere the link points."""
    flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR):
            raise
        raise UnexpectedEntryError(
            f"{path} is not a lock file the pipeline made (a symbolic link or a directory); it was left "
            "alone: remove it and run again"
        ) from None


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
def reading(path: object, repair: str) -> Iterator[None]:
    """Turn a failure to read or parse `path` into a DamagedFileError naming it and saying `repair`."""
    try:
        yield
    except (pl.exceptions.PolarsError, ValueError, *OBJECT_STORE_ERRORS) as exc:
        raise DamagedFileError(f"{path} is damaged and cannot be read ({first_line_of(exc)}); {repair}") from None


class OutputWriteError(OSError):
    """The disk refused a write: full, read-only, or not ours to write."""


Item = TypeVar("Item")
Result = TypeVar("Result")


class _NotStarted(Exception):
    """An item `concurrently` skipped because another had failed."""


def concurrently(work: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """`work(item)` for every item, CONCURRENT_WRITES at a time; the results in the items' order.

    For independent atomic writes. After a failure no further item starts, the ones under way
    finish (each of them whole or not at all), and the first failure in the items' order is raised.
    """
    failed = threading.Event()

    def guarded(item: Item) -> Result:
        if failed.is_set():
            raise _NotStarted
        try:
            return work(item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=CONCURRENT_WRITES, thread_name_prefix="feedback-write") as pool:
        futures = [pool.submit(guarded, item) for item in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            # A failure here, or the run interrupted: nothing more starts; the pool's exit waits for the rest.
            if not all(future.done() for future in futures):
                failed.set()
    return [future.result() for future in futures if not isinstance(future.exception(), _NotStarted)]


class WritesBehind:
    """A step's writes going on behind its next slice: one slice's files are written while the next
    slice is read and computed, which on two cores overlaps the writes' syncs and encoding with the
    next slice's work (docs/benchmarks.md, lesson 19).

    `submit` first waits for what was submitted before, raising its failure, so at most one slice's
    writes are ever behind and memory holds at most two slices. Leaving the block waits for the
    last; when the block fails, its error goes up once the writes under way have finished (each
    file whole or not at all).
    """

    def __init__(self) -> None:
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-writes-behind")
        self._last: Future[Any] | None = None

    def submit(self, write: Callable[[], Result]) -> Future[Result]:
        if self._last is not None:
            self._last.result()
        future = self._runner.submit(write)
        self._last = future
        return future

    def __enter__(self) -> WritesBehind:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None and self._last is not None:
                self._last.result()
        finally:
            # Only after a failure is there anything left to cancel: a write not yet started.
            self._runner.shutdown(wait=True, cancel_futures=True)
