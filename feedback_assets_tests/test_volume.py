"""A day's feedback volume against the days before it (volume.py): the figures behind `feedback_volume`."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.definitions import defs
from feedback_assets.demo.database import write_demo_source
from feedback_assets.resources import resources_for
from feedback_assets.settings import ConfigError, settings_from
from feedback_assets.volume import day_volumes
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for

FIRST = dt.date(2025, 10, 1)


def days(counts: list[int]) -> dict[str, int]:
    """Consecutive days from FIRST with these row counts."""
    return {(FIRST + dt.timedelta(days=i)).isoformat(): n for i, n in enumerate(counts)}


def last(rows_by_day: dict[str, int]) -> str:
    return max(rows_by_day)


@pytest.mark.parametrize(
    ("today", "odd", "low", "high"),
    [
        (39, True, True, False),
        (40, False, False, False),
        (200, False, False, False),
        (999, False, False, False),
        (1001, True, False, True),
    ],
)
def test_a_day_far_below_or_above_the_median_of_earlier_days_is_odd(
    today: int, odd: bool, low: bool, high: bool
) -> None:
    counts = days([100, 300, 200, 250, 150, 220, 180, today])
    (volume,) = day_volumes(counts, [last(counts)])
    assert volume.baseline == 200
    assert (volume.odd, volume.too_low, volume.too_high) == (odd, low, high)


def test_fewer_than_seven_earlier_days_with_feedback_are_not_judged() -> None:
    counts = days([100, 100, 0, 100, 100, 100, 100, 1])
    (volume,) = day_volumes(counts, [last(counts)])
    assert volume.baseline is None and volume.baseline_days == 6
    assert not volume.odd
    assert "not judged" in volume.describe()


def test_days_without_feedback_stay_out_of_the_baseline() -> None:
    """After a three-day outage the next day is judged against days that had feedback."""
    counts = days([100] * 7 + [0, 0, 0] + [3])
    judged = {volume.day: volume for volume in day_volumes(counts, sorted(counts))}
    outage = [judged[day] for day in sorted(counts)[7:10]]
    assert all(volume.too_low and volume.baseline == 100 for volume in outage)
    recovered = judged[last(counts)]
    assert recovered.baseline == 100 and recovered.baseline_days == 7 and recovered.too_low


def test_only_the_latest_fourteen_earlier_days_make_the_baseline() -> None:
    counts = days([10_000] * 10 + [100] * 14 + [30])
    (volume,) = day_volumes(counts, [last(counts)])
    assert volume.baseline == 100 and volume.baseline_days == 14
    assert not volume.odd


def test_the_bounds_are_settings() -> None:
    counts = days([100] * 7 + [40])
    (default,) = day_volumes(counts, [last(counts)])
    (strict,) = day_volumes(counts, [last(counts)], low_ratio=0.5, high_ratio=2)
    assert not default.odd and strict.too_low
    assert strict.describe() == (
        "2025-10-08: 40 row(s), 0.40 times the median 100 of the 7 earlier day(s) with feedback, below the "
        "expected 0.5..2"
    )


def test_a_day_the_app_nearly_stopped_writing_warns_without_failing_the_run_and_the_audit_names_it(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    source = tmp_path / "source.sqlite"
    last = dt.date(2025, 10, 25)
    write_demo_source(f"sqlite:///{source}", end_date=last, days=10, rows_per_day=60, seed=3)
    # The app stopped writing on the last day: all but a handful of its feedback rows never arrived.
    with sqlite3.connect(source) as conn:
        conn.execute(
            "DELETE FROM recommendation_feedback WHERE created_at >= '2025-10-25' AND id NOT IN "
            "(SELECT id FROM recommendation_feedback WHERE created_at >= '2025-10-25' ORDER BY id LIMIT 3)"
        )
    conn.close()
    settings = settings_for(tmp_path, f"sqlite:///{source}")
    result = materialize(instance, settings, "2025-10-16", "2025-10-25")
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "feedback_volume"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["odd_days"].value == "2025-10-25"
    assert check.metadata["days_below"].value == 1 and check.metadata["days_judged"].value == 3
    assert "2025-10-25: 3 row(s), 0.0" in str(check.metadata["by_day"].value)
    assert (tmp_path / "export" / "feedback_training_20251025.csv").is_file()

    # The day before, run alone, is judged against its own earlier days and passes.
    again = materialize(instance, settings, "2025-10-24")
    (check,) = [e for e in again.get_asset_check_evaluations() if e.check_name == "feedback_volume"]
    assert check.passed and "odd_days" not in check.metadata

    audit = defs.resolve_job_def("audit_history").execute_in_process(
        instance=instance, resources=resources_for(settings)
    )
    assert audit.success
    (materialized,) = [e for e in audit.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = materialized.step_output_data.metadata
    assert metadata["odd_volume_days"].value == "2025-10-25"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FEEDBACK_VOLUME_LOW_RATIO", "fifth", "must be a number, not 'fifth'"),
        ("FEEDBACK_VOLUME_LOW_RATIO", "1.5", "must be more than 0 and less than 1"),
        ("FEEDBACK_VOLUME_HIGH_RATIO", "0.5", "must be more than 1"),
    ],
)
def test_volume_bounds_out_of_their_range_are_refused_naming_the_setting(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{variable} {message}"):
        settings_from({variable: value}, {"FEEDBACK_HMAC_KEY": KEY_HEX, "DAGSTER_HOME": "/home"})
