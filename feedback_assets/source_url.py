"""FEEDBACK_SOURCE_URL, parsed so that no part of a password can ever reach a message.

Written here rather than taken from SQLAlchemy's `make_url`, which the project used only for this:
a password with an unencoded `@` made it take the rest of the password for the host, which then
appeared in every log line and failure that names the database; a port that is not a number raised
a bare ValueError that stopped the code location from loading; and a `#` or `?` in a SQLite path cut
the path short, so another file was opened (and created). Here the user part ends at the last `@`,
whatever it holds; no message quotes any part of the URL but the host, port, database and file; a
SQLite path is taken as written, `~` expanded as a shell does. Importing SQLAlchemy also cost the
code location 0.14 s of its 0.83 s load.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from feedback_assets.errors import ConfigError

SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
DEFAULT_PORT = 5432
EXAMPLES = "sqlite:///path/to/file.sqlite or postgresql://user:password@host:port/database"


@dataclass(frozen=True)
class SourceLocation:
    """Where the source database is. Only `describe()` is ever shown; the password and the query
    (which libpq lets carry a password too) are kept out of the repr."""

    dialect: str
    database: str
    host: str = ""
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.database)

    def describe(self) -> str:
        """A loggable description: the file, or the host and database, never the password."""
        if self.dialect == "sqlite":
            return f"sqlite file {self.sqlite_path}"
        return f"postgresql database {self.database!r} on {self.host}:{self.port or DEFAULT_PORT}"


def expand_home(path: str) -> str:
    """`~` or `~user` at the start of a path, expanded as a shell expands it; a `~` that names no
    known user is refused rather than taken as a folder named `~` (which a later read would then look
    for in the home directory)."""
    if not path.startswith("~"):
        return path
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise ConfigError(f"the path {path!r} starts with a '~' that names no user on this machine; give a full path")
    return expanded


def parse_source_url(raw: str) -> SourceLocation:
    match = SCHEME.match(raw.strip())
    if match is None:
        raise ConfigError(f"FEEDBACK_SOURCE_URL is not a database URL; expected {EXAMPLES}")
    backend = match["scheme"].lower().partition("+")[0]
    if backend == "sqlite":
        return _sqlite(match["rest"])
    if backend == "postgresql":
        return _postgresql(match["rest"])
    raise ConfigError(f"FEEDBACK_SOURCE_URL uses {backend!r}; only sqlite and postgresql sources are supported")


def _sqlite(rest: str) -> SourceLocation:
    # sqlite:///relative/file and sqlite:////absolute/file, as SQLAlchemy spells them; the path is
    # taken as written, `#` and `?` included.
    path = rest[1:] if rest.startswith("/") else ""
    if not path or path == ":memory:":
        raise ConfigError("FEEDBACK_SOURCE_URL names no SQLite file; expected sqlite:///path/to/file.sqlite")
    try:
        return SourceLocation("sqlite", expand_home(path))
    except ConfigError as exc:
        raise ConfigError(f"FEEDBACK_SOURCE_URL: {exc}") from None


def _postgresql(rest: str) -> SourceLocation:
    # The user part ends at the last '@': an unencoded '@', '/', '?' or ':' in a password stays in it.
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    hostport, _, after = hostpart.partition("/")
    database, _, query = after.partition("?")
    host, port = _host_and_port(hostport)
    username, colon, password = userinfo.partition(":")
    if not database:
        raise ConfigError(
            "FEEDBACK_SOURCE_URL names no PostgreSQL database; expected postgresql://user@host:port/database"
        )
    return SourceLocation(
        "postgresql",
        urllib.parse.unquote(database),
        host=host,
        port=port,
        username=urllib.parse.unquote(username) or None,
        password=urllib.parse.unquote(password) if colon else None,
        query=tuple(urllib.parse.parse_qsl(query, keep_blank_values=True)),
    )


def _host_and_port(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, bracket, port_text = hostport[1:].partition("]")
        port_text = port_text.removeprefix(":") if bracket else port_text
    else:
        host, _, port_text = hostport.partition(":")
    host = urllib.parse.unquote(host) or "localhost"
    if not port_text:
        return host, None
    # The port is not quoted back: in a URL whose password holds an unencoded ':' it may be password.
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(
            "FEEDBACK_SOURCE_URL has a port that is not a whole number from 1 to 65535 (a password with '@', '/' "
            "or ':' may be written as it is; the host part after the last '@' must be host:port/database)"
        )
    return host, int(port_text)
