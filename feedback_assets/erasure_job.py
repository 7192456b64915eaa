"""The job `erase_subjects`: removes every already-exported row of the users in `erasure_requests`
(docs/privacy.md, Erasure). The file work is in `erasure.py`; this module only wires it to Dagster.

No `from __future__ import annotations` here: Dagster resolves the op's `context` annotation at
definition time and cannot resolve it from a string.
"""

import datetime as dt

import dagster as dg
import polars as pl

from feedback_assets import erasure
from feedback_assets.assets import DEDUPE_STATE_POOL
from feedback_assets.failures import explained_failures
from feedback_assets.pseudonyms import pseudonymize_user_ids, scoped_pseudonyms
from feedback_assets.resources import FeedbackSettings


# The dedupe state pool: the op rewrites state files, so it must not run while a dedupe step reads them.
@dg.op(pool=DEDUPE_STATE_POOL)
def erase_requested_subjects(context: dg.OpExecutionContext, feedback_settings: FeedbackSettings) -> None:
    """Remove the rows of every user in erasure_requests from the exports, the intermediates and the
    dedupe state, and append an audit entry (counts and days only) to the storage dir."""
    settings = feedback_settings.settings
    source = feedback_settings.source(context.log.warning)
    with explained_failures():
        source.check_schema()
        user_ids = source.read_erasure_requests()
    pseudonyms = pseudonymize_user_ids(user_ids, settings.hmac_key)

    def csv_pseudonyms(day: str) -> pl.Series:
        rows = pseudonyms.select(pl.lit(dt.date.fromisoformat(day)).alias("partition"), "analysis_hash")
        return scoped_pseudonyms(rows, settings.pseudonym_scope, settings.hmac_key)

    with explained_failures(), feedback_settings.erasing(context.log.info):
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
        )
    removed = summary.rows_removed
    context.log.info(
        f"{summary.subjects} subject(s) in erasure_requests; removed {removed['training_csv']} CSV row(s) and "
        f"{sum(removed.values()) - removed['training_csv']} stored row(s) or key(s) from "
        f"{len(summary.partitions)} day(s); audit entry in {settings.storage_dir / erasure.AUDIT_FILE}"
    )
    context.add_output_metadata(
        {
            "subjects": summary.subjects,
            "days_changed": len(summary.partitions),
            **{f"rows_removed_{kind}": n for kind, n in removed.items()},
            "audit_log": dg.MetadataValue.path(str(settings.storage_dir / erasure.AUDIT_FILE)),
        }
    )


@dg.job(
    executor_def=dg.in_process_executor,
    description="GDPR erasure: remove every exported row of the users in erasure_requests from the training "
    "CSVs, the intermediate partitions and the dedupe state, and record an audit entry.",
)
def erase_subjects() -> None:
    erase_requested_subjects()
