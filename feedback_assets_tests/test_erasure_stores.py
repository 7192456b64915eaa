"""Each store's own erasure on literal frames: the partition store, the dedupe state, the CSV exports
and the record of subjects remove given subjects from their own files and report counts; files
holding none of them are not rewritten; a recording sink writes nothing and reports the same."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import polars as pl
from polars.testing import assert_frame_equal

from feedback_assets import erasure
from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.erasure_rules import Suppression, counts_after_erasure, is_erased
from feedback_assets.export_store import TrainingExports
from feedback_assets.storage import EXPORT, PartitionStore, storage_for
from feedback_assets.storage.base import Recording
from feedback_assets.storage.partitions import Rewritten
from feedback_assets.subjects import SubjectRecord
from feedback_assets.training_csv import csv_bytes, write_training_csv
from feedback_assets.typed_export import typed_rows, write_typed_parquet
from feedback_assets_tests.paths import index_file, state_file

A, B, C, D = "a" * 64, "b" * 64, "c" * 64, "d" * 64
DAY1, DAY2, DAY3 = "2025-10-24", "2025-10-25", "2025-10-26"
COUNTS = {
    "source_records": 4,
    "anonymized_records": 3,
    "excluded_records": 1,
    "excluded_erased": 0,
    "exported_records": 3,
    "suppressed_records": 0,
}


def identities(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under `root` with its inode, modification time and bytes: an atomic rewrite, even
    to the same bytes, gives it a new inode."""
    return {
        str(path.relative_to(root)): (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def changed(before: dict[str, tuple[int, int, bytes]], after: dict[str, tuple[int, int, bytes]]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def pairs(day: str, hashes: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "analysis_hash": hashes,
            "dedupe_key": [f"{h[0]}{i}".ljust(64, "0") for i, h in enumerate(hashes)],
            "is_history": [False] * len(hashes),
            "partition": [dt.date.fromisoformat(day)] * len(hashes),
        }
    )


Result = TypeVar("Result")


def dry_then_real(root: Path, erase: Callable[[Recording | None], Result]) -> tuple[Result, Result, Recording]:
    """`erase` with a recording sink, then for real; the recording run must change nothing."""
    before = identities(root)
    recording = Recording()
    planned = erase(recording)
    assert identities(root) == before
    return planned, erase(None), recording


def test_the_partition_store_erases_only_from_files_holding_a_subject(tmp_path: Path) -> None:
    store = PartitionStore(storage_for(tmp_path))
    store.write("anonymized_pairs", {DAY1: pairs(DAY1, [A, B, A]), DAY2: pairs(DAY2, [B, C]), DAY3: pairs(DAY3, [A])})
    store.write_stats("anonymized_pairs", {DAY1: {"anonymized_records": 3, "excluded_records": 0}})
    before = identities(tmp_path)

    def stats_after(day: str, stats: Mapping[str, int], remaining: pl.DataFrame) -> dict[str, int]:
        return {**stats, "anonymized_records": remaining.height}

    def erase(sink: Recording | None) -> Rewritten:
        on = PartitionStore(storage_for(tmp_path), sink) if sink is not None else store
        return on.erase("anonymized_pairs", is_erased("analysis_hash", pl.Series([A])), None, stats_after)

    planned, done, recording = dry_then_real(tmp_path, erase)

    assert planned == done
    assert done.removed == {DAY1: 2, DAY3: 1}
    assert done.stats == {DAY1: {"anonymized_records": 1, "excluded_records": 0}}
    rewritten = changed(before, identities(tmp_path))
    assert rewritten == {
        f"anonymized_pairs/{DAY1}.parquet",
        f"anonymized_pairs/{DAY1}.stats.json",
        f"anonymized_pairs/{DAY3}.parquet",
    }
    # The recording names exactly the files the real run rewrote.
    assert {str(Path(p).relative_to(tmp_path)) for p in recording.written} == rewritten
    assert pl.read_parquet(tmp_path / "anonymized_pairs" / f"{DAY1}.parquet")["analysis_hash"].to_list() == [B]
    assert pl.read_parquet(tmp_path / "anonymized_pairs" / f"{DAY3}.parquet").is_empty()


def test_the_partition_store_looks_only_at_the_days_it_is_given(tmp_path: Path) -> None:
    store = PartitionStore(storage_for(tmp_path))
    store.write("raw_feedback", {DAY1: pl.DataFrame({"user_id": [1, 2]}), DAY2: pl.DataFrame({"user_id": [1, None]})})
    # Not a Parquet file: a day outside `days` is not even opened.
    (tmp_path / "raw_feedback" / f"{DAY3}.parquet").write_bytes(b"garbage")

    done = store.erase("raw_feedback", is_erased("user_id", pl.Series([1])), days={DAY2})

    assert done.removed == {DAY2: 1} and done.stats == {}
    # A null id is nobody's: it stays.
    assert pl.read_parquet(tmp_path / "raw_feedback" / f"{DAY2}.parquet")["user_id"].to_list() == [None]
    assert pl.read_parquet(tmp_path / "raw_feedback" / f"{DAY1}.parquet")["user_id"].to_list() == [1, 2]


def owned(day: str, keys: list[str]) -> dict[str, pl.DataFrame]:
    return {day: pl.DataFrame({"dedupe_key": keys, "partition": [dt.date.fromisoformat(day)] * len(keys)})}


def test_the_dedupe_state_erases_keys_from_the_days_that_own_them(tmp_path: Path) -> None:
    state = DedupeStateStore(storage_for(tmp_path), "exact", "k1", index_stale_days=1000)
    erased, kept, other = "9" * 64, "2" * 64, "3" * 64
    state.write({**owned(DAY1, [erased, kept]), **owned(DAY2, [other])})
    state.rebuild_index()
    before = identities(tmp_path)

    planned, done, recording = dry_then_real(
        tmp_path, lambda sink: (state.through(sink) if sink is not None else state).erase(pl.Series([erased, erased]))
    )

    assert planned == done == {DAY1: 1}
    assert changed(before, identities(tmp_path)) == {
        str(state_file(state, DAY1).relative_to(tmp_path)),
        str(index_file(state).relative_to(tmp_path)),
    }
    assert {str(Path(p).relative_to(tmp_path)) for p in recording.written} == changed(before, identities(tmp_path))
    assert pl.read_parquet(state_file(state, DAY1))["dedupe_key"].to_list() == [kept]
    assert int("9" * 15, 16) not in pl.read_parquet(index_file(state))["key_prefix"].drop_nulls().to_list()
    assert state.erase(pl.Series(["4" * 64])) == {} and state.erase(pl.Series([], dtype=pl.String)) == {}


def test_the_exports_erase_only_from_csvs_holding_a_subject_and_restate_their_manifests(tmp_path: Path) -> None:
    exports = storage_for(tmp_path, EXPORT)
    rows = pl.DataFrame({"analysis_hash": [A, B, C], "rating": ["1", "2", "3"]})
    for day in (DAY1, DAY2):
        write_training_csv(
            exports,
            day,
            rows if day == DAY1 else rows.filter(pl.col("analysis_hash") != A),
            {
                "partition": day,
                "counts": COUNTS,
            },
        )
    before = identities(tmp_path)

    def erase(sink: Recording | None) -> dict[str, int]:
        on = TrainingExports(exports, sink) if sink is not None else TrainingExports(exports)
        return on.erase(lambda day: pl.Series([A]), None, lambda day, rows: None)

    planned, done, recording = dry_then_real(tmp_path, erase)

    assert planned == done == {DAY1: 1}
    rewritten = changed(before, identities(tmp_path))
    assert rewritten == {"feedback_training_20251024.csv", "feedback_training_20251024.manifest.json"}
    assert {Path(p).name for p in recording.written} == rewritten
    assert (tmp_path / "feedback_training_20251024.csv").read_bytes() == csv_bytes(rows[1:])
    manifest = json.loads((tmp_path / "feedback_training_20251024.manifest.json").read_text())
    assert manifest["row_count"] == 2 and manifest["erased_after_export"] == 1
    assert manifest["counts"] == counts_after_erasure(COUNTS, removed=1, suppressed=0)


def test_the_exports_restate_a_day_whose_statistics_changed_without_rewriting_its_csv(tmp_path: Path) -> None:
    exports = storage_for(tmp_path, EXPORT)
    rows = pl.DataFrame({"analysis_hash": [B, C], "rating": ["1", "2"]})
    write_training_csv(exports, DAY2, rows, {"partition": DAY2, "counts": COUNTS})
    before = identities(tmp_path)
    restated = {**COUNTS, "exported_records": 2, "excluded_records": 2, "excluded_erased": 1}

    done = TrainingExports(exports).erase(lambda day: pl.Series([A]), None, lambda day, n: restated, restated={DAY2})

    assert done == {DAY2: 0}
    assert changed(before, identities(tmp_path)) == {"feedback_training_20251025.manifest.json"}
    assert json.loads((tmp_path / "feedback_training_20251025.manifest.json").read_text())["counts"] == restated


def test_the_record_of_subjects_forgets_the_erased_users_of_the_days_given(tmp_path: Path) -> None:
    record = SubjectRecord(storage_for(tmp_path))
    held = pl.DataFrame({"partition": [DAY1, DAY1, DAY2], "user_id": [1, 2, 1], "image_url": [True, True, False]})
    record.replace(DAY1, held.filter(pl.col("partition") == DAY1))
    record.replace(DAY2, held.filter(pl.col("partition") == DAY2))
    gone = pl.DataFrame({"partition": [DAY1], "user_id": [1]})
    blanked = pl.DataFrame({"partition": [DAY1], "user_id": [2]})

    planned, done, _ = dry_then_real(
        tmp_path,
        lambda sink: SubjectRecord(storage_for(tmp_path), *([sink] if sink else [])).erase(held, gone, blanked, {DAY1}),
    )

    assert planned == done == {DAY1: 1}
    assert record.read().sort("partition", "user_id").to_dicts() == [
        {"user_id": 2, "image_url": False, "partition": DAY1},
        {"user_id": 1, "image_url": False, "partition": DAY2},
    ]


def test_a_dry_erasure_writes_nothing_and_reports_what_the_erasure_then_removes(tmp_path: Path) -> None:
    storage, exports = storage_for(tmp_path / "storage"), storage_for(tmp_path / "export", EXPORT)
    store = PartitionStore(storage)
    deduplicated = {DAY1: pairs(DAY1, [A, B]), DAY2: pairs(DAY2, [B, C]), DAY3: pairs(DAY3, [C])}
    store.write("deduplicated_pairs", deduplicated)
    store.write("anonymized_pairs", {**deduplicated, DAY2: pairs(DAY2, [A, B, C])})
    store.write_stats(
        "anonymized_pairs", {DAY2: {"anonymized_records": 3, "excluded_records": 0, "excluded_erased": 0}}
    )
    store.write("raw_feedback", {day: pl.DataFrame({"user_id": [1, 2]}) for day in (DAY1, DAY2, DAY3)})
    state = DedupeStateStore(storage, "exact", "k1")
    # A's key of DAY1 is owned by DAY3's state, as a duplicate's key is by the day that exported it first.
    a_key = deduplicated[DAY1]["dedupe_key"][0]
    state.write({**owned(DAY1, [deduplicated[DAY1]["dedupe_key"][1]]), **owned(DAY3, [a_key, "5" * 64])})
    state.rebuild_index()
    for day in (DAY1, DAY2, DAY3):
        hashes = [B, C] if day == DAY3 else [A, B]
        write_training_csv(exports, day, pl.DataFrame({"analysis_hash": hashes}), {"counts": COUNTS})

    def erase(dry_run: bool) -> erasure.ErasureSummary:
        return erasure.erase(
            storage=storage,
            exports=exports,
            state=state,
            user_ids=pl.Series([1]),
            pseudonyms=pl.Series([A]),
            csv_pseudonyms=lambda day: pl.Series([A]),
            suppression=None,
            run_id="r",
            hmac_key_id="k1",
            dry_run=dry_run,
            days={DAY1, DAY2},
        )

    before = identities(tmp_path)
    planned = erase(dry_run=True)
    assert identities(tmp_path) == before
    done = erase(dry_run=False)

    assert planned == dataclasses.replace(done, dry_run=True, audit_entry_id=None)
    assert done.rows_removed_by_partition == {
        "training_csv": {DAY1: 1, DAY2: 1},
        "raw_feedback": {DAY1: 1, DAY2: 1},
        "anonymized_pairs": {DAY1: 1, DAY2: 1},
        "deduplicated_pairs": {DAY1: 1},
        "seen_pair_hashes": {DAY3: 1},
    }
    assert pl.read_parquet(state_file(state, DAY3))["dedupe_key"].to_list() == ["5" * 64]
    assert json.loads((tmp_path / "storage/anonymized_pairs" / f"{DAY2}.stats.json").read_text()) == {
        "anonymized_records": 2,
        "excluded_records": 1,
        "excluded_erased": 1,
    }
    # Of DAY3, whose files hold no row of A, only the state file owning A's key is rewritten: its CSV
    # is read (its statistics may have changed) and left as it is, its other files not even opened.
    assert {name for name in changed(before, identities(tmp_path)) if DAY3 in name or "20251026" in name} == {
        str(state_file(state, DAY3).relative_to(tmp_path))
    }


def typed_day(hashes: list[str], ages: list[str]) -> pl.DataFrame:
    """Typed rows of the training CSV's columns, one per pseudonym, with the given age ranges."""
    n = len(hashes)
    cells = pl.DataFrame(
        {
            "analysis_hash": hashes,
            "recommendation_id": [f"rec{i}" for i in range(n)],
            "helpful_rating": ["4"] * n,
            "product_satisfaction": ["3"] * n,
            "routine_completion_pct": ["50"] * n,
            "would_recommend": ["true"] * n,
            "conditions": [f"=c{i}" for i in range(n)],
            "rules_applied": ["r"] * n,
            "timeframe": ["4w"] * n,
            "age_range": ages,
            "feedback_created_at": ["2025-10-24T10:00:00.000000Z"] * n,
            "analysis_created_at": ["2025-10-23T10:00:00.000000Z"] * n,
        }
    )
    return typed_rows(cells)


def test_the_exports_erase_from_the_typed_files_holding_a_subject_and_suppress_over_every_split(
    tmp_path: Path,
) -> None:
    """B shares its age range with the erased A only, in another split: suppression takes it out of
    that split's file too; the split file that loses no row is not rewritten."""
    exports = storage_for(tmp_path, EXPORT)
    splits = {
        "train": typed_day([A, C], ["25-34", "35-44"]),
        "validation": typed_day([B], ["25-34"]),
        "test": typed_day([D], ["35-44"]),
    }
    listed = []
    for split, frame in splits.items():
        name = f"parquet/{split}/feedback_training_20251024.parquet"
        write_typed_parquet(exports, name, frame)
        listed.append({"split": split, "path": name, "rows": frame.height})
    manifest = {
        "csv": None,
        "row_count": 4,
        "sha256": None,
        "counts": {**COUNTS, "source_records": 5, "anonymized_records": 4, "exported_records": 4},
        "split_counts": {"train": 2, "validation": 1, "test": 1},
        "parquet": listed,
    }
    (tmp_path / "feedback_training_20251024.manifest.json").write_text(json.dumps(manifest))
    before = identities(tmp_path)

    def erase(sink: Recording | None) -> dict[str, int]:
        on = TrainingExports(exports, sink) if sink is not None else TrainingExports(exports)
        return on.erase(lambda day: pl.Series([A]), Suppression(2, ("age_range",)), lambda day, rows: None)

    planned, done, recording = dry_then_real(tmp_path, erase)

    assert planned == done == {DAY1: 1}
    rewritten = changed(before, identities(tmp_path))
    assert rewritten == {
        "parquet/train/feedback_training_20251024.parquet",
        "parquet/validation/feedback_training_20251024.parquet",
        "feedback_training_20251024.manifest.json",
    }
    assert {str(Path(p).relative_to(tmp_path)) for p in recording.written} == rewritten
    train = pl.read_parquet(tmp_path / "parquet/train/feedback_training_20251024.parquet")
    assert_frame_equal(train, splits["train"].filter(pl.col("analysis_hash") == C))
    assert pl.read_parquet(tmp_path / "parquet/validation/feedback_training_20251024.parquet").is_empty()
    restated = json.loads((tmp_path / "feedback_training_20251024.manifest.json").read_text())
    assert restated["split_counts"] == {"train": 1, "validation": 0, "test": 1}
    assert [entry["rows"] for entry in restated["parquet"]] == [1, 0, 1]
    assert restated["row_count"] == 2 and restated["erased_after_export"] == 1
    assert restated["counts"] == counts_after_erasure(manifest["counts"], removed=1, suppressed=1)  # type: ignore[arg-type]
