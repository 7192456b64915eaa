"""Atomic file writes: a reader sees a file as it was before or complete, never half-written.

Every directory here is a `StoragePath`: a local `Path`, or an `ObjectPath` under a bucket, where a
single PUT (or a multipart upload completed last) gives the same promise without temporary objects.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, TypeVar

import polars as pl

from feedback_assets.object_storage import ERRORS as OBJECT_STORE_ERRORS
from feedback_assets.object_storage import ObjectPath, check_writes, storage_lease
from feedback_assets.object_storage import reason as object_storage_reason

# Where a setting's directory is: this machine's disk, or object storage.
StoragePath = Path | ObjectPath

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

TEMP_PREFIX = ".tmp-"
# What `temp_path_for` names: .tmp-<name>.<host>-<pid>.<uuid>; nothing else is ever reaped as a temporary file.
TEMP_NAME = re.compile(rf"{re.escape(TEMP_PREFIX)}.+\.[^.]+-\d+\.[0-9a-f]{{32}}")
# Another machine's writer cannot be asked whether it still lives; none takes a day to write a file.
FOREIGN_TEMP_MAX_AGE_SECONDS = 24 * 3600


def _writer_id() -> str:
    """Host and process of this writer, so two machines sharing a directory never take each other's
    temporary files for a dead writer's."""
    host = socket.gethostname().replace(".", "_") or "localhost"
    return f"{host}-{os.getpid()}"


def readable(path: StoragePath) -> Path | bytes:
    """What Polars reads a stored file from: the local path, or the object's bytes (fetched here,
    so that obstore is the one client every object read and write goes through)."""
    return path.read_bytes() if isinstance(path, ObjectPath) else path


def readable_all(paths: Sequence[StoragePath]) -> list[Path] | list[bytes]:
    """`readable` of each of several files (all of one directory, so all local or all objects)."""
    local = [path for path in paths if isinstance(path, Path)]
    return local if len(local) == len(paths) else [path.read_bytes() for path in paths]


def children(directory: StoragePath) -> list[StoragePath]:
    """What lies directly in `directory`, by name; nothing if it does not exist."""
    if not directory.is_dir():
        return []
    entries: list[StoragePath] = list(directory.iterdir())
    return sorted(entries, key=lambda path: path.name)


def versions(directory: StoragePath, suffix: str) -> dict[str, str]:
    """The files directly in `directory` whose names end in `suffix`, by name, each with a string
    that changes whenever the file is replaced: inode, modification time and size on a local disk
    (every write renames a new file into place), entity tag, size and time on object storage."""
    if isinstance(directory, ObjectPath):
        return directory.versions(suffix)
    if not directory.is_dir():
        return {}
    found = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(suffix) and not entry.name.startswith(TEMP_PREFIX) and entry.is_file():
                status = entry.stat()
                found[entry.name] = f"{status.st_ino}:{status.st_mtime_ns}:{status.st_size}"
    return found


def location(path: StoragePath) -> str:
    """Where a file is, for metadata and messages: an absolute local path, or its URL."""
    return str(path.resolve()) if isinstance(path, Path) else str(path)


def parquet_columns(path: StoragePath) -> list[str]:
    """The column names of a stored Parquet file, read from its footer."""
    return list(pl.read_parquet_schema(readable(path)))


def temp_path_for(path: Path) -> Path:
    # Hidden and without the final suffix, so nothing that globs for exports can take it for one.
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{_writer_id()}.{uuid.uuid4().hex}")


def ensure_dir(directory: StoragePath, mode: int) -> None:
    """Create `directory` and any missing parents, each with exactly `mode`.

    mkdir's own mode is filtered by the umask, so the mode is set explicitly on every directory
    this creates; an existing directory keeps the mode its owner gave it. Object storage has no
    directories (and no modes: the bucket's policy is what grants access there).
    """
    if isinstance(directory, ObjectPath):
        return
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
def storage_lock(storage_dir: StoragePath, *, exclusive: bool, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold the storage dir's lock: shared by the export steps, exclusive for erasure.

    Erasure rewrites the files the export steps write; with the lock, an erasure never runs while a
    step is between reading and writing them, so no step writes back rows erasure removed, and two
    erasures never interleave their audit entries. `on_wait` is called once if the lock is taken.
    An flock lives as long as its open file, so a killed process never leaves it held. It covers the
    processes of one machine; runs on several machines also share the dedupe-state pool. On object
    storage the lock is a lease (object_storage.storage_lease), which covers every machine.
    """
    if isinstance(storage_dir, ObjectPath):
        with storage_lease(storage_dir, exclusive=exclusive, on_wait=on_wait):
            yield
        return
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
def reading(path: StoragePath, repair: str) -> Iterator[None]:
    """Turn a failure to read or parse `path` into a DamagedFileError naming it and saying `repair`."""
    try:
        yield
    except (pl.exceptions.PolarsError, ValueError, *OBJECT_STORE_ERRORS) as exc:
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


def write_atomically(path: StoragePath, write: Callable[[BinaryIO], object], mode: int) -> None:
    """Write through `write` into a temporary file beside `path`, sync it, then rename it into place.

    If anything fails the temporary file is removed and `path` is as it was; a full, read-only or
    forbidden disk becomes an OutputWriteError naming the directory and the errno. On object
    storage the bytes are made in memory and stored in one request (`ObjectPath.write_bytes`).
    """
    if isinstance(path, ObjectPath):
        _put_object(path, write)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(path)
    try:
        with open(temp, "xb") as handle:
            os.chmod(temp, mode)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        check_writes()
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


def _put_object(path: ObjectPath, write: Callable[[BinaryIO], object]) -> None:
    buffer = io.BytesIO()
    write(buffer)
    try:
        path.write_bytes(buffer.getvalue())
    except OBJECT_STORE_ERRORS as exc:
        raise OutputWriteError(
            errno.EIO,
            f"cannot write {path.name} under {path.parent}: the object store refused it "
            f"({object_storage_reason(exc)}); the objects already there are as they were: check that the bucket "
            "exists and that the credentials in the environment may write there, then run the same days again",
        ) from None


def write_parquet_atomically(path: StoragePath, frame: pl.DataFrame, mode: int, *, statistics: bool = True) -> None:
    """`statistics=False` leaves out the column statistics: files only ever read whole do not need
    them, and computing them is a quarter of writing a day of pairs."""
    write_atomically(
        path,
        lambda handle: frame.write_parquet(handle, compression=PARQUET_COMPRESSION, statistics=statistics),
        mode,
    )


def write_bytes_atomically(path: StoragePath, data: bytes, mode: int) -> None:
    write_atomically(path, lambda handle: handle.write(data), mode)


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


def remove_stale_temp_files(directory: StoragePath) -> int:
    """Delete temporary files left by writers that died (killed runs); returns how many.

    A temporary name carries its writer's host and process id, so files of a live writer (another
    run writing right now) are left alone. Object storage never has temporary objects.
    """
    if isinstance(directory, ObjectPath) or not directory.is_dir():
        return 0
    removed = 0
    for temp in directory.glob(f"{TEMP_PREFIX}*"):
        try:
            # Only a regular file named as this module names its temporary files: a link or
            # anything else someone put there is not ours to delete.
            if not (TEMP_NAME.fullmatch(temp.name) and stat.S_ISREG(os.lstat(temp).st_mode)):
                continue
            if _writer_is_alive(temp):
                continue
        except FileNotFoundError:
            continue
        temp.unlink(missing_ok=True)
        removed += 1
    return removed


SCRATCH_DIR = ".scratch"
ABANDONED_UNLOCKED_SCRATCH_SECONDS = 3600
# What `private_scratch` names a step's directory: <host>-<pid>-<uuid>.
SCRATCH_NAME = re.compile(r".+-\d+-[0-9a-f]{32}")
Warn = Callable[[str], None]


def _ignore(message: str) -> None:
    """The default for callers that have no log to warn in."""


def scratch_root(storage_dir: StoragePath) -> Path:
    """Where steps keep working files: in the private storage dir, or, when that is on object
    storage, in an owner-only directory of this machine's temporary space (a pod's own disk)."""
    if isinstance(storage_dir, ObjectPath):
        return Path(tempfile.gettempdir()) / f"feedback_assets-{os.getuid()}" / SCRATCH_DIR
    return storage_dir / SCRATCH_DIR


def _refuse_shared_temp(directory: Path) -> None:
    """The temporary space is shared by every user of the machine: a scratch parent made there by
    someone else, or open to others, would let them read source rows."""
    status = os.lstat(directory)
    private = stat.S_ISDIR(status.st_mode) and status.st_uid == os.getuid() and not status.st_mode & 0o077
    if not private:
        raise PermissionError(
            f"{directory} is not a private directory of this user; remove it (or set TMPDIR to a private "
            "directory) and run again"
        )


def _real_directory(path: Path) -> bool:
    """Whether `path` is a directory itself, not a symbolic link to one; False if it is missing."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def private_scratch(storage_dir: StoragePath, warn: Warn = _ignore) -> Iterator[Path]:
    """A private directory for one step's working files, removed when the step ends.

    Its files hold source rows (user ids among them), so it lives in the private storage dir (or,
    for object storage, a private local directory) and goes away with the step. A killed step cannot
    clean up after itself: each scratch directory is flocked by its step for as long as it lives,
    and the next step removes every one whose lock is free.
    """
    root = scratch_root(storage_dir)
    if isinstance(storage_dir, ObjectPath):
        ensure_dir(root.parent, PRIVATE_DIR_MODE)
        _refuse_shared_temp(root.parent)
    if os.path.lexists(root) and not _real_directory(root):
        raise UnexpectedEntryError(
            f"{root} is not the scratch directory the pipeline makes (a symbolic link or a file), so no source "
            "rows are put there; it was left alone: remove it and run again"
        )
    ensure_dir(root, PRIVATE_DIR_MODE)
    remove_abandoned_scratch(storage_dir, warn)
    directory = root / f"{_writer_id()}-{uuid.uuid4().hex}"
    directory.mkdir(PRIVATE_DIR_MODE)
    os.chmod(directory, PRIVATE_DIR_MODE)
    fd = _open_lock_file(directory / LOCK_NAME, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)


def remove_abandoned_scratch(storage_dir: StoragePath, warn: Warn = _ignore) -> None:
    """Remove the scratch directories of steps that were killed; those of running steps stay.

    Only what `private_scratch` makes is ever removed: a real directory named as it names them,
    inside a real scratch directory. Anything else (a symbolic link, a stray file) is named in a
    warning and left alone, so nothing outside the storage dir can be deleted through it."""
    root = scratch_root(storage_dir)
    if not os.path.lexists(root):
        return
    if not _real_directory(root):
        warn(f"{root} is not the scratch directory the pipeline makes (a symbolic link or a file); left alone")
        return
    with os.scandir(root) as entries:
        found = sorted(entries, key=lambda entry: entry.name)
    for entry in found:
        if SCRATCH_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
            _remove_if_abandoned(Path(entry.path), warn)
        else:
            warn(f"{entry.path} is not a scratch directory the pipeline made; left alone")


def _remove_if_abandoned(directory: Path, warn: Warn) -> None:
    try:
        fd = _open_lock_file(directory / LOCK_NAME, create=False)
    except UnexpectedEntryError as exc:
        warn(str(exc))
        return
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
