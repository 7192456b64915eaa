"""GDPR erasure (Article 17): removing the users of `erasure_requests` from everything already written.

Pure functions on frames, statistics and bytes, and `erase`, which applies them to the storage and
export directories and appends the audit entry. No Dagster here: the job in `erasure_job.py` only
validates the settings, reads the requests and calls `erase`.

A file is rewritten only when its content changes, and atomically. The order of
the writes makes a re-run after a crash finish the work without counting anything twice: the dedupe
state before the partition its keys are read from, statistics before the partition they are
recomputed from.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from feedback_assets import k_anonymity, transforms
from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.files import (
    EXPORT_FILE_MODE,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    ensure_dir,
    reading,
    rematerialize_command,
    write_bytes_atomically,
)
from feedback_assets.storage import PartitionStore
from feedback_assets.training_csv import csv_bytes, manifest_bytes, manifest_path, training_files

AUDIT_FILE = Path("audit") / "erasures.jsonl"
ROW_KINDS = ("training_csv", "raw_feedback", "anonymized_pairs", "deduplicated_pairs", "seen_pair_hashes")
PARTITION_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.parquet")


@dataclass(frozen=True)
class CsvErasure:
    """A training CSV after erasure: its new bytes and what changed."""

    data: bytes
    rows: int
    removed: int
    suppressed: int


@dataclass(frozen=True)
class Suppression:
    """FEEDBACK_K_ANONYMITY_SUPPRESS in effect: groups below `threshold` over these columns are dropped."""

    threshold: int
    quasi_identifiers: tuple[str, ...]


# The pseudonyms of the erased users as a day's file spells them (they differ by day with a
# pseudonym scope other than `stable`).
CsvPseudonyms = Callable[[str], pl.Series]


@dataclass(frozen=True)
class ErasureSummary:
    """What one erasure run did: counts and days only, never an id or a pseudonym."""

    subjects: int
    partitions: list[str]
    rows_removed: dict[str, int]


def is_erased(column: str, erased: pl.Series) -> pl.Expr:
    """True where `column` holds one of `erased`; false, not null, where the column is null."""
    return pl.col(column).is_in(erased.implode()).fill_null(False)


def without_erased(frame: pl.DataFrame, column: str, erased: pl.Series) -> pl.DataFrame:
    """The rows of `frame` whose `column` is not among `erased` (rows with a null there stay)."""
    return frame.filter(~is_erased(column, erased))


def anonymized_stats_after(stats: Mapping[str, int], window_rows_left: int) -> dict[str, int]:
    """anonymized_pairs statistics once `window_rows_left` eligible rows remain; the others are excluded (erased)."""
    # Derived from what the file still holds rather than from what this run removed, so a re-run
    # after a crash between the statistics and the file does not count the same rows twice.
    gone = stats["anonymized_records"] - window_rows_left
    return {
        **stats,
        "anonymized_records": window_rows_left,
        "excluded_records": stats["excluded_records"] + gone,
        "excluded_erased": stats["excluded_erased"] + gone,
    }


def deduplicated_stats_after(stats: Mapping[str, int], remaining: pl.DataFrame, partition: str) -> dict[str, int]:
    """deduplicated_pairs statistics recomputed from the rows of `partition` that remain."""
    return {**stats, **transforms.dedupe_counts(remaining, [partition])[partition]}


def erase_from_csv(data: bytes, pseudonyms: pl.Series, suppression: Suppression | None) -> CsvErasure:
    """The training CSV without the rows of `pseudonyms`, byte for byte as the pipeline writes it.

    The file is its own source: it only ever loses rows, whatever the intermediates hold now. With
    `suppression`, groups that the erasure leaves too small are
    suppressed too, which gives the same rows as suppressing the day's rows afresh.
    """
    rows = pl.read_csv(io.BytesIO(data), infer_schema=False)
    kept = without_erased(rows, "analysis_hash", pseudonyms)
    removed = rows.height - kept.height
    suppressed = 0
    if suppression is not None:
        kept, suppressed = k_anonymity.suppress_small_groups(kept, suppression.threshold, suppression.quasi_identifiers)
    return CsvErasure(csv_bytes(kept), kept.height, removed, suppressed)


def counts_from_stats(
    anonymized: Mapping[str, int], deduplicated: Mapping[str, int], rows: int, suppression: bool
) -> dict[str, int] | None:
    """The counts training_csv reports for a day of `rows` exported rows, or None if the statistics
    do not describe such a file."""
    suppressed = deduplicated["exported_records"] - rows
    counts = {**anonymized, **deduplicated, "exported_records": rows, "suppressed_records": suppressed}
    if suppressed < 0 or (suppressed and not suppression) or transforms.unaccounted_rows(counts):
        return None
    return counts


def counts_after_erasure(before: Mapping[str, int], removed: int, suppressed: int) -> dict[str, int]:
    """A manifest's counts once `removed` exported rows are erased and `suppressed` more are suppressed."""
    return {
        **before,
        "exported_records": before["exported_records"] - removed - suppressed,
        "suppressed_records": before.get("suppressed_records", 0) + suppressed,
        "anonymized_records": before["anonymized_records"] - removed,
        "excluded_records": before["excluded_records"] + removed,
        "excluded_erased": before["excluded_erased"] + removed,
    }


def audit_entry(at: dt.datetime, run_id: str, hmac_key_id: str, summary: ErasureSummary) -> dict[str, object]:
    """The audit record of one erasure run: when, which days, how many rows; never an id."""
    return {
        "at": at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run_id": run_id,
        "hmac_key_id": hmac_key_id,
        "subjects": summary.subjects,
        "partitions": summary.partitions,
        "rows_removed": summary.rows_removed,
    }


def _partition_files(directory: Path) -> Iterator[tuple[str, Path]]:
    # Matching the whole name skips temporary files and the statistics beside the partitions.
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            match = PARTITION_FILE.fullmatch(path.name)
            if match:
                yield match.group(1), path


def _repair(asset: str, day: str) -> str:
    return f"rebuild it with {rematerialize_command(asset, day)}, then run erase_subjects again"


def _split(path: Path, column: str, erased: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The partition's remaining and erased rows, or None when it holds no erased row."""
    with reading(path, _repair(path.parent.name, path.stem)):
        hits = pl.scan_parquet(path).select(is_erased(column, erased).sum()).collect().item()
        if not hits:
            return None
        frame = pl.read_parquet(path)
    mask = is_erased(column, erased)
    return frame.filter(~mask), frame.filter(mask)


def _read_stats(store: PartitionStore, asset: str, partition: str) -> dict[str, int] | None:
    return store.read_stats(asset, partition) if store.stats_path(asset, partition).is_file() else None


def _erase_state_keys(state: DedupeStateStore, keys: pl.Series, removed: dict[str, int]) -> set[str]:
    """Remove `keys` from whichever day's state file holds them; returns those days."""
    owned = state.owners(keys.unique(), excluding=())
    days: set[str] = set()
    for (partition,), found in owned.partition_by("partition", as_dict=True).items():
        day = partition.isoformat()
        current = pl.read_parquet(state.path(day))
        # The file stays even when empty: a missing file means lost state to the next run.
        state.write({day: without_erased(current, "dedupe_key", found["dedupe_key"])})
        days.add(day)
    removed["seen_pair_hashes"] += owned.height
    return days


def _erase_deduplicated(
    store: PartitionStore, state: DedupeStateStore, pseudonyms: pl.Series, removed: dict[str, int]
) -> set[str]:
    """Clean deduplicated_pairs and the dedupe state; returns the days changed."""
    splits: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    for day, path in _partition_files(store.root / "deduplicated_pairs"):
        split = _split(path, "analysis_hash", pseudonyms)
        if split is not None:
            splits[day] = split
    if not splits:
        return set()
    # Every erased row's key, kept or not: a duplicate's key may be owned by another day's file.
    keys = pl.concat([gone["dedupe_key"] for _, gone in splits.values()])
    state_days = _erase_state_keys(state, keys, removed)
    for day, (remaining, gone) in splits.items():
        stats = _read_stats(store, "deduplicated_pairs", day)
        if stats is not None:
            store.write_stats("deduplicated_pairs", {day: deduplicated_stats_after(stats, remaining, day)})
        store.write("deduplicated_pairs", {day: remaining})
        removed["deduplicated_pairs"] += gone.height
    return set(splits) | state_days


def _erase_anonymized(store: PartitionStore, pseudonyms: pl.Series, removed: dict[str, int]) -> set[str]:
    """Clean anonymized_pairs, counting its erased window rows as excluded; returns the days changed."""
    touched: set[str] = set()
    for day, path in _partition_files(store.root / "anonymized_pairs"):
        split = _split(path, "analysis_hash", pseudonyms)
        if split is None:
            continue
        remaining, gone = split
        stats = _read_stats(store, "anonymized_pairs", day)
        if stats is not None:
            window_rows = remaining.filter(~pl.col("is_history")).height
            store.write_stats("anonymized_pairs", {day: anonymized_stats_after(stats, window_rows)})
        store.write("anonymized_pairs", {day: remaining})
        removed["anonymized_pairs"] += gone.height
        touched.add(day)
    return touched


def _erase_raw(store: PartitionStore, user_ids: pl.Series, removed: dict[str, int]) -> set[str]:
    """Clean raw_feedback, history rows included; returns the days changed."""
    touched: set[str] = set()
    for day, path in _partition_files(store.root / "raw_feedback"):
        split = _split(path, "user_id", user_ids)
        if split is not None:
            store.write("raw_feedback", {day: split[0]})
            removed["raw_feedback"] += split[1].height
            touched.add(day)
    return touched


def _counts_from_stored_stats(store: PartitionStore, day: str, rows: int, suppression: bool) -> dict[str, int] | None:
    anonymized = _read_stats(store, "anonymized_pairs", day)
    deduplicated = _read_stats(store, "deduplicated_pairs", day)
    if anonymized is None or deduplicated is None:
        return None
    return counts_from_stats(anonymized, deduplicated, rows, suppression)


def _rewritten_manifest(
    old: Mapping[str, object], csv_name: str, erasure: CsvErasure, stats_counts: dict[str, int] | None
) -> bytes | None:
    """The manifest for the erased CSV, or None when nothing in it changes."""
    counts = stats_counts
    if counts is None and isinstance(old.get("counts"), dict):
        # The intermediates are gone or describe another file: adjust the counts the manifest had.
        counts = counts_after_erasure(old["counts"], erasure.removed, erasure.suppressed)  # type: ignore[arg-type]
    if not erasure.removed and counts == old.get("counts"):
        return None
    facts = {k: v for k, v in old.items() if k not in ("csv", "row_count", "sha256")}
    if counts is not None:
        facts["counts"] = counts
    if erasure.removed:
        previously = old.get("erased_after_export", 0)
        facts["erased_after_export"] = (previously if isinstance(previously, int) else 0) + erasure.removed
    return manifest_bytes(csv_name, erasure.data, erasure.rows, facts)


def _erase_csvs(
    export_dir: Path,
    store: PartitionStore,
    pseudonyms: CsvPseudonyms,
    suppression: Suppression | None,
    restated: set[str],
    removed: dict[str, int],
) -> set[str]:
    """Clean every CSV holding an erased row, and rewrite its manifest and those of the `restated`
    days, whose statistics changed although their CSV may not have (an erased duplicate)."""
    touched: set[str] = set()
    for day, path in training_files(export_dir).items():
        data = path.read_bytes()
        with reading(path, _repair("training_csv", day)):
            erasure = erase_from_csv(data, pseudonyms(day), suppression)
        if erasure.removed:
            write_bytes_atomically(path, erasure.data, EXPORT_FILE_MODE)
            removed["training_csv"] += erasure.removed
            touched.add(day)
        elif day in restated:
            # The file stays as it is, whatever suppression would make of it now; only its counts change.
            erasure = CsvErasure(data, erasure.rows + erasure.suppressed, removed=0, suppressed=0)
        else:
            continue
        manifest = manifest_path(export_dir, day)
        if manifest.is_file():
            stats_counts = _counts_from_stored_stats(store, day, erasure.rows, suppression is not None)
            with reading(manifest, _repair("training_csv", day)):
                written = json.loads(manifest.read_text())
            rewritten = _rewritten_manifest(written, path.name, erasure, stats_counts)
            if rewritten is not None:
                write_bytes_atomically(manifest, rewritten, EXPORT_FILE_MODE)
    return touched


def append_audit_entry(storage_dir: Path, entry: Mapping[str, object]) -> Path:
    """Append one JSON line to the audit log, rewriting the file atomically."""
    path = storage_dir / AUDIT_FILE
    ensure_dir(path.parent, PRIVATE_DIR_MODE)
    existing = path.read_bytes() if path.is_file() else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    write_bytes_atomically(path, existing + json.dumps(entry, sort_keys=True).encode() + b"\n", PRIVATE_FILE_MODE)
    return path


def erase(
    *,
    storage_dir: Path,
    export_dir: Path,
    state: DedupeStateStore,
    user_ids: pl.Series,
    pseudonyms: pl.Series,
    csv_pseudonyms: CsvPseudonyms,
    suppression: Suppression | None,
    run_id: str,
    hmac_key_id: str,
    now: dt.datetime | None = None,
) -> ErasureSummary:
    """Remove the users' rows from every stored partition, the dedupe state and every CSV, then audit it.

    `pseudonyms` are the users' stable pseudonyms, which the intermediates and the state hold;
    `csv_pseudonyms(day)` gives them as that day's file spells them.
    """
    removed = dict.fromkeys(ROW_KINDS, 0)
    touched: set[str] = set()
    if not user_ids.is_empty():
        store = PartitionStore(storage_dir)
        # Intermediates first: the manifests' counts are read from the updated statistics.
        restated = _erase_deduplicated(store, state, pseudonyms, removed)
        restated |= _erase_anonymized(store, pseudonyms, removed)
        touched = restated | _erase_raw(store, user_ids, removed)
        touched |= _erase_csvs(export_dir, store, csv_pseudonyms, suppression, restated, removed)
    summary = ErasureSummary(subjects=user_ids.n_unique(), partitions=sorted(touched), rows_removed=removed)
    entry = audit_entry(now or dt.datetime.now(dt.UTC), run_id, hmac_key_id, summary)
    append_audit_entry(storage_dir, entry)
    return summary
