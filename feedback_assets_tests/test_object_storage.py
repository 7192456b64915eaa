"""Files and state on object storage (issue 11), against a real S3-protocol server on loopback
(moto_server): the paths, the storage lease, and the whole graph end to end, whose files equal
those of a local-disk run byte for byte."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from feedback_assets.dedupe_state import DedupeStateStore
from feedback_assets.demo.database import write_demo_source
from feedback_assets.files import OutputWriteError
from feedback_assets.key_guard import MARKER_NAME
from feedback_assets.pseudonyms import pseudonym
from feedback_assets.resources import FeedbackSettings
from feedback_assets.storage import ObjectStorage, storage_for
from feedback_assets.storage.base import write_bytes
from feedback_assets.storage.lock import storage_lease
from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets_tests.daemon import free_port
from feedback_assets_tests.graph import KEY_HEX, materialize, settings_for
from feedback_assets_tests.processes import BIN_DIR, Processes
from feedback_assets_tests.s3_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, S3Server, files_under
from feedback_assets_tests.test_erasure import erase, request_erasure

FIRST = dt.date(2025, 10, 7)
DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(10)]
EXPORT_NAMES = re.compile(
    rf"feedback_training_\d{{8}}\.(csv|manifest\.json)|{re.escape(MARKER_NAME)}|README\.md"
    r"|parquet/(train|validation|test)/feedback_training_\d{8}\.parquet"
)
# What differs between two runs of the same days by design: which run wrote it, and when.
RUN_FACTS = ("run_id", "at", "entry_id")


def test_object_paths_do_what_the_stores_ask_of_a_directory(s3_bucket: ObjectPath) -> None:
    day = s3_bucket / "storage" / "raw_feedback" / "2025-10-07.parquet"
    assert not day.is_file() and not day.parent.is_dir() and not day.parent.exists()
    day.write_bytes(b"first")
    (day.parent / "2025-10-07.stats.json").write_bytes(b"{}")
    (day.parent / "nested" / "deeper.parquet").write_bytes(b"x")
    assert day.is_file() and day.parent.is_dir() and day.read_bytes() == b"first"
    assert (day.name, day.stem, str(day.parent)) == (
        "2025-10-07.parquet",
        "2025-10-07",
        f"{s3_bucket}/storage/raw_feedback",
    )
    assert sorted(p.name for p in day.parent.iterdir()) == ["2025-10-07.parquet", "2025-10-07.stats.json", "nested"]
    assert [p.name for p in day.parent.glob("*.parquet")] == ["2025-10-07.parquet"]
    assert sorted(p.key for p in (s3_bucket / "storage").objects()) == [
        "storage/raw_feedback/2025-10-07.parquet",
        "storage/raw_feedback/2025-10-07.stats.json",
        "storage/raw_feedback/nested/deeper.parquet",
    ]
    # A prefix is a whole path segment: "raw_feedback" never lists "raw_feedback_old".
    (s3_bucket / "storage" / "raw_feedback_old" / "a").write_bytes(b"")
    assert sorted(p.name for p in (s3_bucket / "storage" / "raw_feedback").glob("*")) == [
        "2025-10-07.parquet",
        "2025-10-07.stats.json",
        "nested",
    ]
    assert not day.create(b"second") and day.read_bytes() == b"first"
    day.unlink()
    assert not day.is_file()
    day.unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        day.unlink()
    assert day.create(b"second") and day.read_bytes() == b"second"


def test_an_object_over_the_multipart_size_is_stored_whole(s3_bucket: ObjectPath) -> None:
    """Over 5 MB obstore uploads in parts and completes the upload last; what is listed is the whole object."""
    data = random.Random(3).randbytes(11 * 1024 * 1024)
    big = s3_bucket / "export" / "feedback_training_20251007.csv"
    write_bytes(storage_for(s3_bucket / "export"), big.name, data)
    assert [p.name for p in (s3_bucket / "export").objects()] == [big.name]
    assert big.read_bytes() == data


def test_a_refused_write_names_the_object_and_leaves_what_was_there(s3_bucket: ObjectPath) -> None:
    missing_bucket = ObjectPath("s3://no-such-bucket-for-feedback", "export") / "feedback_training_20251007.csv"
    with pytest.raises(OutputWriteError) as refused:
        write_bytes(storage_for(missing_bucket.parent), missing_bucket.name, b"a,b\n")
    message = str(refused.value)
    assert message.startswith(
        "[Errno 5] cannot write feedback_training_20251007.csv under s3://no-such-bucket-for-feedback/export: "
        "the object store refused it ("
    )
    assert "NoSuchBucket" in message and "<?xml" not in message
    assert SECRET_ACCESS_KEY not in message and ACCESS_KEY_ID not in message


def test_erasure_waits_for_export_steps_and_export_steps_wait_for_erasure(s3_bucket: ObjectPath) -> None:
    """The storage lease excludes across machines what the flock excludes on one: threads here,
    each with lease objects of its own, as runs on different pods would have."""
    storage = s3_bucket / "storage"
    events: list[str] = []
    changed = threading.Condition()

    def note(event: str) -> None:
        with changed:
            events.append(event)
            changed.notify_all()

    def reached(event: str) -> None:
        with changed:
            assert changed.wait_for(lambda: event in events, timeout=20), events

    release_export, release_erasure = threading.Event(), threading.Event()

    def export_step(name: str) -> None:
        with storage_lease(ObjectStorage(storage), exclusive=False, on_wait=lambda: note(f"{name} waited")):
            note(f"{name} in")
            release_export.wait(20)
            # Noted while still holding the lease: noted after it, the next holder's "in" could
            # come first in the list although it came after in the lease.
            note(f"{name} out")

    def erasure() -> None:
        with storage_lease(ObjectStorage(storage), exclusive=True, on_wait=lambda: note("erasure waited")):
            note("erasure in")
            release_erasure.wait(20)
            note("erasure out")

    threads = [threading.Thread(target=export_step, args=("export 1",))]
    threads[0].start()
    reached("export 1 in")
    threads.append(threading.Thread(target=erasure))
    threads[1].start()
    reached("erasure waited")
    release_export.set()
    reached("erasure in")
    threads.append(threading.Thread(target=export_step, args=("export 2",)))
    threads[2].start()
    reached("export 2 waited")
    release_erasure.set()
    for thread in threads:
        thread.join(20)
    assert events == [
        "export 1 in",
        "erasure waited",
        "export 1 out",
        "erasure in",
        "export 2 waited",
        "erasure out",
        "export 2 in",
        "export 2 out",
    ]
    assert list((storage / ".locks").objects()) == []


def test_the_lease_of_a_killed_holder_lapses(s3_bucket: ObjectPath) -> None:
    storage = s3_bucket / "storage"
    # What a pod killed during an erasure leaves: the lease, never renewed again.
    (storage / ".locks" / "exclusive").write_bytes(b"killed-pod-1-0")
    (storage / ".locks" / "shared" / "killed-pod-2-0").write_bytes(b"killed-pod-2-0")
    waits: list[str] = []
    started = time.monotonic()
    with storage_lease(
        ObjectStorage(storage), exclusive=False, on_wait=lambda: waits.append("shared"), lease_seconds=2.0
    ):
        waited = time.monotonic() - started
    assert waits == ["shared"] and waited >= 1.0
    with storage_lease(
        ObjectStorage(storage), exclusive=True, on_wait=lambda: waits.append("exclusive"), lease_seconds=2.0
    ):
        assert [p.name for p in (storage / ".locks" / "shared").objects()] == []
    assert list((storage / ".locks").objects()) == []


def an_exported_user(source: Path, csvs: Mapping[str, bytes]) -> tuple[int, bytes]:
    """A user of the source whose pseudonym is in the exported CSVs, and that pseudonym."""
    with closing(sqlite3.connect(source)) as db:
        users = [row[0] for row in db.execute("SELECT DISTINCT user_id FROM recommendation_feedback ORDER BY user_id")]
    for user in users:
        hashed = pseudonym(user, bytes.fromhex(KEY_HEX)).encode()
        if any(hashed in data for data in csvs.values()):
            return user, hashed
    raise AssertionError("no user of the source is in the exported CSVs")


def without_run_facts(data: bytes, name: str) -> object:
    """A manifest or audit log with what names the writing run left out; other files as they are."""
    if name.endswith(".manifest.json"):
        return {k: v for k, v in json.loads(data).items() if k not in RUN_FACTS}
    if name.endswith(".jsonl"):
        return [{k: v for k, v in json.loads(line).items() if k not in RUN_FACTS} for line in data.splitlines()]
    return data


def comparable(files: Mapping[str, bytes]) -> dict[str, object]:
    return {name: without_run_facts(data, name) for name, data in sorted(files.items())}


def run_logs(instance: dg.DagsterInstance) -> str:
    return "\n".join(
        str(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id) if entry is not None
    )


@pytest.mark.slow
def test_the_graph_on_object_storage_writes_byte_for_byte_what_it_writes_on_local_disk(
    tmp_path: Path, hmac_key: str, s3_server: S3Server, s3_bucket: ObjectPath, instance: dg.DagsterInstance
) -> None:
    source = tmp_path / "source.sqlite"
    url = f"sqlite:///{source}"
    write_demo_source(url, end_date=dt.date.fromisoformat(DAYS[-1]), days=12, rows_per_day=60, seed=11)
    export, storage = s3_bucket / "ml" / "feedback_training", s3_bucket / "pipeline" / "storage"
    on_objects = settings_for(
        tmp_path, url, export_dir=str(export), storage_dir=str(storage), dedupe_scope="first_per_pair"
    )

    # On object storage: a ranged run, then the other days one by one in shuffled order.
    assert materialize(instance, on_objects, DAYS[0], DAYS[4]).success
    for day in random.Random(4).sample(DAYS[5:], k=5):
        assert materialize(instance, on_objects, day).success
    # The reference on local disk: one ranged run of every day.
    local_root = tmp_path / "local"
    (local_root / "dagster_home").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(local_root / "dagster_home")) as local_instance:
        on_disk = settings_for(local_root, url, dedupe_scope="first_per_pair")
        assert materialize(local_instance, on_disk, DAYS[0], DAYS[-1]).success

        exported = s3_server.objects(export)
        assert all(EXPORT_NAMES.fullmatch(name) for name in exported), sorted(exported)
        assert comparable(exported) == comparable(files_under(local_root / "export"))
        assert len([name for name in exported if name.endswith(".csv")]) == len(DAYS)
        local_storage = {k: v for k, v in files_under(local_root / "storage").items() if k != ".feedback.lock"}
        stored = s3_server.objects(storage)
        assert {name.split("/")[0] for name in stored} >= {"raw_feedback", "deduplicated_pairs", "seen_pair_hashes"}
        assert comparable(stored) == comparable(local_storage)
        assert DedupeStateStore(storage_for(storage), "first_per_pair", "k1").shared_keys().is_empty()

        # Erasure rewrites the objects as it rewrites the files.
        subject, subject_pseudonym = an_exported_user(source, exported)
        request_erasure(url, subject)
        assert erase(instance, on_objects).success
        assert erase(local_instance, on_disk).success
    erased = s3_server.objects(export)
    assert not any(subject_pseudonym in data for data in [*erased.values(), *s3_server.objects(storage).values()])
    assert comparable(erased) == comparable(files_under(local_root / "export"))
    local_storage = {k: v for k, v in files_under(local_root / "storage").items() if k != ".feedback.lock"}
    stored = s3_server.objects(storage)
    assert "audit/erasures.jsonl" in stored
    assert comparable(stored) == comparable(local_storage)
    assert not [name for name in s3_server.objects(s3_bucket) if ".locks/" in name or ".tmp-" in name]
    # The credentials are read by the store client from the environment and shown nowhere.
    shown = run_logs(instance)
    assert SECRET_ACCESS_KEY not in shown and ACCESS_KEY_ID not in shown


def wait_for_line(log: Path, prefix: str, process: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no line starting {prefix!r} in {log.name}:\n{log.read_text(errors='replace')}")


def manifests_describe_their_csvs(files: Mapping[str, bytes]) -> bool:
    for name, data in files.items():
        if name.endswith(".manifest.json"):
            manifest = json.loads(data)
            if hashlib.sha256(files[manifest["csv"]]).hexdigest() != manifest["sha256"]:
                return False
    return True


# Generous: the other days' uploads take well under a second once the stalled one hangs.
OTHER_DAYS_SECONDS = 120


def rewritten(files: Mapping[str, bytes], before: Mapping[str, bytes], day: str) -> bool:
    """Whether the day's (YYYYMMDD) CSV and manifest both differ from `before`."""
    names = (f"feedback_training_{day}.csv", f"feedback_training_{day}.manifest.json")
    return all(name in files and files[name] != before.get(name) for name in names)


@pytest.mark.slow
def test_a_writer_killed_mid_upload_leaves_the_old_csv_and_a_rerun_writes_what_local_disk_holds(
    tmp_path: Path, hmac_key: str, s3_server: S3Server, s3_bucket: ObjectPath, instance: dg.DagsterInstance
) -> None:
    days = DAYS[:4]
    stalled_day = days[2]
    source = tmp_path / "source.sqlite"
    url = f"sqlite:///{source}"
    write_demo_source(url, end_date=dt.date.fromisoformat(days[-1]), days=5, rows_per_day=60, seed=12)
    export, storage = s3_bucket / "export", s3_bucket / "storage"
    objects = {"export_dir": str(export), "storage_dir": str(storage)}
    # The files there before: made with stricter row rules, so every day's CSV differs from the next run's.
    assert materialize(
        instance, settings_for(tmp_path, url, min_feedback_fields=4, **objects), days[0], days[-1]
    ).success
    before = s3_server.objects(export)

    home = tmp_path / "killed_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proxy_port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FEEDBACK_", "DAGSTER_", "AWS_"))}
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    with Processes(tmp_path, environment) as processes:
        stall = re.escape(f"/export/feedback_training_{stalled_day.replace('-', '')}.csv")
        proxy = processes.start(
            [
                sys.executable,
                "-m",
                "feedback_assets_tests.stalling_proxy",
                "--port",
                str(proxy_port),
                "--target-port",
                s3_server.endpoint.rsplit(":", 1)[1],
                "--stall",
                stall,
            ],
            tmp_path / "proxy.log",
        )
        wait_for_line(tmp_path / "proxy.log", "listening on", proxy, 30)
        processes.env = {
            **environment,
            **s3_server.environment(),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy_port}",
            "DAGSTER_HOME": str(home),
            "FEEDBACK_HMAC_KEY": KEY_HEX,
            "FEEDBACK_SOURCE_URL": url,
            "FEEDBACK_EXPORT_DIR": str(export),
            "FEEDBACK_STORAGE_DIR": str(storage),
        }
        runner = processes.start(
            [
                str(BIN_DIR / "dagster"),
                "asset",
                "materialize",
                "-m",
                "feedback_assets.definitions",
                "--select",
                "*",
                "--partition-range",
                f"{days[0]}...{days[-1]}",
            ],
            tmp_path / "runner.log",
        )
        wait_for_line(tmp_path / "proxy.log", "STALLED", proxy, 300)
        # A slice's days are uploaded a few at a time (files.concurrently): the kill waits until
        # every other day's CSV and manifest are the new ones, so that it lands on the stalled
        # upload alone and not between another day's CSV and its manifest.
        others = [day.replace("-", "") for day in days if day != stalled_day]
        deadline = time.monotonic() + OTHER_DAYS_SECONDS
        while not all(rewritten(s3_server.objects(export), before, day) for day in others):
            assert time.monotonic() < deadline, "the days beside the stalled one were never rewritten"
            time.sleep(0.2)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(30)

        # Half an upload is no object: the stalled day keeps its old CSV, and every manifest
        # describes the CSV beside it (the other days were rewritten whole, CSV first).
        after_kill = s3_server.objects(export)
        stalled_csv = f"feedback_training_{stalled_day.replace('-', '')}.csv"
        assert after_kill[stalled_csv] == before[stalled_csv]
        assert set(after_kill) == set(before)
        assert after_kill != before, "the killed run rewrote no day before the stalled one"
        assert manifests_describe_their_csvs(after_kill)

    assert materialize(instance, settings_for(tmp_path, url, **objects), days[0], days[-1]).success
    local_root = tmp_path / "local"
    (local_root / "dagster_home").mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(local_root / "dagster_home")) as local_instance:
        assert materialize(local_instance, settings_for(local_root, url), days[0], days[-1]).success
    rerun = s3_server.objects(export)
    assert comparable(rerun) == comparable(files_under(local_root / "export"))
    assert manifests_describe_their_csvs(rerun)


@pytest.fixture
def exported_to_objects(
    tmp_path: Path, hmac_key: str, s3_bucket: ObjectPath, instance: dg.DagsterInstance
) -> FeedbackSettings:
    """Two days exported to object storage from a small generated source."""
    url = f"sqlite:///{tmp_path / 'source.sqlite'}"
    write_demo_source(url, end_date=dt.date.fromisoformat(DAYS[2]), days=3, rows_per_day=30, seed=5)
    settings = settings_for(tmp_path, url, export_dir=str(s3_bucket / "export"), storage_dir=str(s3_bucket / "storage"))
    assert materialize(instance, settings, DAYS[0], DAYS[1]).success
    return settings


def test_a_run_with_another_key_is_refused_on_object_storage_before_anything_is_written(
    exported_to_objects: FeedbackSettings,
    s3_server: S3Server,
    s3_bucket: ObjectPath,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = s3_server.objects(s3_bucket)
    assert f"export/{MARKER_NAME}" in before and f"storage/{MARKER_NAME}" in before
    monkeypatch.setenv("FEEDBACK_HMAC_KEY", "ab" * 32)
    with pytest.raises(dg.Failure) as refused:
        materialize(instance, exported_to_objects, DAYS[2])
    assert str(refused.value.description).startswith(
        f"{s3_bucket / 'export'} was written with a different key under the same key id 'k1'."
    )
    assert s3_server.objects(s3_bucket) == before


def test_a_damaged_state_object_stops_the_run_naming_it_and_the_repair(
    exported_to_objects: FeedbackSettings, s3_server: S3Server, s3_bucket: ObjectPath, instance: dg.DagsterInstance
) -> None:
    damaged = s3_bucket / "storage" / "seen_pair_hashes" / "scope=exact" / "key_id=k1" / f"{DAYS[0]}.parquet"
    assert damaged.is_file()
    s3_server.put(damaged, b"PAR1 not a parquet file")
    with pytest.raises(dg.Failure) as stopped:
        materialize(instance, exported_to_objects, DAYS[2])
    message = str(stopped.value.description)
    assert f"delete {damaged} and rebuild it by materializing deduplicated_pairs and seen_pair_hashes" in message
    assert SECRET_ACCESS_KEY not in message
