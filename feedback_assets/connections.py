"""Opening the source database named by FEEDBACK_SOURCE_URL, for reading or for the demo loader."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from feedback_assets.settings import ConfigError, SourceLocation

APPLICATION_NAME = "feedback_assets"
CONNECT_PAUSES = (0.5, 1.0, 2.0)


def postgres_connect_kwargs(location: SourceLocation) -> dict[str, object]:
    url = location.url
    kwargs: dict[str, object] = {
        "dbname": url.database,
        "host": url.host or "localhost",
        "port": url.port or 5432,
        # Lets a DBA find (or terminate) the pipeline's sessions in pg_stat_activity.
        "application_name": APPLICATION_NAME,
    }
    if url.username:
        kwargs["user"] = url.username
    if url.password:
        kwargs["password"] = url.password
    kwargs.update({k: v for k, v in url.query.items() if isinstance(v, str)})
    return kwargs


def _dsn(location: SourceLocation, connect_timeout: int) -> str:
    """The libpq connection string psycopg2.connect(**keywords) would build from the same keywords.

    Built here, not inside connect(): keyword values typed `object` could be taken for connect()'s
    own dsn and connection_factory parameters, which the type checker cannot rule out.
    """
    return psycopg2.extensions.make_dsn(None, connect_timeout=connect_timeout, **postgres_connect_kwargs(location))


def _connect(location: SourceLocation, connect_timeout: int) -> psycopg2.extensions.connection:
    for pause in CONNECT_PAUSES:
        try:
            return psycopg2.connect(_dsn(location, connect_timeout))
        except psycopg2.OperationalError:
            # A restarting server refuses connections for a moment; a wrong URL fails the same way,
            # so the waits are short before the error is reported.
            time.sleep(pause)
    try:
        return psycopg2.connect(_dsn(location, connect_timeout))
    except psycopg2.OperationalError as exc:
        # psycopg2's message can quote the connection string; only the first line, which names the host, is kept.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"FEEDBACK_SOURCE_URL: cannot connect to the {location.describe()}: {first_line}") from None


@contextmanager
def postgres_connection(
    location: SourceLocation, *, connect_timeout: int = 10
) -> Iterator[psycopg2.extensions.connection]:
    """A PostgreSQL session in UTC, so timestamps mean the same whatever the server's time zone."""
    conn = _connect(location, connect_timeout)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        yield conn
    finally:
        conn.close()


@contextmanager
def sqlite_connection(location: SourceLocation, *, read_only: bool = True) -> Iterator[sqlite3.Connection]:
    path = location.sqlite_path
    if read_only and not path.is_file():
        raise ConfigError(f"FEEDBACK_SOURCE_URL: the {location.describe()} does not exist")
    uri = f"file:{path.resolve()}?mode=ro" if read_only else f"file:{path.resolve()}?mode=rwc"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"FEEDBACK_SOURCE_URL: cannot open the {location.describe()}: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()
