"""The pinned release (issue 25; docs/ml.md): `release.json` at the export root lists every data file
with its SHA-256 and rows, the settings and the day range, under a `version` that is a content hash
of the file list, so a training run can say which exact data it saw. No Dagster here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Final

from feedback_assets.storage import Storage

RELEASE_NAME: Final = "release.json"
RELEASE_FORMAT: Final = 1


@dataclass(frozen=True, order=True)
class DataFile:
    """One file of a release: its path relative to the export dir (`/`-separated), SHA-256 (hex) and rows."""

    path: str
    sha256: str
    rows: int


def file_sha256(storage: Storage, name: str) -> str:
    """The SHA-256 (hex) of a stored file as it is now. A day's file is read whole, as a manifest's is."""
    return hashlib.sha256(storage.read_bytes(name)).hexdigest()


def data_file(storage: Storage, name: str, rows: int) -> DataFile:
    return DataFile(name, file_sha256(storage, name), rows)


def _listed(files: Iterable[DataFile]) -> list[DataFile]:
    ordered = sorted(files)
    paths = [file.path for file in ordered]
    if len(set(paths)) != len(paths):
        raise ValueError(f"a release lists each file once: {sorted({p for p in paths if paths.count(p) > 1})}")
    return ordered


def release_version(files: Iterable[DataFile]) -> str:
    """SHA-256 (hex) of the files' canonical JSON (sorted by path): the same files give the same version
    in whatever order they are listed, and a changed byte, row count, name or file changes it."""
    canonical = json.dumps([asdict(file) for file in _listed(files)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def release(
    files: Iterable[DataFile], settings: Mapping[str, object], first_day: str | None, last_day: str | None
) -> dict[str, object]:
    """The release.json of an export: `version`, `files` sorted by path, `rows` (all the files' rows,
    CSV and Parquet alike, so twice a day's rows with both formats), `days` (first and last, or null
    for an empty export) and `settings` (what shaped the files; never the key, only its id)."""
    listed = _listed(files)
    return {
        "format": RELEASE_FORMAT,
        "version": release_version(listed),
        "days": {"first": first_day, "last": last_day},
        "settings": dict(settings),
        "rows": sum(file.rows for file in listed),
        "files": [asdict(file) for file in listed],
    }


def release_bytes(release_dict: Mapping[str, object]) -> bytes:
    """UTF-8 JSON with sorted keys, as the manifests are written."""
    return json.dumps(release_dict, sort_keys=True, indent=2).encode() + b"\n"
