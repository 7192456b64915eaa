"""The tests that read files by hand use local directories: this narrows a stored file to its path."""

from __future__ import annotations

from pathlib import Path

from feedback_assets.dedupe_state import INDEX_FILE, DedupeStateStore
from feedback_assets.storage import LocalStorage, Storage
from feedback_assets.training_csv import training_files


def on_disk(storage: Storage, name: str = "") -> Path:
    assert isinstance(storage, LocalStorage), f"{storage} is not on the local disk"
    return storage.path(name)


def state_file(state: DedupeStateStore, day: str) -> Path:
    return on_disk(state.directory, state.file(day))


def index_file(state: DedupeStateStore) -> Path:
    return on_disk(state.index, INDEX_FILE)


def exported_files(export_dir: Path) -> dict[str, Path]:
    """The training CSVs of a local export dir by day, as `training_files` finds them."""
    return {day: export_dir / name for day, name in training_files(LocalStorage(export_dir)).items()}
