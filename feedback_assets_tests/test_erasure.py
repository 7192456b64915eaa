"""GDPR erasure: the job `erase_subjects` end to end on SQLite and PostgreSQL, from the CLI, its dry
run and the observations it leaves on each asset's partitions, and the pure functions of
`erasure.py` on literal frames."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest
from polars.testing import assert_frame_equal

from feedback_assets import erasure, erasure_rules
from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.definitions import defs
from feedback_assets.defs.erasure import ASSET_OF_KIND, DRY_RUN_NOTE, DRY_RUN_TAG, erase_subjects
from feedback_assets.files import LOCK_NAME
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets.storage import EXPORT, PartitionStore, storage_for
from feedback_assets.storage.scratch import SCRATCH_DIR
from feedback_assets.training_csv import csv_bytes, write_training_csv
from feedback_assets_tests.crafted_source import HEADER
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for
from feedback_assets_tests.paths import on_disk, state_file
from feedback_assets_tests.sources import at, rating, write_source

# A raw id no count, date or digest is likely to contain, so finding it anywhere means a leak.
ERASED = 7304911
# Computed outside the project: printf '%s' 7304911 | openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY_HEX
ERASED_HASH = "f3776a3a0b89254684eff0418949d746130f9a8266c152846da7752bb562241a"
# The erased subject's eligible rows as (recommendation, feedback time): their dedupe keys are worked
# out here from the contract (SHA-256 of pseudonym, recommendation and, for `exact`, the time, joined
# by the unit separator), so the sweep finds them in the dedupe state whatever the product computes.
ERASED_PAIRS = [
    ("rec_a", "2025-10-24T08:00:00.000000Z"),
    ("rec_b71", "2025-10-25T08:00:00.000000Z"),
    ("rec_a", "2025-10-26T08:00:00.000000Z"),
    ("rec_a", "2025-10-27T08:00:00.000000Z"),
]
ERASED_KEYS = {
    hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    for recommendation, time in ERASED_PAIRS
    for parts in ((ERASED_HASH, recommendation, time), (ERASED_HASH, recommendation))
}
PARTNER = 8100001
FIRST, LAST, NEXT = "2025-10-24", "2025-10-26", "2025-10-27"
DAYS = ("2025-10-24", "2025-10-25", "2025-10-26")
AUDIT = Path("storage") / erasure.AUDIT_FILE
REPO_ROOT = Path(__file__).resolve().parents[1]
# The run config as the docs tell an operator to type it in the Launchpad.
CONFIRM_YAML = "ops: {erase_requested_subjects: {config: {confirm: true}}}"
CONFIRM = {"ops": {"erase_requested_subjects": {"config": {"confirm": True}}}}


def write_erasure_source(url: str) -> None:
    """Users around one subject who is later erased: rows kept, a duplicate, a rejected row, a re-rating."""
    write_source(
        url,
        users=[
            {"id": ERASED, "age": 31, "ml_training_consent": True, "image_sharing_consent": True},
            # Same age range and conditions as ERASED: a k-anonymity group of two until the erasure.
            {"id": PARTNER, "age": 28, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 8100002, "age": 17, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 8100003, "age": None, "ml_training_consent": True, "image_sharing_consent": False},
            {"id": 8100004, "age": 45, "ml_training_consent": False, "image_sharing_consent": False},
        ],
        analyses=[
            {"id": 71, "user_id": ERASED, "conditions": "Acne, oily", "created_at": at("2025-10-23 10:00:00")},
            {"id": 81, "user_id": PARTNER, "conditions": "oily ,ACNE", "created_at": at("2025-10-23 11:00:00")},
            {
                "id": 82,
                "user_id": 8100002,
                "conditions": 'Rosacea, "red" cheeks\nline2, 日本',
                "created_at": at("2025-10-23 12:00:00.5"),
            },
            {"id": 83, "user_id": 8100003, "conditions": '=HYPERLINK("x")', "created_at": at("2025-10-23 13:00:00")},
            {"id": 84, "user_id": 8100004, "conditions": "dry", "created_at": at("2025-10-23 14:00:00")},
        ],
        records=[
            {"id": "rec_a", "analysis_id": 71, "rules_applied": " hydration_boost, spf_daily ", "timeframe": "4w"},
            {"id": "rec_b", "analysis_id": 82, "rules_applied": "+plus", "timeframe": None},
            {"id": "-rec_c", "analysis_id": 83, "rules_applied": "@at", "timeframe": "2w"},
            # The same recommendations made from the other analyses: a record belongs to one analysis,
            # and feedback citing another analysis's record is rejected as mismatched.
            {"id": "rec_b71", "analysis_id": 71, "rules_applied": "+plus", "timeframe": None},
            {"id": "-rec_c71", "analysis_id": 71, "rules_applied": "@at", "timeframe": "2w"},
            {"id": "rec_a81", "analysis_id": 81, "rules_applied": " hydration_boost, spf_daily ", "timeframe": "4w"},
            {"id": "rec_b81", "analysis_id": 81, "rules_applied": "+plus", "timeframe": None},
            {"id": "-rec_c81", "analysis_id": 81, "rules_applied": "@at", "timeframe": "2w"},
            {"id": "rec_a83", "analysis_id": 83, "rules_applied": " hydration_boost, spf_daily ", "timeframe": "4w"},
            {"id": "rec_a84", "analysis_id": 84, "rules_applied": " hydration_boost, spf_daily ", "timeframe": "4w"},
        ],
        feedback=[
            rating(2001, ERASED, 71, "rec_a", "2025-10-24 08:00:00", 5, 4, 80, True),
            rating(2002, PARTNER, 81, "rec_a81", "2025-10-24 09:00:00", 4),
            rating(2003, 8100002, 82, "rec_b", "2025-10-24 10:00:00", 3, None, None, False),
            rating(2004, ERASED, 71, "rec_b71", "2025-10-25 08:00:00", 4),
            rating(2005, ERASED, 71, "rec_b71", "2025-10-25 08:00:00", 4),
            rating(2006, ERASED, 71, "-rec_c71", "2025-10-25 09:00:00", 9),
            rating(2007, 8100003, 83, "-rec_c", "2025-10-25 10:00:00", 1, 1, 0),
            rating(2008, 8100004, 84, "rec_a84", "2025-10-25 11:00:00", 5),
            rating(2009, PARTNER, 81, "rec_b81", "2025-10-25 12:00:00", 2),
            rating(2010, ERASED, 71, "rec_a", "2025-10-26 08:00:00", 3),
            rating(2011, 8100002, 82, "rec_b", "2025-10-26 09:00:00", 5),
            rating(2012, PARTNER, 81, "-rec_c81", "2025-10-26 10:00:00", 4, 5, 50, True),
            rating(2013, ERASED, 71, "rec_a", "2025-10-27 08:00:00", 4),
            rating(2014, 8100003, 83, "rec_a83", "2025-10-27 09:00:00", 2),
        ],
    )


def request_erasure(url: str, user_id: int) -> None:
    """What the app does when a subject asks to be erased: one row in erasure_requests."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(
                "INSERT INTO erasure_requests (user_id, requested_at) VALUES (?, ?)", (user_id, "2025-10-28 00:00:00")
            )
        return
    with closing(psycopg2.connect(url)) as pg, pg, pg.cursor() as cur:
        cur.execute(
            "INSERT INTO erasure_requests (user_id, requested_at) VALUES (%s, %s)",
            (user_id, dt.datetime(2025, 10, 28, tzinfo=dt.UTC)),
        )


def files_under(*directories: Path) -> Iterator[Path]:
    for directory in directories:
        yield from sorted(p for p in directory.rglob("*") if p.is_file())


def traces(*directories: Path) -> list[str]:
    """Every file that still holds the erased subject's pseudonym, raw id or one of their dedupe keys.

    Parquet is compressed, so its byte patterns prove nothing: it is read, and every text column is
    searched for the pseudonym and the keys, and every `user_id` column for the raw id.
    """
    found = []
    keys = pl.Series(sorted(ERASED_KEYS))
    for path in files_under(*directories):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            hits = [
                name
                for name, dtype in frame.schema.items()
                if (
                    dtype == pl.String
                    and (
                        frame[name].str.contains(ERASED_HASH, literal=True).any()
                        or frame[name].is_in(keys.implode()).any()
                    )
                )
                or (name == "user_id" and dtype.is_integer() and (frame[name] == ERASED).any())
            ]
            if hits:
                found.append(f"{path} ({', '.join(hits)})")
        else:
            data = path.read_bytes()
            if ERASED_HASH.encode() in data or str(ERASED).encode() in data:
                found.append(str(path))
    return found


def csvs(export_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(export_dir.glob("*.csv"))}


def every_file(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in files_under(root / "export", root / "storage")}


def audit_entries(root: Path) -> list[dict[str, object]]:
    path = root / AUDIT
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def scalars(value: object) -> Iterator[object]:
    """Every key and leaf value of a parsed JSON document."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key
            yield from scalars(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from scalars(inner)
    else:
        yield value


def erase(instance: dg.DagsterInstance, settings: FeedbackSettings, confirm: bool = True) -> dg.ExecuteInProcessResult:
    return erase_subjects.execute_in_process(
        instance=instance, resources=resources_for(settings), run_config=CONFIRM if confirm else None
    )


def file_hashes(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in every_file(root).items()}


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    return {k: v.value for k, v in output.step_output_data.metadata.items()}


def log_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def observations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, dict[str, object]]]:
    """The observations one run recorded, by asset and day: their metadata values."""
    found: dict[str, dict[str, dict[str, object]]] = {}
    for asset_key in defs.resolve_asset_graph().get_all_asset_keys():
        for record in instance.fetch_observations(asset_key, limit=10_000).records:
            observation = record.asset_observation
            if record.run_id != run_id or observation is None:
                continue
            assert observation.partition is not None
            metadata: dict[str, object] = {k: v.value for k, v in observation.metadata.items()}
            found.setdefault(asset_key.to_user_string(), {})[observation.partition] = metadata
    return found


def check_observations(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, entry: dict[str, object]
) -> None:
    """Every day of every asset the audit entry lists shows the erasure, with its own count."""
    by_partition = entry["rows_removed_by_partition"]
    assert isinstance(by_partition, dict)
    seen = observations(instance, result.run_id)
    assert seen == {
        kind: {
            day: {"rows_removed": n, "audit_entry": entry["entry_id"], "erasure_run_id": result.run_id}
            for day, n in days.items()
        }
        for kind, days in by_partition.items()
        if days
    }
    assert {kind: sum(days.values()) for kind, days in by_partition.items()} == entry["rows_removed"]
    assert sorted({day for days in seen.values() for day in days}) == entry["partitions"]


def manifest(root: Path, day: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (root / "export" / f"feedback_training_{day.replace('-', '')}.manifest.json").read_text()
    )
    return data


# Rows removed per kind, by scope: in `first_per_pair` the erased subject's 2025-10-26 re-rating is a
# duplicate, and the day's raw and anonymized partitions also hold the 2025-10-24 row as history.
REMOVED_EXACT = {
    "training_csv": 3,
    "raw_feedback": 5,
    "anonymized_pairs": 4,
    "deduplicated_pairs": 4,
    "seen_pair_hashes": 3,
}
REMOVED_FIRST_PER_PAIR = {
    "training_csv": 2,
    "raw_feedback": 6,
    "anonymized_pairs": 5,
    "deduplicated_pairs": 4,
    "seen_pair_hashes": 2,
}
ZERO = dict.fromkeys(REMOVED_EXACT, 0)
EMPTY_BY_DAY: dict[str, dict[str, int]] = {kind: {} for kind in REMOVED_EXACT}
# The same by day: the 2025-10-24 row is history in the later days' raw and anonymized partitions;
# the 2025-10-26 duplicate leaves that day's CSV alone but restates its manifest (0 rows).
REMOVED_FIRST_PER_PAIR_BY_DAY = {
    "training_csv": {"2025-10-24": 1, "2025-10-25": 1, "2025-10-26": 0},
    "raw_feedback": {"2025-10-24": 1, "2025-10-25": 3, "2025-10-26": 2},
    "anonymized_pairs": {"2025-10-24": 1, "2025-10-25": 2, "2025-10-26": 2},
    "deduplicated_pairs": {"2025-10-24": 1, "2025-10-25": 2, "2025-10-26": 1},
    "seen_pair_hashes": {"2025-10-24": 1, "2025-10-25": 1},
}


def check_erasure_end_to_end(
    tmp_path: Path, url: str, instance: dg.DagsterInstance, removed: dict[str, int], **overrides: str
) -> None:
    write_erasure_source(url)
    settings = settings_for(tmp_path, url, **overrides)
    export, storage = tmp_path / "export", tmp_path / "storage"
    assert materialize(instance, settings, FIRST, LAST).success
    before = traces(export, storage)
    assert any(p.endswith(".csv") for p in before) and any("raw_feedback" in p for p in before), before
    # The keys worked out independently are the ones the state holds, so the sweep can see them go.
    assert any("seen_pair_hashes" in p for p in before), before

    request_erasure(url, ERASED)
    result = erase(instance, settings)

    assert result.success
    assert traces(export, storage) == []
    [entry] = audit_entries(tmp_path)
    assert entry["subjects"] == 1
    assert entry["partitions"] == list(DAYS)
    assert entry["rows_removed"] == removed
    assert entry["run_id"] == result.run_id and entry["hmac_key_id"] == "k1"
    assert dt.datetime.fromisoformat(str(entry["at"])).tzinfo is not None
    audit_text = (tmp_path / AUDIT).read_text()
    assert ERASED_HASH not in audit_text and str(ERASED) not in audit_text
    assert not {ERASED, str(ERASED), ERASED_HASH} & set(scalars(entry))
    metadata = output_metadata(result)
    assert metadata["rows_removed_training_csv"] == removed["training_csv"]
    assert ERASED_HASH not in repr(metadata) and str(ERASED) not in repr(metadata)
    assert metadata["dry_run"] is False and metadata["audit_entry"] == entry["entry_id"]
    check_observations(instance, result, entry)
    shown = repr(observations(instance, result.run_id)) + "\n".join(log_messages(instance, result.run_id))
    assert ERASED_HASH not in shown and str(ERASED) not in shown

    # A second run finds nothing: every file stays as it was, and the audit says it ran.
    files = {k: v for k, v in every_file(tmp_path).items() if not k.endswith(".jsonl")}
    again = erase(instance, settings)
    assert again.success
    assert {k: v for k, v in every_file(tmp_path).items() if not k.endswith(".jsonl")} == files
    assert [e["rows_removed"] for e in audit_entries(tmp_path)] == [removed, ZERO]
    assert audit_entries(tmp_path)[1]["partitions"] == []
    assert observations(instance, again.run_id) == {}
    assert not [p for p in files_under(tmp_path) if p.name.startswith(".tmp-")]

    # The rewritten CSVs are exactly what a fresh export, made after the request, writes.
    erased_csvs = csvs(export)
    fresh_root = tmp_path / "fresh"
    (fresh_root / "dagster_home").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(fresh_root / "dagster_home")) as fresh_instance:
        assert materialize(fresh_instance, settings_for(fresh_root, url, **overrides), FIRST, LAST).success
    assert erased_csvs == csvs(fresh_root / "export")
    assert manifest(tmp_path, DAYS[0])["erased_after_export"] == 1

    # The statistics still add up: training_csv alone, from the cleaned partitions, gives the same file and counts.
    counts_after_erasure = {day: manifest(tmp_path, day)["counts"] for day in DAYS}
    assert materialize(instance, settings, FIRST, LAST, assets=("training_csv",)).success
    assert csvs(export) == erased_csvs
    assert {day: manifest(tmp_path, day)["counts"] for day in DAYS} == counts_after_erasure

    # Later runs keep the subject out although their source rows remain: a re-run and the next day.
    assert materialize(instance, settings, LAST, NEXT).success
    assert {k: v for k, v in csvs(export).items() if k in erased_csvs} == erased_csvs
    assert ERASED_HASH.encode() not in (export / f"feedback_training_{NEXT.replace('-', '')}.csv").read_bytes()
    # The re-run reads the erased rows again, but raw_feedback keeps them only as flagged, blanked
    # rows (so the day still counts them as excluded): no file holds the subject again.
    assert traces(export, storage) == []
    raw = pl.read_parquet(storage / "raw_feedback").filter(pl.col("erasure_requested"))
    assert raw.height > 0 and raw["user_id"].is_null().all() and raw["age"].is_null().all()
    assert not [p for p in files_under(tmp_path) if p.name.startswith(".tmp-")]


def test_erasure_end_to_end(tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance) -> None:
    check_erasure_end_to_end(tmp_path, source_url, instance, REMOVED_EXACT)


def test_erasure_end_to_end_first_per_pair(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    check_erasure_end_to_end(tmp_path, url, instance, REMOVED_FIRST_PER_PAIR, dedupe_scope="first_per_pair")


def test_erasure_end_to_end_with_suppression(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> None:
    """The erased subject leaves PARTNER alone in a group of two: PARTNER's rows are suppressed too, as a
    fresh export would."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    check_erasure_end_to_end(
        tmp_path, url, instance, REMOVED_EXACT, k_anonymity_threshold="2", k_anonymity_suppress="true"
    )
    counts = manifest(tmp_path, DAYS[0])["counts"]
    assert isinstance(counts, dict)
    assert (counts["exported_records"], counts["suppressed_records"]) == (0, 2)
    assert (tmp_path / "export" / "feedback_training_20251024.csv").read_text() == HEADER


def test_a_dry_run_changes_nothing_and_reports_what_the_erasure_then_removes(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """`first_per_pair`: the erased re-rating of 2025-10-26 is a duplicate, so that day's CSV keeps its
    rows but its manifest's counts change, which a dry run must foresee too."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_erasure_source(url)
    settings = settings_for(tmp_path, url, dedupe_scope="first_per_pair")
    assert materialize(instance, settings, FIRST, LAST).success
    request_erasure(url, ERASED)
    # Source rows a killed raw_feedback step left behind: a confirmed erasure removes them too.
    abandoned = tmp_path / "storage" / SCRATCH_DIR / "worker_host-4242-0123456789abcdef0123456789abcdef"
    abandoned.mkdir(parents=True)
    (abandoned / LOCK_NAME).touch()
    (abandoned / "users.parquet").write_bytes(b"source rows")
    before = file_hashes(tmp_path)

    dry = erase(instance, settings, confirm=False)

    assert dry.success
    assert file_hashes(tmp_path) == before
    assert audit_entries(tmp_path) == []
    assert observations(instance, dry.run_id) == {}
    planned = output_metadata(dry)
    assert planned["dry_run"] is True and planned["note"] == DRY_RUN_NOTE
    # The run list tells a dry run from an erasure by its tag.
    assert instance.get_run_by_id(dry.run_id).tags.get(DRY_RUN_TAG) == "true"  # type: ignore[union-attr]
    assert planned["subjects_in_no_written_day"] == 0
    assert {kind: planned[f"rows_removed_{kind}"] for kind in erasure.ROW_KINDS} == REMOVED_FIRST_PER_PAIR
    assert planned["days_changed"] == len(DAYS)
    assert "audit_entry" not in planned
    messages = log_messages(instance, dry.run_id)
    assert any(message.startswith(DRY_RUN_NOTE) for message in messages), messages
    shown = repr(planned) + "\n".join(messages)
    assert ERASED_HASH not in shown and str(ERASED) not in shown

    done = erase(instance, settings)

    assert done.success
    assert DRY_RUN_TAG not in instance.get_run_by_id(done.run_id).tags  # type: ignore[union-attr]
    [entry] = audit_entries(tmp_path)
    assert entry["rows_removed"] == REMOVED_FIRST_PER_PAIR
    assert entry["partitions"] == list(DAYS)
    assert entry["rows_removed_by_partition"] == planned["rows_removed_by_day"] == REMOVED_FIRST_PER_PAIR_BY_DAY
    assert output_metadata(done)["rows_removed_by_day"] == planned["rows_removed_by_day"]
    check_observations(instance, done, entry)
    assert str(entry["entry_id"]) in "\n".join(log_messages(instance, done.run_id))
    assert not abandoned.exists()


def test_the_cli_runs_the_job(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_erasure_source(url)
    assert materialize(instance, settings_for(tmp_path, url), FIRST).success
    request_erasure(url, ERASED)
    home = tmp_path / "cli_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(home),
        FEEDBACK_HMAC_KEY=KEY_HEX,
        FEEDBACK_SOURCE_URL=url,
        FEEDBACK_EXPORT_DIR=str(tmp_path / "export"),
        FEEDBACK_STORAGE_DIR=str(tmp_path / "storage"),
    )
    assert audit_entries(tmp_path) == []
    config = tmp_path / "erase.yaml"
    config.write_text(CONFIRM_YAML + "\n")

    command = [str(Path(sys.executable).parent / "dagster"), "job", "execute"]
    done = subprocess.run(
        [*command, "-m", "feedback_assets.definitions", "-j", "erase_subjects", "-c", str(config)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [entry] = audit_entries(tmp_path)
    assert entry["partitions"] == [FIRST]
    assert entry["rows_removed"] == {
        **ZERO,
        "training_csv": 1,
        "raw_feedback": 1,
        "anonymized_pairs": 1,
        "deduplicated_pairs": 1,
        "seen_pair_hashes": 1,
    }
    assert traces(tmp_path / "export", tmp_path / "storage") == []


# The pure functions, on literal frames.


def test_erased_rows_are_dropped_and_null_ids_kept() -> None:
    frame = pl.DataFrame({"user_id": [1, None, 3, 1], "n": [10, 20, 30, 40]})
    kept = erasure_rules.without_erased(frame, "user_id", pl.Series([1, 7], dtype=pl.Int64))
    assert_frame_equal(kept, pl.DataFrame({"user_id": [None, 3], "n": [20, 30]}))
    empty = erasure_rules.without_erased(frame, "user_id", pl.Series([], dtype=pl.Int64))
    assert_frame_equal(empty, frame)


def test_anonymized_statistics_count_erased_rows_as_excluded() -> None:
    stats = {"total_feedback_records": 10, "anonymized_records": 6, "excluded_records": 1, "excluded_erased": 0}
    after = erasure_rules.anonymized_stats_after(stats, window_rows_left=4)
    assert after == {"total_feedback_records": 10, "anonymized_records": 4, "excluded_records": 3, "excluded_erased": 2}
    # Applied again to what the file holds, it changes nothing: a re-run never counts twice.
    assert erasure_rules.anonymized_stats_after(after, window_rows_left=4) == after


def test_deduplicated_statistics_are_recounted_from_the_remaining_rows() -> None:
    day = dt.date(2025, 10, 25)
    remaining = pl.DataFrame({"partition": [day, day, day], "kept": [True, False, True]})
    after = erasure_rules.deduplicated_stats_after(
        {"exported_records": 3, "deduplicated_records": 2}, remaining, "2025-10-25"
    )
    assert after == {"exported_records": 2, "deduplicated_records": 1}
    empty = erasure_rules.deduplicated_stats_after(
        {"exported_records": 1, "deduplicated_records": 0}, remaining.clear(), "2025-10-25"
    )
    assert empty == {"exported_records": 0, "deduplicated_records": 0}


AWKWARD_ROWS = pl.DataFrame(
    {
        "analysis_hash": ["a" * 64, "b" * 64, "a" * 64, "c" * 64],
        "conditions": ['"red" cheeks\nline2,日本', "acne,oily", "", '\'=hyperlink("x")'],
        "helpful_rating": ["5", None, "3", "1"],
        "age_range": ["<18", "25-35", None, "25-35"],
    }
)

HEADER_AWKWARD = b"analysis_hash,conditions,helpful_rating,age_range\n"


def test_the_csv_loses_exactly_the_erased_rows_in_the_pipelines_format() -> None:
    data = csv_bytes(AWKWARD_ROWS)
    unchanged = erasure_rules.erase_from_csv(data, pl.Series(["f" * 64]), None)
    assert (unchanged.data, unchanged.rows, unchanged.removed, unchanged.suppressed) == (data, 4, 0, 0)

    erased = erasure_rules.erase_from_csv(data, pl.Series(["a" * 64]), None)

    assert erased.data == csv_bytes(AWKWARD_ROWS[[1, 3]])
    assert (erased.rows, erased.removed, erased.suppressed) == (2, 2, 0)


def test_the_csv_suppresses_groups_the_erasure_leaves_too_small() -> None:
    data = csv_bytes(AWKWARD_ROWS.with_columns(conditions=pl.lit("acne"), age_range=pl.lit("25-35")))
    erased = erasure_rules.erase_from_csv(data, pl.Series(["a" * 64]), erasure_rules.Suppression(3, ("age_range",)))
    assert (erased.rows, erased.removed, erased.suppressed) == (0, 2, 2)
    assert erased.data == HEADER_AWKWARD


COUNTS = {
    "total_feedback_records": 10,
    "anonymized_records": 6,
    "skipped_records": 1,
    "rejected_records": 1,
    "excluded_records": 2,
    "excluded_erased": 1,
    "exported_records": 4,
    "deduplicated_records": 2,
    "suppressed_records": 0,
}


def test_manifest_counts_after_erasure() -> None:
    after = erasure_rules.counts_after_erasure(COUNTS, removed=2, suppressed=1)
    assert after == {
        **COUNTS,
        "anonymized_records": 4,
        "excluded_records": 4,
        "excluded_erased": 3,
        "exported_records": 1,
        "suppressed_records": 1,
    }
    anonymized = {
        k: v for k, v in COUNTS.items() if k not in ("exported_records", "deduplicated_records", "suppressed_records")
    }
    deduplicated = {"exported_records": 4, "deduplicated_records": 2}
    assert erasure_rules.counts_from_stats(anonymized, deduplicated, rows=4, suppression=False) == COUNTS
    assert erasure_rules.counts_from_stats(anonymized, deduplicated, rows=3, suppression=True) == {
        **COUNTS,
        "exported_records": 3,
        "suppressed_records": 1,
    }
    # Statistics that describe another file than the CSV are not used.
    assert erasure_rules.counts_from_stats(anonymized, deduplicated, rows=3, suppression=False) is None
    assert erasure_rules.counts_from_stats(anonymized, deduplicated, rows=5, suppression=True) is None


def test_the_audit_entry_holds_counts_and_days_only(tmp_path: Path) -> None:
    summary = erasure.ErasureSummary(
        subjects=2,
        partitions=["2025-10-25"],
        rows_removed={"training_csv": 3},
        rows_removed_by_partition={"training_csv": {"2025-10-25": 3}},
        audit_entry_id="e1",
    )
    at = dt.datetime(2025, 10, 28, 3, 4, 5, tzinfo=dt.UTC)
    entry = erasure.audit_entry(at, "run-1", "k1", summary)
    assert entry == {
        "entry_id": "e1",
        "at": "2025-10-28T03:04:05Z",
        "run_id": "run-1",
        "hmac_key_id": "k1",
        "subjects": 2,
        "partitions": ["2025-10-25"],
        "rows_removed": {"training_csv": 3},
        "rows_removed_by_partition": {"training_csv": {"2025-10-25": 3}},
    }
    with pytest.raises(ValueError, match="dry run"):
        erasure.audit_entry(at, "run-1", "k1", dataclasses.replace(summary, dry_run=True, audit_entry_id=None))
    path = Path(erasure.append_audit_entry(storage_for(tmp_path), entry))
    erasure.append_audit_entry(storage_for(tmp_path), {**entry, "run_id": "run-2"})
    assert [json.loads(line)["run_id"] for line in path.read_text().splitlines()] == ["run-1", "run-2"]
    assert path.stat().st_mode & 0o777 == 0o600


def erase_pseudonym_a(
    storage: Path, export: Path, state: DedupeStateStore, run_id: str, *, dry_run: bool
) -> erasure.ErasureSummary:
    """Erase user ERASED, whose pseudonym in these hand-made files is 64 a's."""
    return erasure.erase(
        storage=storage_for(storage),
        exports=storage_for(export, EXPORT),
        state=state,
        user_ids=pl.Series([ERASED]),
        pseudonyms=pl.Series(["a" * 64]),
        csv_pseudonyms=lambda day: pl.Series(["a" * 64]),
        suppression=None,
        run_id=run_id,
        hmac_key_id="k1",
        dry_run=dry_run,
    )


def test_a_csv_whose_intermediates_are_gone_is_still_cleaned(tmp_path: Path) -> None:
    """Only the export dir holds the day: the CSV is cleaned and the manifest's own counts adjusted."""
    export, storage = tmp_path / "export", tmp_path / "storage"
    facts = {"partition": "2025-10-25", "run_id": "r", "counts": COUNTS}
    write_training_csv(storage_for(export, EXPORT), "2025-10-25", AWKWARD_ROWS, facts)
    before = file_hashes(tmp_path)

    state = DedupeStateStore(storage_for(storage), "exact", "k1")
    planned = erase_pseudonym_a(storage, export, state, "r2", dry_run=True)
    assert file_hashes(tmp_path) == before and not storage.exists()
    summary = erase_pseudonym_a(storage, export, state, "r2", dry_run=False)

    assert summary.partitions == ["2025-10-25"]
    assert summary.rows_removed == {**ZERO, "training_csv": 2}
    assert summary.rows_removed_by_partition == {**EMPTY_BY_DAY, "training_csv": {"2025-10-25": 2}}
    assert planned == dataclasses.replace(summary, dry_run=True, audit_entry_id=None)
    assert summary.audit_entry_id is not None and re.fullmatch("[0-9a-f]{32}", summary.audit_entry_id)
    csv_path = export / "feedback_training_20251025.csv"
    assert csv_path.read_bytes() == csv_bytes(AWKWARD_ROWS[[1, 3]])
    written = json.loads((export / "feedback_training_20251025.manifest.json").read_text())
    assert written["row_count"] == 2 and written["erased_after_export"] == 2 and written["run_id"] == "r"
    assert written["counts"] == erasure_rules.counts_after_erasure(COUNTS, removed=2, suppressed=0)
    assert [e["rows_removed"] for e in audit_entries(tmp_path)] == [summary.rows_removed]
    assert [e["entry_id"] for e in audit_entries(tmp_path)] == [summary.audit_entry_id]


def test_a_dry_run_leaves_a_dedupe_state_of_the_old_format_as_it_is(tmp_path: Path) -> None:
    """The store's lookup upgrades state files written before the key prefix existed: a dry run
    must not, and still counts the keys a real run removes."""
    storage = tmp_path / "storage"
    day = dt.date(2025, 10, 25)
    state = DedupeStateStore(storage_for(storage), "exact", "k1")
    on_disk(state.directory).mkdir(parents=True)
    keys = ["1" * 64, "2" * 64, "3" * 64]
    pl.DataFrame({"dedupe_key": keys, "partition": [day] * 3}).write_parquet(state_file(state, "2025-10-25"))
    PartitionStore(storage_for(storage)).write(
        "deduplicated_pairs",
        {
            "2025-10-25": pl.DataFrame(
                {"analysis_hash": ["a" * 64, "b" * 64, "a" * 64], "dedupe_key": keys, "partition": [day] * 3}
            )
        },
    )
    before = file_hashes(tmp_path)

    planned = erase_pseudonym_a(storage, tmp_path / "export", state, "r", dry_run=True)
    assert file_hashes(tmp_path) == before
    assert "key_prefix" not in pl.read_parquet_schema(state_file(state, "2025-10-25"))
    summary = erase_pseudonym_a(storage, tmp_path / "export", state, "r", dry_run=False)

    assert summary.rows_removed_by_partition == {
        **EMPTY_BY_DAY,
        "deduplicated_pairs": {"2025-10-25": 2},
        "seen_pair_hashes": {"2025-10-25": 2},
    }
    assert planned == dataclasses.replace(summary, dry_run=True, audit_entry_id=None)
    assert pl.read_parquet(state_file(state, "2025-10-25"))["dedupe_key"].to_list() == ["2" * 64]


def test_each_kind_of_erased_file_is_observed_on_an_asset_of_the_code_location() -> None:
    assert set(ASSET_OF_KIND) == set(erasure.ROW_KINDS)
    assert set(ASSET_OF_KIND.values()) <= defs.resolve_asset_graph().get_all_asset_keys()


def test_the_docs_give_the_run_config_that_erases() -> None:
    assert dg.config_from_yaml_strings([CONFIRM_YAML]) == CONFIRM
    ops = dg.validate_run_config(erase_subjects, CONFIRM)["ops"]
    assert ops["erase_requested_subjects"]["config"] == {"confirm": True}
    # What the Launchpad fills in is a dry run.
    assert dg.validate_run_config(erase_subjects, {})["ops"]["erase_requested_subjects"]["config"] == {"confirm": False}
    for doc in ("README.md", "docs/privacy.md"):
        assert CONFIRM_YAML in (REPO_ROOT / doc).read_text(encoding="utf-8"), doc


def test_a_dry_run_for_a_subject_never_exported_says_so(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """ "Would remove 0 rows" alone read like a failure to find the subject's rows."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_erasure_source(url)
    settings = settings_for(tmp_path, url)
    assert materialize(instance, settings, FIRST, LAST).success
    never_exported = 987_654
    request_erasure(url, never_exported)

    dry = erase(instance, settings, confirm=False)

    planned = output_metadata(dry)
    assert planned["subjects"] == 1 and planned["subjects_in_no_written_day"] == 1
    assert sum(int(str(planned[f"rows_removed_{kind}"])) for kind in erasure.ROW_KINDS) == 0
    messages = log_messages(instance, dry.run_id)
    assert any(
        "1 subject(s) in erasure_requests (1 of them in no written day: never exported, or already erased)" in m
        for m in messages
    ), messages
    assert not [m for m in messages if str(never_exported) in m]
