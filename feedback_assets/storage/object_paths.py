"""Files on object storage (`s3://`, `gs://`, `az://`), through obstore, behind the few path
operations the pipeline uses, so the partition store, the dedupe state and the CSV writer take a
bucket prefix exactly as they take a local directory.

Credentials and endpoints come from the standard environment only (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, instance roles; GOOGLE_* and
AZURE_* likewise), read by obstore itself: this module never holds, logs or shows them.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import obstore
from obstore.exceptions import AlreadyExistsError
from obstore.store import ObjectStore, from_url

from feedback_assets.files import OBJECT_STORE_ERRORS
from feedback_assets.storage.write_checks import check_writes

# The schemes obstore's from_url reads its credentials for from the environment; any other URL is
# refused by the settings before anything is written.
SCHEMES: Final = ("s3", "gs", "az")

# What a store is built from besides its URL: the environment its credentials and endpoint come from.
ENV_PREFIXES: Final = ("AWS_", "GOOGLE_", "AZURE_")

ERRORS: Final = OBJECT_STORE_ERRORS

_ERROR_CODE: Final = re.compile(r"<Code>([^<]+)</Code>")


def reason(exc: BaseException) -> str:
    """A store error in one line: obstore's first line without the XML body the server sent,
    followed by the body's error code (NoSuchBucket, AccessDenied, ...) when it has one."""
    text = str(exc).strip()
    first = text.splitlines()[0].split(": <?xml", 1)[0] if text else type(exc).__name__
    code = _ERROR_CODE.search(text)
    return f"{first}: {code.group(1)}" if code else first


@functools.lru_cache(maxsize=16)
def _store(root: str, environment: frozenset[tuple[str, str]]) -> ObjectStore:
    del environment  # part of the cache key only: a changed endpoint or credential makes a new client
    return from_url(root)


def _environment() -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIXES))


@dataclass(frozen=True, order=True)
class ObjectPath:
    """An object, or a prefix standing for a directory, in a bucket: `s3://bucket/key`.

    Deliberately not os.PathLike: handed to open() or Path() by mistake it fails at once instead of
    becoming a local folder named `s3:`.
    """

    root: str
    key: str

    @classmethod
    def parse(cls, url: str) -> ObjectPath:
        scheme, _, rest = url.partition("://")
        scheme = scheme.lower()
        bucket, _, key = rest.partition("/")
        if scheme not in SCHEMES or not bucket:
            raise ValueError(f"not an object storage URL: {url}")
        return cls(f"{scheme}://{bucket}", key.strip("/"))

    def __str__(self) -> str:
        return f"{self.root}/{self.key}" if self.key else self.root

    def __truediv__(self, part: object) -> ObjectPath:
        child = str(part).strip("/")
        return ObjectPath(self.root, f"{self.key}/{child}" if self.key else child)

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def stem(self) -> str:
        name = self.name
        return name.rpartition(".")[0] if "." in name.lstrip(".") else name

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.root, self.key.rpartition("/")[0])

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    @property
    def _store(self) -> ObjectStore:
        return _store(self.root, _environment())

    def is_file(self) -> bool:
        try:
            obstore.head(self._store, self.key)
        except FileNotFoundError:
            return False
        return True

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def is_dir(self) -> bool:
        """Whether any object lies under this prefix: object storage has no empty directories."""
        return any(batch for batch in obstore.list(self._store, self._prefix, chunk_size=1))

    @property
    def _prefix(self) -> str | None:
        # obstore lists by whole path segments: "a" lists under "a/", never "ab".
        return self.key or None

    def iterdir(self) -> Iterator[ObjectPath]:
        """The objects and sub-prefixes directly under this prefix."""
        listing = obstore.list_with_delimiter(self._store, self._prefix)
        for entry in listing["common_prefixes"]:
            yield ObjectPath(self.root, entry.rstrip("/"))
        for meta in listing["objects"]:
            yield ObjectPath(self.root, meta["path"])

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Children whose names match `pattern` (one level: no `**`)."""
        return (path for path in self.iterdir() if fnmatch.fnmatchcase(path.name, pattern))

    def read_bytes(self) -> bytes:
        return bytes(obstore.get(self._store, self.key).bytes())

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """One PUT, or for a large object a multipart upload the store completes last: a reader sees
        the old object or the new one, never a part, and no temporary object is ever listed."""
        check_writes()
        obstore.put(self._store, self.key, data)

    def create(self, data: bytes) -> bool:
        """Write the object only if none is there (a conditional PUT); False if one was."""
        check_writes()
        try:
            obstore.put(self._store, self.key, data, mode="create")
        except AlreadyExistsError:
            return False
        return True

    def versions(self, suffix: str) -> dict[str, str]:
        """The objects directly under this prefix whose names end in `suffix`, each with a string
        that changes whenever the object is replaced (entity tag, size, time), from one listing."""
        listing = obstore.list_with_delimiter(self._store, self._prefix)
        return {
            meta["path"].rpartition("/")[2]: f"{meta['e_tag']}:{meta['size']}:{meta['last_modified'].isoformat()}"
            for meta in listing["objects"]
            if meta["path"].endswith(suffix)
        }

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and not self.is_file():
            raise FileNotFoundError(f"no object at {self}")
        check_writes()
        obstore.delete(self._store, self.key)

    def last_modified(self) -> dt.datetime | None:
        try:
            return obstore.head(self._store, self.key)["last_modified"]
        except FileNotFoundError:
            return None

    def objects(self) -> Iterator[ObjectPath]:
        """Every object under this prefix, at any depth."""
        for batch in obstore.list(self._store, self._prefix):
            for meta in batch:
                yield ObjectPath(self.root, meta["path"])
