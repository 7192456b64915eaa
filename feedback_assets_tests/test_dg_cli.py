"""`dg` (dagster-dg-cli), the command line `dagster dev` points users to, finds this code location
through `[tool.dg]` in pyproject.toml and materializes with it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import pytest

from feedback_assets.demo.database import write_demo_source
from feedback_assets_tests.graph import ALL_ASSETS, KEY_HEX
from feedback_assets_tests.processes import BIN_DIR

REPO_ROOT = Path(__file__).resolve().parent.parent
DAYS = ("2025-10-24", "2025-10-25")


def dg(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_", "VIRTUAL_ENV"))}
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env.update(DAGSTER_HOME=str(home), **settings)
    return subprocess.run(
        [str(BIN_DIR / "dg"), *args, "--target-path", str(REPO_ROOT)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_lists_the_code_locations_definitions(tmp_path: Path) -> None:
    listed = dg(tmp_path, "list", "defs", "--json")
    assert listed.returncode == 0, listed.stderr
    defs = json.loads(listed.stdout)
    # The graph's assets, the app's tables they read, observed (docs/contract.md, section 7), and the
    # pinned release after them (docs/ml.md).
    assert sorted(asset["asset_key"] for asset in defs["assets"]) == sorted(
        [*ALL_ASSETS, "app_feedback_source", "training_dataset"]
    )
    assert {"feedback_export", "erase_subjects", "audit_history"} <= {job["name"] for job in defs["jobs"]}


@pytest.mark.slow
def test_dg_launch_materializes_a_range_of_days(tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(source_url, end_date=dt.date.fromisoformat(DAYS[-1]), days=3, rows_per_day=40, seed=4)
    export = tmp_path / "export"
    launched = dg(
        tmp_path,
        "launch",
        "--assets",
        "*",
        "--partition-range",
        f"{DAYS[0]}...{DAYS[-1]}",
        FEEDBACK_HMAC_KEY=KEY_HEX,
        FEEDBACK_SOURCE_URL=source_url,
        FEEDBACK_EXPORT_DIR=str(export),
        FEEDBACK_STORAGE_DIR=str(tmp_path / "storage"),
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    assert sorted(path.name for path in export.glob("*.csv")) == [
        f"feedback_training_{day.replace('-', '')}.csv" for day in DAYS
    ]
