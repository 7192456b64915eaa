"""Refusing to mix pseudonyms made with different HMAC keys, or files of different formats, in one export.

Each directory the pipeline writes (exports, storage) carries `.feedback_key.json`: the key id and
a keyed fingerprint of the key (an HMAC of a fixed label), which shows whether two keys are the
same without revealing either. The export directory's marker also records the timestamp precision,
the pseudonym scope and the split of its files: files of mixed precision, whose pseudonyms follow
different rules, or whose users were split by other ratios, are not one data set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import NoReturn

from feedback_assets.files import PRIVATE_FILE_MODE, reading
from feedback_assets.storage import Storage
from feedback_assets.storage.base import read_text, write_bytes

MARKER_NAME = ".feedback_key.json"
FINGERPRINT_LABEL = b"feedback_assets key fingerprint v1"


# Markers written before these settings existed describe files exported this way.
FORMAT_BEFORE_SETTINGS = {"timestamp_precision": "microsecond", "pseudonym_scope": "stable"}


class KeyMismatchError(RuntimeError):
    """This run's key is not the one the existing files were made with."""


class FormatMismatchError(RuntimeError):
    """This run would write files of another timestamp precision or pseudonym scope than those there."""


def fingerprint(key: bytes) -> str:
    return hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:32]


def ensure_same_key(
    directories: Sequence[tuple[Storage, Mapping[str, str]]],
    key_id: str,
    key: bytes,
) -> None:
    """Fail if any directory was written with another key or files of another format (each
    directory's: setting name in lower case, value); mark unmarked ones with this run's.

    All are checked before any marker is written, so a refused run writes nothing; a directory
    made for its marker gets its storage's mode, the marker owner-only.
    """
    key_facts = {"hmac_key_id": key_id, "key_fingerprint": fingerprint(key)}
    to_write: list[tuple[Storage, bytes]] = []
    for directory, formats in directories:
        mine = {**key_facts, **formats}
        data = json.dumps(mine, sort_keys=True).encode()
        if not directory.exists(MARKER_NAME):
            to_write.append((directory, data))
            continue
        with reading(
            directory.location(MARKER_NAME),
            "it records the key id and key fingerprint (and, for the export directory, the timestamp precision "
            "and pseudonym scope) the directory's files were made with: if they were made with this run's, "
            "delete it and run again, which writes it anew; otherwise move the directory aside and backfill every day",
        ):
            theirs = json.loads(read_text(directory, MARKER_NAME))
            if not isinstance(theirs, dict):
                raise ValueError("not a JSON object")
        if {name: theirs.get(name) for name in key_facts} != key_facts:
            _refuse_other_key(directory, theirs, key_id)
        _ensure_same_format(directory, theirs, mine)
        if theirs != mine:
            to_write.append((directory, data))
    for directory, _ in directories:
        directory.remove_stale_temp_files()
    for directory, data in to_write:
        directory.ensure()
        write_bytes(directory, MARKER_NAME, data, PRIVATE_FILE_MODE)


def _refuse_other_key(directory: Storage, theirs: Mapping[str, object], key_id: str) -> NoReturn:
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


# Marked only since the typed export: a marker without it describes no split file, so any split fits.
FORMAT_SINCE_TYPED_EXPORT = ("split",)


def _ensure_same_format(directory: Storage, theirs: Mapping[str, object], mine: Mapping[str, str]) -> None:
    for name in (*FORMAT_BEFORE_SETTINGS, *FORMAT_SINCE_TYPED_EXPORT):
        if name not in mine or (name not in FORMAT_BEFORE_SETTINGS and name not in theirs):
            continue
        existing = theirs.get(name, FORMAT_BEFORE_SETTINGS.get(name))
        if existing != mine[name]:
            setting = f"FEEDBACK_{name.upper()}"
            raise FormatMismatchError(
                f"{directory} holds files exported with {setting}={existing}; this run uses {mine[name]}. "
                f"Files made with different {setting} values are not one data set: to re-export everything "
                f"with {mine[name]}, move the export directory aside (or point FEEDBACK_EXPORT_DIR at a new one) "
                f"and backfill every day; otherwise run with {setting}={existing}"
            )
