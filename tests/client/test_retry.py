"""Backoff: the flusher's retry policy. The waits are recorded instead of waited (no sleeps),
so the sequence is checked exactly."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from client._retry import STOPPED, Backoff


class Attempts:
    """Fails with each of ``failures`` in turn, then returns ``result``."""

    def __init__(self, failures: list[Exception], result: int = 42) -> None:
        self.failures = list(failures)
        self.result = result
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


def retried(exc: Exception) -> bool:
    return isinstance(exc, redis.ConnectionError)


def backoff_recording_waits(stopping: bool = False) -> tuple[Backoff, list[float]]:
    backoff = Backoff(0.1, 0.5, stopping=lambda: stopping)
    waits: list[float] = []
    backoff.pause = waits.append  # type: ignore[method-assign]  # recorded, not waited
    return backoff, waits


def test_a_failing_round_trip_is_retried_with_doubling_waits_up_to_the_maximum(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff, waits = backoff_recording_waits()
    attempt = Attempts([redis.ConnectionError("down")] * 5)
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        assert backoff.run(attempt, retried) == 42
    assert attempt.calls == 6
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.redis_ok is True
    assert [r.getMessage() for r in caplog.records] == [
        "metrics flush to Redis failed, retrying with backoff: down",  # once, not five times
        "metrics flush to Redis recovered",
    ]


def test_each_run_starts_again_from_the_initial_wait() -> None:
    backoff, waits = backoff_recording_waits()
    backoff.run(Attempts([redis.ConnectionError("down")] * 3), retried)
    backoff.run(Attempts([redis.ConnectionError("down")]), retried)
    assert waits == [0.1, 0.2, 0.4, 0.1]


def test_an_error_not_to_be_retried_is_raised_at_once() -> None:
    backoff, waits = backoff_recording_waits()
    attempt = Attempts([ValueError("a bug")])
    with pytest.raises(ValueError, match="a bug"):
        backoff.run(attempt, retried)
    assert (attempt.calls, waits, backoff.redis_ok) == (1, [], True)


def test_stop_ends_the_retries_without_waiting() -> None:
    backoff, waits = backoff_recording_waits(stopping=True)
    attempt = Attempts([redis.ConnectionError("down")] * 3)
    assert backoff.run(attempt, retried) is STOPPED
    assert (attempt.calls, waits, backoff.redis_ok) == (1, [], False)


def test_a_failure_is_logged_once_until_redis_recovers(caplog: pytest.LogCaptureFixture) -> None:
    backoff, _ = backoff_recording_waits()
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        backoff.failed("out of memory: %s", redis.ResponseError("OOM"))
        backoff.failed("out of memory: %s", redis.ResponseError("OOM"))
        assert backoff.redis_ok is False
        backoff.run(Attempts([]), retried)  # a round trip that succeeds
        backoff.failed("out of memory: %s", redis.ResponseError("OOM again"))
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory: OOM",
        "metrics flush to Redis recovered",
        "out of memory: OOM again",
    ]


def test_cut_short_ends_a_wait_at_once() -> None:
    backoff = Backoff(0.1, 0.5, stopping=lambda: False)
    backoff.cut_short()  # flush() asked before the wait began: it does not wait at all
    started = time.monotonic()
    backoff.pause(60.0)
    assert time.monotonic() - started < 5.0


class Due:
    """A refresh due every ``every`` seconds of a fake clock that a wait advances (no sleeps:
    ``cut_short`` is set, so each wait returns at once, and the clock moves by what it waited)."""

    def __init__(self, every: float, fails: bool = False) -> None:
        self.now = 0.0
        self.every = every
        self.fails = fails
        self.last = 0.0
        self.refreshed: list[float] = []

    def next_due(self) -> float:
        return self.last + self.every - self.now

    def refresh(self) -> None:
        self.refreshed.append(self.now)
        if not self.fails:
            self.last = self.now


def pausing(due: Due) -> Backoff:
    backoff = Backoff(
        0.1,
        0.5,
        stopping=lambda: False,
        meanwhile=due.refresh,
        next_due=due.next_due,
        monotonic=lambda: due.now,
    )

    class FakeEvent:
        def wait(self, seconds: float) -> bool:
            due.now += seconds
            return False

        def clear(self) -> None:
            pass

    backoff._cut_short = FakeEvent()  # type: ignore[assignment]
    return backoff


def test_a_wait_refreshes_what_falls_due_during_it_on_schedule() -> None:
    due = Due(every=1.0)
    pausing(due).pause(3.5)
    assert due.refreshed == [1.0, 2.0, 3.0]
    assert due.now == 3.5


def test_a_refresh_that_fails_is_tried_once_per_wait_not_in_a_busy_loop() -> None:
    due = Due(every=1.0, fails=True)
    pausing(due).pause(3.5)
    assert due.refreshed == [1.0]
    assert due.now == 3.5


def test_a_wait_with_nothing_due_is_one_wait() -> None:
    due = Due(every=10.0)
    pausing(due).pause(3.5)
    assert (due.refreshed, due.now) == ([], 3.5)
