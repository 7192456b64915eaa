"""The one place that tells a local directory from a bucket prefix."""

from __future__ import annotations

from pathlib import Path

from feedback_assets.object_storage import SCHEMES, ObjectPath
from feedback_assets.storage.base import PRIVATE, Modes, Storage
from feedback_assets.storage.local import LocalStorage
from feedback_assets.storage.objects import ObjectStorage


def storage_for(location: str | Path | ObjectPath, modes: Modes = PRIVATE) -> Storage:
    """The storage at a setting's directory: an `s3://`, `gs://` or `az://` URL (or the settings'
    parsed ObjectPath) is object storage, anything else a local directory."""
    if isinstance(location, ObjectPath):
        return ObjectStorage(location, modes)
    if isinstance(location, str) and location.partition("://")[0].lower() in SCHEMES:
        return ObjectStorage(ObjectPath.parse(location), modes)
    return LocalStorage(Path(location), modes)
