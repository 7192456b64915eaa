"""The storage dir's lock, which no other holder can take while this one writes: shared by the
export steps, exclusive for erasure (docs/decisions.md, "A storage lock that cannot be stolen").

Erasure rewrites the files the export steps write; with the lock, an erasure never runs while a
step is between reading and writing them, and two erasures never interleave. One of three forms,
chosen in `storage_lock`:

- the Dagster instance in PostgreSQL (production): an advisory lock in that database, held by a
  session of its own, which the server releases when the holder's process dies;
- local disk otherwise: flock (files.storage_lock), released with the process;
- object storage otherwise: the storage package's lease (storage/lock.py), whose holder stops
  writing once it cannot prove it still holds it.

The advisory lock is confirmed on a thread while held, as the lease is (storage.lock.Keeper): from
the first failed confirmation, or when none has succeeded for a while, every write of this process
fails with LockLostError (storage/write_checks.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

import dagster as dg

from feedback_assets.storage import Storage
from feedback_assets.storage.lock import Keeper, LockLostError

if TYPE_CHECKING:
    from dagster_postgres.run_storage import PostgresRunStorage

# The advisory lock's session is asked every ADVISORY_CHECK_SECONDS whether it still holds the lock;
# with no answer for ADVISORY_DEADLINE_SECONDS its holder stops writing (the server may have ended it).
ADVISORY_CHECK_SECONDS: Final = 10.0
ADVISORY_DEADLINE_SECONDS: Final = 30.0

# Says which lock an advisory-lock key belongs to, so that no other user of the database collides.
_ADVISORY_NAMESPACE: Final = b"feedback_assets storage lock\0"


@contextlib.contextmanager
def storage_lock(
    instance: dg.DagsterInstance,
    storage: Storage,
    *,
    exclusive: bool,
    on_wait: Callable[[], None],
) -> Iterator[None]:
    """Hold the storage dir's lock in the form the instance and the storage dir call for: the
    storage says which form it takes without a database (Storage.lock). `on_wait` is called once if
    the lock has to be waited for."""
    run_storage = instance.run_storage
    # An instance whose runs are stored in PostgreSQL has imported dagster_postgres already; looking it
    # up rather than importing it keeps SQLAlchemy and Alembic (0.44 s) out of every load of the code
    # location (docs/decisions.md, "A storage lock that cannot be stolen").
    postgres = sys.modules.get("dagster_postgres.run_storage")
    if postgres is not None and isinstance(run_storage, postgres.PostgresRunStorage):
        with advisory_lock(run_storage, str(storage), exclusive=exclusive, on_wait=on_wait):
            yield
    else:
        with storage.lock(exclusive=exclusive, on_wait=on_wait):
            yield


def advisory_key(location: str) -> int:
    """The advisory-lock key of a storage location: deployments with different storage dirs in one
    database never wait for each other."""
    digest = hashlib.sha256(_ADVISORY_NAMESPACE + location.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(
    run_storage: PostgresRunStorage, location: str, *, exclusive: bool, on_wait: Callable[[], None]
) -> Iterator[None]:
    """A PostgreSQL advisory lock on `location`'s key in the instance's database, on a session of its
    own (the run storage connects without a pool, in autocommit) held until the body ends.

    Session-level, so it outlives no transaction and needs no clock: the server releases it when the
    session ends, which a killed process's does at once. Waiters queue in the server, so erasure is
    not starved by export steps that keep overlapping.
    """
    import sqlalchemy as sa  # only here: see storage_lock's dispatch

    suffix = "" if exclusive else "_shared"
    key = {"key": advisory_key(location)}
    with run_storage.connect() as session:
        if not session.execute(sa.text(f"SELECT pg_try_advisory_lock{suffix}(:key)"), key).scalar():
            on_wait()
            session.execute(sa.text(f"SELECT pg_advisory_lock{suffix}(:key)"), key)

        def confirm() -> None:
            held = session.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND pid = pg_backend_pid() AND classid::bigint = (:key >> 32) & 4294967295"
                    " AND objid::bigint = :key & 4294967295 AND objsubid = 1"
                ),
                key,
            ).scalar()
            # Asked of pg_locks, not just answered: a session SQLAlchemy reconnected holds nothing.
            if not held:
                raise LockLostError("the database no longer has it")

        keeper = Keeper(
            f"advisory lock {key['key']}",
            confirm,
            ADVISORY_CHECK_SECONDS,
            ADVISORY_DEADLINE_SECONDS,
            gone=(LockLostError, sa.exc.DBAPIError),
        )
        try:
            with keeper.kept():
                yield
        finally:
            # Released at once, not when the connection closes: a pooled connection would keep it. A
            # session that ended has nothing to release, and its error must not hide why the step failed.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                session.execute(sa.text(f"SELECT pg_advisory_unlock{suffix}(:key)"), key)
