"""Shared fixtures."""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict

import dagster as dg
import psycopg2
import pytest
from dagster._core.storage.defs_state.base import set_defs_state_storage
from hypothesis.configuration import set_hypothesis_home_dir

from feedback_assets.storage.object_paths import ObjectPath
from feedback_assets_tests.s3_server import S3Server, running_s3_server


class ServerParameters(TypedDict):
    """libpq keywords for the tests' PostgreSQL server."""

    host: str
    port: int
    user: str


POSTGRES_SERVER: ServerParameters = {"host": "127.0.0.1", "port": 5432, "user": "root"}
POSTGRES_MAINTENANCE_DB = "test"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Everything Hypothesis stores (its example database, its caches of Unicode tables and of the
    tests' constants) goes under this session's pytest temp dir, never into ./.hypothesis.

    Set before collection, where Hypothesis' plugin already caches the constants. The default
    example database follows this directory, and settings(...) objects that name no database of
    their own inherit it, so @settings-decorated tests use it too.
    """
    # The `tmp_path_factory` fixture's object; pytest attaches it to the config without declaring it.
    factory: pytest.TempPathFactory = session.config._tmp_path_factory  # type: ignore[attr-defined]
    set_hypothesis_home_dir(factory.getbasetemp() / "hypothesis")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards; its URL is yielded.

    A database per test, not a schema, so tests running in parallel or killed halfway never see
    each other's tables. Without a server the test is skipped locally but fails in CI.
    """
    try:
        admin = psycopg2.connect(dbname=POSTGRES_MAINTENANCE_DB, connect_timeout=5, **POSTGRES_SERVER)
    except psycopg2.OperationalError as exc:
        reason = f"PostgreSQL at {POSTGRES_SERVER['host']}:{POSTGRES_SERVER['port']} is not reachable: {exc}".strip()
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # CREATE/DROP DATABASE refuse to run inside a transaction block.
    admin.autocommit = True
    name = f"feedback_demo_{uuid.uuid4().hex}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    # Closed now and reopened for the drop: a test may restart the server in between.
    admin.close()
    try:
        yield f"postgresql://{POSTGRES_SERVER['user']}@{POSTGRES_SERVER['host']}:{POSTGRES_SERVER['port']}/{name}"
    finally:
        admin = psycopg2.connect(dbname=POSTGRES_MAINTENANCE_DB, connect_timeout=30, **POSTGRES_SERVER)
        admin.autocommit = True
        with admin.cursor() as cur:
            # FORCE: a connection the test leaked must not leave the database behind.
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def hmac_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The pseudonymisation key, set the only way the pipeline reads it: from the environment."""
    from feedback_assets_tests.graph import KEY_HEX

    monkeypatch.setenv("FEEDBACK_HMAC_KEY", KEY_HEX)
    return KEY_HEX


@pytest.fixture(autouse=True)
def no_earlier_instance_left_current() -> Iterator[None]:
    """Each test starts with no Dagster instance of an earlier test as the "current" one.

    Dagster keeps the entered instance's definitions-state storage in a context variable, and a
    context Dagster built with an ephemeral instance of its own (an op, asset or resource context
    made outside a run) leaves it only when the garbage collector finalises that context. Collected
    in a later test, it put back an earlier test's storage whose instance was gone, and the later
    test's `dg.materialize` failed with "Attempted to resolve undefined DagsterInstance weakref"
    (seen twice in whole-file runs, never alone). Collecting here, before this test enters its own
    instance, finalises such leftovers while nothing depends on the variable.
    """
    gc.collect()
    with set_defs_state_storage(None):
        yield


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A real Dagster instance (SQLite storage) living under tmp_path."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as dagster_instance:
        yield dagster_instance


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3-protocol server (moto_server on loopback) for the tests that use object storage."""
    with running_s3_server(tmp_path_factory.mktemp("s3_server")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> ObjectPath:
    """An empty bucket of this test's own, with the standard AWS_* variables pointing at the server."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return ObjectPath(f"s3://{s3_server.new_bucket()}", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def source_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty source of each kind the contract names; the test writes its tables."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
