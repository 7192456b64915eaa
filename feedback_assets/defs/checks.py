"""The checks that run with every export, on what that run wrote: no dedupe key owned twice before
the CSV is written (blocking), the k-anonymity of the files (warning), and each day's feedback
volume against the days before it (warning). The weekly audit_history job (defs/audit.py) runs
their whole-history forms.

No `from __future__ import annotations` here: Dagster resolves a check's `context` annotation at
definition time."""

import dagster as dg

from feedback_assets import k_anonymity
from feedback_assets.asset_runs import ANONYMIZED_PAIRS, SEEN_PAIR_HASHES, TRAINING_CSV
from feedback_assets.day_files import measured_files
from feedback_assets.dedupe_state import days_to_rerun, repair_of
from feedback_assets.failures import explained_failures
from feedback_assets.partitions import days_of_run
from feedback_assets.resources import DedupeStateResource, FeedbackSettings, StorageResource
from feedback_assets.storage import PartitionStore
from feedback_assets.volume_stats import day_volumes, volume_metadata


@dg.asset_check(
    asset=SEEN_PAIR_HASHES,
    blocking=True,
    description="Every dedupe key the run's days own is owned by no other day, and only once by its own (the whole "
    "state is checked weekly by the audit_history job). A failure means two days' files, or one day's file twice, "
    "would hold the same pair: usually because the source changed after a day was exported, or (a day holding a "
    "key twice) because that day was exported before ids held twice in the source were rejected as ambiguous; "
    "training_csv is not written. What to do: backfill the days named in days_to_rerun, from the earliest through "
    "the latest, in one run (the repair field says so); the re-run rejects rows whose ids occur twice as "
    "ambiguous, and the app team should remove the duplicate rows.",
)
def no_key_owned_twice(
    context: dg.AssetCheckExecutionContext, dedupe_state: DedupeStateResource
) -> dg.AssetCheckResult:
    with explained_failures():
        shared = dedupe_state.store().shared_keys(among=days_of_run(context.run.tags))
    days = days_to_rerun(shared)
    metadata: dict[str, int | str] = {"keys_owned_twice": shared.height}
    # The repair's fields only when there is something to repair: blank rows read as missing data.
    if days:
        metadata["days_to_rerun"] = ", ".join(days)
        metadata["repair"] = repair_of(shared)
    return dg.AssetCheckResult(passed=shared.is_empty(), metadata=metadata)


@dg.asset_check(
    asset=TRAINING_CSV,
    description="k-anonymity over the quasi-identifiers (FEEDBACK_K_ANONYMITY_QUASI_IDENTIFIERS) and l-diversity "
    "of conditions in the run's files: the smallest group, the rows in groups below the threshold "
    "(FEEDBACK_K_ANONYMITY_THRESHOLD, default 5), the fewest distinct conditions in a group (every file so far: "
    "the audit_history job). A warning, never a failed run: it means some rows share their age range and times "
    "with fewer than k-1 others, so whoever knows those about a person could single out their row. Expected on "
    "small days such as the demo's few hundred rows. What to do: set FEEDBACK_K_ANONYMITY_SUPPRESS=true to "
    "leave such rows out, or a coarser FEEDBACK_TIMESTAMP_PRECISION, and re-run the days (docs/privacy.md).",
)
def k_anonymity_of_exports(
    context: dg.AssetCheckExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.AssetCheckResult:
    settings = feedback_settings.settings
    threshold = settings.k_anonymity_threshold
    run_days = days_of_run(context.run.tags)
    exports = feedback_storage.exports()
    run_days_files = [names for day, names in measured_files(exports).items() if day in run_days]
    run_files = [name for names in run_days_files for name in names]
    qis = settings.quasi_identifiers
    these_days = k_anonymity.measure(k_anonymity.exported_cells(exports, run_files, qis), threshold, qis)
    return dg.AssetCheckResult(
        passed=these_days.rows_below_threshold == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": threshold,
            "quasi_identifiers": ", ".join(qis),
            "smallest_group_in_run": these_days.smallest_group,
            "l_diversity_in_run": these_days.l_diversity,
            "rows_in_single_condition_groups_in_run": these_days.rows_in_uniform_groups,
            "rows_below_threshold_in_run": these_days.rows_below_threshold,
            "rows_in_run": these_days.rows,
            "suppression": "on" if settings.suppress_small_groups else "off",
            "days_in_run": len(run_days_files),
        },
    )


@dg.asset_check(
    asset=ANONYMIZED_PAIRS,
    description="Each of the run's days against the median of the 14 earlier days that had feedback: warns when a "
    "day has under FEEDBACK_VOLUME_LOW_RATIO (default 0.2) or over FEEDBACK_VOLUME_HIGH_RATIO (default 5) times "
    "that many source feedback rows, figures in by_day; quiet until 7 earlier days have feedback. A warning, "
    "never a failed run: a day with a twentieth of the usual rows usually means the app stopped writing feedback "
    "(a release bug, a broken sync). What to do: ask the app team; once the rows are in the source, the day is "
    "re-exported (docs/operate.md). The weekly audit_history job judges every day.",
)
def feedback_volume(
    context: dg.AssetCheckExecutionContext, feedback_settings: FeedbackSettings, feedback_storage: StorageResource
) -> dg.AssetCheckResult:
    with explained_failures():
        store = PartitionStore(feedback_storage.storage())
        judged = day_volumes(feedback_settings.settings, store, days_of_run(context.run.tags))
    for day in judged:
        if day.odd:
            context.log.warning(f"feedback_volume: {day.describe()}")
    return dg.AssetCheckResult(
        passed=not any(day.odd for day in judged),
        severity=dg.AssetCheckSeverity.WARN,
        metadata=volume_metadata(judged),
    )


FEEDBACK_CHECKS = [no_key_owned_twice, k_anonymity_of_exports, feedback_volume]
defs = dg.Definitions(asset_checks=FEEDBACK_CHECKS)
