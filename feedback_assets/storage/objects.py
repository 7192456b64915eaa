"""Storage under a bucket (`s3://`, `gs://`, `az://`): writes and listings through obstore, reads
through Polars' own cloud scans, so a lookup fetches the byte ranges of the columns it selects
instead of whole objects. Both clients are the same Rust object_store, configured from the same
environment variables (object_paths.ENV_PREFIXES): nothing here holds or shows a credential.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

import polars as pl
from obstore.store import ObjectStore, from_url

from feedback_assets.errors import ConfigError
from feedback_assets.files import PRIVATE_DIR_MODE, OutputWriteError, ensure_dir
from feedback_assets.storage.base import Rooted, Storage, Warn, ignore
from feedback_assets.storage.lock import storage_lease
from feedback_assets.storage.object_paths import ENV_PREFIXES, ERRORS, ObjectPath, reason
from feedback_assets.storage.scratch import SCRATCH_DIR, private_scratch, refuse_shared_temp, remove_abandoned_scratch

# obstore's client never reads a profile; Polars would take one as its own credential source and
# refuses it beside other settings (aws_allow_http among them), so it is left out for both to agree.
_NOT_OBSTORES: Final = frozenset({"AWS_PROFILE"})


def storage_options() -> dict[str, str]:
    """The store's configuration for Polars, as obstore reads it: object_store's own keys are the
    environment variables' names in lower case (aws_endpoint_url, aws_allow_http, ...)."""
    return {
        name.lower(): value
        for name, value in os.environ.items()
        if name.startswith(ENV_PREFIXES) and name not in _NOT_OBSTORES
    }


def _local_scratch_root() -> Path:
    """An owner-only directory of this machine's temporary space (a pod's own disk)."""
    return Path(tempfile.gettempdir()) / f"feedback_assets-{os.getuid()}" / SCRATCH_DIR


class ObjectStorage(Rooted[ObjectPath]):
    def _object(self, name: str) -> ObjectPath:
        return self.root / name

    def location(self, name: str = "") -> str:
        return str(self._object(name) if name else self.root)

    def is_dir(self) -> bool:
        return self.root.is_dir()

    def exists(self, name: str) -> bool:
        return self._object(name).is_file()

    def names(self) -> list[str]:
        return sorted(path.name for path in self.root.iterdir())

    def versions(self, suffix: str) -> dict[str, str]:
        """Entity tag, size and time, from one listing."""
        return self.root.versions(suffix)

    def read_bytes(self, name: str) -> bytes:
        return self._object(name).read_bytes()

    def write(self, name: str, write: Callable[[BinaryIO], object], mode: int | None = None) -> None:
        """The bytes are made in memory and stored in one request (`ObjectPath.write_bytes`): a
        reader sees the old object or the new one, and no temporary object is ever listed."""
        path = self._object(name)
        buffer = io.BytesIO()
        write(buffer)
        try:
            path.write_bytes(buffer.getvalue())
        except ERRORS as exc:
            raise OutputWriteError(
                errno.EIO,
                f"cannot write {path.name} under {path.parent}: the object store refused it "
                f"({reason(exc)}); the objects already there are as they were: check that the bucket "
                "exists and that the credentials in the environment may write there, then run the same days again",
            ) from None

    def delete(self, name: str) -> None:
        self._object(name).unlink(missing_ok=True)

    def ensure(self) -> None:
        """Object storage has no directories."""

    def scan_parquet(self, names: Sequence[str], schema: pl.Schema | None = None) -> pl.LazyFrame:
        urls = [str(self._object(name)) for name in names]
        return pl.scan_parquet(urls, schema=schema, storage_options=storage_options())

    def scan_csv(self, names: Sequence[str]) -> pl.LazyFrame:
        urls = [str(self._object(name)) for name in names]
        return pl.scan_csv(urls, infer_schema=False, storage_options=storage_options())

    def parquet_columns(self, name: str) -> list[str]:
        return self.scan_parquet([name]).collect_schema().names()

    @contextlib.contextmanager
    def pinned_parquet(self, name: str, schema: pl.Schema) -> Iterator[pl.LazyFrame | None]:
        """From its bytes, fetched now: an object cannot be linked."""
        path = self._object(name)
        data: bytes | None
        try:
            data = path.read_bytes() if path.is_file() else None
        except ERRORS:
            data = None
        yield None if data is None else pl.scan_parquet(data, schema=schema)

    def remove_stale_temp_files(self) -> int:
        """Object storage never has temporary objects."""
        return 0

    def scratch(self, warn: Warn = ignore) -> contextlib.AbstractContextManager[Path]:
        """Working files stay on this machine's disk, in a private directory of its temporary space."""
        root = _local_scratch_root()
        ensure_dir(root.parent, PRIVATE_DIR_MODE)
        refuse_shared_temp(root.parent)
        return private_scratch(root, warn)

    def remove_abandoned_scratch(self, warn: Warn) -> None:
        remove_abandoned_scratch(_local_scratch_root(), warn)

    def lease_keys(self) -> tuple[ObjectStore, str]:
        """The store and the prefix under which the storage lock's leases go (storage_lock.py)."""
        return from_url(self.root.root), f"{self.root.key}/.locks" if self.root.key else ".locks"

    def lock(self, *, exclusive: bool, on_wait: Callable[[], None]) -> contextlib.AbstractContextManager[None]:
        """A lease object, since the processes sharing a bucket may be on any machine."""
        return storage_lease(self, exclusive=exclusive, on_wait=on_wait)

    def check_writable(self, setting: str) -> None:
        """Whether the bucket can be listed with the environment's credentials: object storage has
        no directory to make, and a write is not tried before a run writes."""
        try:
            self.root.is_dir()
        except ERRORS as exc:
            raise ConfigError(
                f"{setting}: {self.root} cannot be reached ({reason(exc)}); check that the bucket exists and "
                "that the credentials and endpoint in the environment (AWS_*, GOOGLE_*, AZURE_*) can list it"
            ) from None

    def permissions_warning(self, setting: str) -> str | None:
        """The bucket's policy is what grants access, not modes this could read."""
        return None

    def overlaps(self, other: Storage) -> bool:
        """By bucket and prefix, whole segments only: `s3://b/export` and `s3://b/export-storage` are apart."""
        if not isinstance(other, ObjectStorage):
            return False
        mine, theirs = f"{self.root}/", f"{other.root}/"
        return mine.startswith(theirs) or theirs.startswith(mine)
