"""FEEDBACK_PARTITIONS_START and FEEDBACK_BACKFILL_DAYS_PER_RUN: read when the code location loads,
validated with a clear error."""

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
    refused = load("2025-13-01")
    assert refused.returncode != 0
    assert "FEEDBACK_PARTITIONS_START must be a date written YYYY-MM-DD, not '2025-13-01'" in refused.stderr


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
        # The observed source (docs/contract.md, section 7) is never materialized: it has no policy.
        "keys = [key for key in graph.get_all_asset_keys() if graph.get(key).is_materializable]\n"
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
    assert policies["0"].returncode != 0
    assert "FEEDBACK_BACKFILL_DAYS_PER_RUN must be a whole number of days, 1 or more, not '0'" in policies["0"].stderr
