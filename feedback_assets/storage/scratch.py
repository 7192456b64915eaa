"""Steps' private working directories on this machine's disk: each flocked by its step while it
lives, so the next step can tell a killed step's directory from a running one's."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from feedback_assets.files import LOCK_NAME, PRIVATE_DIR_MODE, UnexpectedEntryError, ensure_dir
from feedback_assets.files import _open_lock_file as open_lock_file

SCRATCH_DIR = ".scratch"
ABANDONED_UNLOCKED_SCRATCH_SECONDS = 3600
# What `private_scratch` names a step's directory: <host>-<pid>-<uuid>.
SCRATCH_NAME = re.compile(r".+-\d+-[0-9a-f]{32}")


def writer_id() -> str:
    """Host and process of this writer, so two machines sharing a directory never take each other's
    files for a dead writer's."""
    host = socket.gethostname().replace(".", "_") or "localhost"
    return f"{host}-{os.getpid()}"


def refuse_shared_temp(directory: Path) -> None:
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
def private_scratch(root: Path, warn: Callable[[str], None]) -> Iterator[Path]:
    """A private directory under `root` for one step's working files, removed when the step ends.

    Its files hold source rows (user ids among them), so it lives in a private directory and goes
    away with the step. A killed step cannot clean up after itself: each scratch directory is
    flocked by its step for as long as it lives, and the next step removes every one whose lock is free.
    """
    if os.path.lexists(root) and not _real_directory(root):
        raise UnexpectedEntryError(
            f"{root} is not the scratch directory the pipeline makes (a symbolic link or a file), so no source "
            "rows are put there; it was left alone: remove it and run again"
        )
    ensure_dir(root, PRIVATE_DIR_MODE)
    remove_abandoned_scratch(root, warn)
    directory = root / f"{writer_id()}-{uuid.uuid4().hex}"
    directory.mkdir(PRIVATE_DIR_MODE)
    os.chmod(directory, PRIVATE_DIR_MODE)
    fd = open_lock_file(directory / LOCK_NAME, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.close(fd)


def remove_abandoned_scratch(root: Path, warn: Callable[[str], None]) -> None:
    """Remove the scratch directories under `root` of steps that were killed; those of running steps stay.

    Only what `private_scratch` makes is ever removed: a real directory named as it names them,
    inside a real scratch directory. Anything else (a symbolic link, a stray file) is named in a
    warning and left alone, so nothing outside the storage dir can be deleted through it."""
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


def _remove_if_abandoned(directory: Path, warn: Callable[[str], None]) -> None:
    try:
        fd = open_lock_file(directory / LOCK_NAME, create=False)
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
