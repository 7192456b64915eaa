"""Bad configuration fails fast and clearly; bad rows never crash a run and are never exported (issue 5)."""

from __future__ import annotations

import csv
import datetime as dt
import os
import sqlite3
import time
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest

from feedback_assets.pseudonyms import pseudonym
from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import KEY_HEX, latest_metadata, materialize, settings_for
from feedback_assets_tests.s3_server import S3Server
from feedback_assets_tests.sources import write_source


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'source.sqlite'}"


def failure_text(instance: dg.DagsterInstance, tmp_path: Path, source_url: str, **overrides: str) -> str:
    with pytest.raises(dg.Failure) as raised:
        materialize(instance, settings_for(tmp_path, source_url, **overrides), "2025-10-25")
    return str(raised.value.description)


def test_an_unreachable_postgres_names_the_setting_and_host_not_the_password(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    # A refused connection may be a failover: tried again for FEEDBACK_SOURCE_RETRY_SECONDS, here none.
    text = failure_text(instance, tmp_path, "postgresql://app:s3cret-pw@127.0.0.1:1/feedback", source_retry_seconds="0")
    assert text.startswith(
        "FEEDBACK_SOURCE_URL: cannot connect to the postgresql database 'feedback' on 127.0.0.1:1: "
        'connection to server at "127.0.0.1", port 1 failed: Connection refused'
    )
    assert "s3cret-pw" not in text
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").glob("*.csv"))


def test_a_missing_sqlite_file_is_named(tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance) -> None:
    missing = tmp_path / "nowhere.sqlite"
    text = failure_text(instance, tmp_path, f"sqlite:///{missing}")
    assert text == f"FEEDBACK_SOURCE_URL: the sqlite file {missing} does not exist"


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("DROP TABLE erasure_requests", "has no table 'erasure_requests'"),
        ("ALTER TABLE users DROP COLUMN ml_training_consent", "table 'users' lacks column(s) ml_training_consent"),
        (
            "ALTER TABLE recommendation_feedback DROP COLUMN routine_completion_pct",
            "table 'recommendation_feedback' lacks column(s) routine_completion_pct",
        ),
    ],
)
def test_a_source_missing_a_table_or_column_is_named(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance, statement: str, message: str
) -> None:
    write_crafted_source(source_url)
    if source_url.startswith("sqlite"):
        with sqlite3.connect(tmp_path / "source.sqlite") as conn:
            conn.execute(statement)
        where = f"the source (sqlite file {tmp_path / 'source.sqlite'})"
    else:
        with psycopg2.connect(source_url) as pg, pg.cursor() as cur:
            cur.execute(statement)
        pg.close()
        where = f"the source (postgresql database '{source_url.rsplit('/', 1)[1]}' on 127.0.0.1:5432)"
    assert failure_text(instance, tmp_path, source_url) == f"{where} {message}"


def test_an_export_dir_that_cannot_be_written_stops_the_run_first(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    text = failure_text(instance, tmp_path, sqlite_url(tmp_path), export_dir=str(blocker / "exports"))
    assert text == f"FEEDBACK_EXPORT_DIR: {blocker / 'exports'} cannot be created: {blocker} is not a directory"
    assert not (tmp_path / "storage").exists()


def test_an_unsupported_url_is_refused_before_anything_is_written(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    text = failure_text(instance, tmp_path, sqlite_url(tmp_path), export_dir="ftp://files.example/feedback_training")
    assert text == (
        "Configuration error: FEEDBACK_EXPORT_DIR is a ftp:// URL, which is not supported, so nothing was written: "
        "give a path on this machine or an object storage URL (s3://, gs://, az://)"
    )
    assert list(work.iterdir()) == []
    assert not (tmp_path / "storage").exists()


def test_a_bucket_that_does_not_exist_stops_the_run_before_anything_is_written(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, s3_bucket: ObjectPath, s3_server: S3Server
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    missing = "s3://no-such-bucket-for-feedback/exports"
    text = failure_text(instance, tmp_path, sqlite_url(tmp_path), export_dir=missing)
    assert text.startswith(f"FEEDBACK_EXPORT_DIR: {missing} cannot be reached (")
    assert "404 Not Found: NoSuchBucket)" in text and "<?xml" not in text
    assert text.endswith(
        "check that the bucket exists and that the credentials and endpoint in the environment "
        "(AWS_*, GOOGLE_*, AZURE_*) can list it"
    )
    assert s3_server.environment()["AWS_SECRET_ACCESS_KEY"] not in text
    assert not (tmp_path / "storage").exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "FEEDBACK_DEDUPE_SCOPE",
            "per_user",
            "Configuration error: FEEDBACK_DEDUPE_SCOPE must be one of exact, first_per_pair, not 'per_user'",
        ),
        (
            "FEEDBACK_MIN_FEEDBACK_FIELDS",
            "one",
            "Configuration error: FEEDBACK_MIN_FEEDBACK_FIELDS must be a whole number from 0 to 4, not 'one'",
        ),
    ],
)
def test_bad_settings_stop_the_run_with_the_exact_message(
    tmp_path: Path,
    hmac_key: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    message: str,
) -> None:
    write_crafted_source(sqlite_url(tmp_path))
    monkeypatch.setenv(variable, value)
    assert failure_text(instance, tmp_path, sqlite_url(tmp_path)) == message
    assert not (tmp_path / "storage").exists() and not (tmp_path / "export").exists()


def write_messy_sqlite(path: Path) -> None:
    """What SQLite's loose typing lets an app store: text in number columns, NULs, invalid UTF-8."""
    write_crafted_source(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        rows = [
            (2001, 1, 10, "rec_a", "four", None, None, 1, "2025-10-25 13:00:00"),
            (2002, "user-1", 10, "rec_a", 4, None, None, 1, "2025-10-25 13:00:01"),
            (2003, 1, 10, "rec_a", 4.5, None, None, 1, "2025-10-25 13:00:02"),
            (2004, 1, 10, "rec_a", 4, None, None, 1, "2025-10-25 not a time"),
            (2005, 1, 10, "rec_a", 4, None, None, "maybe", "2025-10-25 13:00:04"),
            (2006, 1, 10, "rec_a", 4, None, None, 1, None),
        ]
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.executescript(
            "CREATE TABLE f2 AS SELECT * FROM recommendation_feedback; DROP TABLE recommendation_feedback; "
            "ALTER TABLE f2 RENAME TO recommendation_feedback; "
            "CREATE INDEX feedback_created ON recommendation_feedback(created_at);"
        )
        conn.executemany(
            "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
            "product_satisfaction, routine_completion_pct, would_recommend, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute(
            "INSERT INTO analyses (id, user_id, conditions, image_url, created_at) VALUES "
            "(70, 7, CAST(X'41636E65002C20C3A92CFF4F696C79' AS TEXT), NULL, '2025-10-24 09:00:00')"
        )
        conn.execute(
            "INSERT INTO users (id, age, ml_training_consent, image_sharing_consent, created_at) "
            "VALUES (7, 44, 1, 0, '2025-01-01 00:00:00')"
        )
        conn.execute(
            "INSERT INTO recommendation_records (id, analysis_id, rules_applied, timeframe, created_at) "
            "VALUES ('rec_long', 70, ?, '4w', '2025-10-24 09:00:00')",
            (",".join(f"rule_{i}" for i in range(5_000)),),
        )
        conn.execute(
            "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
            "created_at) VALUES (2007, 7, 70, 'rec_long', 5, '2025-10-25 14:00:00')"
        )


def test_messy_sqlite_rows_are_counted_never_exported_and_never_crash(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    path = tmp_path / "source.sqlite"
    write_messy_sqlite(path)
    assert materialize(instance, settings_for(tmp_path, sqlite_url(tmp_path)), "2025-10-25").success

    metadata = latest_metadata(instance, "training_csv", "2025-10-25")
    # 12 crafted rows, 5 malformed (2001-2005; 2006 has no timestamp, so it belongs to no day) and 2007.
    assert metadata["total_feedback_records"] == 12 + 5 + 1
    assert metadata["rejected_malformed"] == 5
    assert metadata["exported_records"] == 4
    with open(tmp_path / "export" / "feedback_training_20251025.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    long_row = next(r for r in rows if r["recommendation_id"] == "rec_long")
    # "Acne<NUL>, é,<0xFF>Oily": the invalid byte becomes U+FFFD, the NUL is dropped from the cell.
    assert long_row["conditions"] == "acne,é,\ufffdoily"
    assert len(long_row["rules_applied"]) > 40_000
    assert long_row["analysis_hash"] == pseudonym(7, bytes.fromhex(KEY_HEX))
    quarantine = pl.read_parquet(tmp_path / "storage" / "rejected_feedback" / "2025-10-25.parquet")
    assert quarantine.columns == ["partition", "feedback_id", "reason"]
    assert sorted(quarantine.filter(pl.col("reason") == "malformed")["feedback_id"].to_list()) == [
        2001,
        2002,
        2003,
        2004,
        2005,
    ]


# SQLite stores whatever text (or number) the app gives; the windows 2025-02-27..2025-03-01 compare it
# as text. Each value with the day whose window reads it, and whether it parses to that day.
AWKWARD_CREATED_AT: list[tuple[object, str | None, bool]] = [
    ("2025-02-29 10:00:00", "2025-02-28", False),  # no Feb 29 in 2025
    ("2025-02-30 00:00:00", "2025-02-28", False),
    ("2025-02-31 23:00:00", "2025-02-28", False),
    ("2025-02-28 24:00:00", "2025-02-28", False),
    ("2025-02-28 25:00:00", "2025-02-28", False),
    ("2025-02-28 10:60:00", "2025-02-28", False),
    ("2025-02-28 23:59:60", "2025-02-28", False),  # a leap second parses to Mar 1: not the day it was read for
    ("2025-02-28", "2025-02-27", False),  # a date alone sorts before '2025-02-28 00:00:00'
    ("2025-02-28T12:00:00Z", "2025-02-28", False),
    ("2025-02-28 12:00:00+02:00", "2025-02-28", False),
    ("2025-02-28 12:00", "2025-02-28", False),
    ("2025-02-28 12:00:00.", "2025-02-28", False),
    ("2025-02-28 12:00:00.1", "2025-02-28", True),
    ("2025-02-28 12:00:00.1234567", "2025-02-28", True),
    ("2025-02-28 12:00:00 ", "2025-02-28", True),
    ("2025-02-27 23:59:59.999999", "2025-02-27", True),
    ("2025-03-01 00:00:00", "2025-03-01", True),
    ("2025-03-00 08:00:00", "2025-02-28", False),  # '2025-03-00' sorts before '2025-03-01'
    (" 2025-02-28 12:00:00", None, True),  # a leading space sorts before every window: never read
    ("", None, True),
    (20250228, None, True),  # SQLite orders every number before every text
    (1740787200.5, None, True),
]


def test_any_timestamp_text_in_sqlite_ends_counted_never_a_crash(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    url = sqlite_url(tmp_path)
    write_source(
        url,
        users=[{"id": 1, "age": 30, "ml_training_consent": True, "image_sharing_consent": False}],
        analyses=[{"id": 10, "user_id": 1, "conditions": "dry"}],
        records=[{"id": f"rec_{i}", "analysis_id": 10} for i in range(len(AWKWARD_CREATED_AT))],
        feedback=[],
    )
    with sqlite3.connect(tmp_path / "source.sqlite") as db:
        db.executemany(
            "INSERT INTO recommendation_feedback (id, user_id, analysis_id, recommendation_id, helpful_rating, "
            "created_at) VALUES (?, 1, 10, ?, 4, ?)",
            [(i + 1, f"rec_{i}", text) for i, (text, _, _) in enumerate(AWKWARD_CREATED_AT)],
        )
    assert materialize(instance, settings_for(tmp_path, url), "2025-02-27", "2025-03-01").success

    for day in ("2025-02-27", "2025-02-28", "2025-03-01"):
        read_here = [valid for _, read_for, valid in AWKWARD_CREATED_AT if read_for == day]
        counts = latest_metadata(instance, "training_csv", day)
        assert counts["total_feedback_records"] == len(read_here), day
        assert counts["rejected_malformed"] == read_here.count(False), day
        assert counts["exported_records"] == read_here.count(True), day
        exported = pl.read_csv(tmp_path / "export" / f"feedback_training_{day.replace('-', '')}.csv")
        assert exported["feedback_created_at"].str.starts_with(day).all(), day


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_day_boundaries_hold_whatever_the_machines_time_zone(
    tmp_path: Path, source_url: str, hmac_key: str, instance: dg.DagsterInstance, zone: str
) -> None:
    """UTC+14 and UTC-11: a day's first and last microsecond stay in it, the previous day's last does not."""
    write_crafted_source(source_url)
    if source_url.startswith("postgresql"):
        database = source_url.rsplit("/", 1)[1]
        with psycopg2.connect(source_url) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"ALTER DATABASE {database} SET timezone TO '{zone}'")
        conn.close()
    previous = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        assert dt.datetime.now().astimezone().utcoffset() != dt.timedelta(0)
        assert materialize(instance, settings_for(tmp_path, source_url), "2025-10-25").success
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()
    assert (tmp_path / "export" / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025
