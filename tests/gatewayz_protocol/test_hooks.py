"""Process-wide hooks (gatewayz_protocol.hooks): registered log-drop counts, summed, and what a
reporter has not reported yet. Each test starts from no registration (the module's list is
replaced for the test), so nothing another test or telemetry registered counts here."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from gatewayz_protocol import hooks
from gatewayz_protocol.hooks import NewLogDrops, log_records_dropped, register_log_drops


class Count:
    """A settable running total."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def __call__(self) -> int:
        return self.value


@pytest.fixture(autouse=True)
def no_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hooks, "_log_drop_counts", [])


def test_nothing_registered_counts_zero() -> None:
    assert log_records_dropped() == 0


def test_registered_counts_are_summed_and_removed_again() -> None:
    first, second = Count(5), Count(7)
    unregister_first = register_log_drops(first)
    assert log_records_dropped() == 5
    unregister_second = register_log_drops(second)
    assert log_records_dropped() == 12
    first.value = 8  # read at each call, not when registered
    assert log_records_dropped() == 15
    unregister_first()
    assert log_records_dropped() == 7
    unregister_first()  # a second removal removes nothing else
    assert log_records_dropped() == 7
    unregister_second()
    assert log_records_dropped() == 0


def test_the_same_count_registered_twice_counts_once() -> None:
    count = Count(4)
    unregister = register_log_drops(count)
    register_log_drops(count)
    assert log_records_dropped() == 4
    unregister()
    assert log_records_dropped() == 0


def test_a_count_that_fails_counts_zero() -> None:
    def broken() -> int:
        raise RuntimeError("sender gone")

    register_log_drops(broken)
    register_log_drops(Count(3))
    assert log_records_dropped() == 3


def _totals(*values: int) -> Iterator[int]:
    yield from values


def test_new_log_drops_are_the_growth_since_the_last_take() -> None:
    totals = _totals(10, 15, 15, 22)
    drops = NewLogDrops(lambda: next(totals))  # created at 10: those were reported before
    assert [drops.take(), drops.take(), drops.take()] == [5, 0, 7]


def test_a_total_that_went_down_was_restarted_and_all_of_it_is_new() -> None:
    totals = _totals(10, 15, 3, 7, 0, 2)
    drops = NewLogDrops(lambda: next(totals))
    assert [drops.take() for _ in range(5)] == [5, 3, 4, 0, 2]


def test_new_log_drops_default_to_the_registered_counts() -> None:
    count = Count(4)
    register_log_drops(count)
    drops = NewLogDrops()
    count.value = 9
    assert drops.take() == 5
    register_log_drops(Count(2))
    assert drops.take() == 2


def test_a_lock_held_by_a_thread_when_the_process_forked_is_free_in_the_child() -> None:
    """A parent's thread inside ``log_records_dropped()`` while the process forks: the child
    (where a client is built again, reading these counts) must not wait for it forever."""
    hooks._lock.acquire()  # as a thread of the parent would hold it at the fork
    try:
        pid = os.fork()
        if pid == 0:
            signal.alarm(5)  # a lock still held would hang the child: SIGALRM ends it
            os._exit(0 if hooks.log_records_dropped() >= 0 else 1)
    finally:
        hooks._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
