"""Woken breakers on a real Redis (single and Cluster), injected clocks: a worker's flush adds
the wake, the leader's listener reads it and evaluates that breaker at once, with the usual
fenced transition; what a cycle alone would not have opened yet; a follower does nothing."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator, woken_breakers
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]


def _healthy_then_failing(metrics: MetricsClient, clock: FakeClock, provider: str) -> None:
    """8 s of 50 calls/s succeeding, then 0.6 s of every call failing (30 failures): 7.5% of the
    breaker window, 60% of the last second."""
    for _ in range(400):
        metrics.record(provider, 0.2, status_code=200)
        clock.advance(0.02)
    assert metrics.flush(timeout=5)
    for _ in range(30):
        metrics.record(provider, 0.2, status_code=503)
        clock.advance(0.02)
    assert metrics.flush(timeout=5)


def _state(r: redis.Redis, keys: Keys, provider: str) -> bytes | None:
    value: bytes | None = r.hget(keys.breaker(provider), "state")
    return value


def test_a_woken_breaker_opens_on_recent_calls_where_a_cycle_does_not(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock,
    r: redis.Redis, keys: Keys,
) -> None:  # fmt: skip
    metrics = make_client(clock=clock)
    aggregator = make_aggregator()
    _healthy_then_failing(metrics, clock, "down")
    assert aggregator.run_breaker_cycle() == []  # the 8 s window: 7.5% failing
    after = dict(woken_breakers(aggregator).evaluate(["down", "never-seen"]))
    assert after["down"].state == "open" and after["never-seen"].state == "closed"
    assert _state(r, keys, "down") == b"open"
    assert r.hget(keys.transitions("down"), "closed>open") == b"1"
    assert metrics.allow("down") is False  # learned at the next refresh, here the first ask


def test_a_follower_evaluates_nothing(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock,
    r: redis.Redis, keys: Keys,
) -> None:  # fmt: skip
    metrics = make_client(clock=clock)
    leader, follower = make_aggregator(instance="a"), make_aggregator(instance="b")
    assert leader.tick_lease() and not follower.tick_lease()
    _healthy_then_failing(metrics, clock, "down")
    assert woken_breakers(follower).evaluate(["down"]) == []
    assert _state(r, keys, "down") is None


def test_the_listener_evaluates_what_a_worker_woke(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock,
    redis_url: str, r: redis.Redis, keys: Keys,
) -> None:  # fmt: skip
    metrics = make_client(clock=clock)
    aggregator = make_aggregator(breaker=BreakerConfig())
    assert aggregator.run_breaker_cycle() == [] and aggregator.is_leader  # fences raised
    listener_connection = connect(redis_url, socket_timeout=5.0)
    now = [100.0]
    listener = woken_breakers(aggregator).listener(listener_connection)
    listener._monotonic = lambda: now[0]  # the schedule's clock: injected
    listener._block = 0.01  # nothing to wait for in a test: read what is there
    try:
        listener.step()  # nothing woken yet: nothing evaluated
        assert listener.evaluations == 0
        _healthy_then_failing(metrics, clock, "down")  # the failing flush adds the wake
        assert r.xlen(keys.breaker_wakes) == 1
        listener.step()
        assert listener.evaluations == 1
        assert _state(r, keys, "down") == b"open"
        now[0] += 10.0  # open: no longer watched, nothing more evaluated
        listener.step()
        assert listener.evaluations == 1
    finally:
        listener_connection.close()


def test_healthy_traffic_adds_no_wake(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(clock=clock)
    for _ in range(200):
        metrics.record("fine", 0.2, status_code=200)
        metrics.record("fine", 0.2, status_code=404)  # a caller error is not the provider's
    metrics.record("fine", 0.2, status_code=503)
    assert metrics.flush(timeout=5)
    assert r.exists(keys.breaker_wakes) == 0


def test_wakes_can_be_turned_off(
    make_client: MakeClient, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(clock=clock, breaker_wake_failures=0)
    for _ in range(50):
        metrics.record("down", 0.2, status_code=503)
    assert metrics.flush(timeout=5)
    assert r.exists(keys.breaker_wakes) == 0
