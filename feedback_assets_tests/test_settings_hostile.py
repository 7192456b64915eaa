"""Settings that cannot mislead: a password is never shown whatever it holds, a path means exactly the
file or folder it names, and directories that would leak or could be tampered with are refused."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback_assets.connections import postgres_connect_kwargs
from feedback_assets.settings import ConfigError, check_output_dirs, check_separate, output_dir, settings_from
from feedback_assets.source_url import parse_source_url
from feedback_assets.storage import LocalStorage
from feedback_assets_tests.crafted_source import EXPECTED_20251025, write_crafted_source
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for

REPO_ROOT = Path(__file__).resolve().parents[1]
# Any text but '%', which a URL reads as the start of an escape (an encoded password is tested apart).
PASSWORDS = st.text(st.characters(codec="utf-8", exclude_characters="%"), min_size=1, max_size=40)


@given(password=PASSWORDS)
def test_a_password_written_as_it_is_is_read_whole_and_never_described(password: str) -> None:
    location = parse_source_url(f"postgresql://app:{password}@db.internal:5433/feedback")
    assert (location.username, location.password) == ("app", password)
    assert (location.host, location.port, location.database) == ("db.internal", 5433, "feedback")
    assert location.describe() == "postgresql database 'feedback' on db.internal:5433"
    assert repr(location) == (
        "SourceLocation(dialect='postgresql', database='feedback', host='db.internal', port=5433, username='app')"
    )
    assert postgres_connect_kwargs(location)["password"] == password


@given(password=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_a_percent_encoded_password_is_decoded(password: str) -> None:
    location = parse_source_url(f"postgresql://app:{urllib.parse.quote(password, safe='')}@db:5432/feedback")
    assert location.password == password and location.host == "db"


@pytest.mark.parametrize("port", ["54x2", "0", "70000", "5432abc"])
def test_a_bad_port_is_a_clear_error_that_quotes_nothing(port: str) -> None:
    with pytest.raises(ConfigError, match="FEEDBACK_SOURCE_URL has a port that is not a whole number") as raised:
        parse_source_url(f"postgresql://app:s3cret@db:{port}/feedback")
    assert port not in str(raised.value) and "s3cret" not in str(raised.value)


def test_a_failed_connection_with_an_unencoded_password_names_only_host_and_database(
    tmp_path: Path, postgres_url: str, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    """Once, SQLAlchemy took 'ss/w0rd@127.0.0.1' for the host and it was printed in every message."""
    database = postgres_url.rsplit("/", 1)[1]
    # Port 1: nothing listens there, so the connection is refused; no retry budget.
    url = f"postgresql://root:p@ss/w0rd:x@127.0.0.1:1/{database}"
    with pytest.raises(dg.Failure) as raised:
        materialize(instance, settings_for(tmp_path, url, source_retry_seconds=0), "2025-10-25")
    (run,) = instance.get_runs()
    shown = [str(raised.value.description), *(entry.user_message for entry in instance.all_logs(run.run_id))]
    assert f"cannot connect to the postgresql database '{database}' on 127.0.0.1:1" in shown[0]
    assert not [text for text in shown if "ss/w0rd" in text or "w0rd:x" in text]


def test_a_bad_source_port_loads_the_code_location_and_fails_the_runs_that_read(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_"))}
    env.update(
        FEEDBACK_SOURCE_URL="postgresql://app:s3cret@db:54x2/feedback",
        FEEDBACK_HMAC_KEY=KEY_HEX,
        DAGSTER_HOME=str(tmp_path),
        PYTHONPATH=str(REPO_ROOT),
    )
    script = "from feedback_assets.definitions import defs\nprint(len(defs.resolve_all_job_defs()))"
    loaded = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert "s3cret" not in loaded.stdout + loaded.stderr


def test_a_leading_tilde_means_the_home_directory_when_written_and_when_read() -> None:
    home = Path.home()
    assert output_dir("FEEDBACK_EXPORT_DIR", "~/feedback/export") == LocalStorage(home / "feedback" / "export")
    assert parse_source_url("sqlite:///~/app.sqlite").sqlite_path == home / "app.sqlite"
    with pytest.raises(ConfigError, match="FEEDBACK_STORAGE_DIR: the path '~no_such_user_here/x' starts with a '~'"):
        output_dir("FEEDBACK_STORAGE_DIR", "~no_such_user_here/x")


@pytest.mark.parametrize("name", ["feedback#1.sqlite", "feedback?mode=rwc.sqlite", "feed back%20.sqlite"])
def test_a_sqlite_path_with_url_characters_opens_exactly_that_file(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, name: str
) -> None:
    source = tmp_path / name
    write_crafted_source(f"sqlite:///{source}")
    before = sorted(path.name for path in tmp_path.iterdir())
    assert materialize(instance, settings_for(tmp_path, f"sqlite:///{source}"), "2025-10-25").success
    assert (tmp_path / "export" / "feedback_training_20251025.csv").read_text() == EXPECTED_20251025
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted({*before, "export", "storage"})


def test_a_missing_sqlite_file_with_url_characters_is_an_error_and_never_created(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    # The file the name's first part names exists; the one asked for does not.
    write_crafted_source(f"sqlite:///{tmp_path / 'feedback'}")
    missing = tmp_path / "feedback#2.sqlite"
    with pytest.raises(dg.Failure, match=f"the sqlite file {missing} does not exist"):
        materialize(instance, settings_for(tmp_path, f"sqlite:///{missing}"), "2025-10-25")
    assert not missing.exists()
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("feedback")) == ["feedback"]


@pytest.mark.parametrize(
    "content", [b"", b"not a database at all, just text\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4000]
)
def test_a_file_that_is_not_a_sqlite_database_is_named(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance, content: bytes
) -> None:
    source = tmp_path / "app.sqlite"
    source.write_bytes(content)
    if not content:
        # An empty file is a valid, empty database to SQLite: it has no tables.
        with pytest.raises(dg.Failure, match="has no table"):
            materialize(instance, settings_for(tmp_path, f"sqlite:///{source}"), "2025-10-25")
        return
    with pytest.raises(dg.Failure, match=f"the sqlite file {source} is not a SQLite database or is damaged"):
        materialize(instance, settings_for(tmp_path, f"sqlite:///{source}"), "2025-10-25")
    assert source.read_bytes() == content


@pytest.mark.parametrize(
    ("export", "storage"),
    [("files", "files"), ("files/export", "files"), ("files", "files/storage"), ("files/./x/..", "files")],
)
def test_export_and_storage_dirs_must_not_overlap(tmp_path: Path, export: str, storage: str) -> None:
    values = {"FEEDBACK_EXPORT_DIR": str(tmp_path / export), "FEEDBACK_STORAGE_DIR": str(tmp_path / storage)}
    settings = settings_from(values, {"FEEDBACK_HMAC_KEY": KEY_HEX})
    with pytest.raises(ConfigError, match="must be separate directories, neither inside the other"):
        check_output_dirs(settings)


def test_separate_buckets_prefixes_are_not_taken_for_overlapping() -> None:
    check_separate(output_dir("E", "s3://bucket/export"), output_dir("S", "s3://bucket/export-storage"))
    with pytest.raises(ConfigError, match="must be separate"):
        check_separate(output_dir("E", "s3://bucket/data/export"), output_dir("S", "s3://bucket/data"))


def test_a_world_writable_dir_is_refused_with_the_fix_and_a_group_writable_one_warned_about(
    tmp_path: Path, hmac_key: str, instance: dg.DagsterInstance
) -> None:
    write_crafted_source(f"sqlite:///{tmp_path / 'source.sqlite'}")
    export = tmp_path / "export"
    export.mkdir()
    export.chmod(0o777)
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'source.sqlite'}")
    with pytest.raises(
        dg.Failure, match=rf"FEEDBACK_EXPORT_DIR: {export} is writable by every user.*chmod o-w {export}"
    ):
        materialize(instance, settings, "2025-10-25")
    assert list(export.iterdir()) == []

    export.chmod(0o770)
    result = materialize(instance, settings, "2025-10-25")
    assert result.success
    warned = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if "writable by its group" in entry.user_message
    ]
    assert warned and all(f"FEEDBACK_EXPORT_DIR: {export} is writable by its group" in line for line in warned)
