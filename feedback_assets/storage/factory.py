"""The one place that tells a local directory from a bucket prefix."""

from __future__ import annotations

import re
from pathlib import Path

from feedback_assets.errors import ConfigError
from feedback_assets.source_url import expand_home
from feedback_assets.storage.base import EXPORT, PRIVATE, Modes, Storage
from feedback_assets.storage.local import LocalStorage
from feedback_assets.storage.object_paths import SCHEMES, ObjectPath
from feedback_assets.storage.objects import ObjectStorage

URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def storage_for(location: str | Path | ObjectPath, modes: Modes = PRIVATE) -> Storage:
    """The storage at a directory: an `s3://`, `gs://` or `az://` URL (or a parsed ObjectPath) is
    object storage, anything else a local directory."""
    if isinstance(location, ObjectPath):
        return ObjectStorage(location, modes)
    if isinstance(location, str) and location.partition("://")[0].lower() in SCHEMES:
        return ObjectStorage(ObjectPath.parse(location), modes)
    return LocalStorage(Path(location), modes)


def output_dir(name: str, raw: str, modes: Modes = PRIVATE) -> Storage:
    """A directory setting: a local path, or a prefix on object storage (`s3://bucket/prefix`,
    `gs://...`, `az://...`). Any other URL is refused: taken as a path, `https://host/x` would quietly
    become a folder named `https:` in the working directory, and the user would believe the files
    went there. Credentials never go in the URL: they come from the environment."""
    if not URL_SCHEME.match(raw):
        try:
            return LocalStorage(Path(expand_home(raw)), modes)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    scheme, _, rest = raw.partition("://")
    supported = ", ".join(f"{s}://" for s in SCHEMES)
    if scheme.lower() not in SCHEMES:
        raise ConfigError(
            f"{name} is a {scheme}:// URL, which is not supported, so nothing was written: give a path on "
            f"this machine or an object storage URL ({supported})"
        )
    if any(c in rest for c in "@?#"):
        raise ConfigError(
            f"{name} must be a plain {scheme.lower()}://bucket/prefix URL, without credentials, query or "
            "fragment: credentials and endpoints come from the environment (AWS_*, GOOGLE_*, AZURE_*)"
        )
    try:
        return ObjectStorage(ObjectPath.parse(f"{scheme.lower()}://{rest}"), modes)
    except ValueError:
        raise ConfigError(f"{name} names no bucket: give it as {scheme.lower()}://bucket/prefix") from None


def export_output_dir(name: str, raw: str) -> Storage:
    """The export directory setting: its directories and files readable by the data science team's group."""
    return output_dir(name, raw, EXPORT)
