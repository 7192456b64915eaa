"""The job `audit_history`, weekly: the whole-history forms of the per-run checks.

The checks that run with every export look only at what that run wrote, so the nightly run does not
grow slower with history (docs/decisions.md, "Checks that stay cheap"). Once a week this job looks at
everything: every dedupe key owned by one day only, and only once, and k-anonymity over every exported file.

No `from __future__ import annotations` here: Dagster resolves the op's `context` annotation at
definition time.
"""

import dagster as dg

from feedback_assets import k_anonymity
from feedback_assets.day_files import measured_files
from feedback_assets.dedupe_state import days_holding_a_key_twice, days_to_rerun, repair_of
from feedback_assets.failures import explained_failures
from feedback_assets.resources import DedupeStateResource, FeedbackSettings, StorageResource
from feedback_assets.storage import PartitionStore
from feedback_assets.volume_stats import day_volumes


@dg.op
def audit_exported_history(
    context: dg.OpExecutionContext,
    feedback_settings: FeedbackSettings,
    feedback_storage: StorageResource,
    dedupe_state: DedupeStateResource,
) -> None:
    """Fails if any dedupe key is owned by two days or twice by one (naming the days to re-run);
    reports k-anonymity over every exported file, and each day whose feedback volume is far from
    the days before it (feedback_volume), as warnings in the log."""
    settings = feedback_settings.settings
    with explained_failures():
        shared = dedupe_state.store().shared_keys()
    exports = feedback_storage.exports()
    files = [name for names in measured_files(exports).values() for name in names]
    qis = settings.quasi_identifiers
    cells = k_anonymity.exported_cells(exports, files, qis)
    every_day = k_anonymity.measure(cells, settings.k_anonymity_threshold, qis)
    days = days_to_rerun(shared)
    volumes = day_volumes(settings, PartitionStore(feedback_storage.storage()))
    odd_volumes = [day for day in volumes if day.odd]
    metadata: dict[str, dg.RawMetadataValue] = {
        "keys_owned_twice": shared.height,
        **({"days_to_rerun": ", ".join(days)} if days else {}),
        "files": len(files),
        "threshold": settings.k_anonymity_threshold,
        "quasi_identifiers": ", ".join(qis),
        "smallest_group_overall": every_day.smallest_group,
        "l_diversity_overall": every_day.l_diversity,
        "rows_in_single_condition_groups_overall": every_day.rows_in_uniform_groups,
        "rows_below_threshold_overall": every_day.rows_below_threshold,
        "rows_overall": every_day.rows,
        "days_with_odd_volume": len(odd_volumes),
        **({"odd_volume_days": ", ".join(day.day for day in odd_volumes)} if odd_volumes else {}),
    }
    context.add_output_metadata(metadata)
    for day in odd_volumes:
        context.log.warning(f"feedback_volume: {day.describe()}")
    if every_day.rows_below_threshold:
        context.log.warning(
            f"{every_day.rows_below_threshold} exported row(s) sit in ({', '.join(qis)}) groups smaller "
            f"than {settings.k_anonymity_threshold}; see docs/privacy.md"
        )
    if days:
        if days_holding_a_key_twice(shared):
            owned = f"{shared.height} dedupe key(s) are owned twice, by two days or twice by one"
            description = f"{owned}; {repair_of(shared)}"
        else:
            description = (
                f"{shared.height} dedupe key(s) are owned by two days; re-run (backfill) from the earliest "
                f"changed day through {days[-1]}"
            )
        raise dg.Failure(description=description, metadata=metadata, allow_retries=False)


@dg.job(
    executor_def=dg.in_process_executor,
    description="Weekly audit of everything exported so far: every dedupe key owned once, k-anonymity and "
    "l-diversity over every exported day (its CSV, or its Parquet where it has no CSV), and every day's feedback "
    "volume against the days before it.",
)
def audit_history() -> None:
    audit_exported_history()


weekly_history_audit = dg.ScheduleDefinition(
    name="weekly_history_audit",
    job=audit_history,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    description="Mondays at 03:00 UTC, runs audit_history over everything exported so far: every dedupe key "
    "owned by one day, k-anonymity and l-diversity over every CSV.",
)

defs = dg.Definitions(jobs=[audit_history], schedules=[weekly_history_audit])
