"""GDPR erasure (Article 17): removing the users of `erasure_requests` from everything already written.

`erase` has each store remove the users from its own files, by the rules of erasure_rules.py: the
partitions (`PartitionStore.erase`), the dedupe state and its index (`DedupeStateStore.erase`), the
CSVs, typed Parquet files and manifests, then the card and release (`TrainingExports.erase`); then it
appends the audit entry. A dry run is the same code with a recording sink: what it reports is what a
real run on the same files removes.
No Dagster here: the job in `defs/erasure.py` only validates the settings, reads the requests, calls
`erase` and reports its summary.

A file is rewritten only when it holds a subject's row (the others are scanned for one column), and
atomically. The order of the writes makes a re-run after a crash finish the work without counting
anything twice: the dedupe state before the partition its keys are read from, statistics before the
partition they are recomputed from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import polars as pl

from feedback_assets.asset_names import AssetName
from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.erasure_rules import (
    CsvPseudonyms,
    Suppression,
    anonymized_stats_after,
    counts_from_stats,
    deduplicated_stats_after,
    is_erased,
)
from feedback_assets.export_store import TrainingExports
from feedback_assets.settings import ExportSettings
from feedback_assets.storage import PartitionStore, Storage
from feedback_assets.storage.base import WRITES, Recording, Sink, write_bytes

AUDIT_DIR = "audit"
AUDIT_FILE = f"{AUDIT_DIR}/erasures.jsonl"
ROW_KINDS = (
    AssetName.TRAINING_CSV,
    AssetName.RAW_FEEDBACK,
    AssetName.ANONYMIZED_PAIRS,
    AssetName.DEDUPLICATED_PAIRS,
    AssetName.SEEN_PAIR_HASHES,
)
# Why rows leave the files (docs/privacy.md): the audit log records each cause in entries of its own.
ERASURE_REQUEST = "erasure_request"
CONSENT_WITHDRAWN = "consent_withdrawn"
IMAGE_CONSENT_WITHDRAWN = "image_consent_withdrawn"


@dataclass(frozen=True)
class ErasureSummary:
    """What one erasure run did, or in a dry run would do: counts and days only, never an id or a
    pseudonym of a subject."""

    subjects: int
    partitions: list[str]
    rows_removed: dict[str, int]
    # Kind -> day -> rows removed, for every day whose files of that kind change; a day whose
    # manifest alone is restated counts 0 training_csv rows.
    rows_removed_by_partition: dict[str, dict[str, int]] = field(default_factory=dict)
    dry_run: bool = False
    # The id of the audit entry the run appended; None for a dry run, which appends none.
    audit_entry_id: str | None = None


def audit_entry(
    at: dt.datetime, run_id: str, hmac_key_id: str, summary: ErasureSummary, cause: str | None = None
) -> dict[str, object]:
    """The audit record of one erasure run: its own id, when, which days, how many rows, and with
    `cause` why (entries written before causes were recorded have none: erasure requests); never a
    subject's id."""
    if summary.audit_entry_id is None:
        raise ValueError("a dry run's summary has no audit entry id: a dry run is not audited")
    return {
        **({"cause": cause} if cause is not None else {}),
        "entry_id": summary.audit_entry_id,
        "at": at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "run_id": run_id,
        "hmac_key_id": hmac_key_id,
        "subjects": summary.subjects,
        "partitions": summary.partitions,
        "rows_removed": summary.rows_removed,
        "rows_removed_by_partition": summary.rows_removed_by_partition,
    }


def _anonymized_stats(day: str, stats: Mapping[str, int], remaining: pl.DataFrame) -> dict[str, int]:
    # Its erased window rows count as excluded.
    return anonymized_stats_after(stats, remaining.filter(~pl.col("is_history")).height)


def _deduplicated_stats(day: str, stats: Mapping[str, int], remaining: pl.DataFrame) -> dict[str, int]:
    return deduplicated_stats_after(stats, remaining, day)


def _remove(
    sink: Sink,
    storage: Storage,
    exports: Storage,
    state: DedupeStateStore,
    subjects: tuple[pl.Series, pl.Series, CsvPseudonyms],
    suppression: Suppression | None,
    days: Collection[str] | None,
    settings: ExportSettings | None,
) -> dict[AssetName, dict[str, int]]:
    """Have each store remove the subjects (user ids, pseudonyms, pseudonyms by day) from its files of
    `days` (None: every day); rows removed by kind and day."""
    user_ids, pseudonyms, csv_pseudonyms = subjects
    store, mine = PartitionStore(storage, sink), is_erased("analysis_hash", pseudonyms)
    # Intermediates first: the manifests' counts are read from their updated statistics.
    # Every erased row's key, kept or not: a duplicate's key may be owned by another day's file. Read
    # apart from the rewrite below, which then holds one day at a time, not every day's rows at once.
    keys = store.selected(AssetName.DEDUPLICATED_PAIRS, mine, "dedupe_key", days)
    seen = state.through(sink).erase(keys) if keys is not None else {}
    deduplicated = store.erase(AssetName.DEDUPLICATED_PAIRS, mine, days, _deduplicated_stats)
    anonymized = store.erase(AssetName.ANONYMIZED_PAIRS, mine, days, _anonymized_stats)
    raw = store.erase(AssetName.RAW_FEEDBACK, is_erased("user_id", user_ids), days)

    def stats(rewritten: dict[str, dict[str, int]], asset: AssetName, day: str) -> dict[str, int] | None:
        if day in rewritten:
            return rewritten[day]
        return store.read_stats(asset, day) if store.has_stats(asset, day) else None

    def counts_of(day: str, rows: int) -> dict[str, int] | None:
        anonymized_stats = stats(anonymized.stats, AssetName.ANONYMIZED_PAIRS, day)
        deduplicated_stats = stats(deduplicated.stats, AssetName.DEDUPLICATED_PAIRS, day)
        if anonymized_stats is None or deduplicated_stats is None:
            return None
        return counts_from_stats(anonymized_stats, deduplicated_stats, rows, suppression is not None)

    restated = {*seen, *deduplicated.removed, *anonymized.removed}
    csvs = TrainingExports(exports, sink, settings).erase(csv_pseudonyms, suppression, counts_of, days, restated)
    return {
        AssetName.TRAINING_CSV: csvs,
        AssetName.RAW_FEEDBACK: raw.removed,
        AssetName.ANONYMIZED_PAIRS: anonymized.removed,
        AssetName.DEDUPLICATED_PAIRS: deduplicated.removed,
        AssetName.SEEN_PAIR_HASHES: seen,
    }


def append_audit_entry(storage: Storage, entry: Mapping[str, object], sink: Sink = WRITES) -> str:
    """Append one JSON line to the audit log, rewriting the file atomically; where the log is."""
    directory, name = storage / AUDIT_DIR, AUDIT_FILE.rpartition("/")[2]
    sink.prepare(directory)
    existing = directory.read_bytes(name) if directory.exists(name) else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    write_bytes(directory, name, existing + json.dumps(entry, sort_keys=True).encode() + b"\n", sink=sink)
    return directory.location(name)


def erase(
    *,
    storage: Storage,
    exports: Storage,
    state: DedupeStateStore,
    user_ids: pl.Series,
    pseudonyms: pl.Series,
    csv_pseudonyms: CsvPseudonyms,
    suppression: Suppression | None,
    run_id: str,
    hmac_key_id: str,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    days: Collection[str] | None = None,
    cause: str = ERASURE_REQUEST,
    settings: ExportSettings | None = None,
) -> ErasureSummary:
    """Remove the users' rows from every stored partition, the dedupe state and every CSV, then audit it.

    `pseudonyms` are the users' stable pseudonyms, which the intermediates and the state hold;
    `csv_pseudonyms(day)` gives them as that day's file spells them. With `dry_run`, the summary
    says what the erasure would remove, and no file, state or audit entry is written. With `days`,
    only the files of those days are looked at (and the state files and manifests the removal
    touches); `cause` is what the audit entry says made the rows go. With `settings`, the dataset card
    and release.json are restated when an export file changed.
    """
    # The one place a dry run differs: its sink records the writes instead of making them.
    sink: Sink = Recording() if dry_run else WRITES
    removed: Mapping[AssetName, dict[str, int]] = {}
    if not user_ids.is_empty():
        subjects = (user_ids, pseudonyms, csv_pseudonyms)
        removed = _remove(sink, storage, exports, state, subjects, suppression, days, settings)
    by_partition: dict[str, dict[str, int]] = {kind: dict(sorted(removed.get(kind, {}).items())) for kind in ROW_KINDS}
    # Random, so the id that goes into the UI's metadata says nothing about whom it erased.
    entry_id = uuid.uuid4().hex
    summary = ErasureSummary(
        subjects=user_ids.n_unique(),
        partitions=sorted({day for days in by_partition.values() for day in days}),
        rows_removed={kind: sum(days.values()) for kind, days in by_partition.items()},
        rows_removed_by_partition=by_partition,
        dry_run=dry_run,
        audit_entry_id=entry_id,
    )
    entry = audit_entry(now or dt.datetime.now(dt.UTC), run_id, hmac_key_id, summary, cause)
    append_audit_entry(storage, entry, sink)
    # A dry run appended no entry, so it names none.
    return summary if not dry_run else dataclasses.replace(summary, audit_entry_id=None)
