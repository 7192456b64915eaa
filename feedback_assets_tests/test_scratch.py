"""The private scratch directory a step keeps source rows in: private, gone with the step, and
swept after a step that was killed."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from feedback_assets.files import (
    ABANDONED_UNLOCKED_SCRATCH_SECONDS,
    LOCK_NAME,
    PRIVATE_DIR_MODE,
    SCRATCH_DIR,
    private_scratch,
)


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
