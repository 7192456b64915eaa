"""Consent withdrawn after an export: the scheduled erasure (`nightly_erasure`, evaluated as the
daemon evaluates it, its run executed on a real instance) removes users who withdrew consent from
every file and blanks the image URLs of users who withdrew image consent, on SQLite and PostgreSQL;
a quiet night writes nothing; the record of subjects is made for days written before it existed;
and the pure planning and blanking functions on literal frames."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest
from polars.testing import assert_frame_equal

from feedback_assets import erasure, withdrawal
from feedback_assets.definitions import defs
from feedback_assets.defs.erasure import DRY_RUN_NOTE, NOTHING_TO_DO_NOTE, SCHEDULED_TAGS, erase_subjects
from feedback_assets.pseudonyms import pseudonym
from feedback_assets.resources import FeedbackSettings, resources_for
from feedback_assets.storage import storage_for
from feedback_assets.subjects import SUBJECTS_DIR, SubjectRecord, subjects_of
from feedback_assets.training_csv import csv_bytes
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for
from feedback_assets_tests.sources import at, rating, write_source
from feedback_assets_tests.test_erasure import (
    audit_entries,
    file_hashes,
    files_under,
    log_messages,
    observations,
    output_metadata,
    request_erasure,
)

# Raw ids no count, date or digest is likely to contain, so finding one anywhere means a leak.
WITHDRAWS, IMAGE_OFF, KEEPS, REQUESTS = 7400123, 7400456, 7400789, 7401357
URL = "https://img.example/{}-face.jpg"
FIRST, LAST = "2025-10-24", "2025-10-26"
DAYS = ["2025-10-24", "2025-10-25", "2025-10-26"]
CREATED_AT = at(f"{FIRST} 01:00:00")
SCHEDULED_AT = dt.datetime(2025, 10, 27, 4, 0, tzinfo=dt.UTC)


def h(user_id: int) -> str:
    return pseudonym(user_id, bytes.fromhex(KEY_HEX))


def write_withdrawal_source(url: str) -> None:
    """Four users who all consent (to images too, but REQUESTS) when their three days are exported."""
    users = (WITHDRAWS, IMAGE_OFF, KEEPS, REQUESTS)
    write_source(
        url,
        users=[
            {"id": u, "age": 30 + i, "ml_training_consent": True, "image_sharing_consent": u != REQUESTS}
            for i, u in enumerate(users)
        ],
        analyses=[
            {
                "id": i,
                "user_id": u,
                "conditions": "acne",
                "image_url": URL.format(u),
                "created_at": at(f"{FIRST} 01:00"),
            }
            for i, u in enumerate(users, start=1)
        ],
        records=[{"id": f"rec_{i}", "analysis_id": i, "rules_applied": "spf", "timeframe": "4w"} for i in range(1, 5)],
        feedback=[
            rating(100 * d + i, u, i, f"rec_{i}", f"{day} 0{i}:00:00", 4, 3)
            for d, day in enumerate(DAYS)
            for i, u in enumerate(users, start=1)
        ],
    )


def change(url: str, sql: str, *values: object) -> None:
    """What the app does to its own database; the pipeline only ever reads it."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(sql.replace("%s", "?"), values)
        return
    with closing(psycopg2.connect(url)) as pg, pg, pg.cursor() as cur:
        cur.execute(sql, values)


def holding(root: Path, needles: Iterable[str], user_id: int | None = None) -> list[str]:
    """Every file under root's export and storage dirs holding one of `needles`, or `user_id` in a
    user_id column. Parquet is compressed, so it is read: every text column searched, every user_id
    column compared."""
    wanted = list(needles)
    found = []
    for path in files_under(root / "export", root / "storage"):
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
            hits = [
                name
                for name, dtype in frame.schema.items()
                if (dtype == pl.String and any(frame[name].str.contains(n, literal=True).any() for n in wanted))
                or (user_id is not None and name == "user_id" and dtype.is_integer() and (frame[name] == user_id).any())
            ]
            if hits:
                found.append(f"{path} ({', '.join(hits)})")
        else:
            data = path.read_bytes()
            if any(n.encode() in data for n in wanted) or (user_id is not None and str(user_id).encode() in data):
                found.append(str(path))
    return found


def scheduled_erasure(instance: dg.DagsterInstance, settings: FeedbackSettings) -> dg.ExecuteInProcessResult:
    """The run the schedule asks for at 04:00, executed with exactly its config and tags."""
    schedule = defs.resolve_schedule_def("nightly_erasure")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=SCHEDULED_AT)
    [request] = list(schedule.evaluate_tick(context).run_requests or [])
    return erase_subjects.execute_in_process(
        instance=instance,
        resources=resources_for(settings),
        run_config=request.run_config,
        tags=request.tags,
    )


def csv_rows(root: Path) -> pl.DataFrame:
    return pl.concat(
        [pl.read_csv(p, infer_schema=False) for p in sorted((root / "export").glob("*.csv"))], how="vertical"
    )


def exported(tmp_path: Path, url: str, instance: dg.DagsterInstance) -> FeedbackSettings:
    write_withdrawal_source(url)
    settings = settings_for(tmp_path, url, include_image_urls="true")
    assert materialize(instance, settings, FIRST, LAST).success
    return settings


def test_a_user_who_withdraws_consent_is_in_no_file_after_the_scheduled_erasure(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    settings = exported(tmp_path, source_url, instance)
    assert holding(tmp_path, [h(WITHDRAWS)], WITHDRAWS), "the export holds the user before"
    # The export itself recorded whose rows each day holds.
    record = SubjectRecord(storage_for(tmp_path / "storage")).read()
    assert sorted(record.filter(pl.col("user_id") == WITHDRAWS)["partition"].to_list()) == DAYS
    kept_rows = csv_rows(tmp_path).filter(pl.col("analysis_hash") != h(WITHDRAWS))

    change(source_url, "UPDATE users SET ml_training_consent = %s WHERE id = %s", False, WITHDRAWS)
    result = scheduled_erasure(instance, settings)

    assert result.success
    assert holding(tmp_path, [h(WITHDRAWS), URL.format(WITHDRAWS)], WITHDRAWS) == []
    assert_frame_equal(csv_rows(tmp_path), kept_rows)
    [entry] = audit_entries(tmp_path)
    assert entry["cause"] == erasure.CONSENT_WITHDRAWN and entry["subjects"] == 1
    assert entry["partitions"] == DAYS and entry["run_id"] == result.run_id
    assert entry["rows_removed"] == {
        "training_csv": 3,
        "raw_feedback": 3,
        "anonymized_pairs": 3,
        "deduplicated_pairs": 3,
        "seen_pair_hashes": 3,
    }
    seen = observations(instance, result.run_id)
    assert set(seen) == set(erasure.ROW_KINDS)
    assert all(obs["cause"] == erasure.CONSENT_WITHDRAWN for days in seen.values() for obs in days.values())
    metadata = output_metadata(result)
    assert metadata["subjects_consent_withdrawn"] == 1 and metadata["nothing_to_do"] is False
    assert instance.get_run_by_id(result.run_id).tags.items() >= SCHEDULED_TAGS.items()  # type: ignore[union-attr]
    shown = repr(seen) + repr(metadata) + "\n".join(log_messages(instance, result.run_id))
    assert h(WITHDRAWS) not in shown and str(WITHDRAWS) not in shown
    assert h(WITHDRAWS) not in json.dumps(entry) and str(WITHDRAWS) not in json.dumps(entry)

    # An erasure request the next night is audited as such, in an entry of its own.
    request_erasure(source_url, REQUESTS)
    again = scheduled_erasure(instance, settings)
    assert again.success
    assert holding(tmp_path, [h(REQUESTS), URL.format(REQUESTS)], REQUESTS) == []
    assert [e["cause"] for e in audit_entries(tmp_path)] == [erasure.CONSENT_WITHDRAWN, erasure.ERASURE_REQUEST]
    assert audit_entries(tmp_path)[1]["partitions"] == DAYS
    # The others are still exported, with their image URLs.
    rows = csv_rows(tmp_path)
    assert set(rows["analysis_hash"]) == {h(IMAGE_OFF), h(KEEPS)}
    assert set(rows["image_url"]) == {URL.format(IMAGE_OFF), URL.format(KEEPS)}


def test_image_consent_withdrawal_blanks_image_urls_everywhere_and_leaves_the_rest(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    settings = exported(tmp_path, source_url, instance)
    assert holding(tmp_path, [URL.format(IMAGE_OFF)])
    before = csv_rows(tmp_path)
    raw_before = pl.read_parquet(tmp_path / "storage" / "raw_feedback" / "*.parquet")

    change(source_url, "UPDATE users SET image_sharing_consent = %s WHERE id = %s", False, IMAGE_OFF)
    result = scheduled_erasure(instance, settings)

    assert result.success
    assert holding(tmp_path, [URL.format(IMAGE_OFF)]) == []
    mine = pl.col("analysis_hash") == h(IMAGE_OFF)
    expected = before.with_columns(image_url=pl.when(mine).then(None).otherwise(pl.col("image_url")))
    assert_frame_equal(csv_rows(tmp_path), expected)
    # Only the image URL changed in the stored rows too.
    raw_after = pl.read_parquet(tmp_path / "storage" / "raw_feedback" / "*.parquet")
    assert_frame_equal(raw_after.drop("image_url"), raw_before.drop("image_url"))
    for day in DAYS:
        csv = tmp_path / "export" / f"feedback_training_{day.replace('-', '')}.csv"
        manifest = json.loads(csv.with_suffix(".manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
        assert manifest["row_count"] == 4 and manifest["image_urls_blanked_after_export"] == 1
        # The typed files rewritten with them keep their manifest's SHA-256 true, as the CSV does.
        assert len(manifest["parquet"]) == 3
        for listed in manifest["parquet"]:
            typed = tmp_path / "export" / listed["path"]
            assert listed["sha256"] == hashlib.sha256(typed.read_bytes()).hexdigest()
    [entry] = audit_entries(tmp_path)
    assert entry["cause"] == erasure.IMAGE_CONSENT_WITHDRAWN and entry["subjects"] == 1
    assert entry["image_urls_blanked"] == {
        "training_csv": 3,
        "raw_feedback": 3,
        "anonymized_pairs": 3,
        "deduplicated_pairs": 3,
    }
    seen = observations(instance, result.run_id)
    assert {obs["cause"] for days in seen.values() for obs in days.values()} == {erasure.IMAGE_CONSENT_WITHDRAWN}
    record = SubjectRecord(storage_for(tmp_path / "storage")).read()
    assert record.filter(pl.col("user_id") == IMAGE_OFF)["image_url"].to_list() == [False] * 3
    # The next night has nothing left to do.
    assert output_metadata(scheduled_erasure(instance, settings))["nothing_to_do"] is True


def test_a_night_with_nothing_to_do_says_so_reads_no_big_file_and_rewrites_nothing(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    settings = exported(tmp_path, url, instance)
    # An erasure already done: its request stays in the source, and asks for nothing more.
    request_erasure(url, REQUESTS)
    assert scheduled_erasure(instance, settings).success
    # Every partition and CSV made unreadable: a run that opened one would fail.
    big = [p for p in files_under(tmp_path / "export", tmp_path / "storage") if p.suffix in (".csv", ".parquet")]
    for path in big:
        if SUBJECTS_DIR not in path.parts:
            path.write_bytes(b"not what the pipeline wrote")
    before = file_hashes(tmp_path)

    quiet = scheduled_erasure(instance, settings)

    assert quiet.success
    assert file_hashes(tmp_path) == before
    metadata = output_metadata(quiet)
    assert metadata["nothing_to_do"] is True and metadata["note"] == NOTHING_TO_DO_NOTE
    assert metadata["days_changed"] == 0 and metadata["users_in_record"] == 3
    assert any(m.startswith(NOTHING_TO_DO_NOTE) for m in log_messages(instance, quiet.run_id))
    assert observations(instance, quiet.run_id) == {}


def test_the_record_of_subjects_is_derived_for_days_exported_before_it_existed_and_a_dry_run_changes_nothing(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    settings = exported(tmp_path, url, instance)
    storage = tmp_path / "storage"
    shutil.rmtree(storage / SUBJECTS_DIR)
    change(url, "UPDATE users SET ml_training_consent = %s WHERE id = %s", False, WITHDRAWS)
    change(url, "UPDATE users SET image_sharing_consent = %s WHERE id = %s", False, IMAGE_OFF)
    before = file_hashes(tmp_path)
    source_bytes = (tmp_path / "source.sqlite").read_bytes()

    dry = erase_subjects.execute_in_process(instance=instance, resources=resources_for(settings))

    assert dry.success
    assert file_hashes(tmp_path) == before and not (storage / SUBJECTS_DIR).exists()
    planned = output_metadata(dry)
    assert planned["dry_run"] is True and planned["note"] == DRY_RUN_NOTE
    assert (planned["subjects_consent_withdrawn"], planned["subjects_image_consent_withdrawn"]) == (1, 1)
    assert planned["rows_removed_training_csv"] == 3 and planned["image_urls_blanked_training_csv"] == 3
    assert any(m.startswith(DRY_RUN_NOTE) for m in log_messages(instance, dry.run_id))

    done = scheduled_erasure(instance, settings)

    assert done.success
    assert (tmp_path / "source.sqlite").read_bytes() == source_bytes, "the source is only read"
    assert holding(tmp_path, [h(WITHDRAWS), URL.format(WITHDRAWS), URL.format(IMAGE_OFF)], WITHDRAWS) == []
    done_metadata = output_metadata(done)
    for key in ("rows_removed_by_day", "image_urls_blanked_training_csv", "rows_removed_raw_feedback"):
        assert done_metadata[key] == planned[key], key
    # The record is made for every day, without the withdrawn user and the blanked images.
    record = SubjectRecord(storage_for(storage))
    assert record.days() == DAYS
    expected = subjects_of(pl.read_parquet(storage / "raw_feedback" / "*.parquet")).with_columns(
        partition=pl.col("partition").dt.to_string()
    )
    assert_frame_equal(record.read().sort("partition", "user_id"), expected.select(record.read().columns))
    assert set(record.read()["user_id"]) == {IMAGE_OFF, KEEPS, REQUESTS}


# The pure functions, on literal frames.

HELD = pl.DataFrame(
    {
        "user_id": [1, 2, 3, 4, 5, 6, 7, 7],
        "image_url": [True, True, False, True, True, True, True, False],
        "partition": ["2025-10-24"] * 7 + ["2025-10-25"],
    }
)


def test_plan_names_who_must_go_and_whose_images_must_be_blanked() -> None:
    consent = pl.DataFrame(
        {
            # 1 stays; 2 withdrew; 3's consent is unreadable; 4 has no row; 5 has two; 6 asked to be
            # erased; 7 withdrew image consent only.
            "user_id": [1, 2, 3, 5, 5, 6, 7],
            "ml_training_consent": [True, False, None, True, True, True, True],
            "image_sharing_consent": [True, True, True, True, True, True, None],
        }
    )
    work = withdrawal.plan(HELD, consent, pl.Series([6, 99], dtype=pl.Int64))

    assert work.requested.rows() == [("2025-10-24", 6)]
    assert work.withdrawn.rows() == [("2025-10-24", 2), ("2025-10-24", 3), ("2025-10-24", 4), ("2025-10-24", 5)]
    # Only the day whose record says it holds an image URL of 7's.
    assert work.images.rows() == [("2025-10-24", 7)]
    assert not work.nothing_to_do
    one = pl.col("user_id") == 1
    assert withdrawal.plan(HELD.filter(one), consent.filter(one), pl.Series([], dtype=pl.Int64)).nothing_to_do


def test_the_record_holds_each_user_once_a_day_and_whether_an_exportable_image_url_is_theirs() -> None:
    day = dt.date(2025, 10, 24)
    raw = pl.DataFrame(
        {
            "partition": [day] * 5,
            "user_id": [1, 1, 2, None, 3],
            "image_url": [None, "u", "u", "u", None],
            "image_sharing_consent": [True, True, False, True, True],
        }
    )
    expected = pl.DataFrame({"partition": [day] * 3, "user_id": [1, 2, 3], "image_url": [True, False, False]})
    assert_frame_equal(subjects_of(raw), expected)


def test_blanking_a_csv_changes_only_the_users_image_cells() -> None:
    rows = pl.DataFrame(
        {
            "analysis_hash": ["a" * 64, "b" * 64, "a" * 64],
            "age_range": ["<18", None, "50+"],
            "image_url": ["x", "y", None],
        }
    )
    data, blanked = withdrawal.blank_in_csv(csv_bytes(rows), pl.Series(["a" * 64]))
    assert blanked == 1
    assert data == csv_bytes(rows.with_columns(image_url=pl.Series([None, "y", None], dtype=pl.String)))
    without = rows.drop("image_url")
    assert withdrawal.blank_in_csv(csv_bytes(without), pl.Series(["a" * 64])) == (csv_bytes(without), 0)


def test_an_unreadable_erasure_request_fails_the_run_after_every_other_is_carried_out(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    settings = exported(tmp_path, url, instance)
    request_erasure(url, REQUESTS)
    # SQLite keeps text that does not read as a number in an INTEGER column as it is.
    change(url, "INSERT INTO erasure_requests (user_id, requested_at) VALUES (%s, %s)", "x7400", "2025-10-28 00:00:00")
    change(url, "UPDATE users SET ml_training_consent = %s WHERE id = %s", False, WITHDRAWS)

    with pytest.raises(dg.Failure) as failed:
        scheduled_erasure(instance, settings)

    message = str(failed.value.description)
    assert message.startswith("1 erasure request(s) have a user id that does not read as a number")
    assert "x7400" not in message
    assert holding(tmp_path, [h(REQUESTS), h(WITHDRAWS)], REQUESTS) == []
    assert holding(tmp_path, [], WITHDRAWS) == []
    assert [e["cause"] for e in audit_entries(tmp_path)] == [erasure.ERASURE_REQUEST, erasure.CONSENT_WITHDRAWN]
