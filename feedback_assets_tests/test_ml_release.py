"""The typed export, the card and the pinned release as the real graph writes them (issue 25), read
with the ML team's own clients: `datasets.load_dataset(EXPORT_DIR)` offline and `polars.scan_parquet`."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import random
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from polars.testing import assert_frame_equal

from feedback_assets.defs.assets import FEEDBACK_ASSETS
from feedback_assets.defs.erasure import EraseConfig, erase_subjects
from feedback_assets.defs.release import training_dataset
from feedback_assets.demo.database import write_demo_source
from feedback_assets.pseudonyms import pseudonym
from feedback_assets.resources import resources_for
from feedback_assets.settings import PSEUDONYM_SCOPES
from feedback_assets.splits import DEFAULT_SPLIT, SPLIT_NAMES, SplitName, assign_splits, parse_split
from feedback_assets.typed_export import typed_rows
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for
from feedback_assets_tests.late_rows import execute
from feedback_assets_tests.paths import exported_files
from feedback_assets_tests.sources import rating, write_source

FIRST, LAST = "2025-10-28", "2025-10-31"
DAYS = ("2025-10-28", "2025-10-29", "2025-10-30", "2025-10-31")


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'source.sqlite'}"


def export_all(tmp_path: Path, instance: dg.DagsterInstance, **overrides: str) -> Path:
    """The demo source's four days exported in one run; the export dir."""
    url = sqlite_url(tmp_path)
    if not (tmp_path / "source.sqlite").exists():
        write_demo_source(url, end_date=dt.date(2025, 10, 31), days=4, rows_per_day=120, users=60, seed=7)
    assert materialize(instance, settings_for(tmp_path, url, **overrides), FIRST, LAST).success
    return tmp_path / "export"


def release_run(tmp_path: Path, instance: dg.DagsterInstance, **overrides: str) -> dict[str, object]:
    """training_dataset materialized; release.json as written, checked against its recorded data version."""
    settings = settings_for(tmp_path, sqlite_url(tmp_path), **overrides)
    assert dg.materialize([training_dataset], instance=instance, resources=resources_for(settings)).success
    pinned: dict[str, object] = json.loads((tmp_path / "export" / "release.json").read_text())
    record = instance.get_latest_data_version_record(dg.AssetKey("training_dataset"))
    assert record is not None and record.asset_materialization is not None
    assert (record.asset_materialization.tags or {})["dagster/data_version"] == pinned["version"]
    return pinned


def expected_splits(export: Path) -> dict[SplitName, dict[str, pl.DataFrame]]:
    """Each split's rows per day as the CSVs say, in the CSV's order: the CSV typed, its rows kept where
    the stable pseudonym (the CSV's own, scope stable) draws that split."""
    expected: dict[SplitName, dict[str, pl.DataFrame]] = {name: {} for name in SPLIT_NAMES}
    for day, path in exported_files(export).items():
        cells = pl.read_csv(path, infer_schema=False)
        splits = assign_splits(cells["analysis_hash"], parse_split("split", DEFAULT_SPLIT), bytes.fromhex(KEY_HEX))
        typed = typed_rows(cells).with_columns(splits.cast(pl.String).alias("split"))
        for name in SPLIT_NAMES:
            expected[name][day] = typed.filter(pl.col("split") == name).drop("split")
    return expected


@pytest.mark.slow
def test_load_dataset_gives_the_three_splits_with_the_csvs_rows_and_cells(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("HF_HOME", "HF_DATASETS_CACHE"):
        monkeypatch.setenv(variable, str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    export = export_all(tmp_path, instance)
    expected = expected_splits(export)
    # Every day has its three files, and each holds exactly its split's rows of the CSV, in its order.
    for name in SPLIT_NAMES:
        for day in DAYS:
            written = pl.read_parquet(export / "parquet" / name / f"feedback_training_{day.replace('-', '')}.parquet")
            assert_frame_equal(written, expected[name][day])
    whole = {name: pl.concat([expected[name][day] for day in DAYS]) for name in SPLIT_NAMES}
    assert all(frame.height > 0 for frame in whole.values())
    assert sum(frame.height for frame in whole.values()) == sum(
        pl.read_csv(path, infer_schema=False).height for path in exported_files(export).values()
    )

    datasets = importlib.import_module("datasets")
    loaded = datasets.load_dataset(str(export), cache_dir=str(tmp_path / "hf" / "datasets"))
    assert sorted(loaded) == sorted(SPLIT_NAMES)
    for name in SPLIT_NAMES:
        frame = pl.from_arrow(loaded[name].data.table)
        assert isinstance(frame, pl.DataFrame)
        assert_frame_equal(frame, whole[name])
        scanned = pl.scan_parquet(str(export / "parquet" / name / "*.parquet")).collect()
        assert_frame_equal(scanned, whole[name])
    seen = [set(whole[name]["analysis_hash"].to_list()) for name in SPLIT_NAMES]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])

    # The manifests count each split, and the card tells the same rows.
    card = (export / "README.md").read_text()
    for day in DAYS:
        manifest = json.loads((export / f"feedback_training_{day.replace('-', '')}.manifest.json").read_text())
        counts = {name: expected[name][day].height for name in SPLIT_NAMES}
        assert manifest["split_counts"] == counts
        assert [entry["rows"] for entry in manifest["parquet"]] == list(counts.values())
        assert [entry["sha256"] for entry in manifest["parquet"]] == [
            hashlib.sha256((export / entry["path"]).read_bytes()).hexdigest() for entry in manifest["parquet"]
        ]
        assert f"| {day} | {' | '.join(str(n) for n in counts.values())} |" in card
    assert "| last measured k | not measured yet |" not in card


@pytest.mark.slow
@pytest.mark.parametrize("formats", ["csv", "parquet"])
def test_one_format_alone_writes_the_same_files_as_both(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, formats: str
) -> None:
    both = export_all(tmp_path / "both", instance)
    alone = export_all(tmp_path / "alone", instance, export_formats=formats)

    def files(root: Path, pattern: str) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))}

    if formats == "csv":
        assert files(alone, "*.csv") == files(both, "*.csv")
        assert not (alone / "parquet").exists() and not (alone / "README.md").exists()
    else:
        assert files(alone, "*.csv") == {}
        assert sorted(files(alone, "*.parquet")) == sorted(files(both, "*.parquet"))
        for name in files(both, "*.parquet"):
            assert_frame_equal(pl.read_parquet(alone / name), pl.read_parquet(both / name))
        assert (alone / "README.md").exists()
    for day in DAYS:
        manifest = json.loads((alone / f"feedback_training_{day.replace('-', '')}.manifest.json").read_text())
        assert manifest["export_formats"] == [formats]
        assert ("parquet" in manifest) == (formats == "parquet")


@pytest.mark.slow
def test_release_lists_every_file_and_its_version_follows_the_rows(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    export = export_all(tmp_path, instance)
    pinned = release_run(tmp_path, instance)
    on_disk = sorted(
        str(p.relative_to(export)) for p in export.rglob("*") if p.suffix in (".csv", ".parquet") and p.is_file()
    )
    files = pinned["files"]
    assert isinstance(files, list)
    assert [f["path"] for f in files] == on_disk and len(on_disk) == len(DAYS) * 4
    for entry in files:
        path = export / entry["path"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        rows = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
        assert entry["rows"] == rows.height
    assert pinned["days"] == {"first": FIRST, "last": LAST}
    # Pinned: the same files again give the same version.
    assert release_run(tmp_path, instance)["version"] == pinned["version"]

    # A day re-run with other ratings: a new version, and only that day's files differ.
    execute(
        sqlite_url(tmp_path),
        "UPDATE recommendation_feedback SET helpful_rating = 6 - helpful_rating "
        "WHERE helpful_rating IS NOT NULL AND created_at >= '2025-10-30' AND created_at < '2025-10-31'",
    )
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-30").success
    repinned = release_run(tmp_path, instance)
    assert repinned["version"] != pinned["version"]
    before = {f["path"]: f["sha256"] for f in files}
    changed = {f["path"] for f in repinned["files"] if before[f["path"]] != f["sha256"]}  # type: ignore[attr-defined]
    assert changed and all("20251030" in path for path in changed)

    # A typed file changed behind its manifest's back is listed as it is, not as the manifest says.
    [behind, *_] = [f for f in repinned["files"] if f["path"].endswith(".parquet") and f["rows"]]  # type: ignore[attr-defined]
    path = export / behind["path"]
    pl.read_parquet(path).head(1).write_parquet(path)
    listed = {f["path"]: f for f in release_run(tmp_path, instance)["files"]}  # type: ignore[attr-defined]
    assert listed[behind["path"]]["rows"] == 1 != behind["rows"]
    assert listed[behind["path"]]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# A text the CSV escapes (`=`), one whose source already began with `'=` (the same cell in the CSV),
# and plain ones; each user gives one row a day over two days.
TEXTS = ("=1+1", "'=1+1", "-plain", "plain", "@x", "rec")


def write_texts_source(url: str) -> None:
    users = range(1, 25)
    write_source(
        url,
        users=[
            {
                "id": u,
                "age": 40 if u % 8 == 0 else 20 + u % 3,
                "ml_training_consent": True,
                "image_sharing_consent": False,
            }
            for u in users
        ],
        analyses=[{"id": u, "user_id": u, "conditions": "acne" if u % 2 else "dryness"} for u in users],
        records=[
            {"id": f"{TEXTS[u % len(TEXTS)]}{u}", "analysis_id": u, "rules_applied": "=spf", "timeframe": "4w"}
            for u in users
        ],
        feedback=[
            rating(day * 100 + u, u, u, f"{TEXTS[u % len(TEXTS)]}{u}", f"2025-10-2{day} 0{u % 3}:00:00", 4, 4, 60, True)
            for u in users
            for day in (4, 5)
        ],
    )


@pytest.mark.parametrize("overrides", [{}, {"pseudonym_scope": "month", "k_anonymity_suppress": "true"}])
def test_parquet_text_is_the_source_text_and_holds_the_csvs_rows(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, overrides: dict[str, str]
) -> None:
    url = sqlite_url(tmp_path)
    write_texts_source(url)
    assert materialize(instance, settings_for(tmp_path, url, **overrides), "2025-10-24", "2025-10-25").success
    export = tmp_path / "export"
    users_split: dict[str, str] = {}
    for day, path in exported_files(export).items():
        cells = pl.read_csv(path, infer_schema=False)
        parts = {
            name: pl.read_parquet(export / "parquet" / name / f"feedback_training_{day.replace('-', '')}.parquet")
            for name in SPLIT_NAMES
        }
        typed = pl.concat(parts.values())
        # The same rows as the CSV after the same suppression, the texts as the source wrote them.
        assert typed.height == cells.height > 0
        sources = {f"{t}{u}" for t in TEXTS for u in range(1, 25)}
        assert set(typed["recommendation_id"]) <= sources
        escaped = ["'" + text if text[0] in "=+-@" else text for text in typed["recommendation_id"].to_list()]
        assert sorted(escaped) == sorted(cells["recommendation_id"].to_list())
        assert set(typed["rules_applied"]) == {"=spf"}
        # A user (by recommendation, one per user) is in the same split on both days.
        for name, part in parts.items():
            for rec in part["recommendation_id"].to_list():
                assert users_split.setdefault(rec, name) == name
    written = {f"{TEXTS[u % len(TEXTS)]}{u}" for u in range(1, 25)}
    if overrides:
        # The three users aged 40 are a group below k on each day: gone from the CSV, and so from the Parquet.
        assert set(users_split) == written - {f"{TEXTS[u % len(TEXTS)]}{u}" for u in (8, 16, 24)}
    else:
        assert set(users_split) == written
    assert "'=1+17" in users_split and "=1+16" in users_split


def every_export_file(export: Path) -> dict[str, bytes]:
    return {str(p.relative_to(export)): p.read_bytes() for p in sorted(export.rglob("*")) if p.is_file()}


def typed_files_on_disk(export: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(export)): pl.read_parquet(p) for p in sorted((export / "parquet").rglob("*.parquet"))}


@dg.asset(deps=[training_dataset])
def training_run() -> None:
    """A model's training run in the ML team's own code, as docs/ml.md shows it: downstream of the release."""


def trained_on_an_earlier_release(instance: dg.DagsterInstance) -> bool:
    """Whether Dagster shows the training run stale, as the UI computes it."""
    resolver = get_stale_status_resolver(instance, [*FEEDBACK_ASSETS, training_dataset, training_run])
    return resolver.get_status(training_run.key, None) == StaleStatus.STALE


def test_an_erasure_leaves_no_row_of_the_user_in_the_parquet_the_card_or_the_release(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """The Parquet loses the user's rows as the CSVs do; the manifests, the card and release.json are
    restated from what is left (release.json exactly as training_dataset then writes it), under a new
    version that Dagster records as training_dataset's data version, so a training run downstream is
    shown stale. A dry run first changes none of them."""
    export = export_all(tmp_path, instance)
    pinned = release_run(tmp_path, instance)
    before = typed_files_on_disk(export)
    key = bytes.fromhex(KEY_HEX)
    with closing(sqlite3.connect(tmp_path / "source.sqlite")) as db:
        user_ids = [row[0] for row in db.execute("SELECT id FROM users")]
    held = pl.concat(before.values())["analysis_hash"].value_counts(sort=True)
    by_pseudonym = {pseudonym(user_id, key): user_id for user_id in user_ids}
    erased_hash = next(h for h in held["analysis_hash"].to_list() if h in by_pseudonym)
    with closing(sqlite3.connect(tmp_path / "source.sqlite")) as db, db:
        db.execute(
            "INSERT INTO erasure_requests (user_id, requested_at) VALUES (?, '2025-11-01 00:00:00')",
            (by_pseudonym[erased_hash],),
        )
    settings = settings_for(tmp_path, sqlite_url(tmp_path))
    unchanged = every_export_file(export)
    assert dg.materialize([training_run], instance=instance).success
    assert not trained_on_an_earlier_release(instance)

    assert erase_subjects.execute_in_process(instance=instance, resources=resources_for(settings)).success
    assert every_export_file(export) == unchanged
    assert not trained_on_an_earlier_release(instance)

    assert erase_subjects.execute_in_process(
        instance=instance,
        resources=resources_for(settings),
        run_config=dg.RunConfig(ops={"erase_requested_subjects": EraseConfig(confirm=True)}),
    ).success

    after = typed_files_on_disk(export)
    assert sorted(after) == sorted(before)
    removed = 0
    for name, frame in after.items():
        mine = pl.col("analysis_hash") == erased_hash
        assert_frame_equal(frame, before[name].filter(~mine))
        removed += before[name].filter(mine).height
    assert removed > 0
    card = (export / "README.md").read_text()
    for day in DAYS:
        stem = f"feedback_training_{day.replace('-', '')}"
        counts = {split: after[f"parquet/{split}/{stem}.parquet"].height for split in SPLIT_NAMES}
        manifest = json.loads((export / f"{stem}.manifest.json").read_text())
        assert manifest["split_counts"] == counts
        assert [entry["rows"] for entry in manifest["parquet"]] == list(counts.values())
        # Each rewritten file's SHA-256 follows it, so the release may take the manifest's rows.
        assert [entry["sha256"] for entry in manifest["parquet"]] == [
            hashlib.sha256((export / entry["path"]).read_bytes()).hexdigest() for entry in manifest["parquet"]
        ]
        assert manifest["row_count"] == sum(counts.values()) == pl.read_csv(export / f"{stem}.csv").height
        assert f"| {day} | {' | '.join(str(n) for n in counts.values())} |" in card
    restated: dict[str, Any] = json.loads((export / "release.json").read_text())
    assert restated["version"] != pinned["version"]
    assert restated["rows"] == pinned["rows"] - 2 * removed  # type: ignore[operator]
    for entry in restated["files"]:
        path = export / entry["path"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        rows = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
        assert entry["rows"] == rows.height
    # The erasure recorded the new version as training_dataset's data version: the training run is
    # stale at once, before training_dataset runs again.
    record = instance.get_latest_data_version_record(dg.AssetKey("training_dataset"))
    assert record is not None and record.asset_materialization is not None
    assert (record.asset_materialization.tags or {})["dagster/data_version"] == restated["version"]
    assert trained_on_an_earlier_release(instance)
    # What training_dataset makes of the files now is the release the erasure wrote.
    assert release_run(tmp_path, instance) == restated
    assert trained_on_an_earlier_release(instance)


# Across a month's end and a year's end, so that the year, month and day scopes each give a user more
# than one exported pseudonym, which the ML team could then not group by.
SCOPE_DAYS = ("2025-12-30", "2025-12-31", "2026-01-01", "2026-01-02")
SCOPE_USERS = range(1, 41)


def write_scope_source(url: str) -> None:
    """Each user gives one rating on most of SCOPE_DAYS, on a recommendation that names them (`rec<u>`)."""
    write_source(
        url,
        users=[
            {"id": u, "age": 20 + u % 3, "ml_training_consent": True, "image_sharing_consent": False}
            for u in SCOPE_USERS
        ],
        analyses=[{"id": u, "user_id": u, "conditions": "acne" if u % 2 else "dryness"} for u in SCOPE_USERS],
        records=[{"id": f"rec{u}", "analysis_id": u, "rules_applied": "spf", "timeframe": "4w"} for u in SCOPE_USERS],
        feedback=[
            rating(i * 100 + u, u, u, f"rec{u}", f"{day} 0{u % 5}:00:00", 1 + u % 5, 3, 50, u % 2 == 0)
            for i, day in enumerate(SCOPE_DAYS)
            for u in SCOPE_USERS
            if (u + i) % 4
        ],
    )


@pytest.mark.slow
def test_no_user_is_in_two_splits_over_shuffled_backfills_in_every_pseudonym_scope(
    tmp_path: Path, hmac_key: str
) -> None:
    """The graph itself, each pseudonym scope exporting to its own dir from its own instance: the days
    backfilled one at a time in a shuffled order, then all again in one run. After each, every
    Parquet file of every scope puts each user in the split their stable pseudonym draws, although
    outside `stable` the files spell one user with several pseudonyms."""
    url = sqlite_url(tmp_path)
    write_scope_source(url)
    key = bytes.fromhex(KEY_HEX)
    drawn = assign_splits(
        pl.Series([pseudonym(u, key) for u in SCOPE_USERS]), parse_split("split", DEFAULT_SPLIT), key
    ).to_list()
    expected = {f"rec{u}": name for u, name in zip(SCOPE_USERS, drawn, strict=True)}
    assert set(expected.values()) == set(SPLIT_NAMES)
    order = random.Random(25)
    seen: list[pl.DataFrame] = []
    for scope in PSEUDONYM_SCOPES:
        root = tmp_path / scope
        settings = settings_for(root, url, pseudonym_scope=scope)
        days = list(SCOPE_DAYS)
        order.shuffle(days)
        (root / "dagster_home").mkdir(parents=True)
        with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
            for batch in ([[day] for day in days], [list(SCOPE_DAYS)]):
                for run in batch:
                    assert materialize(instance, settings, run[0], run[-1] if len(run) > 1 else None).success
                for path in sorted((root / "export" / "parquet").rglob("*.parquet")):
                    rows = pl.read_parquet(path, columns=["recommendation_id", "analysis_hash"])
                    seen.append(rows.with_columns(split=pl.lit(path.parent.name), scope=pl.lit(scope)))
    every_file = pl.concat(seen)
    assert set(every_file["recommendation_id"]) == set(expected)
    assert {rec: split for rec, split in every_file.select("recommendation_id", "split").unique().iter_rows()} == (
        expected
    )
    assert every_file.select("recommendation_id", "split").unique().height == len(expected)
    pseudonyms_per_user = every_file.group_by("scope").agg(
        pl.col("analysis_hash").n_unique() / pl.col("recommendation_id").n_unique()
    )
    per_user = dict(pseudonyms_per_user.iter_rows())
    assert per_user["stable"] == 1
    # The days cross a year's end, which is also a month's.
    assert per_user["year"] == per_user["month"] > 1 and per_user["day"] > per_user["month"]
