"""The asset graph: raw_feedback -> anonymized_pairs -> deduplicated_pairs -> training_csv, with
seen_pair_hashes (the dedupe state, recorded by the same step that claims the keys) and
rejected_feedback (the quarantine of rejected rows).

Each asset reads its partition window through the resources it names, calls the pure
functions of `transforms` and `training_csv`, writes its own files (an IO manager cannot store one
output per day of a ranged run: docs/decisions.md, "IO managers and ranged runs") and reports each
day's statistics as that day's metadata, also when one run covers a range of days.
"""

import datetime as dt
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import dagster as dg
import polars as pl

from feedback_assets import catalog, csv_cells, k_anonymity, source_join, transforms
from feedback_assets.asset_runs import (
    APP_FEEDBACK_SOURCE,
    DEDUPE_STATE_POOL,
    DEDUPLICATED_PAIRS,
    GROUP,
    SEEN_PAIR_HASHES,
    SlicedRun,
    export_asset,
)
from feedback_assets.day_files import DayFormats, remove_stale_temp_files, write_day
from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.export_release import MANIFEST_K_ANONYMITY, write_card
from feedback_assets.failures import explained_failures
from feedback_assets.files import WritesBehind, concurrently, rematerialize_command
from feedback_assets.fingerprint import FINGERPRINT_METADATA, watched_days
from feedback_assets.partitions import backfill_policy, daily_partitions, window_of
from feedback_assets.pseudonyms import PseudonymCache
from feedback_assets.resources import DedupeStateResource, FeedbackSettings, FeedbackSourceResource, StorageResource
from feedback_assets.settings import CONTRACT_VERSION, DedupeScope, ExportSettings
from feedback_assets.storage import MissingPartitionError, PartitionStore, Storage, split_by_partition
from feedback_assets.subjects import SubjectRecord
from feedback_assets.training_csv import csv_format_of, export_day, manifest_name


# No Dagster retry policy: the reader itself tries again after transient faults, for up to
# FEEDBACK_SOURCE_RETRY_SECONDS, and Dagster's retries would multiply that budget.
@export_asset(
    catalog.page("raw_feedback", {"polars", catalog.source_kind(), "parquet"}, catalog.PII_IDENTIFIED),
    deps=[APP_FEEDBACK_SOURCE],
)
def raw_feedback(
    context: dg.AssetExecutionContext,
    feedback_settings: FeedbackSettings,
    feedback_source: FeedbackSourceResource,
    feedback_storage: StorageResource,
) -> dg.MaterializeResult:
    """The day's feedback rows joined with their user, analysis and recommendation record, as read
    from the app's database; still personal data (user ids, ages), kept in the private storage dir."""
    run = SlicedRun(context)
    settings = feedback_settings.settings
    source, store = feedback_source.reader(context.log.warning), feedback_storage.partition_store()
    storage = feedback_storage.storage()
    subjects = SubjectRecord(storage)
    with_history = settings.dedupe_scope == "first_per_pair"
    context.log.info(f"reading {len(context.partition_keys)} day(s) from the {settings.source.describe()}")
    with explained_failures():
        source.check_schema()
    run_window = window_of(context.partition_keys)
    # Read before the rows, never after: a change committed between the two makes the sensor re-run
    # the day once more, while one read after could hide a change the rows missed (docs/decisions.md,
    # "The fingerprint read before the rows").
    watched = set(watched_days(dt.datetime.now(dt.UTC).date(), settings.lookback_days))
    with explained_failures():
        fingerprints = source.fingerprints(
            [dt.date.fromisoformat(k) for k in context.partition_keys if dt.date.fromisoformat(k) in watched]
        )

    with (
        run.writing(feedback_storage) as behind,
        source.reading_run(*run_window, with_history=with_history, scratch_root=storage) as read_window,
    ):

        def read(days: list[str]) -> int:
            with explained_failures():
                frames = read_window(*window_of(days))
            parts = split_by_partition(source_join.raw_rows(frames, with_history=with_history), days)

            def write() -> None:
                # The record of subjects after the rows: killed in between, the old record still names
                # everyone the day's later files hold (docs/privacy.md, "The record of subjects").
                store.write("raw_feedback", parts)
                subjects.write(parts)

            behind.submit(write)
            for key, part in parts.items():
                history = part.filter(pl.col("is_history")).height
                run.metadata[key] = {"dagster/row_count": part.height - history, "history_rows": history}
            return sum(part.height for part in parts.values())

        run.over_slices(read)
    for key, value in fingerprints.items():
        run.metadata[key][FINGERPRINT_METADATA] = value
    return run.report()


def _classified_raw(store: PartitionStore, keys: list[str], min_feedback_fields: int) -> pl.DataFrame:
    """The stored raw rows of `keys`, each with its outcome under docs/contract.md section 5."""
    with explained_failures():
        raw = store.read("raw_feedback", keys)
        missing = [name for name in source_join.OWNERSHIP_FLAGS if name not in raw.columns]
        if missing:
            # Stored before contract version 3: without the flags, rows of someone else would pass.
            raise MissingPartitionError(
                f"raw_feedback of {keys[0]}...{keys[-1]} was stored before the {', '.join(missing)} rule(s) "
                f"existed; re-run it: {rematerialize_command('raw_feedback', keys[0])} (a range: backfill "
                "raw_feedback and everything after it over the days)"
            )
    return transforms.classify(raw, min_feedback_fields)


@export_asset(catalog.page("anonymized_pairs", {"polars", "parquet"}, catalog.PII_PSEUDONYMISED), deps=[raw_feedback])
def anonymized_pairs(
    context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.MaterializeResult:
    """The eligible feedback rows, pseudonymised: keyed HMAC user pseudonyms, age ranges instead of
    ages, normalised conditions; no user id, free text or unconsented image URL."""
    run = SlicedRun(context)
    settings = feedback_settings.settings
    store = feedback_storage.partition_store()
    pseudonyms = PseudonymCache(settings.hmac_key)

    def anonymize(days: list[str]) -> int:
        classified = _classified_raw(store, days, settings.min_feedback_fields)
        pairs = transforms.anonymize(classified, settings.hmac_key, settings.include_image_urls, pseudonyms)
        counts = transforms.outcome_counts(classified, days)
        parts = split_by_partition(pairs, days)

        def write() -> None:
            store.write("anonymized_pairs", parts)
            store.write_stats("anonymized_pairs", counts)

        behind.submit(write)
        # No per-day column schema: the definition declares it (catalog.py) and every day has it.
        for key in days:
            rows = parts[key].filter(~pl.col("is_history")).height
            run.metadata[key] = {"dagster/row_count": rows, "hmac_key_id": settings.hmac_key_id, **counts[key]}
        return classified.height

    with run.writing(feedback_storage) as behind:
        run.over_slices(anonymize)
    return run.report()


@export_asset(catalog.page("rejected_feedback", {"polars", "parquet"}, {}), deps=[raw_feedback])
def rejected_feedback(
    context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.MaterializeResult:
    """The quarantine: the feedback id and reason of every row rejected (malformed, orphan, ambiguous,
    mismatched, out_of_range), so the app team can look the rows up; no personal data."""
    run = SlicedRun(context)
    store = feedback_storage.partition_store()

    def quarantine(days: list[str]) -> int:
        classified = _classified_raw(store, days, feedback_settings.settings.min_feedback_fields)
        parts = split_by_partition(transforms.rejected_rows(classified), days)
        behind.submit(lambda: store.write("rejected_feedback", parts))
        for key, part in parts.items():
            run.metadata[key] = {"dagster/row_count": part.height, **transforms.rejected_counts(part)}
        return classified.height

    with run.writing(feedback_storage) as behind:
        run.over_slices(quarantine)
    return run.report()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            DEDUPLICATED_PAIRS,
            deps=[anonymized_pairs],
            group_name=GROUP,
            **catalog.page("deduplicated_pairs", {"polars", "parquet"}, catalog.PII_PSEUDONYMISED),
            description="The pseudonymised pairs with duplicates removed: one row per dedupe key "
            "(docs/contract.md, section 5), and none whose key the dedupe state gives to an earlier day.",
        ),
        dg.AssetSpec(
            SEEN_PAIR_HASHES,
            deps=[DEDUPLICATED_PAIRS],
            group_name=GROUP,
            **catalog.page("seen_pair_hashes", {"polars", "parquet"}, catalog.PII_PSEUDONYMISED),
            description="The dedupe state: the keys each day exported and so owns. A key is stored once, "
            "in its owner's file.",
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=backfill_policy,
    pool=DEDUPE_STATE_POOL,
)
def dedupe_and_claim_keys(
    context: dg.AssetExecutionContext,
    feedback_settings: FeedbackSettings,
    feedback_storage: StorageResource,
    dedupe_state: DedupeStateResource,
) -> Iterator[dg.MaterializeResult]:
    """Reads the dedupe state, removes duplicates and records the keys each day now owns, in one step:
    the state is both an input and an output of deduplication, and the lineage says so."""
    run = SlicedRun(context)
    scope, keys = feedback_settings.settings.dedupe_scope, context.partition_keys
    store, state = feedback_storage.partition_store(), dedupe_state.store()
    with explained_failures():
        state.verify(context.instance.get_materialized_partitions(SEEN_PAIR_HASHES), excluding=keys)
    claims: list[_Claims] = []

    def dedupe(days: list[str]) -> int:
        claims.append(_claim_slice(store, state, scope, days, not_yet=keys[keys.index(days[0]) :], behind=behind))
        return claims[-1].rows

    with run.writing(feedback_storage) as behind:
        run.over_slices(dedupe)
    rerun = _superseded_days(context, keys, sorted({day for c in claims for day in c.superseded}))
    with explained_failures():
        total = state.key_count()
    # Only when there is something to re-run: a blank row on every day reads as missing data.
    facts = {"dedupe_scope": scope, **({"later_days_to_rerun": rerun} if rerun else {})}
    counts = {key: c for claim in claims for key, c in claim.counts.items()}
    pairs_metadata = {key: {"dagster/row_count": c["exported_records"], **facts, **c} for key, c in counts.items()}
    state_metadata = {
        key: {"keys_owned_by_partition": n, "keys_total": total, "dedupe_scope": scope}
        for claim in claims
        for key, n in claim.owned.items()
    }
    yield run.report(DEDUPLICATED_PAIRS, pairs_metadata)
    yield run.report(SEEN_PAIR_HASHES, state_metadata)


@dataclass(frozen=True)
class _Claims:
    """What deduplicating one slice of a run's days did: its counts, the keys each day now owns,
    the later days outside the run that hold keys this slice took, and the rows it read."""

    counts: dict[str, dict[str, int]]
    owned: dict[str, int]
    superseded: list[str]
    rows: int


def _claim_slice(
    store: PartitionStore,
    state: DedupeStateStore,
    scope: DedupeScope,
    days: list[str],
    not_yet: Sequence[str],
    behind: WritesBehind,
) -> _Claims:
    """Deduplicate `days` against the state and record their keys. `not_yet` are this and the run's
    later days: their old state is what this run replaces; earlier slices of the run are already in.

    The state is written in step, since the next slice looks its keys up in it; the deduplicated
    pairs, which no later slice reads, are written behind it."""
    with explained_failures():
        pairs = transforms.with_dedupe_key(store.read("anonymized_pairs", days), scope)
        owners = state.owners(pairs["dedupe_key"], excluding=not_yet).rename({"partition": "owner"})
    deduplicated = transforms.deduplicate(pairs, owners)
    counts = transforms.dedupe_counts(deduplicated, days)
    parts = split_by_partition(deduplicated, days)

    def write() -> None:
        store.write("deduplicated_pairs", parts)
        store.write_stats("deduplicated_pairs", counts)

    behind.submit(write)
    owned = split_by_partition(transforms.owned_keys(deduplicated), days)
    state.write(owned)
    superseded = transforms.superseded_owners(deduplicated, owners)
    return _Claims(counts, {day: part.height for day, part in owned.items()}, superseded, pairs.height)


def _superseded_days(context: dg.AssetExecutionContext, keys: list[str], days: list[str]) -> str:
    """Later days whose files hold keys an earlier day of this run now takes, logged with the repair."""
    if days:
        context.log.warning(
            f"days {', '.join(days)} exported keys that an earlier day of this run now owns (the source "
            f"changed); re-run them: backfill from {keys[0]} to {days[-1]}"
        )
    return ", ".join(days)


# The CSV waits for the state: a blocking failure of no_key_owned_twice stops the export of a key
# that another day's file already holds.
@export_asset(
    catalog.page("training_csv", {"polars", "csv"}, catalog.PII_PSEUDONYMISED, catalog.csv_schema()),
    deps=[DEDUPLICATED_PAIRS, SEEN_PAIR_HASHES],
)
def training_csv(
    context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.MaterializeResult:
    """The daily training file for the data science team: feedback_training_YYYYMMDD.csv, the
    12 columns of docs/contract.md section 4, one row per exported pair."""
    run = SlicedRun(context)
    settings = feedback_settings.settings
    store, exports = feedback_storage.partition_store(), feedback_storage.exports()
    remove_stale_temp_files(exports)

    # One for the run: each user's split is drawn once, not on every day they gave feedback.
    day_formats = DayFormats(settings.export_formats, settings.split, settings.hmac_key)

    def export(days: list[str]) -> int:
        with explained_failures():
            deduplicated = store.read("deduplicated_pairs", days)
            rows = csv_cells.training_rows_by_day(
                deduplicated, csv_format_of(settings), days, splits=day_formats.sources
            )
            upstream = {
                key: {**store.read_stats("anonymized_pairs", key), **store.read_stats("deduplicated_pairs", key)}
                for key in rows
            }
            written = behind.submit(
                lambda: concurrently(
                    lambda day: _export_day(
                        context.run.run_id, settings, day_formats, exports, day[0], day[1], upstream[day[0]]
                    ),
                    rows.items(),
                )
            )
            exported.append((list(rows), written))
        return deduplicated.height

    exported: list[tuple[list[str], Future[list[dict[str, Any]]]]] = []
    with run.writing(feedback_storage) as behind:
        run.over_slices(export)
        # Last, once every day's files are in: the card tells of what is on disk.
        behind.submit(lambda: write_card(exports, settings))
    for days, written in exported:
        run.metadata.update(zip(days, written.result(), strict=True))
    return run.report()


def _export_day(
    run_id: str,
    settings: ExportSettings,
    day_formats: DayFormats,
    exports: Storage,
    key: str,
    rows: pl.DataFrame,
    upstream: dict[str, int],
) -> dict[str, Any]:
    """Write one day's CSV, typed Parquet and manifest, as FEEDBACK_EXPORT_FORMATS says; the day's metadata."""
    suppress_below = settings.k_anonymity_threshold if settings.suppress_small_groups else None
    day = export_day(
        key,
        rows,
        upstream,
        suppress_below=suppress_below,
        quasi_identifiers=settings.quasi_identifiers,
    )
    facts = {
        "contract_version": CONTRACT_VERSION,
        "hmac_key_id": settings.hmac_key_id,
        "dedupe_scope": settings.dedupe_scope,
        "timestamp_precision": settings.timestamp_precision,
        "pseudonym_scope": settings.pseudonym_scope,
    }
    columns = csv_format_of(settings).columns
    measured = k_anonymity.measure(day.rows, settings.k_anonymity_threshold, settings.quasi_identifiers)
    k_and_l = {"k": measured.smallest_group, "l": measured.l_diversity, "rows": measured.rows}
    written = write_day(
        exports,
        key,
        day.rows,
        columns,
        {"partition": key, "run_id": run_id, "counts": day.counts, MANIFEST_K_ANONYMITY: k_and_l, **facts},
        day_formats,
    )
    location = exports.location(written.csv) if written.csv else exports.location(manifest_name(key))
    return {
        "dagster/row_count": written.rows,
        "dagster/column_schema": catalog.csv_schema(tuple(columns)),
        "path": dg.MetadataValue.path(location),
        **facts,
        **day.counts,
        **{f"{split}_rows": rows for split, rows in written.split_counts.items()},
    }


# The code location's whole graph, in the order of the data's flow.
FEEDBACK_ASSETS = [raw_feedback, rejected_feedback, anonymized_pairs, dedupe_and_claim_keys, training_csv]

# Links each asset's page to the file and line that define it. The helper is beta; its warning
# would print at every load of the code location and in every run.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    defs = dg.Definitions(assets=dg.with_source_code_references(FEEDBACK_ASSETS))
