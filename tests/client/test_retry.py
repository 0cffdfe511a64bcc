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
