"""A damaged file the pipeline wrote stops the run with its path and the command that rebuilds it,
never a bare traceback; one test per kind of file (issue 10)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.defs.erasure import EraseConfig, erase_subjects
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import materialize, settings_for

# What erases: without it, erase_subjects only reports what it would remove.
CONFIRM = dg.RunConfig(ops={"erase_requested_subjects": EraseConfig(confirm=True)})
DAY = "2025-10-25"
REBUILD = "dagster asset materialize -m feedback_assets.definitions --select '{asset}*' --partition 2025-10-25"


@pytest.fixture
def exported(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> FeedbackSettings:
    """The crafted day exported once: every kind of file exists."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_crafted_source(url)
    settings = settings_for(tmp_path, url)
    assert materialize(instance, settings, DAY).success
    return settings


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def failure(instance: dg.DagsterInstance, settings: FeedbackSettings, assets: tuple[str, ...]) -> str:
    with pytest.raises(dg.Failure) as raised:
        materialize(instance, settings, DAY, assets=assets)
    description = str(raised.value.description)
    assert "Traceback" not in description
    return description


@pytest.mark.parametrize(
    ("asset", "reader"),
    [("raw_feedback", ("anonymized_pairs",)), ("deduplicated_pairs", ("training_csv",))],
)
def test_a_truncated_intermediate_partition_is_named_with_its_rebuild(
    tmp_path: Path, instance: dg.DagsterInstance, exported: FeedbackSettings, asset: str, reader: tuple[str, ...]
) -> None:
    path = tmp_path / "storage" / asset / f"{DAY}.parquet"
    truncate(path)
    message = failure(instance, exported, reader)
    assert f"{path} is damaged and cannot be read" in message
    assert REBUILD.format(asset=asset) in message
    # The command's selection, run the test's way, repairs it.
    assert materialize(instance, exported, DAY).success
    assert (tmp_path / "export" / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025


def test_a_corrupt_statistics_file_is_named_with_its_rebuild(
    tmp_path: Path, instance: dg.DagsterInstance, exported: FeedbackSettings
) -> None:
    path = tmp_path / "storage" / "anonymized_pairs" / f"{DAY}.stats.json"
    path.write_text('{"total_feedback_records": 12, "anonymized')
    message = failure(instance, exported, ("training_csv",))
    assert f"{path} is damaged and cannot be read" in message
    assert REBUILD.format(asset="anonymized_pairs") in message


def test_a_corrupt_dedupe_state_file_is_named(
    tmp_path: Path, instance: dg.DagsterInstance, exported: FeedbackSettings
) -> None:
    path = tmp_path / "storage" / "seen_pair_hashes" / "scope=exact" / "key_id=k1" / f"{DAY}.parquet"
    path.write_bytes(b"PAR1 not really")
    # The next day's dedupe reads the earlier days' state.
    with pytest.raises(dg.Failure) as raised:
        materialize(instance, exported, "2025-10-26")
    assert f"delete {path} and" in str(raised.value.description)


@pytest.mark.parametrize("directory", ["export", "storage"])
def test_a_corrupt_key_marker_is_named_with_what_to_do(
    tmp_path: Path, instance: dg.DagsterInstance, exported: FeedbackSettings, directory: str
) -> None:
    marker = tmp_path / directory / ".feedback_key.json"
    marker.write_bytes(b"\x00\x01garbage")
    message = failure(instance, exported, ("raw_feedback",))
    assert f"{marker} is damaged and cannot be read" in message
    assert "delete it and run again" in message


def test_a_corrupt_manifest_stops_erasure_naming_it(
    tmp_path: Path, instance: dg.DagsterInstance, exported: FeedbackSettings
) -> None:
    manifest = tmp_path / "export" / "feedback_training_20251025.manifest.json"
    manifest.write_text("{")
    with sqlite3.connect(tmp_path / "source.sqlite") as db:
        db.execute("INSERT INTO erasure_requests (user_id, requested_at) VALUES (1, '2025-10-27 00:00:00')")
    # A dry run reads what the erasure reads, so it stops where the erasure would.
    with pytest.raises(dg.Failure) as dry:
        erase_subjects.execute_in_process(instance=instance, resources=resources_for(exported))
    assert f"{manifest} is damaged and cannot be read" in str(dry.value.description)
    with pytest.raises(dg.Failure) as raised:
        erase_subjects.execute_in_process(instance=instance, resources=resources_for(exported), run_config=CONFIRM)
    message = str(raised.value.description)
    assert f"{manifest} is damaged and cannot be read" in message
    assert REBUILD.format(asset="training_csv") in message and "then run erase_subjects again" in message


def test_a_damaged_audit_log_is_kept_and_the_next_entry_is_whole(
    tmp_path: Path, instance: dg.DagsterInstance, exported: FeedbackSettings
) -> None:
    """The audit log is evidence: erasure never rewrites what is there, even a torn last line, and
    never stops for it (stopping would leave the subject's rows in the files)."""
    log = tmp_path / "storage" / "audit" / "erasures.jsonl"
    log.parent.mkdir(mode=0o700, exist_ok=True)
    log.write_bytes(b'{"at": "2025-10-27T00:00:00Z", "subj')
    assert erase_subjects.execute_in_process(
        instance=instance, resources=resources_for(exported), run_config=CONFIRM
    ).success
    torn, entry = log.read_bytes().split(b"\n", 1)
    assert torn == b'{"at": "2025-10-27T00:00:00Z", "subj'
    # The crafted source's one erasure request.
    assert json.loads(entry)["subjects"] == 1
