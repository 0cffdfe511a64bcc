"""The cluster breaker end to end on a real Redis, with injected clocks: permits, recovery
without flapping, half-open timeout, forced states across restarts, the open-share guard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from aggregator.cli import breaker as admin
from aggregator.core.breaker import BreakerConfig
from aggregator.core.snapshot import ProviderHealth, Snapshot
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]


def _one(snapshot: Snapshot | None, provider: str) -> ProviderHealth:
    assert snapshot is not None
    (found,) = [p for p in snapshot.providers if p.provider == provider]
    return found


def _fail(metrics: MetricsClient, provider: str, count: int) -> None:
    for _ in range(count):
        metrics.record(provider, 1.0, status_code=503)
    assert metrics.flush(timeout=5)


def test_trial_calls_close_the_breaker_and_it_stays_closed(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    aggregator = make_aggregator(breaker=BreakerConfig(half_open_calls=5))
    _fail(metrics, "flaky", 25)
    clock.advance(1)
    (opened,) = aggregator.run_breaker_cycle()
    assert (opened.old.state, opened.new.state) == ("closed", "open")
    observer = make_client()
    assert observer.allow("flaky") is False
    assert observer.flush(timeout=5)  # ships the rejection count

    clock.advance(30)
    (half,) = aggregator.run_breaker_cycle()
    assert half.new.state == "half_open"
    worker = make_client(clock=clock)
    assert [worker.allow("flaky") for _ in range(7)] == [True] * 5 + [False] * 2
    clock.advance(1)
    for _ in range(5):
        worker.record("flaky", 0.4)  # the five trial calls succeed
    assert worker.flush(timeout=5)
    assert aggregator.run_breaker_cycle()[0].new.state == "closed"
    assert make_client().allow("flaky") is True

    for _ in range(12):  # a minute of cycles: the old failures are still in the window
        clock.advance(5)
        assert aggregator.run_breaker_cycle() == []
    health = _one(aggregator.run_cycle(), "flaky")
    assert health.breaker.state == "closed"
    assert health.error_rate == 25 / 30
    assert health.transitions == {"closed>open": 1, "open>half_open": 1, "half_open>closed": 1}
    assert health.breaker_rejected_total == 1 + 2  # one while open, two beyond the permits
    text = TestClient(create_app(aggregator), base_url="http://127.0.0.1").get("/metrics").text
    for pair in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        series = (
            "gatewayz_circuit_breaker_transitions_total"
            f'{{from_state="{pair[0]}",provider="flaky",to_state="{pair[1]}"}} 1.0'
        )
        assert series in text
    assert 'gatewayz_circuit_breaker_rejected_calls_total{provider="flaky"} 3.0' in text


def test_cancelled_and_rejected_calls_stay_out_of_the_error_rate_and_the_breaker(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    # A healthy provider whose clients keep going away mid-stream (each a task cancelled inside
    # the timed block): before, each was booked a failure, and 30 of them opened its breaker.
    metrics = make_client(clock=clock)
    aggregator = make_aggregator(breaker=BreakerConfig(min_calls=20, failure_rate=0.5))
    for _ in range(30):
        with pytest.raises(asyncio.CancelledError), metrics.track("healthy") as call:
            call.tokens = 10  # what was streamed before: still counted
            raise asyncio.CancelledError
    for _ in range(8):
        metrics.record("healthy", 0.4)
    for _ in range(2):
        metrics.record("healthy", 0.4, status_code=503)
    assert metrics.flush(timeout=5)
    clock.advance(1)
    assert aggregator.run_breaker_cycle() == []  # 2 failures of 10 calls: closed
    health = _one(aggregator.run_cycle(), "healthy")
    assert health.breaker.state == "closed"
    assert health.error_rate == 2 / 10  # failures / (successes + failures), as defined
    assert health.window_requests == 10
    assert health.requests_total == {"success": 8, "failure": 2, "rate_limited": 0,
                                     "caller_error": 0}  # fmt: skip
    assert (health.cancelled_total, health.tokens_total) == (30, 300)
    assert health.histogram_cumulative[-1] == 10  # no latency of a cancelled call
    text = TestClient(create_app(aggregator), base_url="http://127.0.0.1").get("/metrics").text
    assert 'gatewayz_provider_cancelled_calls_total{provider="healthy"} 30.0' in text
    assert 'gatewayz_provider_requests_total{outcome="failure",provider="healthy"} 2.0' in text


def test_half_open_without_enough_trials_reopens_for_twice_as_long(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    config = BreakerConfig(open_seconds=30, half_open_calls=5, half_open_timeout_seconds=60)
    aggregator = make_aggregator(breaker=config)
    _fail(metrics, "flaky", 20)
    clock.advance(1)
    aggregator.run_breaker_cycle()
    clock.advance(30)
    assert aggregator.run_breaker_cycle()[0].new.state == "half_open"
    half_open_at = clock.now
    clock.advance(1)
    metrics.record("flaky", 0.2)  # only two trial calls arrive
    metrics.record("flaky", 0.2)
    assert metrics.flush(timeout=5)
    clock.advance(58)
    assert aggregator.run_breaker_cycle() == []  # 59 s: still waiting
    clock.advance(1)
    (reopened,) = aggregator.run_breaker_cycle()
    assert reopened.new.state == "open"
    assert reopened.new.consecutive_opens == 2
    assert reopened.new.open_until == half_open_at + 60 + 60  # second opening: 2 x 30 s


def test_forced_states_survive_restarts_and_never_change_automatically(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    redis_url: str,
    namespace: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_aggregator().settings
    assert admin.run("open", "vendor", settings, clock) == 0
    assert '"forced": true' in capsys.readouterr().out
    metrics = make_client(clock=clock)
    for _ in range(30):
        metrics.record("vendor", 0.1)  # healthy traffic does not close a forced open
    assert metrics.flush(timeout=5)

    restarted = make_aggregator()  # a new process: state comes from Redis
    for _ in range(3):
        clock.advance(400)  # far past any open time
        restarted.run_breaker_cycle()
    health = _one(restarted.run_cycle(), "vendor")
    assert (health.breaker.state, health.breaker.forced, health.availability) == ("open", True, 0)
    text = TestClient(create_app(restarted), base_url="http://127.0.0.1").get("/metrics").text
    assert 'gatewayz_circuit_breaker_forced{provider="vendor"} 1.0' in text

    assert admin.run("close", "vendor", settings, clock) == 0
    _fail(metrics, "vendor", 50)  # failures do not open a forced closed
    clock.advance(1)
    assert make_aggregator().run_breaker_cycle() == []

    assert admin.run("reset", "vendor", settings, clock) == 0
    clock.advance(1)
    again = make_aggregator()
    assert again.run_breaker_cycle() == []  # reset counts only calls after it
    _fail(metrics, "vendor", 20)
    clock.advance(1)
    assert again.run_breaker_cycle()[0].new.state == "open"
    assert capsys.readouterr().out.count('"action"') == 2


def test_the_guard_keeps_most_providers_closed(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    for provider, failures in (("a", 20), ("b", 24), ("c", 22), ("d", 21)):
        for _ in range(failures):
            metrics.record(provider, 0.1, status_code=500)
        for _ in range(4):
            metrics.record(provider, 0.1)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(breaker=BreakerConfig(max_open_share=0.5))
    clock.advance(1)
    snapshot = aggregator.run_cycle()
    states = {p.provider: p.breaker.state for p in snapshot.providers}  # type: ignore[union-attr]
    # half of four may open: the two worst failure rates, b (24/28) and c (22/26)
    assert states == {"a": "closed", "b": "open", "c": "open", "d": "closed"}
    assert {p.provider for p in snapshot.providers if p.open_suppressed} == {"a", "d"}  # type: ignore[union-attr]


def test_only_the_leader_writes_breaker_state(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    leader = make_aggregator(instance="one")
    follower = make_aggregator(instance="two")
    assert leader.tick_lease()
    assert not follower.tick_lease()
    _fail(make_client(clock=clock), "flaky", 20)
    clock.advance(1)
    assert follower.run_breaker_cycle() == []
    assert r.hget(keys.breaker("flaky"), "state") is None
    assert len(leader.run_breaker_cycle()) == 1
    published = leader.run_cycle()
    served = follower.run_cycle()
    assert served == published  # the follower serves the leader's snapshot
    leader.release_lease()
    assert follower.tick_lease()


def test_an_outage_after_long_healthy_traffic_opens_within_the_breaker_window(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    aggregator = make_aggregator(breaker=BreakerConfig(window_seconds=10))
    start = clock.now
    for _ in range(290):  # 290 s of healthy traffic at 10 calls/s
        for _ in range(10):
            metrics.record("busy", 0.2)
        clock.advance(1)
    for _ in range(4):  # then every call fails
        for _ in range(10):
            metrics.record("busy", 0.2, status_code=502)
        clock.advance(1)
    assert metrics.flush(timeout=10)
    # now = start + 294; judged: calls after start + 284, i.e. 50 successes
    # (seconds 285..289) and 40 failures (290..293): 40/90 < 0.5
    assert clock.now == start + 294
    assert aggregator.run_breaker_cycle() == []
    for _ in range(10):
        metrics.record("busy", 0.2, status_code=502)
    clock.advance(1)
    assert metrics.flush(timeout=10)
    # now = start + 295: 40 successes (286..289), 50 failures (290..294): 50/90 >= 0.5
    (opened,) = aggregator.run_breaker_cycle()
    assert opened.new.state == "open"
    assert opened.calls.successes == 40
    assert opened.calls.failures == 50
    health = _one(aggregator.run_cycle(), "busy")
    # over the 5-minute window the failure rate is tiny; that alone would never open it
    assert health.error_rate == 50 / (2900 + 50)


DAY = 86_400.0


def _exported(aggregator: Aggregator) -> set[str]:
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    return {p.provider for p in snapshot.providers}


def test_a_breaker_that_still_acts_keeps_its_provider_registered_and_exported(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock, r: redis.Redis
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("forgotten", 0.1)  # seen once, then an operator forces it open
    metrics.record("tripped", 0.1)
    metrics.record("quiet", 0.1)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(
        breaker=BreakerConfig(open_seconds=30 * DAY, max_open_seconds=30 * DAY)
    )
    assert admin.run("open", "forgotten", aggregator.settings, clock) == 0
    _fail(metrics, "tripped", 20)  # opens for 30 days, on its own
    clock.advance(1)
    assert aggregator.run_breaker_cycle()[0].new.state == "open"
    assert _exported(aggregator) == {"forgotten", "tripped", "quiet"}
    clock.advance(3 * DAY)  # idle for longer than the export horizon (1 h): quiet leaves
    assert _exported(aggregator) == {"forgotten", "tripped"}
    assert "quiet" in {
        m.decode() for m in r.zrange(Keys(aggregator.settings.namespace).providers, 0, -1)
    }
    clock.advance(5 * DAY)  # past the 7-day retention without any traffic
    assert _exported(aggregator) == {"forgotten", "tripped"}  # the idle closed one left
    restarted = make_aggregator()  # even after the aggregator was down all that time
    clock.advance(20 * DAY)
    assert _exported(restarted) == {"forgotten", "tripped"}
    assert {m.decode() for m in r.zrange(Keys(aggregator.settings.namespace).providers, 0, -1)} == {
        "forgotten",
        "tripped",
    }

    assert admin.run("reset", "forgotten", aggregator.settings, clock) == 0
    clock.advance(8 * DAY)  # a breaker that acts no more: its provider may leave
    _exported(restarted)  # (the snapshot before showed it forced: read once more)
    assert _exported(restarted) == {"tripped"}
