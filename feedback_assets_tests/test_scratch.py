"""The private scratch directory a step keeps source rows in: private, gone with the step, and
swept after a step that was killed."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

import pytest

from feedback_assets.files import (
    ABANDONED_UNLOCKED_SCRATCH_SECONDS,
    LOCK_NAME,
    PRIVATE_DIR_MODE,
    SCRATCH_DIR,
    private_scratch,
)
from feedback_assets.object_storage import ObjectPath


def test_the_scratch_directory_is_private_and_removed_with_the_step(tmp_path: Path) -> None:
    with private_scratch(tmp_path) as scratch:
        (scratch / "users.parquet").write_bytes(b"rows")
        assert scratch.parent == tmp_path / SCRATCH_DIR
        assert scratch.stat().st_mode & 0o777 == PRIVATE_DIR_MODE
        assert (tmp_path / SCRATCH_DIR).stat().st_mode & 0o777 == PRIVATE_DIR_MODE
    assert not scratch.exists()


def test_a_killed_steps_scratch_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / SCRATCH_DIR
    abandoned, live, being_made, long_dead = (root / name for name in ("abandoned", "live", "new", "old"))
    for directory in (abandoned, live, being_made, long_dead):
        directory.mkdir(parents=True)
        (directory / "records.csv").write_bytes(b"rows")
    (abandoned / LOCK_NAME).touch()
    (live / LOCK_NAME).touch()
    old = time.time() - ABANDONED_UNLOCKED_SCRATCH_SECONDS - 60
    os.utime(long_dead, (old, old))
    # flock belongs to an open file: a lock taken through another descriptor stands for another step.
    holder = os.open(live / LOCK_NAME, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with private_scratch(tmp_path) as scratch:
            assert sorted(path.name for path in root.iterdir()) == sorted(["live", "new", scratch.name])
    finally:
        os.close(holder)
    assert (live / "records.csv").exists()


def test_with_storage_on_a_bucket_the_scratch_is_a_private_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source rows never go to the bucket: the scratch is in the machine's temporary space."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = tmp_path / f"feedback_assets-{os.getuid()}"
    with private_scratch(ObjectPath("s3://pipeline-state", "storage")) as scratch:
        (scratch / "users.parquet").write_bytes(b"rows")
        assert scratch.parent == parent / SCRATCH_DIR
        assert {path.stat().st_mode & 0o777 for path in (parent, parent / SCRATCH_DIR, scratch)} == {PRIVATE_DIR_MODE}
    assert not scratch.exists()


def test_a_scratch_parent_others_can_open_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = tmp_path / f"feedback_assets-{os.getuid()}"
    parent.mkdir()
    parent.chmod(0o777)
    with (
        pytest.raises(PermissionError, match="is not a private directory of this user"),
        private_scratch(ObjectPath("s3://pipeline-state", "storage")),
    ):
        pass
    assert list(parent.iterdir()) == []
