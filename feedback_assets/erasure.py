"""GDPR erasure (Article 17): removing the users of `erasure_requests` from everything already written.

`erase` applies the rules of erasure_rules.py to the storage and export directories and appends the
audit entry, or with `dry_run` only counts what it would remove.
No Dagster here: the job in `defs/erasure.py` only validates the settings, reads the requests, calls
`erase` and reports its summary.

A file is rewritten only when its content changes, and atomically. The order of
the writes makes a re-run after a crash finish the work without counting anything twice: the dedupe
state before the partition its keys are read from, statistics before the partition they are
recomputed from.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

import polars as pl

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.erasure_rules import (
    CsvErasure,
    CsvPseudonyms,
    Suppression,
    anonymized_stats_after,
    counts_after_erasure,
    counts_from_stats,
    deduplicated_stats_after,
    erase_from_csv,
    is_erased,
    without_erased,
)
from feedback_assets.files import reading, rematerialize_command
from feedback_assets.schemas import STATE_SCHEMA
from feedback_assets.storage import PartitionStore, Storage
from feedback_assets.storage.base import files_matching, read_text, write_bytes
from feedback_assets.training_csv import manifest_bytes, manifest_name, training_files

AUDIT_DIR = "audit"
AUDIT_FILE = f"{AUDIT_DIR}/erasures.jsonl"
ROW_KINDS = ("training_csv", "raw_feedback", "anonymized_pairs", "deduplicated_pairs", "seen_pair_hashes")
PARTITION_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.parquet")
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


def _partition_files(directory: Storage, days: Collection[str] | None) -> Iterator[tuple[str, str]]:
    # Matching the whole name skips temporary files and the statistics beside the partitions.
    for name, match in files_matching(directory, PARTITION_FILE):
        if days is None or match.group(1) in days:
            yield match.group(1), name


def _repair(asset: str, day: str) -> str:
    return f"rebuild it with {rematerialize_command(asset, day)}, then run erase_subjects again"


def _split(directory: Storage, name: str, column: str, erased: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The partition's remaining and erased rows, or None when it holds no erased row."""
    with reading(directory.location(name), _repair(directory.name, name.removesuffix(".parquet"))):
        scan = directory.scan_parquet([name])
        # The one column first: most files hold none of the subjects' rows.
        hits = scan.select(is_erased(column, erased).sum()).collect().item()
        if not hits:
            return None
        frame = scan.collect()
    mask = is_erased(column, erased)
    return frame.filter(~mask), frame.filter(mask)


class _Rewrites:
    """Where an erasure's rewrites go, and what each file kind loses on each day.

    The real run and the dry run take the same path through the files and differ only here: a dry
    run writes nothing, so what it reports is what a real run on the same files removes. It keeps
    the statistics it would write, because the manifests' counts are read back from them.
    """

    def __init__(
        self, storage: Storage, exports: Storage, state: DedupeStateStore, dry_run: bool, days: Collection[str] | None
    ) -> None:
        self.storage = storage
        self.store = PartitionStore(storage)
        self.exports = exports
        self.state = state
        self.dry_run = dry_run
        # The days whose files may hold the subjects (the record of subjects says which); None: every day.
        self.only = days
        self.removed: dict[str, dict[str, int]] = {kind: {} for kind in ROW_KINDS}
        self._stats: dict[tuple[str, str], dict[str, int]] = {}

    def changed(self, kind: str, day: str, rows: int) -> None:
        """`kind`'s files of `day` are rewritten, losing `rows` rows (keys, for the dedupe state)."""
        self.removed[kind][day] = self.removed[kind].get(day, 0) + rows

    def days(self, *kinds: str) -> set[str]:
        return {day for kind in kinds for day in self.removed[kind]}

    def by_partition(self) -> dict[str, dict[str, int]]:
        return {kind: dict(sorted(days.items())) for kind, days in self.removed.items()}

    def partition(self, asset: str, day: str, frame: pl.DataFrame) -> None:
        if not self.dry_run:
            self.store.write(asset, {day: frame})

    def stats(self, asset: str, day: str, counts: dict[str, int]) -> None:
        if self.dry_run:
            self._stats[asset, day] = counts
        else:
            self.store.write_stats(asset, {day: counts})

    def read_stats(self, asset: str, day: str) -> dict[str, int] | None:
        if (asset, day) in self._stats:
            return self._stats[asset, day]
        return self.store.read_stats(asset, day) if self.store.has_stats(asset, day) else None

    def state_keys(self, day: str, owned: pl.DataFrame) -> None:
        if not self.dry_run:
            self.state.write({day: owned})

    def export_file(self, name: str, data: bytes) -> None:
        if not self.dry_run:
            write_bytes(self.exports, name, data)

    def owners(self, keys: pl.Series) -> pl.DataFrame:
        """The state rows of `keys`, whichever day's file holds them."""
        if not self.dry_run or not self._legacy_state():
            return self.state.owners(keys, excluding=())
        # The store's lookup gives files written before the key prefix existed their prefix column,
        # a rewrite a dry run must not make: those states are searched file by file instead.
        found = []
        directory = self.state.directory
        for day in self.state.partitions():
            name = self.state.file(day)
            with reading(directory.location(name), _repair("deduplicated_pairs", day)):
                owned = directory.scan_parquet([name]).select(STATE_SCHEMA.names()).collect()
            found.append(owned.filter(is_erased("dedupe_key", keys)))
        return pl.concat(found)

    def _legacy_state(self) -> bool:
        directory = self.state.directory
        for day in self.state.partitions():
            name = self.state.file(day)
            with reading(directory.location(name), _repair("deduplicated_pairs", day)):
                if "key_prefix" not in directory.parquet_columns(name):
                    return True
        return False


def _erase_state_keys(rewrites: _Rewrites, keys: pl.Series) -> None:
    """Remove `keys` from whichever day's state file holds them."""
    owned = rewrites.owners(keys.unique())
    for (partition,), found in owned.partition_by("partition", as_dict=True).items():
        day = partition.isoformat()
        current = rewrites.state.directory.scan_parquet([rewrites.state.file(day)]).collect()
        # The file stays even when empty: a missing file means lost state to the next run.
        rewrites.state_keys(day, without_erased(current, "dedupe_key", found["dedupe_key"]))
        rewrites.changed("seen_pair_hashes", day, found.height)
    # The state's index still holds the erased keys' prefixes: made anew from the cleaned files.
    if not owned.is_empty() and not rewrites.dry_run and rewrites.state.has_index():
        rewrites.state.rebuild_index()


def _erase_deduplicated(rewrites: _Rewrites, pseudonyms: pl.Series) -> None:
    """Clean deduplicated_pairs and the dedupe state."""
    splits: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    directory = rewrites.storage / "deduplicated_pairs"
    for day, name in _partition_files(directory, rewrites.only):
        split = _split(directory, name, "analysis_hash", pseudonyms)
        if split is not None:
            splits[day] = split
    if not splits:
        return
    # Every erased row's key, kept or not: a duplicate's key may be owned by another day's file.
    _erase_state_keys(rewrites, pl.concat([gone["dedupe_key"] for _, gone in splits.values()]))
    for day, (remaining, gone) in splits.items():
        stats = rewrites.read_stats("deduplicated_pairs", day)
        if stats is not None:
            rewrites.stats("deduplicated_pairs", day, deduplicated_stats_after(stats, remaining, day))
        rewrites.partition("deduplicated_pairs", day, remaining)
        rewrites.changed("deduplicated_pairs", day, gone.height)


def _erase_anonymized(rewrites: _Rewrites, pseudonyms: pl.Series) -> None:
    """Clean anonymized_pairs, counting its erased window rows as excluded."""
    directory = rewrites.storage / "anonymized_pairs"
    for day, name in _partition_files(directory, rewrites.only):
        split = _split(directory, name, "analysis_hash", pseudonyms)
        if split is None:
            continue
        remaining, gone = split
        stats = rewrites.read_stats("anonymized_pairs", day)
        if stats is not None:
            window_rows = remaining.filter(~pl.col("is_history")).height
            rewrites.stats("anonymized_pairs", day, anonymized_stats_after(stats, window_rows))
        rewrites.partition("anonymized_pairs", day, remaining)
        rewrites.changed("anonymized_pairs", day, gone.height)


def _erase_raw(rewrites: _Rewrites, user_ids: pl.Series) -> None:
    """Clean raw_feedback, history rows included."""
    directory = rewrites.storage / "raw_feedback"
    for day, name in _partition_files(directory, rewrites.only):
        split = _split(directory, name, "user_id", user_ids)
        if split is not None:
            rewrites.partition("raw_feedback", day, split[0])
            rewrites.changed("raw_feedback", day, split[1].height)


def _counts_from_stored_stats(rewrites: _Rewrites, day: str, rows: int, suppression: bool) -> dict[str, int] | None:
    anonymized = rewrites.read_stats("anonymized_pairs", day)
    deduplicated = rewrites.read_stats("deduplicated_pairs", day)
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


def _erase_csvs(rewrites: _Rewrites, pseudonyms: CsvPseudonyms, suppression: Suppression | None) -> None:
    """Clean every CSV holding an erased row, and rewrite its manifest and those of the days whose
    statistics changed although their CSV may not have (an erased duplicate)."""
    restated = rewrites.days("deduplicated_pairs", "seen_pair_hashes", "anonymized_pairs")
    exports = rewrites.exports
    for day, name in training_files(exports).items():
        if rewrites.only is not None and day not in rewrites.only and day not in restated:
            continue
        data = exports.read_bytes(name)
        with reading(exports.location(name), _repair("training_csv", day)):
            erasure = erase_from_csv(data, pseudonyms(day), suppression)
        if erasure.removed:
            rewrites.export_file(name, erasure.data)
            rewrites.changed("training_csv", day, erasure.removed)
        elif day in restated:
            # The file stays as it is, whatever suppression would make of it now; only its counts change.
            erasure = CsvErasure(data, erasure.rows + erasure.suppressed, removed=0, suppressed=0)
        else:
            continue
        manifest = manifest_name(day)
        if exports.exists(manifest):
            stats_counts = _counts_from_stored_stats(rewrites, day, erasure.rows, suppression is not None)
            with reading(exports.location(manifest), _repair("training_csv", day)):
                written = json.loads(read_text(exports, manifest))
            rewritten = _rewritten_manifest(written, name, erasure, stats_counts)
            if rewritten is not None:
                rewrites.export_file(manifest, rewritten)
                # A day whose manifest alone changes is still a changed day of training_csv.
                rewrites.changed("training_csv", day, 0)


def append_audit_entry(storage: Storage, entry: Mapping[str, object]) -> str:
    """Append one JSON line to the audit log, rewriting the file atomically; where the log is."""
    directory, name = storage / AUDIT_DIR, AUDIT_FILE.rpartition("/")[2]
    directory.ensure()
    existing = directory.read_bytes(name) if directory.exists(name) else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    write_bytes(directory, name, existing + json.dumps(entry, sort_keys=True).encode() + b"\n")
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
) -> ErasureSummary:
    """Remove the users' rows from every stored partition, the dedupe state and every CSV, then audit it.

    `pseudonyms` are the users' stable pseudonyms, which the intermediates and the state hold;
    `csv_pseudonyms(day)` gives them as that day's file spells them. With `dry_run`, the summary
    says what the erasure would remove, and no file, state or audit entry is written. With `days`,
    only the files of those days are looked at (and the state files and manifests the removal
    touches); `cause` is what the audit entry says made the rows go.
    """
    rewrites = _Rewrites(storage, exports, state, dry_run, days)
    if not user_ids.is_empty():
        # Intermediates first: the manifests' counts are read from the updated statistics.
        _erase_deduplicated(rewrites, pseudonyms)
        _erase_anonymized(rewrites, pseudonyms)
        _erase_raw(rewrites, user_ids)
        _erase_csvs(rewrites, csv_pseudonyms, suppression)
    by_partition = rewrites.by_partition()
    summary = ErasureSummary(
        subjects=user_ids.n_unique(),
        partitions=sorted(rewrites.days(*ROW_KINDS)),
        rows_removed={kind: sum(days.values()) for kind, days in by_partition.items()},
        rows_removed_by_partition=by_partition,
        dry_run=dry_run,
        # Random, so the id that goes into the UI's metadata says nothing about whom it erased.
        audit_entry_id=None if dry_run else uuid.uuid4().hex,
    )
    if not dry_run:
        append_audit_entry(storage, audit_entry(now or dt.datetime.now(dt.UTC), run_id, hmac_key_id, summary, cause))
    return summary
