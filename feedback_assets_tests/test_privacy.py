"""What the privacy officer signs off on: keyed pseudonyms, one key per export, k-anonymity, safe files."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import stat
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedback_assets import k_anonymity
from feedback_assets.audit_job import audit_history
from feedback_assets.demo.database import write_demo_source
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for

OTHER_KEY = "fedcba9876543210" * 4


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'source.sqlite'}"


def test_no_exported_pseudonym_is_the_plain_sha256_of_any_user_id(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    data = write_demo_source(sqlite_url(tmp_path), end_date=dt.date(2025, 10, 22), days=3, rows_per_day=60, seed=2)
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-20", "2025-10-22").success
    exported = pl.concat([pl.read_csv(p, infer_schema=False) for p in (tmp_path / "export").glob("*.csv")])[
        "analysis_hash"
    ]
    user_ids = pl.concat([data.users["id"], data.recommendation_feedback["user_id"]]).unique().to_list()
    plain = {hashlib.sha256(str(uid).encode()).hexdigest() for uid in user_ids}
    assert exported.len() > 100
    assert plain.isdisjoint(exported.to_list())


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "FEEDBACK_HMAC_KEY is not set"),
        ("ab" * 20, "FEEDBACK_HMAC_KEY has 40 hex digits, fewer than 64"),
        ("xy" * 32, "FEEDBACK_HMAC_KEY is not hexadecimal"),
    ],
)
def test_a_bad_key_stops_the_run_before_anything_is_read_or_written(
    tmp_path: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch, key: str | None, message: str
) -> None:
    if key is None:
        monkeypatch.delenv("FEEDBACK_HMAC_KEY", raising=False)
    else:
        monkeypatch.setenv("FEEDBACK_HMAC_KEY", key)
    # A source URL that does not exist: reading it would fail differently, so the key check came first.
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'absent.sqlite'}")
    with pytest.raises(dg.Failure, match=message) as raised:
        materialize(instance, settings, "2025-10-25")
    assert key is None or key not in str(raised.value)
    assert not (tmp_path / "export").exists() and not (tmp_path / "storage").exists()


@pytest.mark.parametrize(
    ("key", "key_id", "message"),
    [
        (KEY_HEX, "k2", "was written with HMAC key id 'k1'; this run uses key id 'k2'"),
        (OTHER_KEY, "k1", "was written with a different key under the same key id 'k1'"),
    ],
)
def test_a_second_run_with_another_key_is_refused(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    key_id: str,
    message: str,
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-25").success
    before = {p: p.read_bytes() for p in (tmp_path / "export").iterdir()}

    monkeypatch.setenv("FEEDBACK_HMAC_KEY", key)
    settings = settings_for(tmp_path, sqlite_url(tmp_path), hmac_key_id=key_id)
    with pytest.raises(dg.Failure, match=message) as raised:
        materialize(instance, settings, "2025-10-26")
    assert "move the export and storage directories aside" in str(raised.value)
    assert KEY_HEX not in str(raised.value) and OTHER_KEY not in str(raised.value)
    assert {p: p.read_bytes() for p in (tmp_path / "export").iterdir()} == before


def test_files_are_private_and_each_csv_has_a_manifest(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    result = materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-25")
    export = tmp_path / "export"
    assert stat.S_IMODE(export.stat().st_mode) == 0o750
    csv_file = export / "feedback_training_20251025.csv"
    manifest_file = export / "feedback_training_20251025.manifest.json"
    for path in (csv_file, manifest_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    manifest = json.loads(manifest_file.read_text())
    assert manifest["csv"] == csv_file.name
    assert manifest["row_count"] == 3
    assert manifest["sha256"] == hashlib.sha256(csv_file.read_bytes()).hexdigest()
    assert manifest["hmac_key_id"] == "k1"
    assert manifest["contract_version"] == "1"
    assert manifest["run_id"] == result.run_id
    assert manifest["counts"]["rejected_orphan"] == 3
    assert KEY_HEX not in manifest_file.read_text()
    assert not [p for p in export.iterdir() if p.name.startswith(".tmp-")]


def test_cells_read_back_exactly_through_csv_polars_and_pandas(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-25").success
    path = tmp_path / "export" / "feedback_training_20251025.csv"
    assert path.read_text(encoding="utf-8") == EXPECTED_20251025
    conditions = ["acne,oily", '\'=hyperlink("x")', '"red" cheeks\nline2,rosacea,日本']
    rules = ["hydration_boost, spf_daily", "'@at", "'+plus"]
    recommendations = ["rec_a", "'-rec_c", "rec_b"]

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["conditions"] for r in rows] == conditions
    assert [r["rules_applied"] for r in rows] == rules
    assert [r["recommendation_id"] for r in rows] == recommendations
    assert [r["age_range"] for r in rows] == ["25-35", "", "<18"]
    assert [r["would_recommend"] for r in rows] == ["true", "", "false"]

    frame = pl.read_csv(path, infer_schema=False)
    assert frame["conditions"].to_list() == conditions
    assert frame["rules_applied"].to_list() == rules
    typed = pl.read_csv(path)
    assert typed["helpful_rating"].to_list() == [5, 1, 3]
    assert typed["would_recommend"].to_list() == [True, None, False]

    table = pd.read_csv(io.BytesIO(path.read_bytes()), dtype=str, keep_default_na=False)
    assert table["conditions"].tolist() == conditions
    assert table["rules_applied"].tolist() == rules
    assert table["recommendation_id"].tolist() == recommendations


def quasi(rows: Sequence[tuple[str | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"age_range": pl.String, "conditions": pl.String}, orient="row")


def test_k_anonymity_on_known_group_sizes() -> None:
    rows = quasi([("18-25", "acne")] * 6 + [("50+", "dry")] * 2 + [(None, "")] * 5 + [("<18", "rosacea")])
    assert k_anonymity.measure(rows, 5) == k_anonymity.KAnonymity(rows=14, smallest_group=1, rows_below_threshold=3)
    assert k_anonymity.measure(rows, 2) == k_anonymity.KAnonymity(rows=14, smallest_group=1, rows_below_threshold=1)
    assert k_anonymity.measure(quasi([]), 5) == k_anonymity.KAnonymity(rows=0, smallest_group=0, rows_below_threshold=0)


def test_suppression_drops_exactly_the_small_groups() -> None:
    rows = quasi([("18-25", "acne")] * 5 + [("50+", "dry")] * 2 + [("<18", "rosacea")])
    kept, suppressed = k_anonymity.suppress_small_groups(rows, 5)
    assert_frame_equal(kept, quasi([("18-25", "acne")] * 5))
    assert suppressed == 3
    kept_all, none = k_anonymity.suppress_small_groups(rows, 1)
    assert_frame_equal(kept_all, rows)
    assert none == 0


def audit_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    """The output metadata of the weekly audit's one op."""
    (event,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return {key: value.value for key, value in event.step_output_data.metadata.items()}


@pytest.mark.parametrize("suppress", [False, True])
def test_the_k_anonymity_check_reports_and_suppression_is_counted(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, suppress: bool
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    settings = settings_for(tmp_path, sqlite_url(tmp_path), k_anonymity_suppress=str(suppress).lower())
    result = materialize(instance, settings, "2025-10-25")
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "k_anonymity_of_exports")
    metadata = {k: v.value for k, v in check.metadata.items()}
    csv_text = (tmp_path / "export" / "feedback_training_20251025.csv").read_text()
    manifest = json.loads((tmp_path / "export" / "feedback_training_20251025.manifest.json").read_text())
    if suppress:
        # Every exported row of the crafted day is alone in its (age_range, conditions) group.
        assert check.passed
        assert metadata["rows_below_threshold_in_run"] == 0
        assert csv_text.count("\n") == 1
        assert manifest["counts"]["suppressed_records"] == 3
        assert manifest["counts"]["exported_records"] == 0
    else:
        assert not check.passed
        assert check.severity == dg.AssetCheckSeverity.WARN
        assert metadata["smallest_group_in_run"] == 1
        assert metadata["rows_below_threshold_in_run"] == 3
        audit = audit_history.execute_in_process(instance=instance, resources={"feedback_settings": settings})
        assert audit_metadata(audit)["smallest_group_overall"] == 1
        assert manifest["counts"]["suppressed_records"] == 0
