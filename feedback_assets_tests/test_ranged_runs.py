"""A range in one run, day by day, or in any order: the same files, byte for byte (docs/contract.md, section 6)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets import slices
from feedback_assets.demo.database import write_demo_source
from feedback_assets.storage.scratch import SCRATCH_DIR
from feedback_assets_tests.graph import ALL_ASSETS, latest_metadata, materialize, settings_for

FIRST = dt.date(2025, 10, 20)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(6)]


def exported(export_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(export_dir.glob("*.csv"))}


def run(tmp_path: Path, name: str, source_url: str, scope: str, batches: list[list[str]]) -> dict[str, bytes]:
    """Materialize the graph in the given runs (each a contiguous list of days) on a fresh instance."""
    root = tmp_path / name
    root.mkdir()
    settings = settings_for(root, source_url, dedupe_scope=scope)
    home = root / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for batch in batches:
            last = batch[-1] if len(batch) > 1 else None
            assert materialize(instance, settings, batch[0], last).success
    return exported(root / "export")


@pytest.mark.parametrize("scope", ["exact", "first_per_pair"])
def test_single_run_daily_shuffled_and_split_runs_give_identical_files(
    tmp_path: Path, hmac_key: str, scope: str
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=8, rows_per_day=40, seed=3)
    shuffled = DAYS.copy()
    random.Random(11).shuffle(shuffled)

    single = run(tmp_path, "single", source_url, scope, [DAYS])
    daily = run(tmp_path, "daily", source_url, scope, [[day] for day in DAYS])
    out_of_order = run(tmp_path, "shuffled", source_url, scope, [[day] for day in shuffled])
    split = run(tmp_path, "split", source_url, scope, [DAYS[3:], DAYS[:3]])

    assert list(single) == [f"feedback_training_{day.replace('-', '')}.csv" for day in DAYS]
    assert all(len(content.splitlines()) > 1 for content in single.values())
    assert daily == single
    assert out_of_order == single
    assert split == single


@pytest.mark.parametrize("scope", ["exact", "first_per_pair"])
def test_a_range_worked_through_in_slices_of_a_day_or_two_gives_the_same_files(
    tmp_path: Path, hmac_key: str, scope: str, monkeypatch: pytest.MonkeyPatch, source_url: str
) -> None:
    # On PostgreSQL the slices share one snapshot and take their dimension rows from files the run
    # read once: whole tables when the run spans most of the feedback (these six of eight days), the
    # rows of the run's ids otherwise (each day alone). On SQLite each slice reads its own. Either
    # way, the files of a single slice.
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=8, rows_per_day=40, seed=3)
    whole = run(tmp_path, "whole", source_url, scope, [DAYS])
    assert run(tmp_path, "daily", source_url, scope, [[day] for day in DAYS]) == whole
    monkeypatch.setattr(slices, "FIRST_SLICE_DAYS", 2)
    monkeypatch.setattr(slices, "ROWS_PER_SLICE", 60)
    sliced = run(tmp_path, "sliced", source_url, scope, [DAYS, DAYS])
    assert all(len(content.splitlines()) > 1 for content in whole.values())
    assert sliced == whole
    # The run's working copies of source rows are gone with the run.
    for name in ("whole", "daily", "sliced"):
        scratch = tmp_path / name / "storage" / SCRATCH_DIR
        assert not scratch.exists() or list(scratch.iterdir()) == []


def test_a_ranged_run_records_each_day_of_each_asset_once_with_its_own_figures(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[2]), days=3, rows_per_day=40, seed=3)
    assert materialize(instance, settings_for(tmp_path, source_url), DAYS[0], DAYS[2]).success
    for asset in ALL_ASSETS:
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        days = sorted(str(r.asset_materialization.partition) for r in records if r.asset_materialization)
        assert days == DAYS[:3], asset
    totals = [latest_metadata(instance, "raw_feedback", day)["dagster/row_count"] for day in DAYS[:3]]
    assert len(set(totals)) > 1, "every day shows the same figure: the range's, not its own"
    assert {latest_metadata(instance, "training_csv", day)["partitions_in_run"] for day in DAYS[:3]} == {3}
    timing = latest_metadata(instance, "training_csv", DAYS[0])
    assert timing["step_seconds_day_share"] == pytest.approx(timing["step_seconds_whole_run"] / 3, abs=0.001)
