"""The job `erase_subjects`: removes every already-exported row of the users in `erasure_requests`
(docs/privacy.md, Erasure). The file work is in `erasure.py`; this module only wires it to Dagster.

A run is a dry run unless its config says `confirm: true`: launched from the UI with the default
config, it reports what it would remove and changes nothing. A real run records an
AssetObservation on every day of every asset whose files it rewrote, so each partition's page
shows the erasure.

No `from __future__ import annotations` here: Dagster resolves the op's `context` annotation at
definition time and cannot resolve it from a string.
"""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from feedback_assets import erasure
from feedback_assets.assets import (
    DEDUPE_STATE_POOL,
    DEDUPLICATED_PAIRS,
    SEEN_PAIR_HASHES,
    anonymized_pairs,
    raw_feedback,
    training_csv,
)
from feedback_assets.failures import explained_failures
from feedback_assets.files import location, remove_abandoned_scratch
from feedback_assets.pseudonyms import pseudonymize_user_ids, scoped_pseudonyms
from feedback_assets.resources import FeedbackSettings

DRY_RUN_NOTE = "dry run: nothing was changed; launch with config confirm: true to erase"

# The asset each kind of file erasure rewrites belongs to (rejected_feedback names no person and is
# left alone).
ASSET_OF_KIND: dict[str, dg.AssetKey] = {
    "training_csv": training_csv.key,
    "raw_feedback": raw_feedback.key,
    "anonymized_pairs": anonymized_pairs.key,
    "deduplicated_pairs": DEDUPLICATED_PAIRS,
    "seen_pair_hashes": SEEN_PAIR_HASHES,
}


class EraseConfig(dg.Config):
    confirm: bool = Field(
        default=False,
        description="true: erase, rewriting the files and appending an audit entry. Unset or false: a dry "
        "run, which reports what an erasure would remove and changes nothing.",
    )


def _observations(summary: erasure.ErasureSummary, run_id: str) -> list[dg.AssetObservation]:
    """One observation per changed day of each asset: how many rows went, and which audit entry says so."""
    return [
        dg.AssetObservation(
            asset_key=ASSET_OF_KIND[kind],
            partition=day,
            description=f"erase_subjects removed {rows} row(s) of this day (audit entry {summary.audit_entry_id})",
            metadata={"rows_removed": rows, "audit_entry": summary.audit_entry_id, "erasure_run_id": run_id},
        )
        for kind, days in summary.rows_removed_by_partition.items()
        for day, rows in days.items()
    ]


# The dedupe state pool: the op rewrites state files, so it must not run while a dedupe step reads them.
@dg.op(pool=DEDUPE_STATE_POOL)
def erase_requested_subjects(
    context: dg.OpExecutionContext, config: EraseConfig, feedback_settings: FeedbackSettings
) -> None:
    """Remove the rows of every user in erasure_requests from the exports, the intermediates and the
    dedupe state, and append an audit entry (counts and days only) to the storage dir. Without
    config `confirm: true`, only report what that would remove."""
    settings = feedback_settings.settings
    dry_run = not config.confirm
    source = feedback_settings.source(context.log.warning)
    with explained_failures():
        source.check_schema()
        user_ids = source.read_erasure_requests()
    pseudonyms = pseudonymize_user_ids(user_ids, settings.hmac_key)

    def csv_pseudonyms(day: str) -> pl.Series:
        rows = pseudonyms.select(pl.lit(dt.date.fromisoformat(day)).alias("partition"), "analysis_hash")
        return scoped_pseudonyms(rows, settings.pseudonym_scope, settings.hmac_key)

    # A dry run only reads, so it shares the lock as export steps do: it waits for an erasure in
    # progress instead of counting from files half of which are already erased.
    lock = feedback_settings.writing if dry_run else feedback_settings.erasing
    with explained_failures(), lock(context.log.info):
        if not dry_run:
            # A killed raw_feedback step's copies of source rows (docs/privacy.md, Erasure).
            remove_abandoned_scratch(settings.storage_dir, context.log.warning)
        summary = erasure.erase(
            storage_dir=settings.storage_dir,
            export_dir=settings.export_dir,
            state=feedback_settings.dedupe_state(),
            user_ids=pseudonyms["user_id"],
            pseudonyms=pseudonyms["analysis_hash"],
            csv_pseudonyms=csv_pseudonyms,
            suppression=(
                erasure.Suppression(settings.k_anonymity_threshold, settings.quasi_identifiers)
                if settings.suppress_small_groups
                else None
            ),
            run_id=context.run_id,
            hmac_key_id=settings.hmac_key_id,
            dry_run=dry_run,
        )
    removed = summary.rows_removed
    counts = (
        f"{removed['training_csv']} CSV row(s) and {sum(removed.values()) - removed['training_csv']} stored "
        f"row(s) or key(s) from {len(summary.partitions)} day(s)"
    )
    audit_log = settings.storage_dir / erasure.AUDIT_FILE
    metadata: dict[str, dg.RawMetadataValue] = {
        "dry_run": dry_run,
        "subjects": summary.subjects,
        "days_changed": len(summary.partitions),
        **{f"rows_removed_{kind}": n for kind, n in removed.items()},
        "rows_removed_by_day": dg.MetadataValue.json(summary.rows_removed_by_partition),
    }
    if dry_run:
        context.log.info(
            f"{DRY_RUN_NOTE}. {summary.subjects} subject(s) in erasure_requests; an erasure would remove {counts}"
        )
        context.add_output_metadata({"note": DRY_RUN_NOTE, **metadata})
        return
    for observation in _observations(summary, context.run_id):
        context.log_event(observation)
    context.log.info(
        f"{summary.subjects} subject(s) in erasure_requests; removed {counts}; "
        f"audit entry {summary.audit_entry_id} in {audit_log}"
    )
    context.add_output_metadata(
        {
            **metadata,
            "audit_entry": summary.audit_entry_id,
            "audit_log": dg.MetadataValue.path(location(audit_log)),
        }
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="GDPR erasure: remove every exported row of the users in erasure_requests from the training "
    "CSVs, the intermediate partitions and the dedupe state, and record an audit entry. A dry run unless "
    "launched with config ops: {erase_requested_subjects: {config: {confirm: true}}}.",
)
def erase_subjects() -> None:
    erase_requested_subjects()
