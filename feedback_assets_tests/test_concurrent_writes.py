"""`files.concurrently`, which writes a slice's days a few at a time: results in order, truly
concurrent, and after a failure nothing more starts while what is under way finishes. And
`files.WritesBehind`, which lets a slice's writes go on while the next slice is computed: never
more than one slice behind, finished when the step's block ends, failures raised."""

from __future__ import annotations

import threading

import pytest

from feedback_assets import files

# Generous: only reached when the behaviour under test is broken.
WAIT_SECONDS = 30


def test_results_come_in_the_items_order_from_writes_under_way_together() -> None:
    together = threading.Barrier(files.CONCURRENT_WRITES, timeout=WAIT_SECONDS)
    lock = threading.Lock()
    running, most = 0, 0

    def work(item: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        if item < files.CONCURRENT_WRITES:
            # Breaks (and fails the test) unless the first items are all under way at once.
            together.wait()
        with lock:
            running -= 1
        return item * 10

    assert files.concurrently(work, range(12)) == [item * 10 for item in range(12)]
    assert most == files.CONCURRENT_WRITES


def test_after_a_failure_nothing_more_starts_and_what_is_under_way_finishes() -> None:
    assert files.CONCURRENT_WRITES == 3
    started: list[int] = []
    finished: list[int] = []
    first_three = threading.Barrier(3, timeout=WAIT_SECONDS)
    failure_raised = threading.Event()

    def work(item: int) -> int:
        started.append(item)
        if item < 3:
            first_three.wait()
        if item == 1:
            failure_raised.set()
            raise ValueError("item 1 refused")
        if item in (0, 2):
            failure_raised.wait(WAIT_SECONDS)
        if item == 4:  # later in order than item 1: never the failure raised
            raise ValueError("item 4 refused")
        finished.append(item)
        return item

    with pytest.raises(ValueError, match="item 1 refused"):
        files.concurrently(work, range(20))
    assert {0, 2} <= set(finished)
    # Items 0 and 2 leave their waits as item 1 fails; each of their two threads may take one more
    # item in the instant before the failure is recorded, never the rest.
    assert set(started) <= {0, 1, 2, 3, 4}


def test_writes_behind_keep_one_slice_behind_and_are_finished_when_the_block_ends() -> None:
    first_may_end = threading.Event()
    finished: list[str] = []

    def first() -> str:
        first_may_end.wait(WAIT_SECONDS)
        finished.append("first")
        return "first"

    def second() -> str:
        finished.append("second")
        return "second"

    with files.WritesBehind() as behind:
        one = behind.submit(first)
        # The caller goes on while the first slice's writes are under way...
        assert not one.done()
        first_may_end.set()
        # ...and a second slice's writes start only once the first's have finished.
        two = behind.submit(second)
    assert finished == ["first", "second"]
    assert (one.result(), two.result()) == ("first", "second")


def test_a_failed_write_behind_is_raised_at_the_next_submit_or_at_the_end() -> None:
    def refused() -> None:
        raise OSError("disk refused")

    with pytest.raises(OSError, match="disk refused"), files.WritesBehind() as behind:
        behind.submit(refused)
        behind.submit(lambda: None)
        pytest.fail("the second slice's writes started after the first's failed")
    with pytest.raises(OSError, match="disk refused"), files.WritesBehind() as behind:
        behind.submit(refused)


def test_when_the_block_fails_its_error_goes_up_after_the_writes_under_way() -> None:
    finished: list[str] = []
    failing = threading.Event()

    def behind_the_failure() -> None:
        # Ends only once the block is failing: the error must wait for it.
        failing.wait(WAIT_SECONDS)
        finished.append("written")

    with pytest.raises(ValueError, match="the next slice failed"), files.WritesBehind() as behind:
        behind.submit(behind_the_failure)
        failing.set()
        raise ValueError("the next slice failed")
    assert finished == ["written"]
