"""The storage lock cannot be stolen: real processes race for it (lock_holder.py), on object storage
as a lease whose every change is conditional on its version, and in PostgreSQL as an advisory lock
that dies with its holder's session."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster_postgres.run_storage import PostgresRunStorage

from feedback_assets.storage import LocalStorage
from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets.storage_lock import ADVISORY_CHECK_SECONDS, advisory_key, storage_lock
from feedback_assets_tests.processes import Processes
from feedback_assets_tests.s3_server import S3Server, running_s3_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0
LEASE_SECONDS = 3.0


@pytest.fixture(scope="module")
def serial_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto answering one request at a time, so its conditional PUTs are atomic as S3's are."""
    with running_s3_server(tmp_path_factory.mktemp("serial_s3_server"), one_request_at_a_time=True) as server:
        yield server


class Holders:
    """Lock holder processes sharing one events file; each holds until its release file exists."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.dir = tmp_path
        self.events_file = tmp_path / "events"
        self.processes = Processes(REPO, {**os.environ, **env})
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, location: str, *options: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "feedback_assets_tests.lock_holder", str(self.events_file), name, location]
        command += ["--release", str(self.dir / f"release-{name}"), *options]
        self.started[name] = self.processes.start(command, self.dir / f"{name}.log")
        return self.started[name]

    def release(self, name: str) -> None:
        (self.dir / f"release-{name}").touch()

    def events(self) -> list[str]:
        return self.events_file.read_text().splitlines() if self.events_file.exists() else []

    def reached(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not any(line.startswith(event) for line in self.events()):
            assert time.monotonic() < deadline, f"no {event!r} in {self.events()}:\n{self.logs()}"
            time.sleep(0.05)

    def exit_code(self, name: str) -> int:
        return self.started[name].wait(TIMEOUT)

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{(self.dir / f'{name}.log').read_text()}" for name in self.started)

    def __enter__(self) -> Holders:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for process in self.started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)
        self.processes.stop()


def in_and_out(events: list[str]) -> list[str]:
    return [line for line in events if line.endswith((" in", " out"))]


def lease_body(s3_server: S3Server, lease: ObjectPath) -> bytes:
    return s3_server.objects(lease.parent)[lease.name]


@pytest.fixture
def lease_dir(serial_s3_server: S3Server) -> ObjectPath:
    return ObjectPath(f"s3://{serial_s3_server.new_bucket()}", "storage")


def lease_options(exclusive: bool = True) -> list[str]:
    return ["--lease-seconds", str(LEASE_SECONDS), *(["--exclusive"] if exclusive else [])]


def test_two_erasures_on_one_dead_lease_only_one_takes_it_over(
    tmp_path: Path, serial_s3_server: S3Server, lease_dir: ObjectPath
) -> None:
    # What a pod killed during an erasure leaves: its lease, never renewed again.
    serial_s3_server.put(lease_dir / ".locks" / "exclusive", b"killed-pod-1-0 1")
    # Started at the same instant, both see the dead lease at once and try to take it over at once.
    start_at = ["--start-at", str(time.time() + 4)]
    with Holders(tmp_path, serial_s3_server.environment()) as holders:
        for name in ("erasure-1", "erasure-2"):
            holders.start(name, str(lease_dir), *lease_options(), *start_at)
        deadline = time.monotonic() + TIMEOUT
        while not in_and_out(holders.events()):
            assert time.monotonic() < deadline, holders.logs()
            time.sleep(0.05)
        # Longer than a lease: a loser that could take the winner's renewed lease would have by now.
        time.sleep(2 * LEASE_SECONDS)
        winner = in_and_out(holders.events())[0].split()[0]
        loser = "erasure-2" if winner == "erasure-1" else "erasure-1"
        assert in_and_out(holders.events()) == [f"{winner} in"]
        holders.release(winner)
        holders.reached(f"{loser} in")
        holders.release(loser)
        assert holders.exit_code(winner) == 0 and holders.exit_code(loser) == 0, holders.logs()
        assert in_and_out(holders.events()) == [f"{winner} in", f"{winner} out", f"{loser} in", f"{loser} out"]
        assert {f"{name} waited" for name in (winner, loser)} <= set(holders.events())
    assert serial_s3_server.objects(lease_dir / ".locks") == {}


def test_a_lapsed_holder_renewing_after_a_takeover_is_refused_and_the_new_lease_stays(
    tmp_path: Path, serial_s3_server: S3Server, lease_dir: ObjectPath
) -> None:
    lease = lease_dir / ".locks" / "exclusive"
    with Holders(tmp_path, serial_s3_server.environment()) as holders:
        old = holders.start("old", str(lease_dir), *lease_options())
        holders.reached("old in")
        # A holder that stops renewing without dying: a long pause, a partition.
        os.killpg(old.pid, signal.SIGSTOP)
        new = holders.start("new", str(lease_dir), *lease_options())
        holders.reached("new in")
        new_body = lease_body(serial_s3_server, lease)
        assert new_body.startswith(f"{socket.gethostname()}-{new.pid}-".encode())
        os.killpg(old.pid, signal.SIGCONT)
        # Woken, the old holder renews at once, with its version's precondition, which fails.
        time.sleep(LEASE_SECONDS / 2)
        holders.release("old")
        holders.reached("old lost")
        assert holders.exit_code("old") == 3
        (lost,) = [line for line in holders.events() if line.startswith("old lost")]
        assert "the storage lock (lease storage/.locks/exclusive) was lost: Request precondition failure" in lost
        assert "412 Precondition Failed" in lost and "run it again" in lost
        # The new holder's lease is its own, and it goes on renewing it.
        body = lease_body(serial_s3_server, lease)
        assert body.startswith(f"{socket.gethostname()}-{new.pid}-".encode()) and body != new_body
        holders.release("new")
        assert holders.exit_code("new") == 0, holders.logs()
        # The old holder's body ended without writing, yet it failed: what it read may have changed.
        assert holders.events()[-1] == "new out"
    assert serial_s3_server.objects(lease_dir / ".locks") == {}


def test_a_holder_that_lost_its_lease_writes_nothing_more(
    tmp_path: Path, serial_s3_server: S3Server, lease_dir: ObjectPath
) -> None:
    written = lease_dir / "written"
    with Holders(tmp_path, serial_s3_server.environment()) as holders:
        old = holders.start("old", str(lease_dir), *lease_options(), "--write-every", "0.1")
        holders.reached("old wrote 2")
        os.killpg(old.pid, signal.SIGSTOP)
        holders.start("new", str(lease_dir), *lease_options())
        holders.reached("new in")
        before_takeover = set(serial_s3_server.objects(written))
        os.killpg(old.pid, signal.SIGCONT)
        holders.reached("old lost")
        assert holders.exit_code("old") == 3
        # Every write of the old holder after the takeover was refused before it was sent.
        assert set(serial_s3_server.objects(written)) == before_takeover
        wrote = [line for line in holders.events() if line.startswith("old wrote")]
        assert len(wrote) == len(before_takeover)
        holders.release("new")
        assert holders.exit_code("new") == 0, holders.logs()
    assert serial_s3_server.objects(lease_dir / ".locks") == {}


def with_psycopg2(postgres_url: str) -> str:
    """The URL as the production instance gives it: SQLAlchemy would pick psycopg 3 for a plain one."""
    return postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def instance_database(postgres_url: str) -> str:
    """A database with a Dagster instance's tables, made before any holder connects."""
    PostgresRunStorage(with_psycopg2(postgres_url))
    return postgres_url


def advisory_lock_free(database: str, location: str) -> bool:
    with contextlib.closing(psycopg2.connect(database)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(location),))
            (free,) = cursor.fetchone() or (False,)
            if free:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (advisory_key(location),))
    return bool(free)


def test_an_advisory_lock_holder_killed_outright_releases_it(tmp_path: Path, instance_database: str) -> None:
    location = str(tmp_path / "storage")
    with Holders(tmp_path, {}) as holders:
        database = ["--database", with_psycopg2(instance_database)]
        killed = holders.start("killed", location, *database, "--exclusive")
        holders.reached("killed in")
        assert not advisory_lock_free(instance_database, location)
        holders.start("next", location, *database, "--exclusive")
        holders.reached("next waited")
        os.killpg(killed.pid, signal.SIGKILL)
        holders.reached("next in")
        holders.release("next")
        assert holders.exit_code("next") == 0, holders.logs()
        assert in_and_out(holders.events()) == ["killed in", "next in", "next out"]
    assert advisory_lock_free(instance_database, location)


def test_an_advisory_lock_holder_whose_session_was_ended_fails(tmp_path: Path, instance_database: str) -> None:
    """The server ending the session (a restart, a DBA) frees the lock at once; the holder learns it
    at its next look (storage_lock.ADVISORY_CHECK_SECONDS) and its step fails."""
    location = str(tmp_path / "storage")
    with Holders(tmp_path, {}) as holders:
        holders.start("ended", location, "--database", with_psycopg2(instance_database), "--exclusive")
        holders.reached("ended in")
        with contextlib.closing(psycopg2.connect(instance_database)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND objid::bigint = %s & 4294967295",
                    (advisory_key(location),),
                )
                assert cursor.fetchall() == [(True,)]
        # pg_terminate_backend only signals the backend; it frees the lock as it exits.
        deadline = time.monotonic() + 5
        while not advisory_lock_free(instance_database, location):
            assert time.monotonic() < deadline, "the ended session's lock was not freed"
            time.sleep(0.1)
        time.sleep(ADVISORY_CHECK_SECONDS + 2)
        holders.release("ended")
        holders.reached("ended lost")
        assert holders.exit_code("ended") == 3
        (lost,) = [line for line in holders.events() if line.startswith("ended lost")]
        assert f"the storage lock (advisory lock {advisory_key(location)}) was lost: " in lost
        # psycopg2 says the server ended or closed the connection, depending on when it reads it.
        assert "(psycopg2.OperationalError) " in lost and "run it again" in lost


def test_shared_advisory_holders_coexist_and_an_exclusive_one_waits_for_them(
    tmp_path: Path, instance_database: str
) -> None:
    location = str(tmp_path / "storage")
    database = ["--database", with_psycopg2(instance_database)]
    with Holders(tmp_path, {}) as holders:
        for name in ("export-1", "export-2"):
            holders.start(name, location, *database)
            holders.reached(f"{name} in")
        holders.start("erasure", location, *database, "--exclusive")
        holders.reached("erasure waited")
        # Another deployment's storage dir is another key: never blocked by this one's holders.
        holders.start("elsewhere", str(tmp_path / "other_storage"), *database, "--exclusive")
        holders.reached("elsewhere in")
        # Queued behind the waiting erasure, not let in ahead of it.
        holders.start("export-3", location, *database)
        holders.reached("export-3 waited")
        holders.release("export-1")
        time.sleep(1.0)
        assert "erasure in" not in holders.events()
        holders.release("export-2")
        holders.reached("erasure in")
        time.sleep(1.0)
        assert "export-3 in" not in holders.events()
        holders.release("erasure")
        holders.reached("export-3 in")
        for name in ("export-3", "elsewhere"):
            holders.release(name)
        for name in holders.started:
            assert holders.exit_code(name) == 0, holders.logs()
        assert [line for line in in_and_out(holders.events()) if "elsewhere" not in line] == [
            "export-1 in",
            "export-2 in",
            "export-1 out",
            "export-2 out",
            "erasure in",
            "erasure out",
            "export-3 in",
            "export-3 out",
        ]


def test_the_lock_is_taken_in_the_instance_database_when_there_is_one(tmp_path: Path, postgres_url: str) -> None:
    storage = tmp_path / "storage"
    waits: list[str] = []
    postgres = {"storage": {"postgres": {"postgres_url": with_psycopg2(postgres_url)}}}
    with dg.instance_for_test(overrides=postgres) as instance:
        with storage_lock(instance, LocalStorage(storage), exclusive=True, on_wait=lambda: waits.append("waited")):
            assert not advisory_lock_free(postgres_url, str(storage))
            assert not (storage / ".feedback.lock").exists()
        assert advisory_lock_free(postgres_url, str(storage))
    with (
        dg.instance_for_test() as instance,
        storage_lock(instance, LocalStorage(storage), exclusive=True, on_wait=lambda: waits.append("waited")),
    ):
        assert (storage / ".feedback.lock").exists()
        assert advisory_lock_free(postgres_url, str(storage))
    assert waits == []
