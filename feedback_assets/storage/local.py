"""Storage on this machine's disk: a temporary file beside the target, synced, then renamed into
place; nothing followed through a symbolic link, and only what the pipeline made ever deleted."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import polars as pl

from feedback_assets.errors import ConfigError
from feedback_assets.files import OutputWriteError, ensure_dir, storage_lock
from feedback_assets.storage.base import Rooted, Storage, Warn, ignore
from feedback_assets.storage.scratch import SCRATCH_DIR, private_scratch, remove_abandoned_scratch, writer_id
from feedback_assets.storage.write_checks import check_writes

TEMP_PREFIX = ".tmp-"
# What `temp_path_for` names: .tmp-<name>.<host>-<pid>.<uuid>; nothing else is ever reaped as a temporary file.
TEMP_NAME = re.compile(rf"{re.escape(TEMP_PREFIX)}.+\.[^.]+-\d+\.[0-9a-f]{{32}}")
# Another machine's writer cannot be asked whether it still lives; none takes a day to write a file.
FOREIGN_TEMP_MAX_AGE_SECONDS = 24 * 3600

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


def temp_path_for(path: Path) -> Path:
    # Hidden and without the final suffix, so nothing that globs for exports can take it for one.
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{writer_id()}.{uuid.uuid4().hex}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Rooted[Path]):
    def path(self, name: str = "") -> Path:
        """A file's path on this disk, for what only a local file can do (and the tests)."""
        return self.root / name if name else self.root

    def location(self, name: str = "") -> str:
        return str(self.path(name).resolve())

    def is_dir(self) -> bool:
        return self.root.is_dir()

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir())

    def versions(self, suffix: str) -> dict[str, str]:
        """Inode, modification time and size: every write renames a new file into place."""
        if not self.root.is_dir():
            return {}
        found = {}
        with os.scandir(self.root) as entries:
            for entry in entries:
                if entry.name.endswith(suffix) and not entry.name.startswith(TEMP_PREFIX) and entry.is_file():
                    status = entry.stat()
                    found[entry.name] = f"{status.st_ino}:{status.st_mtime_ns}:{status.st_size}"
        return found

    def read_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def write(self, name: str, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
        """If anything fails the temporary file is removed and the file is as it was; a full,
        read-only or forbidden disk becomes an OutputWriteError naming the directory and the errno."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path_for(path)
        try:
            with open(temp, "xb") as handle:
                os.chmod(temp, self.modes.file if mode is None else mode)
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            # A holder that lost the storage lock must not commit (storage_lock.py).
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
                "the files already there are as they were and no temporary file is left: "
                f"{DISK_REFUSALS[code]}, then run the same days again",
            ) from None
        _fsync_dir(path.parent)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def ensure(self) -> None:
        ensure_dir(self.root, self.modes.directory)

    def scan_parquet(self, names: Sequence[str], schema: pl.Schema | None = None) -> pl.LazyFrame:
        return pl.scan_parquet([self.path(name) for name in names], schema=schema)

    def scan_csv(self, names: Sequence[str]) -> pl.LazyFrame:
        return pl.scan_csv([self.path(name) for name in names], infer_schema=False)

    def parquet_columns(self, name: str) -> list[str]:
        return list(pl.read_parquet_schema(self.path(name)))

    @contextlib.contextmanager
    def pinned_parquet(self, name: str, schema: pl.Schema) -> Iterator[pl.LazyFrame | None]:
        """Through a hard link to the file: a rename over it leaves the link's file as it was."""
        path = self.path(name)
        link = temp_path_for(path)
        try:
            os.link(path, link)
        except FileNotFoundError:
            yield None
            return
        try:
            yield pl.scan_parquet(link, schema=schema)
        finally:
            link.unlink(missing_ok=True)

    def remove_stale_temp_files(self) -> int:
        """A temporary name carries its writer's host and process id, so files of a live writer
        (another run writing right now) are left alone."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for temp in self.root.glob(f"{TEMP_PREFIX}*"):
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

    def scratch(self, warn: Warn = ignore) -> contextlib.AbstractContextManager[Path]:
        """In the private storage dir itself."""
        return private_scratch(self.root / SCRATCH_DIR, warn)

    def remove_abandoned_scratch(self, warn: Warn) -> None:
        remove_abandoned_scratch(self.root / SCRATCH_DIR, warn)

    def lock(self, *, exclusive: bool, on_wait: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
        """flock, which covers the processes of this machine."""
        return storage_lock(self.root, exclusive=exclusive, on_wait=on_wait)

    def check_writable(self, setting: str) -> None:
        """Checked on the nearest existing ancestor: the directory itself may be made by the first write."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"{setting}: {self.root} cannot be created: {existing} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"{setting}: {self.root} cannot be written: {existing} is not writable by this user")

    def permissions_warning(self, setting: str) -> str | None:
        """A directory anyone on the machine may write is refused (they could plant or replace files
        the pipeline reads back); a group-writable one, as Kubernetes volumes with fsGroup are, is
        only worth a warning."""
        if not self.root.is_dir():
            return None
        mode = self.root.stat().st_mode
        if mode & 0o002:
            raise ConfigError(
                f"{setting}: {self.root} is writable by every user of this machine; fix it with "
                f"`chmod o-w {self.root}` and run again"
            )
        if mode & 0o020:
            return (
                f"{setting}: {self.root} is writable by its group; fine for a Kubernetes volume with fsGroup, "
                f"otherwise `chmod g-w {self.root}`"
            )
        return None

    def overlaps(self, other: Storage) -> bool:
        """By resolved paths, so `x/./y/..` and a symbolic link are seen for where they lead; a
        bucket never overlaps a local directory."""
        if not isinstance(other, LocalStorage):
            return False
        mine, theirs = self.root.resolve(), other.root.resolve()
        return mine == theirs or mine.is_relative_to(theirs) or theirs.is_relative_to(mine)


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
    if host != writer_id().rpartition("-")[0]:
        return time.time() - temp.stat().st_mtime < FOREIGN_TEMP_MAX_AGE_SECONDS
    return int(pid) != os.getpid() and _pid_alive(int(pid))
