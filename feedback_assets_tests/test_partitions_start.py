"""FEEDBACK_PARTITIONS_START and FEEDBACK_BACKFILL_DAYS_PER_RUN: read when the code location loads,
validated with a clear error that fails the export runs, never the load."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.partitions import backfill_days_per_run, backfill_policy_for, partitions_start
from feedback_assets.settings import ConfigError
from feedback_assets_tests.crafted_source import write_crafted_source
from feedback_assets_tests.graph import KEY_HEX

REPO_ROOT = Path(__file__).resolve().parents[1]
TOMORROW = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()


def test_unset_or_empty_is_the_contract_default() -> None:
    assert partitions_start({}) == "2025-01-01"
    assert partitions_start({"FEEDBACK_PARTITIONS_START": "  "}) == "2025-01-01"
    assert partitions_start({"FEEDBACK_PARTITIONS_START": " 2024-02-29 "}) == "2024-02-29"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2025-02-29", "must be a date written YYYY-MM-DD, not '2025-02-29'"),
        ("2025-1-1", "must be a date written YYYY-MM-DD"),
        ("20250101", "must be a date written YYYY-MM-DD"),
        ("yesterday", "must be a date written YYYY-MM-DD"),
        (TOMORROW, "not before today"),
    ],
)
def test_a_bad_start_is_refused_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"FEEDBACK_PARTITIONS_START.*{message}"):
        partitions_start({"FEEDBACK_PARTITIONS_START": value})


def load(start: str) -> subprocess.CompletedProcess[str]:
    """Load the code location in a fresh interpreter, as `dagster dev` does, with the setting given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env.update({"FEEDBACK_PARTITIONS_START": start, "PYTHONPATH": str(REPO_ROOT)})
    script = (
        "from feedback_assets.definitions import defs\n"
        "print(defs.resolve_job_def('feedback_export').partitions_def.get_first_partition_key())"
    )
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def test_the_code_location_starts_its_partitions_on_the_setting() -> None:
    loaded = load("2025-10-20")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "2025-10-20"


# Loads the code location with the environment given, then runs one day's export and a dry-run erasure.
RUNS_AFTER_A_BAD_LOAD = """
import dagster as dg
from feedback_assets.definitions import defs
from feedback_assets.partitions import load_problems

print(defs.resolve_job_def("feedback_export").partitions_def.get_first_partition_key())
print(load_problems())
with dg.instance_for_test() as instance:
    export = defs.resolve_job_def("feedback_export").execute_in_process(
        instance=instance, partition_key="2025-10-25", raise_on_error=False
    )
    (failure, *_) = [event for event in export.all_events if event.event_type_value == "STEP_FAILURE"]
    print(failure.step_failure_data.user_failure_data.description)
    erasure = defs.resolve_job_def("erase_subjects").execute_in_process(instance=instance, raise_on_error=False)
    print(erasure.success)
"""


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("FEEDBACK_PARTITIONS_START", "2025-13-01", "must be a date written YYYY-MM-DD, not '2025-13-01'"),
        ("FEEDBACK_BACKFILL_DAYS_PER_RUN", "0", "must be a whole number of days, 1 or more, not '0'"),
    ],
)
def test_a_bad_load_time_setting_fails_the_export_runs_naming_it_and_the_rest_stays_usable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    """The code location still loads (the UI, the daemon, erasure); each export run fails with the message."""
    source = tmp_path / "source.sqlite"
    write_crafted_source(f"sqlite:///{source}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_"))}
    env.update(
        {
            variable: value,
            "FEEDBACK_SOURCE_URL": f"sqlite:///{source}",
            "FEEDBACK_EXPORT_DIR": str(tmp_path / "export"),
            "FEEDBACK_STORAGE_DIR": str(tmp_path / "storage"),
            "FEEDBACK_HMAC_KEY": KEY_HEX,
            "DAGSTER_HOME": str(tmp_path),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    ran = subprocess.run(
        [sys.executable, "-c", RUNS_AFTER_A_BAD_LOAD],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    first, problems, failure, erasure_succeeded = ran.stdout.strip().splitlines()[-4:]
    assert first == "2025-01-01"
    expected = f"Configuration error: {variable} {message}; fix it and reload the code location"
    assert problems == repr([expected])
    assert failure == expected
    assert erasure_succeeded == "True"
    assert not list((tmp_path / "export").glob("*.csv"))


def test_backfill_days_per_run_is_unset_or_a_whole_number_of_days() -> None:
    assert backfill_days_per_run({}) is None
    assert backfill_days_per_run({"FEEDBACK_BACKFILL_DAYS_PER_RUN": " "}) is None
    assert backfill_days_per_run({"FEEDBACK_BACKFILL_DAYS_PER_RUN": " 5 "}) == 5
    for bad in ("0", "-3", "2.5", "week"):
        with pytest.raises(ConfigError, match=f"FEEDBACK_BACKFILL_DAYS_PER_RUN must be a whole number of days.*{bad}"):
            backfill_days_per_run({"FEEDBACK_BACKFILL_DAYS_PER_RUN": bad})
    assert backfill_policy_for(None) == dg.BackfillPolicy.single_run()
    assert backfill_policy_for(5) == dg.BackfillPolicy.multi_run(max_partitions_per_run=5)


def test_the_code_location_fans_backfills_out_over_runs_of_the_set_days() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    script = (
        "from feedback_assets.definitions import defs\n"
        "graph = defs.resolve_asset_graph()\n"
        # The observed source (docs/contract.md, section 7) is never materialized: it has no policy; nor
        # has the unpartitioned release (docs/ml.md), which no backfill of days takes.
        "keys = [key for key in graph.get_all_asset_keys()\n"
        "        if graph.get(key).is_materializable and graph.get(key).partitions_def is not None]\n"
        "print(sorted({str(graph.get(key).backfill_policy) for key in keys}))"
    )
    policies = {}
    for value in ("", "5", "0"):
        policies[value] = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, "FEEDBACK_BACKFILL_DAYS_PER_RUN": value, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert policies[""].returncode == 0, policies[""].stderr
    assert policies[""].stdout.strip() == "['BackfillPolicy.single_run()']"
    assert policies["5"].returncode == 0, policies["5"].stderr
    assert policies["5"].stdout.strip() == "['BackfillPolicy.multi_run(max_partitions_per_run=5)']"
    # A bad value leaves the default (one run per backfill); the export runs fail naming it (test above).
    assert policies["0"].returncode == 0, policies["0"].stderr
    assert policies["0"].stdout.strip() == "['BackfillPolicy.single_run()']"
