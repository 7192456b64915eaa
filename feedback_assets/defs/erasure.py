"""The job `erase_subjects`: removes every already-exported row of the users in `erasure_requests`
and of the users whose consent is withdrawn, and blanks the image URLs of users who withdrew image
consent (docs/privacy.md, Erasure and "Consent withdrawn"); and `nightly_erasure`, its schedule.
The file work is in `erasure.py` and `withdrawal.py`, whose rows to look at in `subjects.py`; this
module only wires them to Dagster.

A run is a dry run unless its config says `confirm: true`: launched from the UI with the default
config, it reports what it would remove and changes nothing. A real run records an
AssetObservation on every day of every asset whose files it rewrote, so each partition's page
shows the erasure, and a materialization of training_dataset when it restated release.json, so
that the release's new version is the asset's data version at once.

No `from __future__ import annotations` here: Dagster resolves the op's `context` annotation at
definition time and cannot resolve it from a string.
"""

import datetime as dt
from collections.abc import Mapping

import dagster as dg
import polars as pl
from pydantic import Field

from feedback_assets import erasure, erasure_rules, withdrawal
from feedback_assets.asset_names import AssetName
from feedback_assets.asset_runs import (
    ANONYMIZED_PAIRS,
    DEDUPE_STATE_POOL,
    DEDUPLICATED_PAIRS,
    RAW_FEEDBACK,
    SEEN_PAIR_HASHES,
    TRAINING_CSV,
)
from feedback_assets.defs.release import restated_release
from feedback_assets.failures import explained_failures
from feedback_assets.pseudonyms import pseudonymize_user_ids, scoped_pseudonyms
from feedback_assets.resources import DedupeStateResource, FeedbackSettings, FeedbackSourceResource, StorageResource
from feedback_assets.settings import ExportSettings
from feedback_assets.storage import Storage
from feedback_assets.storage.base import WRITES, Recording, Sink
from feedback_assets.subjects import SubjectRecord, days_in
from feedback_assets.training_csv import training_files

DRY_RUN_NOTE = "dry run: nothing was changed; launch with config confirm: true to erase"

# The asset each kind of file erasure rewrites belongs to (rejected_feedback names no person and is
# left alone).
ASSET_OF_KIND: dict[str, dg.AssetKey] = {
    AssetName.TRAINING_CSV: TRAINING_CSV,
    AssetName.RAW_FEEDBACK: RAW_FEEDBACK,
    AssetName.ANONYMIZED_PAIRS: ANONYMIZED_PAIRS,
    AssetName.DEDUPLICATED_PAIRS: DEDUPLICATED_PAIRS,
    AssetName.SEEN_PAIR_HASHES: SEEN_PAIR_HASHES,
}


NOTHING_TO_DO_NOTE = "nothing to do: no stored day holds a user who asked to be erased or whose consent is withdrawn"
IMAGE_KINDS = withdrawal.IMAGE_ROW_KINDS
# What the run list shows on the scheduled runs, beside Dagster's own schedule tag. A run so tagged
# audits only the causes it found work for, so a night with nothing to do writes no file; a run
# started by hand always appends its erasure-request entry, so the audit log shows every erasure
# someone asked for.
SCHEDULED_TAG = "feedback_assets/erasure"
SCHEDULED_TAGS = {SCHEDULED_TAG: "scheduled"}
# Put on a dry run's own run as it starts, so the run list tells it from an erasure at a glance.
DRY_RUN_TAG = "feedback_assets/dry_run"


class EraseConfig(dg.Config):
    confirm: bool = Field(
        default=False,
        description="true: erase, rewriting the files and appending an audit entry. Unset or false: a dry "
        "run, which reports what an erasure would remove and changes nothing.",
    )


def _observations(
    summary: erasure.ErasureSummary, run_id: str, cause: str = erasure.ERASURE_REQUEST
) -> list[dg.AssetObservation]:
    """One observation per changed day of each asset: how many rows went, why, and which audit entry says so."""
    why = "an erasure request" if cause == erasure.ERASURE_REQUEST else "a consent withdrawal"
    # Erasure's observations keep the metadata they had before withdrawals existed.
    extra = {} if cause == erasure.ERASURE_REQUEST else {"cause": cause}
    return [
        dg.AssetObservation(
            asset_key=ASSET_OF_KIND[kind],
            partition=day,
            description=f"erase_subjects removed {rows} row(s) of this day for {why} "
            f"(audit entry {summary.audit_entry_id})",
            metadata={"rows_removed": rows, "audit_entry": summary.audit_entry_id, "erasure_run_id": run_id, **extra},
        )
        for kind, days in summary.rows_removed_by_partition.items()
        for day, rows in days.items()
    ]


def _blanking_observations(summary: withdrawal.BlankingSummary, run_id: str) -> list[dg.AssetObservation]:
    return [
        dg.AssetObservation(
            asset_key=ASSET_OF_KIND[kind],
            partition=day,
            description=f"erase_subjects blanked {n} image URL(s) of this day for an image consent withdrawal "
            f"(audit entry {summary.audit_entry_id})",
            metadata={
                "image_urls_blanked": n,
                "audit_entry": summary.audit_entry_id,
                "erasure_run_id": run_id,
                "cause": erasure.IMAGE_CONSENT_WITHDRAWN,
            },
        )
        for kind, days in summary.blanked_by_partition.items()
        for day, n in days.items()
    ]


def _unrecorded_days(storage: Storage, exports: Storage, recorded: set[str]) -> list[str]:
    """Days with files whose raw_feedback is gone, so no record says whose rows they hold."""
    days = set(training_files(exports))
    for kind in (AssetName.ANONYMIZED_PAIRS, AssetName.DEDUPLICATED_PAIRS):
        days |= set(days_in(storage / kind))
    return sorted(days - recorded)


def _days(rows: pl.DataFrame) -> set[str]:
    return set(rows["partition"].to_list())


def _merged_by_day(*by_partition: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {kind: {} for kind in erasure.ROW_KINDS}
    for summary in by_partition:
        for kind, days in summary.items():
            for day, n in days.items():
                merged[kind][day] = merged[kind].get(day, 0) + n
    return {kind: dict(sorted(days.items())) for kind, days in merged.items()}


# The dedupe state pool: the op rewrites state files, so it must not run while a dedupe step reads them.
@dg.op(pool=DEDUPE_STATE_POOL)
def erase_requested_subjects(
    context: dg.OpExecutionContext,
    config: EraseConfig,
    feedback_settings: FeedbackSettings,
    feedback_source: FeedbackSourceResource,
    feedback_storage: StorageResource,
    dedupe_state: DedupeStateResource,
) -> None:
    """Remove the rows of every user in erasure_requests, and of every user whose consent the source
    now withdraws, from the exports, the intermediates and the dedupe state; blank the image URLs of
    users who withdrew image consent; append an audit entry per cause (counts and days only) to the
    storage dir. Without config `confirm: true`, only report what that would do."""
    settings = feedback_settings.settings
    dry_run = not config.confirm
    if dry_run:
        context.instance.add_run_tags(context.run_id, {DRY_RUN_TAG: "true"})
    source = feedback_source.reader(context.log.warning)
    with explained_failures():
        source.check_schema()
        read = source.read_erasure_requests()
    # Requests whose user id cannot be read fail the run, once everything else is done.
    unreadable, requests = read.null_count(), read.drop_nulls()
    storage, exports = feedback_storage.storage(), feedback_storage.exports()
    # What the run changes goes there: a dry run records it and changes nothing.
    sink: Sink = Recording() if dry_run else WRITES
    record = SubjectRecord(storage, sink)

    # A dry run only reads, so it shares the lock as export steps do: it waits for an erasure in
    # progress instead of counting from files half of which are already erased.
    lock = feedback_storage.writing if dry_run else feedback_storage.erasing
    with explained_failures(), lock(context.log.info, context.instance):
        if not dry_run:
            # A killed raw_feedback step's copies of source rows (docs/privacy.md, Erasure).
            storage.remove_abandoned_scratch(context.log.warning)
        # Days exported before the record existed: their record is made once, from raw_feedback.
        derived = record.derived(record.unrecorded_raw_days())
        held = record.read(extra=derived)
        consent = source.read_user_consent(held["user_id"].unique())
        work = withdrawal.plan(held, consent, requests)
        unrecorded = _unrecorded_days(storage, exports, set(record.days()) | set(derived)) if len(requests) else []
        if unrecorded:
            context.log.warning(
                f"{len(unrecorded)} day(s) ({unrecorded[0]} to {unrecorded[-1]}) have exported files but no "
                "raw_feedback to say whose rows they hold: erasure requests are looked for in them on every run, "
                "consent withdrawals cannot be; materialize those days again to record them"
            )
        nothing_to_do = work.nothing_to_do and not unrecorded
        scheduled = context.run.tags.get(SCHEDULED_TAG) == SCHEDULED_TAGS[SCHEDULED_TAG]

        def erase(users: pl.Series, days: set[str], cause: str) -> erasure.ErasureSummary:
            pseudonyms = pseudonymize_user_ids(users, settings.hmac_key)
            return erasure.erase(
                storage=storage,
                exports=exports,
                state=dedupe_state.store(),
                user_ids=pseudonyms["user_id"],
                pseudonyms=pseudonyms["analysis_hash"],
                csv_pseudonyms=_csv_pseudonyms(settings, pseudonyms),
                suppression=(
                    erasure_rules.Suppression(settings.k_anonymity_threshold, settings.quasi_identifiers)
                    if settings.suppress_small_groups
                    else None
                ),
                run_id=context.run_id,
                hmac_key_id=settings.hmac_key_id,
                dry_run=dry_run,
                days=days,
                cause=cause,
                settings=settings,
            )

        erased = (
            erase(requests, _days(work.requested) | set(unrecorded), erasure.ERASURE_REQUEST)
            if not scheduled or not work.requested.is_empty() or unrecorded
            else None
        )
        withdrawn = (
            erase(work.withdrawn["user_id"].unique(), _days(work.withdrawn), erasure.CONSENT_WITHDRAWN)
            if not work.withdrawn.is_empty()
            else None
        )
        blanked = None
        if not work.images.is_empty():
            image_pseudonyms = pseudonymize_user_ids(work.images["user_id"].unique(), settings.hmac_key)
            blanked = withdrawal.blank_image_urls(
                storage=storage,
                exports=exports,
                user_ids=image_pseudonyms["user_id"],
                pseudonyms=image_pseudonyms["analysis_hash"],
                csv_pseudonyms=_csv_pseudonyms(settings, image_pseudonyms),
                days=_days(work.images),
                dry_run=dry_run,
                settings=settings,
            )
            at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            withdrawal.audit_blanking(storage, at, context.run_id, settings.hmac_key_id, blanked, sink)
        if not (work.nothing_to_do and not derived):
            # Last, once the files hold what it says: a run killed before it finds the same work again.
            days = _days(work.requested) | _days(work.withdrawn) | _days(work.images) | set(derived)
            record.erase(held, pl.concat([work.requested, work.withdrawn]), work.images, days)
        # Read under the lock, so the version is that of the files this run left.
        restated = (
            None if dry_run else restated_release(context.instance, exports, f"erase_subjects run {context.run_id}")
        )
    _report(context, storage, dry_run, held, work, nothing_to_do, erased, withdrawn, blanked, len(requests))
    if restated is not None:
        context.log_event(restated)
    if unreadable:
        raise dg.Failure(
            description=f"{unreadable} erasure request(s) have a user id that does not read as a number, so those "
            "subjects could not be erased; every other request and withdrawal was carried out. Have the app store "
            "the request's user id as an integer, then run erase_subjects again.",
            metadata={"unreadable_erasure_requests": unreadable},
            allow_retries=False,
        )


def _csv_pseudonyms(settings: ExportSettings, pseudonyms: pl.DataFrame) -> erasure_rules.CsvPseudonyms:
    """The users' pseudonyms as a day's file spells them (they differ by day with a pseudonym scope
    other than `stable`)."""

    def of(day: str) -> pl.Series:
        rows = pseudonyms.select(pl.lit(dt.date.fromisoformat(day)).alias("partition"), "analysis_hash")
        return scoped_pseudonyms(rows, settings.pseudonym_scope, settings.hmac_key)

    return of


def _report(
    context: dg.OpExecutionContext,
    storage: Storage,
    dry_run: bool,
    held: pl.DataFrame,
    work: withdrawal.Withdrawals,
    nothing_to_do: bool,
    erased: erasure.ErasureSummary | None,
    withdrawn: erasure.ErasureSummary | None,
    blanked: withdrawal.BlankingSummary | None,
    requested: int,
) -> None:
    """The run's log lines, observations and metadata: counts and days, never a subject."""
    removals = [summary for summary in (erased, withdrawn) if summary is not None]
    by_day = _merged_by_day(*(summary.rows_removed_by_partition for summary in removals))
    removed = {kind: sum(days.values()) for kind, days in by_day.items()}
    blanked_by_day = blanked.blanked_by_partition if blanked is not None else {}
    days = sorted({day for done in removals for day in done.partitions} | set(blanked.partitions if blanked else []))
    entries = [done.audit_entry_id for done in (erased, withdrawn, blanked) if done is not None and done.audit_entry_id]
    withdrawn_users = work.withdrawn["user_id"].n_unique()
    image_users = work.images["user_id"].n_unique()
    # Requested subjects the record finds in no stored day: their rows were never exported, or are
    # already gone; "would remove 0 rows" alone read like a failure to find them.
    not_held = requested - work.requested["user_id"].n_unique()
    metadata: dict[str, dg.RawMetadataValue] = {
        "dry_run": dry_run,
        "nothing_to_do": nothing_to_do,
        "subjects": requested,
        "subjects_in_no_written_day": not_held,
        "subjects_consent_withdrawn": withdrawn_users,
        "subjects_image_consent_withdrawn": image_users,
        "users_in_record": held["user_id"].n_unique(),
        "days_in_record": held["partition"].n_unique(),
        "days_changed": len(days),
        **{f"rows_removed_{kind}": n for kind, n in removed.items()},
        "rows_removed_by_day": dg.MetadataValue.json(by_day),
        **{f"image_urls_blanked_{kind}": sum(blanked_by_day.get(kind, {}).values()) for kind in IMAGE_KINDS},
    }
    rows = (
        f"{removed[AssetName.TRAINING_CSV]} CSV row(s) and "
        f"{sum(removed.values()) - removed[AssetName.TRAINING_CSV]} stored "
        "row(s) or key(s)"
    )
    images = f"{sum(sum(n.values()) for n in blanked_by_day.values())} image URL(s) in {len(days)} day(s)"
    who = (
        f"{requested} subject(s) in erasure_requests ({not_held} of them in no written day: never exported, or "
        f"already erased); the stored days hold {withdrawn_users} user(s) whose consent is withdrawn and "
        f"{image_users} whose image consent is withdrawn"
    )
    if nothing_to_do:
        context.log.info(
            f"{NOTHING_TO_DO_NOTE} (the record of subjects names {metadata['users_in_record']} user(s) over "
            f"{metadata['days_in_record']} day(s)); no partition, state file or CSV was opened"
        )
        metadata["note"] = NOTHING_TO_DO_NOTE
    if dry_run:
        context.log.info(f"{DRY_RUN_NOTE}. {who}; an erasure would remove {rows} and blank {images}")
        context.add_output_metadata({**metadata, "note": DRY_RUN_NOTE})
        return
    for summary, cause in ((erased, erasure.ERASURE_REQUEST), (withdrawn, erasure.CONSENT_WITHDRAWN)):
        if summary is not None:
            for observation in _observations(summary, context.run_id, cause):
                context.log_event(observation)
    if blanked is not None:
        for observation in _blanking_observations(blanked, context.run_id):
            context.log_event(observation)
    audit_log = storage.location(erasure.AUDIT_FILE)
    if entries:
        context.log.info(
            f"{who}; removed {rows} and blanked {images}; audit entries {', '.join(entries)} in {audit_log}"
        )
        metadata["audit_entry"] = ", ".join(entries)
        metadata["audit_log"] = dg.MetadataValue.path(audit_log)
    context.add_output_metadata(metadata)


@dg.job(
    executor_def=dg.in_process_executor,
    description="GDPR erasure and consent withdrawal: remove every exported row of the users in erasure_requests "
    "and of the users whose consent is withdrawn from the training CSVs, the intermediate partitions and the dedupe "
    "state, blank the image URLs of users who withdrew image consent, and record an audit entry per cause. Runs "
    "every night (nightly_erasure); a dry run unless launched with config "
    "ops: {erase_requested_subjects: {config: {confirm: true}}}.",
)
def erase_subjects() -> None:
    erase_requested_subjects()


# The scheduled runs erase: they are confirmed.
SCHEDULED_RUN_CONFIG = {"ops": {"erase_requested_subjects": {"config": {"confirm": True}}}}

# 04:00 UTC, two hours after the nightly export starts (02:00): the night's export has long
# finished (a day takes seconds to minutes), so this run also covers the day it just wrote, and a
# withdrawal made while the export ran is caught the same night. An export that overruns is
# still safe: this run's lock waits for the export steps to finish with the files.
nightly_erasure = dg.ScheduleDefinition(
    name="nightly_erasure",
    job=erase_subjects,
    cron_schedule="0 4 * * *",
    execution_timezone="UTC",
    run_config=SCHEDULED_RUN_CONFIG,
    tags=SCHEDULED_TAGS,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night after the export: the confirmed erasure of new erasure requests and consent "
    "withdrawals. A night with nothing to do reads only the small record of subjects and writes nothing.",
)

defs = dg.Definitions(jobs=[erase_subjects], schedules=[nightly_erasure])
