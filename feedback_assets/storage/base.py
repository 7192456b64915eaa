"""The one interface every store of files goes through: a directory on this machine's disk or under
a bucket, named once by the factory (`storage_for`), and files in it named relative to it.

A reader sees a file as it was before a write or complete, never half-written, on both; a lookup
scans only the columns it selects (on object storage, through Polars' own cloud reader, which asks
the store for byte ranges of the columns' pages instead of the whole object).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Generic, Protocol, Self, TypeVar

import polars as pl

from feedback_assets.files import (
    EXPORT_DIR_MODE,
    EXPORT_FILE_MODE,
    PARQUET_COMPRESSION,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
)

Warn = Callable[[str], None]


def ignore(message: str) -> None:
    """The warning sink of callers that have no log to warn in."""


@dataclass(frozen=True)
class Modes:
    """What a local directory and the files written in it get: object storage has no modes (the
    bucket's policy is what grants access there)."""

    directory: int
    file: int


# The storage dir holds personal data: owner only. The exports are for the data science team's group.
PRIVATE = Modes(PRIVATE_DIR_MODE, PRIVATE_FILE_MODE)
EXPORT = Modes(EXPORT_DIR_MODE, EXPORT_FILE_MODE)


class Storage(Protocol):
    """A directory of stored files. `name` arguments are relative to it and may hold `/`."""

    def __truediv__(self, name: str) -> Storage:
        """The directory `name` inside this one, with the same modes."""
        ...

    @property
    def name(self) -> str:
        """This directory's own name (its last path segment)."""
        ...

    def location(self, name: str = "") -> str:
        """Where a file (or, without a name, this directory) is, for metadata and messages."""
        ...

    def is_dir(self) -> bool:
        """Whether this directory holds anything (object storage has no empty directories)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a file `name` is there."""
        ...

    def names(self) -> list[str]:
        """What lies directly here (files and directories), by name; nothing if it does not exist."""
        ...

    def versions(self, suffix: str) -> dict[str, str]:
        """The files directly here whose names end in `suffix`, each with a string that changes
        whenever the file is replaced; temporary files never appear."""
        ...

    def read_bytes(self, name: str) -> bytes: ...

    def write(self, name: str, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
        """Write through `write` atomically: a reader sees the old file or the whole new one. A
        refusal of the disk or store becomes an OutputWriteError that says so. `mode` defaults to
        the storage's file mode."""
        ...

    def delete(self, name: str) -> None:
        """Remove a file if it is there."""
        ...

    def ensure(self) -> None:
        """Make this directory (and missing parents) with the storage's directory mode."""
        ...

    def scan_parquet(self, names: Sequence[str], schema: pl.Schema | None = None) -> pl.LazyFrame:
        """A lazy scan of Parquet files: only the columns (and on the local disk, row groups) the
        query selects are read."""
        ...

    def scan_csv(self, names: Sequence[str]) -> pl.LazyFrame:
        """A lazy scan of CSV files, every cell as text, read in batches."""
        ...

    def parquet_columns(self, name: str) -> list[str]:
        """A Parquet file's column names, from its footer."""
        ...

    def pinned_parquet(self, name: str, schema: pl.Schema) -> AbstractContextManager[pl.LazyFrame | None]:
        """A scan of the file as it is now, whatever another writer puts in its place meanwhile;
        None when there is none."""
        ...

    def remove_stale_temp_files(self) -> int:
        """Delete the temporary files of writers that died here; returns how many."""
        ...

    def scratch(self, warn: Warn = ignore) -> AbstractContextManager[Path]:
        """A private local directory for one step's working files, removed when the step ends."""
        ...

    def remove_abandoned_scratch(self, warn: Warn) -> None:
        """Remove the scratch directories of killed steps; those of running steps stay."""
        ...

    def lock(self, *, exclusive: bool, on_wait: Callable[[], None]) -> AbstractContextManager[None]:
        """The storage lock where the Dagster instance has no database to hold it (storage_lock.py):
        flock on local disk, a lease on object storage. `on_wait` is called once if it is waited for."""
        ...

    def check_writable(self, setting: str) -> None:
        """Raise a ConfigError naming `setting` if this directory cannot be created or written."""
        ...

    def permissions_warning(self, setting: str) -> str | None:
        """Raise a ConfigError if anyone may plant files here; a warning worth logging, if any."""
        ...

    def overlaps(self, other: Storage) -> bool:
        """Whether either directory is, or lies inside, the other."""
        ...


class _Location(Protocol):
    """What a storage's root is: a local Path or an ObjectPath, both joined with `/`."""

    def __truediv__(self, name: str) -> Self: ...

    @property
    def name(self) -> str: ...


Root = TypeVar("Root", bound=_Location)


class Rooted(Generic[Root]):
    """What both storages are besides their files: a root, the modes, and a storage's identity."""

    def __init__(self, root: Root, modes: Modes = PRIVATE) -> None:
        self.root = root
        # Object storage has none, but a child directory is still made as its parent was.
        self.modes = modes

    def __truediv__(self, name: str) -> Self:
        return type(self)(self.root / name, self.modes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and isinstance(other, Rooted) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __str__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name


class Sink(Protocol):
    """Where a store's changes go. `WRITES` makes them; a `Recording` only notes them, so a dry run
    is the same code as the real run with another sink, and says what the real run changes."""

    def write(self, storage: Storage, name: str, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
        """As `Storage.write`: `write` is only called by a sink that writes."""
        ...

    def delete(self, storage: Storage, name: str) -> None: ...

    def prepare(self, storage: Storage) -> None:
        """Make the directory before writing in it, and remove the temporary files of dead writers."""
        ...


class Writes:
    def write(self, storage: Storage, name: str, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
        storage.write(name, write, mode)

    def delete(self, storage: Storage, name: str) -> None:
        storage.delete(name)

    def prepare(self, storage: Storage) -> None:
        storage.ensure()
        storage.remove_stale_temp_files()


WRITES = Writes()


@dataclass
class Recording:
    """A sink that changes nothing: the locations written and deleted, in order. The content is never
    made (a lazy frame is never run), so a dry run costs the reads only."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def write(self, storage: Storage, name: str, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
        self.written.append(storage.location(name))

    def delete(self, storage: Storage, name: str) -> None:
        self.deleted.append(storage.location(name))

    def prepare(self, storage: Storage) -> None:
        pass


def write_bytes(storage: Storage, name: str, data: bytes, mode: int | None = None, sink: Sink = WRITES) -> None:
    sink.write(storage, name, lambda handle: handle.write(data), mode)


def write_parquet(
    storage: Storage, name: str, frame: pl.DataFrame | pl.LazyFrame, *, statistics: bool = True, sink: Sink = WRITES
) -> None:
    """`statistics=False` leaves out the column statistics: files only ever read whole do not need
    them, and computing them is a quarter of writing a day of pairs. A lazy frame is collected as
    the file is written: never by a sink that only records, and by concurrent writers a few at a time."""

    def write(handle: BinaryIO) -> None:
        whole = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        whole.write_parquet(handle, compression=PARQUET_COMPRESSION, statistics=statistics)

    sink.write(storage, name, write)


def streamed(frame: pl.LazyFrame) -> Callable[[BinaryIO], object]:
    """A write that streams a lazy frame into the file, never whole in memory."""
    return lambda handle: frame.sink_parquet(handle, compression=PARQUET_COMPRESSION, engine="streaming")


def sink_parquet(storage: Storage, name: str, frame: pl.LazyFrame, sink: Sink = WRITES) -> None:
    """Stream a lazy frame into one file, never whole in memory."""
    sink.write(storage, name, streamed(frame))


def read_text(storage: Storage, name: str) -> str:
    return storage.read_bytes(name).decode()


def files_matching(storage: Storage, pattern: re.Pattern[str]) -> Iterator[tuple[str, re.Match[str]]]:
    """The names directly in `storage` that `pattern` matches whole, with the match, by name."""
    for name in storage.names():
        if match := pattern.fullmatch(name):
            yield name, match
