"""The private scratch directory a step keeps source rows in: private, gone with the step, and
swept after a step that was killed."""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.files import LOCK_NAME, PRIVATE_DIR_MODE, UnexpectedEntryError, storage_lock
from feedback_assets.storage import storage_for
from feedback_assets.storage.local import TEMP_PREFIX, temp_path_for
from feedback_assets.storage.scratch import ABANDONED_UNLOCKED_SCRATCH_SECONDS, SCRATCH_DIR
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import materialize, settings_for


def test_the_scratch_directory_is_private_and_removed_with_the_step(tmp_path: Path) -> None:
    with storage_for(tmp_path).scratch() as scratch:
        (scratch / "users.parquet").write_bytes(b"rows")
        assert scratch.parent == tmp_path / SCRATCH_DIR
        assert scratch.stat().st_mode & 0o777 == PRIVATE_DIR_MODE
        assert (tmp_path / SCRATCH_DIR).stat().st_mode & 0o777 == PRIVATE_DIR_MODE
    assert not scratch.exists()


def scratch_name(pid: int) -> str:
    """A step's scratch directory name as `private_scratch` makes it: host, process, a random id."""
    return f"worker_host-{pid}-{uuid.uuid4().hex}"


def test_a_killed_steps_scratch_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / SCRATCH_DIR
    names = [scratch_name(pid) for pid in (101, 102, 103, 104)]
    abandoned, live, being_made, long_dead = (root / name for name in names)
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
        with storage_for(tmp_path).scratch() as scratch:
            assert sorted(path.name for path in root.iterdir()) == sorted([live.name, being_made.name, scratch.name])
    finally:
        os.close(holder)
    assert (live / "records.csv").exists()


def test_with_storage_on_a_bucket_the_scratch_is_a_private_local_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Source rows never go to the bucket: the scratch is in the machine's temporary space."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = tmp_path / f"feedback_assets-{os.getuid()}"
    with storage_for("s3://pipeline-state/storage").scratch() as scratch:
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
        storage_for("s3://pipeline-state/storage").scratch(),
    ):
        pass
    assert list(parent.iterdir()) == []


def an_hour_old(path: Path) -> None:
    old = time.time() - ABANDONED_UNLOCKED_SCRATCH_SECONDS - 60
    os.utime(path, (old, old), follow_symlinks=False)


def test_a_symlinked_scratch_is_never_followed_to_delete_or_create_anything(tmp_path: Path) -> None:
    """A link planted as .scratch must not make a sweep delete the old folders where it points,
    nor a step put source rows there."""
    storage, elsewhere = tmp_path / "storage", tmp_path / "elsewhere"
    storage.mkdir()
    victim = elsewhere / scratch_name(99)
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_bytes(b"someone else's")
    an_hour_old(victim)
    (storage / SCRATCH_DIR).symlink_to(elsewhere, target_is_directory=True)
    warnings: list[str] = []

    storage_for(storage).remove_abandoned_scratch(warnings.append)
    assert (victim / "keep.txt").read_bytes() == b"someone else's"
    assert warnings == [
        f"{storage / SCRATCH_DIR} is not the scratch directory the pipeline makes (a symbolic link "
        "or a file); left alone"
    ]
    with (
        pytest.raises(UnexpectedEntryError, match=r"\.scratch is not the scratch directory .* remove it"),
        storage_for(storage).scratch(warnings.append),
    ):
        pass
    assert sorted(path.name for path in elsewhere.iterdir()) == [victim.name]


def test_a_stray_file_or_link_in_scratch_is_named_and_left_alone(tmp_path: Path) -> None:
    root = tmp_path / SCRATCH_DIR
    root.mkdir()
    stray = root / "notes.txt"
    stray.write_bytes(b"not the pipeline's")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"kept")
    link = root / scratch_name(98)
    link.symlink_to(outside, target_is_directory=True)
    an_hour_old(link)
    # A scratch directory as the pipeline names it, whose lock file is a link to somewhere else.
    planted = root / scratch_name(97)
    planted.mkdir()
    (planted / LOCK_NAME).symlink_to(tmp_path / "lock_target")
    warnings: list[str] = []

    with storage_for(tmp_path).scratch(warnings.append) as scratch:
        (scratch / "users.parquet").write_bytes(b"rows")
    assert stray.read_bytes() == b"not the pipeline's"
    assert link.is_symlink() and (outside / "keep.txt").read_bytes() == b"kept"
    assert planted.is_dir() and not (tmp_path / "lock_target").exists()
    assert sorted(warnings) == sorted(
        [
            f"{stray} is not a scratch directory the pipeline made; left alone",
            f"{link} is not a scratch directory the pipeline made; left alone",
            f"{planted / LOCK_NAME} is not a lock file the pipeline made (a symbolic link or a directory); it was "
            "left alone: remove it and run again",
        ]
    )


def test_a_linked_storage_lock_is_refused_and_its_target_never_created(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    target = tmp_path / "somewhere" / "created.lock"
    target.parent.mkdir()
    (storage / LOCK_NAME).symlink_to(target)
    with (
        pytest.raises(UnexpectedEntryError, match=r"\.feedback\.lock is not a lock file the pipeline made"),
        storage_lock(storage, exclusive=True, on_wait=lambda: None),
    ):
        pass
    assert not target.exists()


def test_only_temporary_files_the_pipeline_names_are_reaped(tmp_path: Path) -> None:
    directory = tmp_path / "export"
    directory.mkdir()
    # A dead writer's temporary file, named by the pipeline: reaped.
    dead = temp_path_for(directory / "feedback_training_20251025.csv").name.rsplit(".", 2)
    dead_writer = directory / f"{dead[0]}.{dead[1].rpartition('-')[0]}-999999999.{dead[2]}"
    dead_writer.write_bytes(b"half")
    # Look-alikes that are not: a link named like a dead writer's file, and a name of another shape.
    target = tmp_path / "target.csv"
    target.write_bytes(b"kept")
    link = directory / f"{dead[0]}.{dead[1].rpartition('-')[0]}-999999998.{dead[2]}"
    link.symlink_to(target)
    other = directory / f"{TEMP_PREFIX}someone-elses-file"
    other.write_bytes(b"kept")

    assert storage_for(directory).remove_stale_temp_files() == 1
    assert not dead_writer.exists()
    assert link.is_symlink() and target.read_bytes() == b"kept" and other.read_bytes() == b"kept"


def test_a_postgresql_export_with_a_stray_file_in_scratch_succeeds_and_names_it(
    tmp_path: Path, postgres_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """A PostgreSQL run keeps its dimension rows in scratch: a stray file there once failed every such
    export with a bare NotADirectoryError."""
    write_crafted_source(postgres_url)
    stray = tmp_path / "storage" / SCRATCH_DIR / "stray.txt"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by hand")
    result = materialize(instance, settings_for(tmp_path, postgres_url), "2025-10-25")
    assert result.success
    assert (tmp_path / "export" / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025
    assert stray.read_bytes() == b"left by hand"
    warned = [entry.user_message for entry in instance.all_logs(result.run_id) if "stray.txt" in entry.user_message]
    assert warned == [f"{stray} is not a scratch directory the pipeline made; left alone"]
