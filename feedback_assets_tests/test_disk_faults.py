"""A full, read-only or forbidden disk mid-write leaves the previous files whole, removes the
temporary file and stops the run naming the directory and the errno (issue 10).

For real on a small tmpfs the test mounts (when it may: root, or a container that allows it), and
by injecting the OSError into the project's own writes (always).
"""

from __future__ import annotations

import errno
import os
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.resources import FeedbackSettings
from feedback_assets.storage import local
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import materialize, settings_for

DAY = "2025-10-25"


def exported_once(tmp_path: Path, instance: dg.DagsterInstance) -> FeedbackSettings:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(url)
    settings = settings_for(tmp_path, url)
    assert materialize(instance, settings, DAY).success
    return settings


def snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob(f"{local.TEMP_PREFIX}*")]


@pytest.fixture
def small_export_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/export on a 64 KiB tmpfs, unmounted afterwards; skipped where mounting is not allowed."""
    export = tmp_path / "export"
    export.mkdir(mode=0o750)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0750", "tmpfs", str(export)], capture_output=True, text=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield export
    finally:
        subprocess.run(["umount", "--lazy", str(export)], check=True)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of the filesystem of `directory`."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_export_disk_keeps_the_previous_file_and_names_the_dir(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, small_export_dir: Path
) -> None:
    settings = exported_once(tmp_path, instance)
    before = snapshot(small_export_dir)
    filler = fill(small_export_dir)

    with pytest.raises(dg.Failure) as raised:
        materialize(instance, settings, DAY)
    message = str(raised.value.description)
    assert f"cannot write feedback_training_20251025.csv in {small_export_dir}" in message
    assert "No space left on device (ENOSPC)" in message
    filler.unlink()
    assert snapshot(small_export_dir) == before
    assert not temp_files(tmp_path)

    # Space freed, the same run succeeds.
    assert materialize(instance, settings, DAY).success
    assert (small_export_dir / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025


class RefusingOs(types.ModuleType):
    """The `os` module as feedback_assets.storage.local sees it, except that syncing a file under `refused`
    fails with `code`: the disk's refusal arrives in the middle of the project's own write."""

    def __init__(self, refused: Path, code: int) -> None:
        super().__init__("os")
        self.refused, self.code = refused, code

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(self.refused):
            raise OSError(self.code, os.strerror(self.code))
        os.fsync(fd)


@pytest.mark.parametrize(
    ("directory", "code", "name"),
    [
        ("storage/raw_feedback", errno.ENOSPC, "ENOSPC"),
        ("storage/anonymized_pairs", errno.EROFS, "EROFS"),
        ("export", errno.EACCES, "EACCES"),
        ("export", errno.EROFS, "EROFS"),
    ],
)
def test_a_refused_write_keeps_the_previous_files_and_names_the_dir_and_errno(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    directory: str,
    code: int,
    name: str,
) -> None:
    settings = exported_once(tmp_path, instance)
    before = snapshot(tmp_path / "export") | snapshot(tmp_path / "storage")
    monkeypatch.setattr(local, "os", RefusingOs(tmp_path / directory, code))

    with pytest.raises(dg.Failure) as raised:
        materialize(instance, settings, DAY)
    message = str(raised.value.description)
    assert f" in {tmp_path / directory}: {os.strerror(code)} ({name})" in message
    assert "the files already there are as they were and no temporary file is left" in message
    assert snapshot(tmp_path / "export") | snapshot(tmp_path / "storage") == before
    assert not temp_files(tmp_path)
