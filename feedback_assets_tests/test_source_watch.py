"""The feedback_source_changes sensor, evaluated in-process on a real instance against real sources:
which days it re-exports, as which runs, and what it says when it cannot watch."""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from feedback_assets.asset_runs import GROUP
from feedback_assets.defs.assets import FEEDBACK_ASSETS
from feedback_assets.defs.checks import FEEDBACK_CHECKS
from feedback_assets.defs.source_watch import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    app_feedback_source,
    changed_days,
    contiguous_ranges,
    feedback_source_changes,
    source_check_minutes,
)
from feedback_assets.fingerprint import FINGERPRINT_METADATA
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets.settings import ConfigError
from feedback_assets_tests.daemon import clear_feedback_settings
from feedback_assets_tests.graph import latest_metadata, settings_for
from feedback_assets_tests.late_rows import execute, row, write_rows

TODAY = dt.datetime.now(dt.UTC).date()
LOOKBACK = 5
OLD, D1, D2, D3 = (TODAY - dt.timedelta(days=n) for n in (LOOKBACK + 2, 3, 2, 1))


def test_days_are_grouped_into_runs_of_consecutive_days() -> None:
    days = ["2025-10-22", "2025-10-20", "2025-10-21", "2025-10-25", "2025-12-31", "2026-01-01", "2025-10-21"]
    assert contiguous_ranges(days) == [
        ("2025-10-20", "2025-10-22"),
        ("2025-10-25", "2025-10-25"),
        ("2025-12-31", "2026-01-01"),
    ]
    assert contiguous_ranges([]) == []


def test_only_exported_days_whose_fingerprint_moved_are_changed() -> None:
    current = {"2025-10-20": "2:a", "2025-10-21": "1:b", "2025-10-22": "0", "2025-10-23": "1:d"}
    exported = {"2025-10-20": "2:a", "2025-10-21": "1:x", "2025-10-23": None, "2025-09-01": "5:e"}
    assert changed_days(current, exported) == ["2025-10-21", "2025-10-23"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", (60, None)), ("1", (1, None)), (" 15 ", (15, None))],
)
def test_the_check_interval_is_read_in_minutes(raw: str, expected: tuple[int, str | None]) -> None:
    assert source_check_minutes({"FEEDBACK_SOURCE_CHECK_MINUTES": raw}) == expected


@pytest.mark.parametrize("raw", ["0", "hourly", "-5"])
def test_a_bad_check_interval_falls_back_to_the_default_and_names_the_variable(raw: str) -> None:
    minutes, problem = source_check_minutes({"FEEDBACK_SOURCE_CHECK_MINUTES": raw})
    assert minutes == 60
    assert problem is not None and problem.startswith("FEEDBACK_SOURCE_CHECK_MINUTES must be")


@dg.op
def _nothing() -> None:
    """A run's days are its tags: a job of one empty op stands for a run queued elsewhere."""


@dg.job
def _elsewhere() -> None:
    _nothing()


def _export(
    instance: dg.DagsterInstance,
    settings: FeedbackSettings,
    first: dt.date,
    last: dt.date,
    expect_success: bool = True,
) -> bool:
    """One run of the graph as the code location defines it, with the source asset beside it, so
    raw_feedback records which observation of each day it read (in-process `materialize` of the
    assets alone leaves the source out)."""
    tags = {RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()}
    result = dg.materialize(
        [*FEEDBACK_ASSETS, *FEEDBACK_CHECKS, app_feedback_source],
        selection=dg.AssetSelection.groups(GROUP),
        instance=instance,
        resources=resources_for(settings),
        tags=tags,
        raise_on_error=expect_success,
    )
    assert result.success or not expect_success
    return result.success


def _tick(instance: dg.DagsterInstance) -> dg.SensorResult:
    result = feedback_source_changes(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult), result
    # The daemon records a tick's observations; here the test does.
    for event in result.asset_events or []:
        assert isinstance(event, dg.AssetObservation)
        instance.report_runless_asset_event(event)
    return result


def _requested(result: dg.SensorResult) -> list[tuple[str, str]]:
    ranges = []
    for request in result.run_requests or []:
        assert request.tags[REASON_TAG] == "source_changed"
        if request.partition_key is not None:
            ranges.append((request.partition_key, request.partition_key))
        else:
            ranges.append((request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]))
    return ranges


def _stale(instance: dg.DagsterInstance, day: dt.date) -> bool:
    # As the UI computes it: the day's latest observation against the version raw_feedback last read.
    resolver = get_stale_status_resolver(instance, [*FEEDBACK_ASSETS, app_feedback_source])
    return resolver.get_status(dg.AssetKey("raw_feedback"), day.isoformat()) == StaleStatus.STALE


@pytest.mark.usefixtures("hmac_key")
def test_late_rows_in_exported_days_of_the_lookback_are_requested_once_per_range_of_days(
    tmp_path: Path, source_url: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_feedback_settings(monkeypatch)
    monkeypatch.setenv("FEEDBACK_SOURCE_URL", source_url)
    monkeypatch.setenv("FEEDBACK_LOOKBACK_DAYS", str(LOOKBACK))
    rows = [row(1, OLD, 9), row(2, D1, 9), row(3, D2, 9), row(4, D3, 9)]
    write_rows(source_url, rows)
    # The sensor's first tick observes the watched days; none was exported, so nothing is run.
    first = _tick(instance)
    assert _requested(first) == []
    assert len(first.asset_events or []) == LOOKBACK
    settings = settings_for(tmp_path, source_url)
    _export(instance, settings, OLD, OLD)
    _export(instance, settings, D1, D3)
    assert FINGERPRINT_METADATA not in latest_metadata(instance, "raw_feedback", OLD.isoformat())
    assert latest_metadata(instance, "raw_feedback", D1.isoformat())[FINGERPRINT_METADATA].startswith("1:")
    unchanged = _tick(instance)
    assert _requested(unchanged) == [] and unchanged.asset_events == []
    assert not _stale(instance, D1)

    # A late row in D1 and in the day older than the lookback: only D1 is re-exported.
    write_rows(source_url, [*rows, row(5, D1, 12), row(6, OLD, 12)])
    late = _tick(instance)
    assert _requested(late) == [(D1.isoformat(), D1.isoformat())]
    assert [event.partition for event in late.asset_events or []] == [D1.isoformat()]
    assert _stale(instance, D1) and not _stale(instance, D2)

    # Changes in D2 and D3 too: one run for the three consecutive days.
    changed = [rows[0], rows[1], row(3, D2, 9, rating_value=1), rows[3], row(5, D1, 12), row(6, OLD, 12)]
    write_rows(source_url, [*changed, row(7, D3, 1)])
    assert _requested(_tick(instance)) == [(D1.isoformat(), D3.isoformat())]

    # A run of those days queued or in progress: nothing is requested twice.
    busy = instance.create_run_for_job(
        _elsewhere,
        tags={RANGE_START_TAG: D1.isoformat(), RANGE_END_TAG: D3.isoformat()},
        status=dg.DagsterRunStatus.NOT_STARTED,
    )
    assert _requested(_tick(instance)) == []
    instance.delete_run(busy.run_id)

    # Once re-exported, the fingerprints match what the export read: no further run.
    _export(instance, settings, D1, D3)
    assert _requested(_tick(instance)) == []
    assert not _stale(instance, D1)


def test_a_tick_says_why_it_cannot_watch_the_source(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_feedback_settings(monkeypatch)
    monkeypatch.setenv("FEEDBACK_SOURCE_URL", f"sqlite:///{tmp_path / 'absent.sqlite'}")
    skipped = feedback_source_changes(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason)
    assert "FEEDBACK_SOURCE_URL" in (skipped.skip_message or "")
    assert "does not exist" in (skipped.skip_message or "")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    monkeypatch.setenv("FEEDBACK_SOURCE_URL", f"sqlite:///{empty}")
    tableless = feedback_source_changes(dg.build_sensor_context(instance=instance))
    assert isinstance(tableless, dg.SkipReason)
    assert "no such table: recommendation_feedback" in (tableless.skip_message or "")
    monkeypatch.setenv("FEEDBACK_LOOKBACK_DAYS", "0")
    with pytest.raises(ConfigError, match="FEEDBACK_LOOKBACK_DAYS must be 1 or more days, not 0"):
        feedback_source_changes(dg.build_sensor_context(instance=instance))


def test_an_unreachable_source_skips_the_tick_at_once_with_the_drivers_first_line(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused connection is transient: a run would try again for FEEDBACK_SOURCE_RETRY_SECONDS,
    a tick tries once and leaves the retry to the next tick. A retried read would end in the budget's
    message, naming FEEDBACK_SOURCE_RETRY_SECONDS; no timing is asserted (a busy machine is slow)."""
    clear_feedback_settings(monkeypatch)
    # Port 1: nothing listens there, so the connection is refused.
    monkeypatch.setenv("FEEDBACK_SOURCE_URL", "postgresql://app:s3cret@127.0.0.1:1/feedback")
    monkeypatch.setenv("FEEDBACK_SOURCE_RETRY_SECONDS", "120")
    skipped = feedback_source_changes(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason)
    message = skipped.skip_message or ""
    assert message.startswith(
        "the source was not observed: FEEDBACK_SOURCE_URL: cannot connect to the postgresql database 'feedback' "
        "on 127.0.0.1:1: "
    )
    assert "\n" not in message and "s3cret" not in message and "FEEDBACK_SOURCE_RETRY_SECONDS" not in message


@pytest.mark.usefixtures("hmac_key")
def test_with_first_per_pair_a_late_row_that_takes_a_later_days_pair_re_runs_the_range_through_that_day(
    tmp_path: Path, source_url: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_feedback_settings(monkeypatch)
    monkeypatch.setenv("FEEDBACK_SOURCE_URL", source_url)
    monkeypatch.setenv("FEEDBACK_LOOKBACK_DAYS", str(LOOKBACK))
    # Pair (user 3, rec_3) is first rated on D2; the late row rates it on D1, so D1 now owns it.
    rows = [row(2, D1, 9), row(3, D2, 9)]
    write_rows(source_url, rows)
    _tick(instance)
    settings = settings_for(tmp_path, source_url, dedupe_scope="first_per_pair")
    _export(instance, settings, D1, D2)
    execute(
        source_url,
        "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
        f"created_at) VALUES (9, 3, 3, 'rec_3', 5, '{D1.isoformat()} 12:00:00')",
    )
    assert _requested(_tick(instance)) == [(D1.isoformat(), D1.isoformat())]
    # The sensor's run of D1 alone: the blocking check stops its CSV, naming D2.
    assert not _export(instance, settings, D1, D1, expect_success=False)
    assert latest_metadata(instance, "deduplicated_pairs", D1.isoformat())["later_days_to_rerun"] == D2.isoformat()
    assert _requested(_tick(instance)) == [(D1.isoformat(), D2.isoformat())]
    assert _export(instance, settings, D1, D2)
    assert _requested(_tick(instance)) == []
    assert "rec_3" in _recommendations(tmp_path / "export", D1)
    assert "rec_3" not in _recommendations(tmp_path / "export", D2)


def _recommendations(export: Path, day: dt.date) -> set[str]:
    with (export / f"feedback_training_{day:%Y%m%d}.csv").open(newline="") as handle:
        return {line["recommendation_id"] for line in csv.DictReader(handle)}
