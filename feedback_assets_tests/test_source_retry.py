"""The retry policy's timing and messages (`feedback_assets.source.retry`), on a clock of its own:
real faults against a real server are in test_source_faults.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from feedback_assets.connections import SourceUnreachableError
from feedback_assets.source.retry import RetryPolicy
from feedback_assets.source_url import parse_source_url

LOCATION = parse_source_url("sqlite:///data/app.sqlite")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def failing(times: int, error: Callable[[], BaseException]) -> Callable[[], str]:
    """A read that fails `times` times with `error`, then reads 'rows'."""
    tries = iter(range(times + 1))

    def read() -> str:
        if next(tries) < times:
            raise error()
        return "rows"

    return read


def policy(retry_seconds: int, clock: Clock, log: list[str]) -> RetryPolicy:
    return RetryPolicy(LOCATION, retry_seconds, log.append, clock=clock.time, sleep=clock.sleep)


def test_the_pauses_double_from_one_second_to_at_most_fifteen() -> None:
    clock, log = Clock(), list[str]()
    read = failing(7, lambda: SourceUnreachableError("connection refused"))
    assert policy(120, clock, log).run(read) == "rows"
    assert clock.waits == [1, 2, 4, 8, 15, 15, 15]
    assert log[0] == (
        "reading the sqlite file data/app.sqlite failed: connection refused; trying again in 1 s "
        "(120 s of FEEDBACK_SOURCE_RETRY_SECONDS=120 left)"
    )
    assert log[-1].endswith("trying again in 15 s (75 s of FEEDBACK_SOURCE_RETRY_SECONDS=120 left)")


def test_past_the_budget_the_fault_goes_up_saying_how_long_the_source_was_unreachable() -> None:
    clock, log = Clock(), list[str]()
    with pytest.raises(SourceUnreachableError) as raised:
        policy(10, clock, log).run(failing(100, lambda: sqlite3.OperationalError("database is locked")))
    # The last pause is cut to what is left of the budget.
    assert clock.waits == [1, 2, 4, 3]
    assert str(raised.value) == (
        "database is locked (the sqlite file data/app.sqlite was unreachable for 10 s, "
        "FEEDBACK_SOURCE_RETRY_SECONDS=10); the run wrote nothing for the days it could not read: "
        "run them again once the database is back"
    )
    assert len(log) == 4


def test_a_budget_of_zero_tries_once() -> None:
    clock, log = Clock(), list[str]()
    with pytest.raises(SourceUnreachableError, match="unreachable for 0 s"):
        policy(0, clock, log).run(failing(1, lambda: SourceUnreachableError("connection refused")))
    assert clock.waits == [] and log == []


@pytest.mark.parametrize(
    "error", [lambda: sqlite3.OperationalError("no such table: users"), lambda: ValueError("not a source fault")]
)
def test_any_other_fault_goes_up_at_once(error: Callable[[], BaseException]) -> None:
    clock, log = Clock(), list[str]()
    with pytest.raises(type(error())):
        policy(120, clock, log).run(failing(1, error))
    assert clock.waits == [] and log == []
