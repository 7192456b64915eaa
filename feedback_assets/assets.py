"""The asset graph: raw_feedback -> anonymized_pairs -> deduplicated_pairs -> training_csv, with
seen_pair_hashes (the dedupe state) and rejected_feedback (the quarantine of rejected rows).

Each asset reads its partition window, calls the pure functions of `transforms`, writes its own
files (an IO manager cannot store one output per day of a ranged run) and reports each day's
statistics as that day's metadata, also when one run covers a range of days.
"""

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from feedback_assets import k_anonymity, transforms
from feedback_assets.dedupe_state import DedupeStateError
from feedback_assets.files import remove_stale_temp_files
from feedback_assets.key_guard import KeyMismatchError, ensure_same_key
from feedback_assets.partitions import daily_partitions, single_run_backfill
from feedback_assets.resources import FeedbackSettings, dedupe_state, partition_store, source_for
from feedback_assets.settings import CONTRACT_VERSION, ConfigError, ExportSettings, check_output_dirs
from feedback_assets.source import SourceSchemaError
from feedback_assets.storage import PRIVATE_DIR_MODE, MissingPartitionError, PartitionStore, split_by_partition
from feedback_assets.training_csv import EXPORT_DIR_MODE, write_training_csv

Event = dg.MaterializeResult | dg.AssetMaterialization
GROUP = "feedback_export"
# Steps that read or write the dedupe state share this pool; give it a limit of 1 (README) so
# only one run at a time claims keys. The state stays consistent without it (each day's claim is
# a function of the source and writes only its own file); the pool keeps claims serial anyway.
DEDUPE_STATE_POOL = "feedback_dedupe_state"
# Errors whose message already says what is wrong and what to do: shown as such, without a traceback.
EXPLAINED_ERRORS = (ConfigError, SourceSchemaError, MissingPartitionError, DedupeStateError, KeyMismatchError)


@contextmanager
def _explained_failures() -> Iterator[None]:
    try:
        yield
    except EXPLAINED_ERRORS as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _settings(resource: FeedbackSettings) -> ExportSettings:
    """Validated settings whose key matches the one the existing files were made with."""
    settings = resource.resolve()
    with _explained_failures():
        check_output_dirs(settings)
        ensure_same_key(
            {settings.export_dir: EXPORT_DIR_MODE, settings.storage_dir: PRIVATE_DIR_MODE},
            settings.hmac_key_id,
            settings.hmac_key,
        )
    return settings


def _column_schema(schema: pl.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, str(dtype)) for name, dtype in schema.items()])


def _report(
    context: dg.AssetExecutionContext, per_partition: Mapping[str, Mapping[str, Any]], started: float
) -> Iterator[Event]:
    """One materialization per day with that day's own numbers.

    In a ranged run Dagster records the output for every day of the range with the same metadata;
    the per-day events that follow it become each day's latest materialization, so the UI shows
    the day's own figures.
    """
    seconds = round(time.perf_counter() - started, 3)
    keys = list(per_partition)
    common = {"execution_seconds": seconds, "partitions_in_run": len(keys)}
    if len(keys) == 1:
        yield dg.MaterializeResult(metadata={**per_partition[keys[0]], **common})
        return
    yield dg.MaterializeResult(metadata={"partition_range": f"{keys[0]}...{keys[-1]}", **common})
    for key, metadata in per_partition.items():
        yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata={**metadata, **common})


def _asset(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """Every asset shares the daily partitions, the single-run backfill policy and the group."""
    return dg.asset(partitions_def=daily_partitions, backfill_policy=single_run_backfill, group_name=GROUP, **kwargs)


# A dropped connection or a restarting server mid-read is worth retrying; the step writes nothing
# until the whole window is read, so a failed attempt leaves no partial partition behind.
SOURCE_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@_asset(retry_policy=SOURCE_RETRY)
def raw_feedback(context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings) -> Iterator[Event]:
    """The day's feedback rows joined with their user, analysis and recommendation record, as read
    from the app's database; still personal data (user ids, ages), kept in the private storage dir."""
    started = time.perf_counter()
    settings = _settings(feedback_settings)
    keys = list(context.partition_keys)
    window = context.partition_time_window
    source = source_for(settings)
    needs_history = settings.dedupe_scope == "first_per_pair"
    context.log.info(f"reading {len(keys)} day(s) from the {settings.source.describe()}")
    with _explained_failures():
        source.check_schema()
        frames = source.read_window(window.start, window.end, with_history=needs_history)
    raw = transforms.redact_excluded(transforms.join_source(frames))
    if needs_history:
        raw = transforms.with_history(raw)
    parts = split_by_partition(raw, keys)
    partition_store(settings).write("raw_feedback", parts)
    yield from _report(
        context,
        {
            key: {
                "dagster/row_count": part.filter(~pl.col("is_history")).height,
                "history_rows": part.filter(pl.col("is_history")).height,
            }
            for key, part in parts.items()
        },
        started,
    )


def _classified_raw(store: PartitionStore, keys: list[str], settings: ExportSettings) -> pl.DataFrame:
    """The stored raw rows of `keys`, each with its outcome under CONTRACT section 5."""
    with _explained_failures():
        raw = store.read("raw_feedback", keys)
    return transforms.classify(raw, settings.min_feedback_fields)


@_asset(deps=[raw_feedback])
def anonymized_pairs(context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings) -> Iterator[Event]:
    """The eligible feedback rows, pseudonymised: keyed HMAC user pseudonyms, age ranges instead of
    ages, normalised conditions; no user id, free text or unconsented image URL."""
    started = time.perf_counter()
    settings = _settings(feedback_settings)
    keys = list(context.partition_keys)
    store = partition_store(settings)
    classified = _classified_raw(store, keys, settings)
    pairs = transforms.anonymize(classified, settings.hmac_key, settings.include_image_urls)
    counts = transforms.outcome_counts(classified, keys)
    parts = split_by_partition(pairs, keys)
    store.write("anonymized_pairs", parts)
    store.write_stats("anonymized_pairs", counts)
    yield from _report(
        context,
        {
            key: {
                "dagster/row_count": parts[key].filter(~pl.col("is_history")).height,
                "dagster/column_schema": _column_schema(pairs.schema),
                "hmac_key_id": settings.hmac_key_id,
                **counts[key],
            }
            for key in keys
        },
        started,
    )


@_asset(deps=[raw_feedback])
def rejected_feedback(context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings) -> Iterator[Event]:
    """The quarantine: the feedback id and reason of every row rejected (malformed, orphan,
    out_of_range), so the app team can look the rows up; no personal data."""
    started = time.perf_counter()
    settings = _settings(feedback_settings)
    keys = list(context.partition_keys)
    store = partition_store(settings)
    rejected = transforms.rejected_rows(_classified_raw(store, keys, settings))
    parts = split_by_partition(rejected, keys)
    store.write("rejected_feedback", parts)
    yield from _report(
        context,
        {
            key: {
                "dagster/row_count": part.height,
                **{
                    f"rejected_{reason}": part.filter(pl.col("reason") == reason).height
                    for reason in transforms.REJECTED_REASONS
                },
            }
            for key, part in parts.items()
        },
        started,
    )


@_asset(deps=[anonymized_pairs], pool=DEDUPE_STATE_POOL)
def deduplicated_pairs(context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings) -> Iterator[Event]:
    """The pseudonymised pairs with duplicates removed: one row per dedupe key (CONTRACT section 5),
    and none whose key the dedupe state gives to an earlier day."""
    started = time.perf_counter()
    settings = _settings(feedback_settings)
    keys = list(context.partition_keys)
    store = partition_store(settings)
    state = dedupe_state(settings)
    with _explained_failures():
        pairs = store.read("anonymized_pairs", keys)
        state.verify(context.instance.get_materialized_partitions(seen_pair_hashes.key), excluding=keys)
        candidate_keys = pairs.select(transforms.dedupe_key(settings.dedupe_scope)).to_series()
        owners = state.owners(candidate_keys, excluding=keys).rename({"partition": "owner"})
    deduplicated = transforms.deduplicate(pairs, settings.dedupe_scope, owners)
    to_rerun = transforms.superseded_owners(deduplicated, owners)
    if to_rerun:
        context.log.warning(
            f"days {', '.join(to_rerun)} exported keys that an earlier day of this run now owns (the source "
            f"changed); re-run them: backfill from {keys[0]} to {to_rerun[-1]}"
        )
    counts = transforms.dedupe_counts(deduplicated, keys)
    parts = split_by_partition(deduplicated, keys)
    store.write("deduplicated_pairs", parts)
    store.write_stats("deduplicated_pairs", counts)
    yield from _report(
        context,
        {
            key: {
                "dagster/row_count": counts[key]["exported_records"],
                "dedupe_scope": settings.dedupe_scope,
                "later_days_to_rerun": ", ".join(to_rerun),
                **counts[key],
            }
            for key in keys
        },
        started,
    )


@_asset(deps=[deduplicated_pairs], pool=DEDUPE_STATE_POOL)
def seen_pair_hashes(context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings) -> Iterator[Event]:
    """The dedupe state: the keys each day exported and so owns. A key is stored once, in its owner's file."""
    started = time.perf_counter()
    settings = _settings(feedback_settings)
    keys = list(context.partition_keys)
    with _explained_failures():
        deduplicated = partition_store(settings).read("deduplicated_pairs", keys)
    owned = deduplicated.filter(pl.col("kept")).select("dedupe_key", "partition")
    state = dedupe_state(settings)
    owned_by_day = split_by_partition(owned, keys)
    state.write(owned_by_day)
    with _explained_failures():
        total = state.key_count()
    per_day = {key: part.height for key, part in owned_by_day.items()}
    yield from _report(
        context,
        {
            key: {"keys_owned_by_partition": n, "keys_total": total, "dedupe_scope": settings.dedupe_scope}
            for key, n in per_day.items()
        },
        started,
    )


@dg.asset_check(asset=seen_pair_hashes, blocking=True, description="No dedupe key is owned by two days.")
def no_key_owned_twice(feedback_settings: FeedbackSettings) -> dg.AssetCheckResult:
    settings = _settings(feedback_settings)
    with _explained_failures():
        shared = dedupe_state(settings).shared_keys()
    days = sorted({day.isoformat() for days in shared["partitions"].to_list() for day in days[1:]})
    return dg.AssetCheckResult(
        passed=shared.is_empty(),
        metadata={
            "keys_owned_twice": shared.height,
            "days_to_rerun": ", ".join(days),
            "repair": f"backfill from the earliest changed day through {days[-1]}" if days else "",
        },
    )


# The CSV waits for the state: a blocking failure of no_key_owned_twice stops the export of a key
# that another day's file already holds.
@_asset(deps=[deduplicated_pairs, seen_pair_hashes])
def training_csv(context: dg.AssetExecutionContext, feedback_settings: FeedbackSettings) -> Iterator[Event]:
    """The daily training file for the data science team: feedback_training_YYYYMMDD.csv, the
    12 columns of CONTRACT section 4, one row per exported pair."""
    started = time.perf_counter()
    settings = _settings(feedback_settings)
    keys = list(context.partition_keys)
    store = partition_store(settings)
    with _explained_failures():
        deduplicated = store.read("deduplicated_pairs", keys)
    remove_stale_temp_files(settings.export_dir)
    per_partition: dict[str, dict[str, object]] = {}
    for key, part in split_by_partition(deduplicated, keys).items():
        rows = transforms.training_rows(part, settings.include_image_urls)
        suppressed = 0
        if settings.suppress_small_groups:
            rows, suppressed = k_anonymity.suppress_small_groups(rows, settings.k_anonymity_threshold)
        with _explained_failures():
            counts = {
                **store.read_stats("anonymized_pairs", key),
                **store.read_stats("deduplicated_pairs", key),
                "suppressed_records": suppressed,
            }
        counts["exported_records"] -= suppressed
        if counts["exported_records"] != rows.height or transforms.unaccounted_rows(counts):
            raise dg.Failure(
                description=f"statistics of {key} do not add up: {counts} with {rows.height} rows to export",
                allow_retries=False,
            )
        facts = {
            "partition": key,
            "contract_version": CONTRACT_VERSION,
            "hmac_key_id": settings.hmac_key_id,
            "dedupe_scope": settings.dedupe_scope,
            "run_id": context.run.run_id,
            "counts": counts,
        }
        path = write_training_csv(settings.export_dir, key, rows, facts)
        per_partition[key] = {
            "dagster/row_count": rows.height,
            "dagster/column_schema": _column_schema(rows.schema),
            "path": dg.MetadataValue.path(str(path)),
            "hmac_key_id": settings.hmac_key_id,
            "dedupe_scope": settings.dedupe_scope,
            "contract_version": CONTRACT_VERSION,
            **counts,
        }
    yield from _report(context, per_partition, started)


@dg.asset_check(
    asset=training_csv,
    description="k-anonymity over (age_range, conditions): the smallest group, for the run's days and for "
    "every file exported so far, and the rows in groups below the threshold.",
)
def k_anonymity_of_exports(
    context: dg.AssetCheckExecutionContext, feedback_settings: FeedbackSettings
) -> dg.AssetCheckResult:
    settings = _settings(feedback_settings)
    threshold = settings.k_anonymity_threshold
    files = sorted(settings.export_dir.glob("feedback_training_*.csv"))
    every_day = k_anonymity.measure(_quasi_identifiers(files), threshold)
    run_days = _run_days(context.run.tags)
    run_files = [f for f in files if f.stem.removeprefix("feedback_training_") in run_days]
    these_days = k_anonymity.measure(_quasi_identifiers(run_files), threshold)
    return dg.AssetCheckResult(
        passed=these_days.rows_below_threshold == 0 and every_day.rows_below_threshold == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": threshold,
            "smallest_group_in_run": these_days.smallest_group,
            "rows_below_threshold_in_run": these_days.rows_below_threshold,
            "smallest_group_overall": every_day.smallest_group,
            "rows_below_threshold_overall": every_day.rows_below_threshold,
            "rows_overall": every_day.rows,
            "suppression": "on" if settings.suppress_small_groups else "off",
            "days_in_run": len(run_files),
        },
    )


def _run_days(tags: Mapping[str, str]) -> set[str]:
    """The run's days as YYYYMMDD, from the partition tags Dagster puts on every partitioned run."""
    if "dagster/partition" in tags:
        return {tags["dagster/partition"].replace("-", "")}
    first, last = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if not (first and last):
        return set()
    keys = daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    return {key.replace("-", "") for key in keys}


def _quasi_identifiers(files: list[Path]) -> pl.LazyFrame:
    if not files:
        return pl.LazyFrame(schema=dict.fromkeys(k_anonymity.QUASI_IDENTIFIERS, pl.String))
    return pl.scan_csv(files, infer_schema=False).select(k_anonymity.QUASI_IDENTIFIERS)
