"""Late and changed rows (docs/contract.md, section 7): the app's tables as an observable source
asset whose data version per day is that day's fingerprint (`fingerprint.py`, read by the source's
reader), and the sensor that observes them and re-exports the exported days whose rows changed.

The sensor runs in dagster-daemon (which `dagster dev` runs), on by default, every
FEEDBACK_SOURCE_CHECK_MINUTES. Each tick it records the lookback days' fingerprints as observations
(so a changed day shows as stale in the UI), compares each exported day's fingerprint with the one
its last export read (`source_fingerprint`, recorded by raw_feedback) and requests one run of
`feedback_export` per contiguous range of changed days, plus the later days a re-run showed must
follow it (`later_days_to_rerun`). The run key holds the fingerprints, so one change is requested
once, and after the run the fingerprints match: nothing loops.

No `from __future__ import annotations` here: Dagster inspects the annotations of the functions.
"""

import datetime as dt
import hashlib
import sqlite3
import warnings
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg
import psycopg2
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.external_asset import create_external_asset_from_source_asset

from feedback_assets import catalog
from feedback_assets.asset_runs import APP_FEEDBACK_SOURCE, DEDUPLICATED_PAIRS, EXPORT_JOB, RAW_FEEDBACK
from feedback_assets.connections import SourceUnreachableError
from feedback_assets.files import first_line_of
from feedback_assets.fingerprint import FINGERPRINT_METADATA, watched_days
from feedback_assets.partitions import daily_partitions, days_of_run
from feedback_assets.resources import FeedbackSettings, FeedbackSourceResource
from feedback_assets.settings import ExportSettings, LoadSettings
from feedback_assets.settings_fields import ConfigError, read_leniently, read_setting
from feedback_assets.source import open_source
from feedback_assets.source_url import SourceLocation

REASON_TAG = "feedback_assets/reason"
# The tags of a ranged run, as a backfill's single run carries them (`partitions.days_of_run`).
RANGE_START_TAG, RANGE_END_TAG = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
BUSY = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
PAGE = 500


def source_check_minutes(env: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """FEEDBACK_SOURCE_CHECK_MINUTES, read when the code location loads (it is the sensor's interval).
    A bad value must not keep the code location from loading: the default is used and the problem
    returned, for every tick to fail with it."""
    loaded, problems = read_leniently(LoadSettings, env)
    minutes, problem = loaded.source_check_minutes, problems.get("source_check_minutes")
    return minutes, None if problem is None else f"{problem}; the sensor checks every {minutes} minutes"


CHECK_MINUTES, CHECK_PROBLEM = source_check_minutes()


def contiguous_ranges(days: Iterable[str]) -> list[tuple[str, str]]:
    """Sorted YYYY-MM-DD days grouped into (first, last) runs of consecutive days."""
    ranges: list[tuple[str, str]] = []
    for day in sorted(set(days)):
        if ranges and dt.date.fromisoformat(ranges[-1][1]) + dt.timedelta(days=1) == dt.date.fromisoformat(day):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def changed_days(current: Mapping[str, str], exported: Mapping[str, str | None]) -> list[str]:
    """The exported days whose fingerprint is not the one their last export read. A day exported
    before fingerprints were recorded (None) counts as changed: nothing says it is not."""
    return sorted(day for day, read in exported.items() if day in current and read != current[day])


def days_in(first: str, last: str) -> list[str]:
    return list(daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last)))


def _latest_per_day(
    instance: dg.DagsterInstance, key: dg.AssetKey, days: Sequence[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization of `key` for each of `days` that has one."""
    latest: dict[str, dg.EventLogRecord] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(days)), limit=PAGE, cursor=cursor
        )
        for record in result.records:
            if record.partition_key is not None:
                latest.setdefault(record.partition_key, record)
        if not result.has_more or len(latest) == len(days):
            return latest
        cursor = result.cursor


def _metadata_text(record: dg.EventLogRecord, name: str) -> str | None:
    materialization = record.asset_materialization
    value = materialization.metadata.get(name) if materialization is not None else None
    return None if value is None else str(value.value)


def _pending_later_days(instance: dg.DagsterInstance, days: Sequence[str]) -> list[tuple[str, str, int]]:
    """(day, last later day, event) for each watched day whose last deduplication named later days
    that have not been deduplicated again since: the repair is a run from the day through them."""
    deduplicated = _latest_per_day(instance, DEDUPLICATED_PAIRS, days)
    pending = []
    for day, record in deduplicated.items():
        later = [d.strip() for d in (_metadata_text(record, "later_days_to_rerun") or "").split(",") if d.strip()]
        behind = [d for d in later if d in deduplicated and deduplicated[d].storage_id < record.storage_id]
        if behind:
            pending.append((day, max(behind), record.storage_id))
    return pending


def _busy_days(instance: dg.DagsterInstance) -> set[str]:
    """The days of every run queued or in progress: never requested twice."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=BUSY))
    return {day for run in runs for day in days_of_run(run.tags)}


def _watch_settings() -> tuple[SourceLocation, int]:
    """The two settings of a run the sensor reads itself, at each tick in the daemon."""
    return read_setting(ExportSettings, "source"), read_setting(ExportSettings, "lookback_days")


def _observations(instance: dg.DagsterInstance, fingerprints: Mapping[str, str]) -> list[dg.AssetObservation]:
    """An observation for each day whose fingerprint differs from its last one: the UI compares it
    with what raw_feedback last read and shows the day stale."""
    events = []
    for day, value in fingerprints.items():
        record = instance.get_latest_data_version_record(APP_FEEDBACK_SOURCE, is_source=True, partition_key=day)
        observation = record.asset_observation if record is not None else None
        if observation is None or observation.tags.get(DATA_VERSION_TAG) != value:
            events.append(dg.AssetObservation(APP_FEEDBACK_SOURCE, partition=day, tags={DATA_VERSION_TAG: value}))
    return events


def run_request(first: str, last: str, reason: str, key_parts: Iterable[str]) -> dg.RunRequest:
    """One run of feedback_export for first..last, tagged as a backfill's ranged run is."""
    digest = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:16]
    tags = {REASON_TAG: reason}
    if first == last:
        return dg.RunRequest(run_key=f"{first}..{last}:{digest}", partition_key=first, tags=tags)
    tags |= {RANGE_START_TAG: first, RANGE_END_TAG: last}
    return dg.RunRequest(run_key=f"{first}..{last}:{digest}", tags=tags)


@dg.sensor(
    name="feedback_source_changes",
    # By name: the job is defs/nightly_export.py's, and no definitions module imports another's.
    job_name=EXPORT_JOB,
    minimum_interval_seconds=CHECK_MINUTES * 60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Every FEEDBACK_SOURCE_CHECK_MINUTES (now {CHECK_MINUTES}), observes the fingerprint of each of the "
    "last FEEDBACK_LOOKBACK_DAYS days of the source and re-exports the exported days whose rows changed since "
    "(late or changed feedback, or a changed user, analysis or record), plus the later days a re-run names in "
    "later_days_to_rerun: one run per contiguous range, tagged feedback_assets/reason. Stop it here to turn "
    "the automation off (docs/operate.md).",
)
def feedback_source_changes(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    if CHECK_PROBLEM is not None:
        raise ConfigError(CHECK_PROBLEM)
    location, lookback_days = _watch_settings()
    days = [day.isoformat() for day in watched_days(dt.datetime.now(dt.UTC).date(), lookback_days)]
    if not days:
        return dg.SkipReason("no day of the partitions is within FEEDBACK_LOOKBACK_DAYS yet")
    try:
        # One try: a tick never waits out FEEDBACK_SOURCE_RETRY_SECONDS. The fingerprint covers every
        # column an export may read, whatever FEEDBACK_INCLUDE_IMAGE_URLS says.
        source = open_source(location, include_image_urls=False)
        fingerprints = source.fingerprints([dt.date.fromisoformat(day) for day in days], once=True)
    except (ConfigError, SourceUnreachableError, psycopg2.Error, sqlite3.Error) as exc:
        # The next tick tries again; the message is the driver's first line (never a password).
        return dg.SkipReason(f"the source was not observed: {first_line_of(exc)}")
    instance = context.instance
    exported = {
        day: _metadata_text(record, FINGERPRINT_METADATA)
        for day, record in _latest_per_day(instance, RAW_FEEDBACK, days).items()
    }
    changed = changed_days(fingerprints, exported)
    wanted = {day: f"{day}={fingerprints[day]}" for day in changed}
    for day, last, event in _pending_later_days(instance, days):
        for between in days_in(day, last):
            wanted.setdefault(between, f"{between}=later:{event}")
    busy = _busy_days(instance)
    requests, launched = [], []
    for first, last in contiguous_ranges(wanted):
        members = days_in(first, last)
        if busy.intersection(members):
            context.log.info(f"days {first}..{last} changed but a run of them is queued or running; next tick")
            continue
        requests.append(run_request(first, last, "source_changed", [wanted[day] for day in members]))
        launched.append(first if first == last else f"{first}..{last}")
    if requests:
        context.log.info(f"the source changed; requesting feedback_export for {', '.join(launched)}")
    return dg.SensorResult(run_requests=requests, asset_events=_observations(instance, fingerprints))


def _observe(
    context: dg.OpExecutionContext, feedback_settings: FeedbackSettings, feedback_source: FeedbackSourceResource
) -> dg.DataVersionsByPartition:
    days = watched_days(dt.datetime.now(dt.UTC).date(), feedback_settings.settings.lookback_days)
    # One try, as the sensor reads: an observation that fails is simply run again.
    fingerprints = feedback_source.reader().fingerprints(days, once=True)
    return dg.DataVersionsByPartition({day: dg.DataVersion(value) for day, value in fingerprints.items()})


# Observable source assets are beta, and Dagster's own conversion of one into an asset definition
# reads a deprecated property (OpDefinition.version): both warnings would print at every load of
# the code location, so the definition is converted here, once, with them silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    warnings.filterwarnings("ignore", message="Property `OpDefinition.version` is deprecated")
    app_feedback_source = create_external_asset_from_source_asset(
        dg.observable_source_asset(
            key=APP_FEEDBACK_SOURCE,
            partitions_def=daily_partitions,
            group_name="feedback_source",
            tags=catalog.PII_IDENTIFIED,
            # Short, as the catalog shows a description whole on one line; the sensor says the rest.
            description="The app's feedback tables, observed: each day's data version is a fingerprint of the rows "
            "its export reads (feedback_source_changes re-exports changed days).",
        )(_observe)
    )

defs = dg.Definitions(assets=[app_feedback_source], sensors=[feedback_source_changes])
