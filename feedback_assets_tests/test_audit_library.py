"""The privacy figures the pipeline reports equal those of an independent library, pyCANON.

pyCANON runs in its own environment, `.venv-pycanon` (requirements/pycanon.txt), which
`./scripts/test` makes; it reads the exported CSVs as an auditor would, and the k and l it finds
must be the ones the k-anonymity check and the weekly audit report.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.defs.audit import audit_history
from feedback_assets.demo.database import write_demo_source
from feedback_assets.resources import resources_for
from feedback_assets_tests.graph import materialize, settings_for
from feedback_assets_tests.paths import exported_files

REPO_ROOT = Path(__file__).resolve().parents[1]
PYCANON_PYTHON = REPO_ROOT / ".venv-pycanon" / "bin" / "python"
MEASURE = REPO_ROOT / "scripts" / "pycanon_measure.py"
FIRST, LAST = "2025-03-01", "2025-03-04"
THRESHOLD = 5


def pycanon(files: list[Path], quasi_identifiers: str) -> dict[str, int]:
    if not PYCANON_PYTHON.exists():
        pytest.fail(f"{PYCANON_PYTHON} is missing: ./scripts/test makes it (requirements/pycanon.txt)")
    command = [str(PYCANON_PYTHON), str(MEASURE), "--quasi-identifiers", quasi_identifiers, "--sensitive"]
    result = subprocess.run(
        [*command, "conditions", *map(str, files)], capture_output=True, text=True, check=True, timeout=300
    )
    figures: dict[str, int] = json.loads(result.stdout)
    return figures


def check_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "k_anonymity_of_exports"]
    return {key: value.value for key, value in check.metadata.items()}


def audit_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (event,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return {key: value.value for key, value in event.step_output_data.metadata.items()}


# The default quasi-identifiers single out the demo's crafted edge-case rows (k = l = 1); the coarser
# sets give groups of many rows and conditions, where a miscount would show.
@pytest.mark.parametrize(
    ("precision", "quasi_identifiers", "groups_of_many"),
    [
        ("day", "age_range,feedback_created_at,analysis_created_at", False),
        ("day", "age_range,feedback_created_at", True),
        ("day", "timeframe,would_recommend", True),
    ],
)
def test_k_and_l_equal_pycanons_on_generated_data(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    precision: str,
    quasi_identifiers: str,
    groups_of_many: bool,
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=dt.date.fromisoformat(LAST), days=4, rows_per_day=400, users=150)
    settings = settings_for(
        tmp_path, url, timestamp_precision=precision, k_anonymity_quasi_identifiers=quasi_identifiers
    )
    # Two runs: the check looks at its run's days only, the audit at every file.
    materialize(instance, settings, FIRST, "2025-03-02")
    last_run = materialize(instance, settings, "2025-03-03", LAST)
    files = exported_files(tmp_path / "export")

    in_run = check_metadata(last_run)
    theirs = pycanon([files["2025-03-03"], files[LAST]], quasi_identifiers)
    assert theirs["rows"] > 500, "too few rows for the groups to mean anything"
    if groups_of_many:
        assert theirs["k"] > 1 and theirs["l"] > 1, theirs
    assert (in_run["rows_in_run"], in_run["smallest_group_in_run"], in_run["l_diversity_in_run"]) == (
        theirs["rows"],
        theirs["k"],
        theirs["l"],
    )

    overall = audit_metadata(audit_history.execute_in_process(instance=instance, resources=resources_for(settings)))
    everything = pycanon([path for path in files.values()], quasi_identifiers)
    assert (overall["rows_overall"], overall["smallest_group_overall"], overall["l_diversity_overall"]) == (
        everything["rows"],
        everything["k"],
        everything["l"],
    )
    assert overall["quasi_identifiers"] == quasi_identifiers.replace(",", ", ")


def test_suppressed_files_are_k_anonymous_by_pycanons_measure(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=dt.date.fromisoformat(LAST), days=4, rows_per_day=400, users=150)
    quasi_identifiers = "age_range,feedback_created_at,analysis_created_at"
    settings = settings_for(tmp_path, url, k_anonymity_suppress="true")
    result = materialize(instance, settings, FIRST, LAST)
    files = [path for path in exported_files(tmp_path / "export").values()]
    theirs = pycanon(files, quasi_identifiers)
    metadata = check_metadata(result)
    assert metadata["rows_below_threshold_in_run"] == 0
    assert theirs["k"] >= THRESHOLD
    assert (metadata["rows_in_run"], metadata["smallest_group_in_run"]) == (theirs["rows"], theirs["k"])


@pytest.mark.parametrize(
    "quasi_identifiers", ["age_range,feedback_created_at,analysis_created_at", "timeframe,would_recommend"]
)
def test_a_day_exported_as_parquet_alone_is_measured_as_its_csv(
    tmp_path: Path, hmac_key: str, quasi_identifiers: str
) -> None:
    """With FEEDBACK_EXPORT_FORMATS=parquet there is no CSV to read: the check and the weekly audit
    measure the typed files, spelled as the CSV would spell them, and find what they find in the CSVs
    of the same export, which pyCANON confirms."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=dt.date.fromisoformat(LAST), days=4, rows_per_day=400, users=150)
    figures = {}
    for formats in ("csv,parquet", "parquet"):
        root = tmp_path / formats
        settings = settings_for(root, url, export_formats=formats, k_anonymity_quasi_identifiers=quasi_identifiers)
        (root / "dagster_home").mkdir(parents=True)
        with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
            materialize(instance, settings, FIRST, "2025-03-02")
            in_run = check_metadata(materialize(instance, settings, "2025-03-03", LAST))
            audit = audit_history.execute_in_process(instance=instance, resources=resources_for(settings))
        overall = audit_metadata(audit)
        figures[formats] = (in_run, {key: value for key, value in overall.items() if key != "files"})
    assert not list((tmp_path / "parquet" / "export").glob("*.csv"))
    assert figures["parquet"] == figures["csv,parquet"]
    in_run, overall = figures["parquet"]
    assert in_run["days_in_run"] == 2 and int(str(in_run["rows_in_run"])) > 500
    files = exported_files(tmp_path / "csv,parquet" / "export")
    theirs = pycanon([files["2025-03-03"], files[LAST]], quasi_identifiers)
    assert (in_run["rows_in_run"], in_run["smallest_group_in_run"], in_run["l_diversity_in_run"]) == (
        theirs["rows"],
        theirs["k"],
        theirs["l"],
    )
    everything = pycanon(list(files.values()), quasi_identifiers)
    assert (overall["rows_overall"], overall["smallest_group_overall"], overall["l_diversity_overall"]) == (
        everything["rows"],
        everything["k"],
        everything["l"],
    )
