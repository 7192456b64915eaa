"""Trying a read of the source again after a transient fault (docs/contract.md,
FEEDBACK_SOURCE_RETRY_SECONDS).

A read is tried again after a fault `connections.is_transient` calls transient (a refused or dropped
connection, a server starting up or shutting down, too many connections, a serialization failure)
for up to `retry_seconds` from the first fault, reporting every fault to `log`; a read has no side
effect, so trying it again is safe. Past the budget, or on any other fault, the error goes up.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import adbc_driver_manager
import psycopg2

from feedback_assets.connections import SourceUnreachableError, is_transient
from feedback_assets.files import first_line_of
from feedback_assets.source_url import SourceLocation

Result = TypeVar("Result")

# The waits between tries after a transient fault: doubling from 1 s, at most 15 s, until the budget
# (FEEDBACK_SOURCE_RETRY_SECONDS) is spent.
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 15.0
# The errors a read of either driver can raise; `is_transient` sorts them.
SOURCE_ERRORS = (SourceUnreachableError, psycopg2.Error, adbc_driver_manager.Error, sqlite3.Error)


def _quiet(message: str) -> None:
    """The log of a policy nobody listens to."""


@dataclass(frozen=True)
class RetryPolicy:
    """How the reads of one source are tried again. `clock` and `sleep` are the time it measures and
    waits in (the real ones, but for tests of its timing)."""

    location: SourceLocation
    retry_seconds: int = 120
    log: Callable[[str], None] = _quiet
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def run(self, read: Callable[[], Result]) -> Result:
        """`read()`, tried again after each transient fault until the budget is spent."""
        first_fault: float | None = None
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                return read()
            except SOURCE_ERRORS as exc:
                if not is_transient(exc):
                    raise
                first_fault = self.clock() if first_fault is None else first_fault
                waited = self.clock() - first_fault
                left = self.retry_seconds - waited
                fault = str(exc) if isinstance(exc, SourceUnreachableError) else first_line_of(exc)
                if left <= 0:
                    raise SourceUnreachableError(
                        f"{fault} (the {self.location.describe()} was unreachable for {waited:.0f} s, "
                        f"FEEDBACK_SOURCE_RETRY_SECONDS={self.retry_seconds}); the run wrote nothing for the days "
                        "it could not read: run them again once the database is back"
                    ) from None
                wait = min(pause, left)
                self.log(
                    f"reading the {self.location.describe()} failed: {fault}; trying again in {wait:.0f} s "
                    f"({left:.0f} s of FEEDBACK_SOURCE_RETRY_SECONDS={self.retry_seconds} left)"
                )
                self.sleep(wait)
                pause = min(pause * 2, LONGEST_PAUSE_SECONDS)
