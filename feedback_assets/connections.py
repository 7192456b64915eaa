"""Opening the source database named by FEEDBACK_SOURCE_URL, for reading or for the demo loader."""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import adbc_driver_manager
import adbc_driver_manager.dbapi
import adbc_driver_postgresql.dbapi as adbc_postgresql
import psycopg2
import psycopg2.extensions

from feedback_assets.files import first_line_of
from feedback_assets.settings import ConfigError, SourceLocation
from feedback_assets.source_url import DEFAULT_PORT

APPLICATION_NAME = "feedback_assets"

# SQLSTATE classes and codes of faults that pass: a lost connection (class 08), a serialization
# failure or deadlock, too many connections, a server shutting down, crashed or starting up, or a
# backend terminated by an administrator (pg_terminate_backend, a failover).
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03"})
# What libpq says when connecting can never work as configured; anything else it says while
# connecting (refused, reset, timed out, starting up) may pass.
PERMANENT_CONNECT_FAULTS = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "could not translate host name",
    "invalid dsn",
    "invalid connection option",
    "invalid sslmode",
    "permission denied",
)


class SourceUnreachableError(RuntimeError):
    """The source cannot be reached now but might be soon: refused or dropped connections, a server
    starting up or shutting down, too many connections."""


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass if the same work is tried again."""
    if isinstance(exc, SourceUnreachableError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    if isinstance(exc, psycopg2.Error):
        code, lost = exc.pgcode, isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
    elif isinstance(exc, adbc_driver_manager.Error):
        # The same libpq underneath: the server's SQLSTATE when it sent one, else a connection fault
        # (OperationalError, status IO) described in libpq's words.
        code, lost = (
            exc.sqlstate,
            isinstance(exc, adbc_driver_manager.OperationalError | adbc_driver_manager.InterfaceError),
        )
    else:
        return False
    if code:
        return code.startswith("08") or code in TRANSIENT_SQLSTATES
    if lost:
        text = str(exc).lower()
        return not any(fault in text for fault in PERMANENT_CONNECT_FAULTS)
    return False


def postgres_connect_kwargs(location: SourceLocation) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "dbname": location.database,
        "host": location.host or "localhost",
        "port": location.port or DEFAULT_PORT,
        # Lets a DBA find (or terminate) the pipeline's sessions in pg_stat_activity.
        "application_name": APPLICATION_NAME,
    }
    if location.username:
        kwargs["user"] = location.username
    if location.password:
        kwargs["password"] = location.password
    kwargs.update(location.query)
    return kwargs


def _dsn(location: SourceLocation, connect_timeout: int) -> str:
    """The libpq connection string psycopg2.connect(**keywords) would build from the same keywords.

    Built here, not inside connect(): keyword values typed `object` could be taken for connect()'s
    own dsn and connection_factory parameters, which the type checker cannot rule out.
    """
    return psycopg2.extensions.make_dsn(None, connect_timeout=connect_timeout, **postgres_connect_kwargs(location))


def _connect(location: SourceLocation, connect_timeout: int) -> psycopg2.extensions.connection:
    """A connection, or ConfigError when it can never work as configured (the reader fails at once),
    or SourceUnreachableError when it may work soon (the reader tries again)."""
    try:
        return psycopg2.connect(_dsn(location, connect_timeout))
    except psycopg2.OperationalError as exc:
        message = f"FEEDBACK_SOURCE_URL: cannot connect to the {location.describe()}: {first_line_of(exc)}"
        if is_transient(exc):
            raise SourceUnreachableError(message) from None
        raise ConfigError(message) from None


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
def postgres_arrow_session(
    location: SourceLocation, *, connect_timeout: int = 10
) -> Iterator[adbc_driver_manager.dbapi.Connection]:
    """A PostgreSQL session whose query results arrive as Arrow columns of their own types, through
    binary COPY parsed outside Python (the ADBC driver; docs/decisions.md, "Feedback rows through
    ADBC"). In autocommit mode: the reader opens its own transaction to join a snapshot."""
    try:
        conn = adbc_postgresql.connect(_dsn(location, connect_timeout), autocommit=True)
    except adbc_driver_manager.Error as exc:
        message = f"FEEDBACK_SOURCE_URL: cannot connect to the {location.describe()}: {_without_prefix(exc)}"
        if is_transient(exc):
            raise SourceUnreachableError(message) from None
        raise ConfigError(message) from None
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
        yield conn
    finally:
        # Closing a session the server already dropped raises; there is nothing left to release.
        with contextlib.suppress(adbc_driver_manager.Error):
            conn.close()


def _without_prefix(exc: BaseException) -> str:
    """libpq's own first line, without ADBC's "IO: [libpq] Failed to connect: " before it."""
    return first_line_of(exc).split("Failed to connect: ", 1)[-1]


# How SQLite says a file is not one of its databases, or is one no longer.
NOT_A_DATABASE = ("file is not a database", "database disk image is malformed")


@contextmanager
def sqlite_connection(location: SourceLocation, *, read_only: bool = True) -> Iterator[sqlite3.Connection]:
    path = location.sqlite_path
    if read_only and not path.is_file():
        raise ConfigError(f"FEEDBACK_SOURCE_URL: the {location.describe()} does not exist")
    # Percent-encoded, so that a '#' or '?' in the file's name is part of the name: in a file: URI
    # it would end the path, and SQLite would open (with mode=rwc, create) another file.
    name = urllib.parse.quote(str(path.resolve()), safe="/")
    uri = f"file:{name}?mode=ro" if read_only else f"file:{name}?mode=rwc"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise ConfigError(f"FEEDBACK_SOURCE_URL: cannot open the {location.describe()}: {exc}") from None
    try:
        yield conn
    except sqlite3.DatabaseError as exc:
        # SQLite reads a file's header only at the first query: a file that is not a database, or a
        # damaged one, shows first here.
        if not any(sign in str(exc) for sign in NOT_A_DATABASE):
            raise
        raise ConfigError(
            f"FEEDBACK_SOURCE_URL: the {location.describe()} is not a SQLite database or is damaged ({exc}); "
            "point the setting at the app's database file"
        ) from None
    finally:
        conn.close()
