"""The tests that read files by hand use local directories: this narrows a stored file's path to one."""

from __future__ import annotations

from pathlib import Path

from feedback_assets.files import StoragePath


def on_disk(path: StoragePath) -> Path:
    assert isinstance(path, Path), f"{path} is not on the local disk"
    return path
