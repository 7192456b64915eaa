"""release.json (issue 25): every data file with its SHA-256 and rows, under a version that is a
content hash of that list."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from feedback_assets.release import (
    DataFile,
    data_file,
    file_sha256,
    release,
    release_bytes,
    release_version,
)
from feedback_assets.storage import EXPORT, LocalStorage

FILES = [
    DataFile("feedback_training_20251025.csv", "a" * 64, 5),
    DataFile("parquet/train/feedback_training_20251025.parquet", "b" * 64, 4),
    DataFile("parquet/test/feedback_training_20251025.parquet", "c" * 64, 1),
]
SETTINGS = {"timestamp_precision": "day", "pseudonym_scope": "stable", "split": "train=0.8,validation=0.1,test=0.1"}


def test_the_version_is_the_same_in_any_order_and_changes_with_any_file() -> None:
    version = release_version(FILES)
    assert len(version) == 64 and int(version, 16) >= 0
    assert release_version(reversed(FILES)) == version
    assert release_version([FILES[1], FILES[2], FILES[0]]) == version
    changed = [
        [DataFile(FILES[0].path, "d" * 64, 5), *FILES[1:]],
        [DataFile(FILES[0].path, FILES[0].sha256, 6), *FILES[1:]],
        [DataFile("feedback_training_20251026.csv", FILES[0].sha256, 5), *FILES[1:]],
        FILES[1:],
        [*FILES, DataFile("parquet/validation/feedback_training_20251025.parquet", "e" * 64, 0)],
    ]
    versions = {release_version(files) for files in changed}
    assert version not in versions and len(versions) == len(changed)


def test_the_release_lists_the_files_by_path_with_the_settings_and_days() -> None:
    made = release(reversed(FILES), SETTINGS, "2025-10-25", "2025-10-25")
    assert made == {
        "format": 1,
        "version": release_version(FILES),
        "days": {"first": "2025-10-25", "last": "2025-10-25"},
        "settings": SETTINGS,
        "rows": 10,
        "files": [
            {"path": file.path, "sha256": file.sha256, "rows": file.rows}
            for file in sorted(FILES, key=lambda file: file.path)
        ],
    }
    assert json.loads(release_bytes(made)) == made
    assert release_bytes(made) == release_bytes(release(FILES, SETTINGS, "2025-10-25", "2025-10-25"))


def test_an_empty_export_has_a_release_too() -> None:
    made = release([], {}, None, None)
    assert made["files"] == [] and made["rows"] == 0 and made["days"] == {"first": None, "last": None}
    assert made["version"] == hashlib.sha256(b"[]").hexdigest()


def test_a_file_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="each file once"):
        release([*FILES, DataFile(FILES[0].path, "f" * 64, 1)], SETTINGS, None, None)


def test_the_sha256_is_the_stored_files(tmp_path: Path) -> None:
    exports = LocalStorage(tmp_path, EXPORT)
    (tmp_path / "parquet" / "train").mkdir(parents=True)
    (tmp_path / "parquet" / "train" / "a.parquet").write_bytes(b"PAR1 not really")
    name = "parquet/train/a.parquet"
    assert file_sha256(exports, name) == hashlib.sha256(b"PAR1 not really").hexdigest()
    assert data_file(exports, name, 3) == DataFile(name, hashlib.sha256(b"PAR1 not really").hexdigest(), 3)
