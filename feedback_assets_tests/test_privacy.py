"""What the privacy officer signs off on: keyed pseudonyms, one key per export, k-anonymity, safe files."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import sqlite3
import stat
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import dagster as dg
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feedback_assets import k_anonymity
from feedback_assets.defs.audit import audit_history
from feedback_assets.defs.erasure import EraseConfig, erase_subjects
from feedback_assets.demo.database import write_demo_source
from feedback_assets.key_guard import MARKER_NAME, fingerprint
from feedback_assets.pseudonyms import pseudonym, scoped_pseudonyms
from feedback_assets.resources import resources_for
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for
from feedback_assets_tests.paths import exported_files

# What erases: without it, erase_subjects only reports what it would remove.
CONFIRM = dg.RunConfig(ops={"erase_requested_subjects": EraseConfig(confirm=True)})
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
    before = export_files(tmp_path)

    monkeypatch.setenv("FEEDBACK_HMAC_KEY", key)
    settings = settings_for(tmp_path, sqlite_url(tmp_path), hmac_key_id=key_id)
    with pytest.raises(dg.Failure, match=message) as raised:
        materialize(instance, settings, "2025-10-26")
    assert "move the export and storage directories aside" in str(raised.value)
    assert KEY_HEX not in str(raised.value) and OTHER_KEY not in str(raised.value)
    assert export_files(tmp_path) == before


def export_files(tmp_path: Path) -> dict[Path, bytes]:
    """Every file of the export dir, the typed Parquet under parquet/ included."""
    return {p: p.read_bytes() for p in (tmp_path / "export").rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (
            {},
            {"timestamp_precision": "hour"},
            "holds files exported with FEEDBACK_TIMESTAMP_PRECISION=day; this run uses hour",
        ),
        (
            {"pseudonym_scope": "month"},
            {},
            "holds files exported with FEEDBACK_PSEUDONYM_SCOPE=month; this run uses stable",
        ),
        (
            {},
            {"split": "train=0.6,validation=0.2,test=0.2"},
            "holds files exported with FEEDBACK_SPLIT=train=0.8,validation=0.1,test=0.1; "
            "this run uses train=0.6,validation=0.2,test=0.2",
        ),
    ],
)
def test_a_second_run_with_another_precision_or_pseudonym_scope_is_refused(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    first: dict[str, str],
    second: dict[str, str],
    message: str,
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path), **first), "2025-10-25").success
    before = export_files(tmp_path)
    with pytest.raises(dg.Failure, match=message) as raised:
        materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path), **second), "2025-10-26")
    assert "move the export directory aside" in str(raised.value)
    assert export_files(tmp_path) == before
    # The same settings again are welcome.
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path), **first), "2025-10-26").success


def test_an_export_marked_before_the_precision_setting_counts_as_microseconds(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """Files exported by contract version 1 carry microseconds; a day-precision run must not join them."""
    export = tmp_path / "export"
    export.mkdir()
    marker = {"hmac_key_id": "k1", "key_fingerprint": fingerprint(bytes.fromhex(KEY_HEX))}
    (export / MARKER_NAME).write_text(json.dumps(marker, sort_keys=True))
    write_crafted_source(sqlite_url(tmp_path))
    with pytest.raises(dg.Failure, match="FEEDBACK_TIMESTAMP_PRECISION=microsecond; this run uses day"):
        materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-25")
    settings = settings_for(tmp_path, sqlite_url(tmp_path), timestamp_precision="microsecond")
    assert materialize(instance, settings, "2025-10-25").success
    upgraded = json.loads((export / MARKER_NAME).read_text())
    assert upgraded == {
        **marker,
        "timestamp_precision": "microsecond",
        "pseudonym_scope": "stable",
        "split": "train=0.8,validation=0.1,test=0.1",
    }


def test_month_pseudonyms_link_rows_within_a_month_only_and_erasure_finds_them(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = sqlite_url(tmp_path)
    data = write_demo_source(url, end_date=dt.date(2025, 11, 2), days=5, rows_per_day=80, users=20, seed=3)
    settings = settings_for(tmp_path, url, pseudonym_scope="month")
    assert materialize(instance, settings, "2025-10-29", "2025-11-02").success
    files = exported_files(tmp_path / "export")
    hashes = {day: set(pl.read_csv(path, infer_schema=False)["analysis_hash"].to_list()) for day, path in files.items()}
    october = hashes["2025-10-29"] | hashes["2025-10-30"] | hashes["2025-10-31"]
    november = hashes["2025-11-01"] | hashes["2025-11-02"]
    assert hashes["2025-10-29"] & hashes["2025-10-31"], "20 users over three days: someone returns within the month"
    assert not october & november, "a pseudonym links rows across months"
    key = bytes.fromhex(KEY_HEX)
    stable = {pseudonym(uid, key) for uid in data.users["id"].to_list()}
    assert not stable & (october | november), "the stable pseudonym leaves the storage dir"

    # Erase a user present in both months: every file loses that user's rows.
    def month_hash(user_id: int, day: str) -> str:
        rows = pl.DataFrame({"partition": [dt.date.fromisoformat(day)], "analysis_hash": [pseudonym(user_id, key)]})
        return str(scoped_pseudonyms(rows, "month", key).item())

    users = data.users["id"].to_list()
    erased = next(
        u for u in users if month_hash(u, "2025-10-31") in october and month_hash(u, "2025-11-01") in november
    )
    with closing(sqlite3.connect(tmp_path / "source.sqlite")) as db, db:
        db.execute("INSERT INTO erasure_requests (user_id, requested_at) VALUES (?, '2025-11-03 00:00:00')", (erased,))
    assert erase_subjects.execute_in_process(
        instance=instance, resources=resources_for(settings), run_config=CONFIRM
    ).success
    for day, path in files.items():
        left = set(pl.read_csv(path, infer_schema=False)["analysis_hash"].to_list())
        assert month_hash(erased, day) not in left, day
        assert left == hashes[day] - {month_hash(erased, day)}, day


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
    assert manifest["contract_version"] == "3"
    assert (manifest["timestamp_precision"], manifest["pseudonym_scope"]) == ("day", "stable")
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
    # The rows of users 5, 1 and 2, in the file's order.
    conditions = ['\'=hyperlink("x")', "acne,oily", '"red" cheeks\nline2,rosacea,日本']
    rules = ["'@at", "hydration_boost, spf_daily", "'+plus"]
    recommendations = ["'-rec_c", "rec_a", "rec_b"]

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["conditions"] for r in rows] == conditions
    assert [r["rules_applied"] for r in rows] == rules
    assert [r["recommendation_id"] for r in rows] == recommendations
    assert [r["age_range"] for r in rows] == ["", "25-35", "<18"]
    assert [r["would_recommend"] for r in rows] == ["", "true", "false"]

    frame = pl.read_csv(path, infer_schema=False)
    assert frame["conditions"].to_list() == conditions
    assert frame["rules_applied"].to_list() == rules
    typed = pl.read_csv(path)
    assert typed["helpful_rating"].to_list() == [1, 5, 3]
    assert typed["would_recommend"].to_list() == [None, True, False]

    table = pd.read_csv(io.BytesIO(path.read_bytes()), dtype=str, keep_default_na=False)
    assert table["conditions"].tolist() == conditions
    assert table["rules_applied"].tolist() == rules
    assert table["recommendation_id"].tolist() == recommendations


QIS = ("age_range", "feedback_created_at")
D1, D2 = "2025-10-25T00:00:00.000000Z", "2025-10-26T00:00:00.000000Z"


def quasi(rows: Sequence[tuple[str | None, str, str | None]]) -> pl.DataFrame:
    schema = {"age_range": pl.String, "feedback_created_at": pl.String, "conditions": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


# Four groups over (age_range, feedback_created_at): 6 rows with 2 conditions; 2 rows with 1; 5 rows
# whose age cell is empty, null and "" alike (the file cannot tell them apart), with 2; and 1 row.
KNOWN_GROUPS = quasi(
    [("18-25", D1, "acne")] * 4
    + [("18-25", D1, "dry")] * 2
    + [("50+", D1, "dry")] * 2
    + [(None, D1, "")] * 3
    + [("", D1, "acne")] * 2
    + [("<18", D2, "rosacea")]
)


def test_k_anonymity_and_l_diversity_on_known_groups() -> None:
    measured = k_anonymity.measure(KNOWN_GROUPS, 5, QIS)
    assert measured == k_anonymity.KAnonymity(
        rows=14, smallest_group=1, rows_below_threshold=3, l_diversity=1, groups=4, rows_in_uniform_groups=3
    )
    assert k_anonymity.measure(KNOWN_GROUPS, 2, QIS).rows_below_threshold == 1
    diverse = KNOWN_GROUPS.filter(pl.col("age_range").fill_null("").is_in(["18-25", ""]))
    assert k_anonymity.measure(diverse, 5, QIS) == k_anonymity.KAnonymity(
        rows=11, smallest_group=5, rows_below_threshold=0, l_diversity=2, groups=2
    )
    assert k_anonymity.measure(KNOWN_GROUPS.head(0), 5, QIS) == k_anonymity.KAnonymity(
        rows=0, smallest_group=0, rows_below_threshold=0
    )


def test_suppression_drops_exactly_the_small_groups() -> None:
    kept, suppressed = k_anonymity.suppress_small_groups(KNOWN_GROUPS, 5, QIS)
    assert_frame_equal(kept, KNOWN_GROUPS[[*range(6), *range(8, 13)]])
    assert suppressed == 3
    kept_all, none = k_anonymity.suppress_small_groups(KNOWN_GROUPS, 1, QIS)
    assert_frame_equal(kept_all, KNOWN_GROUPS)
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
        audit = audit_history.execute_in_process(instance=instance, resources=resources_for(settings))
        assert audit_metadata(audit)["smallest_group_overall"] == 1
        assert manifest["counts"]["suppressed_records"] == 0
