"""The storage's own lock on object storage, and what every form of the lock shares while held.

The lease: lease objects under `.locks/`, renewed, taken over and released only by conditional
requests on their entity tag, whose holder stops writing once it cannot prove it still holds it
(docs/decisions.md, "A storage lock that cannot be stolen"). `Keeper` confirms a held lock on a
thread, the lease's renewals here and the advisory lock's looks in `storage_lock.py`; from the first
failed confirmation, or when none has succeeded for a while, every write of this process fails with
LockLostError (write_checks.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

import obstore
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import ObjectStore

from feedback_assets.storage.object_paths import ERRORS, reason
from feedback_assets.storage.write_checks import WRITE_CHECKS

# A lease holder renews every LEASE_SECONDS / 4 and stops writing LEASE_SECONDS / 2 after the last
# renewal it sent that the store confirmed; a waiter takes a lease over only once it has seen the
# same version for LEASE_SECONDS on its own clock. A write checked in time can still land after a
# takeover only if it is in flight for more than LEASE_SECONDS / 2.
LEASE_SECONDS: Final = 120.0
LEASE_POLL_SECONDS: Final = 1.0
# What a released or retired lease is overwritten with before it is deleted (see _retire).
_RETIRED: Final = b""


class LeaseDirectory(Protocol):
    """A directory on object storage as the lease needs it: objects.ObjectStorage, which imports this
    module."""

    def lease_keys(self) -> tuple[ObjectStore, str]: ...


class LockLostError(RuntimeError):
    """The storage lock was lost while held: another run may now hold it, so this one must not write."""


@dataclass
class Keeper:
    """Confirms a held lock every `interval` on a thread. `check` fails from the first confirmation
    that says the lock is gone, or once none has succeeded for `deadline` seconds."""

    name: str
    confirm: Callable[[], None]
    interval: float
    deadline: float
    gone: tuple[type[BaseException], ...]
    _confirmed_at: float = field(default_factory=time.monotonic)
    _lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self._lost is None and time.monotonic() - self._confirmed_at > self.deadline:
            self._lost = f"it could not be confirmed for {self.deadline:.0f} s"
        if self._lost is not None:
            raise LockLostError(
                f"the storage lock ({self.name}) was lost: {self._lost}. Another run may hold it now, so "
                "this step stopped before its next write; run it again"
            )

    def _run(self) -> None:
        while self._lost is None and not self._stop.wait(self.interval):
            sent = time.monotonic()
            try:
                self.confirm()
            except self.gone as exc:
                self._lost = reason(exc)
            except Exception:  # a transient fault: tried again until the deadline
                continue
            else:
                self._confirmed_at = sent

    @contextlib.contextmanager
    def kept(self) -> Iterator[None]:
        """Confirm while the body runs, with every write of this process checked against the lock; a
        body that ends normally after the lock was lost fails too (what it read may have changed)."""
        thread = threading.Thread(target=self._run, name=f"storage lock {self.name}", daemon=True)
        thread.start()
        WRITE_CHECKS.append(self.check)
        try:
            yield
            self.check()
        finally:
            WRITE_CHECKS.remove(self.check)
            self._stop.set()
            thread.join()


@dataclass
class _Lease:
    """One lease object: written only while its version is the one this holder last wrote."""

    store: ObjectStore
    key: str
    holder: str
    e_tag: str | None = None
    # When the request that made the present version was sent: its holder's deadline counts from then.
    sent: float = 0.0
    _renewals: int = 0

    def body(self) -> bytes:
        # A new body each time: S3's entity tag is the body's MD5, and a renewal must change it.
        self._renewals += 1
        self.sent = time.monotonic()
        return f"{self.holder} {self._renewals}".encode()

    def create(self) -> bool:
        try:
            self.e_tag = obstore.put(self.store, self.key, self.body(), mode="create")["e_tag"]
        except AlreadyExistsError:
            return False
        return True

    def take_over(self, seen: str) -> bool:
        """Replace a lapsed lease, only if it is still the version seen lapsing."""
        try:
            self.e_tag = obstore.put(self.store, self.key, self.body(), mode={"e_tag": seen})["e_tag"]
        except (PreconditionError, FileNotFoundError):
            return False
        return True

    def renew(self) -> None:
        """Raises PreconditionError (or FileNotFoundError) once another holder replaced or retired it."""
        self.e_tag = obstore.put(self.store, self.key, self.body(), mode={"e_tag": self.e_tag})["e_tag"]

    def keeper(self, lease_seconds: float) -> Keeper:
        return Keeper(
            f"lease {self.key}",
            self.renew,
            lease_seconds / 4,
            lease_seconds / 2,
            gone=(PreconditionError, FileNotFoundError),
            _confirmed_at=self.sent,
        )


def _retire(store: ObjectStore, key: str, e_tag: str | None) -> bool:
    """Remove a lease only if it is still version `e_tag`: overwritten first with a conditional PUT
    (object stores have no conditional DELETE), which makes any later renewal of it fail."""
    try:
        obstore.put(store, key, _RETIRED, mode={"e_tag": e_tag})
    except (PreconditionError, FileNotFoundError):
        return False
    obstore.delete(store, key)
    return True


@dataclass
class _Sightings:
    """When each lease was first seen at its present version, on this process's clock only: a lease
    seen unchanged for `lease_seconds` belongs to a holder that stopped renewing it."""

    lease_seconds: float
    _first: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    def lapsed(self, key: str, e_tag: str | None) -> bool:
        now = time.monotonic()
        seen = self._first.get(key)
        if seen is None or seen[0] != e_tag:
            self._first[key] = (e_tag, now)
            return False
        return now - seen[1] >= self.lease_seconds


def _version(store: ObjectStore, key: str) -> str | None:
    """The lease's entity tag, or None when there is no lease."""
    try:
        return obstore.head(store, key)["e_tag"] or ""
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def storage_lease(
    directory: LeaseDirectory,
    *,
    exclusive: bool,
    on_wait: Callable[[], None],
    lease_seconds: float = LEASE_SECONDS,
) -> Iterator[None]:
    """The object-storage form of the lock: a readers-writer lock of lease objects under `.locks/`.

    An exclusive holder creates `.locks/exclusive` (a conditional PUT: only one can), or takes over
    one seen unchanged for `lease_seconds` by a PUT conditional on that version (of two takers one
    wins), then waits for every shared lease to go, retiring lapsed ones. A shared holder writes its
    own lease, then backs off while a live exclusive lease exists. Each writes before it looks, on a
    store with strong read-after-write consistency (S3, GCS and Azure Blob all are), so of two that
    start together at least one sees the other. No clocks are compared: expiry is judged by each
    process's own monotonic clock.
    """
    store, prefix = directory.lease_keys()
    exclusive_key = f"{prefix}/exclusive"
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"
    sightings = _Sightings(lease_seconds)
    waited = False

    def wait() -> None:
        nonlocal waited
        if not waited:
            on_wait()
            waited = True
        time.sleep(min(LEASE_POLL_SECONDS, lease_seconds / 4))

    if exclusive:
        lease = _Lease(store, exclusive_key, holder)
        while not lease.create():
            seen = _version(store, exclusive_key)
            if seen is not None and sightings.lapsed(exclusive_key, seen) and lease.take_over(seen):
                break
            if seen is not None:
                wait()
        try:
            with lease.keeper(lease_seconds).kept():
                while _live_shared_leases(store, f"{prefix}/shared", sightings):
                    wait()
                yield
        finally:
            # Conditional: a holder whose lease was taken over leaves the new holder's alone.
            with contextlib.suppress(*ERRORS):
                _retire(store, exclusive_key, lease.e_tag)
    else:
        lease = _Lease(store, f"{prefix}/shared/{holder}", holder)
        while True:
            lease.create()
            seen = _version(store, exclusive_key)
            if seen is None or sightings.lapsed(exclusive_key, seen):
                break
            obstore.delete(store, lease.key)
            wait()
        try:
            with lease.keeper(lease_seconds).kept():
                yield
        finally:
            with contextlib.suppress(*ERRORS):
                obstore.delete(store, lease.key)


def _live_shared_leases(store: ObjectStore, prefix: str, sightings: _Sightings) -> bool:
    """Whether a shared lease is held; lapsed ones are retired on the way."""
    live = False
    for batch in obstore.list(store, prefix):
        for meta in batch:
            if not sightings.lapsed(meta["path"], meta["e_tag"]) or not _retire(store, meta["path"], meta["e_tag"]):
                live = True
    return live
