"""Refusing to mix pseudonyms made with different HMAC keys in one export.

Each directory the pipeline writes (exports, storage) carries `.feedback_key.json`: the key id and
a keyed fingerprint of the key (an HMAC of a fixed label), which shows whether two keys are the
same without revealing either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path

from feedback_assets.files import PRIVATE_FILE_MODE, ensure_dir, remove_stale_temp_files, write_bytes_atomically

MARKER_NAME = ".feedback_key.json"
FINGERPRINT_LABEL = b"feedback_assets key fingerprint v1"


class KeyMismatchError(RuntimeError):
    """This run's key is not the one the existing files were made with."""


def fingerprint(key: bytes) -> str:
    return hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def ensure_same_key(directories: Mapping[Path, int], key_id: str, key: bytes) -> None:
    """Fail if any directory was written with another key; mark unmarked ones with this key.

    `directories` maps each directory to the mode it gets if it has to be created. All are checked
    before any marker is written, so a refused run writes nothing.
    """
    mine = {"hmac_key_id": key_id, "key_fingerprint": fingerprint(key)}
    unmarked: list[Path] = []
    for directory in directories:
        marker = directory / MARKER_NAME
        if not marker.is_file():
            unmarked.append(marker)
            continue
        theirs = json.loads(marker.read_text())
        if theirs == mine:
            continue
        if theirs.get("hmac_key_id") != key_id:
            what = f"HMAC key id {theirs.get('hmac_key_id')!r}; this run uses key id {key_id!r}"
        else:
            what = f"a different key under the same key id {key_id!r}"
        raise KeyMismatchError(
            f"{directory} was written with {what}. Pseudonyms made with different keys are never mixed: "
            "to re-export everything with this key, move the export and storage directories aside "
            "(or point FEEDBACK_EXPORT_DIR and FEEDBACK_STORAGE_DIR at new ones) and backfill every day; "
            "otherwise run with the original FEEDBACK_HMAC_KEY and FEEDBACK_HMAC_KEY_ID"
        )
    data = json.dumps(mine, sort_keys=True).encode()
    for directory in directories:
        remove_stale_temp_files(directory)
    for marker in unmarked:
        ensure_dir(marker.parent, directories[marker.parent])
        write_bytes_atomically(marker, data, PRIVATE_FILE_MODE)
