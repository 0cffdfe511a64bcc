"""An idle provider leaves /metrics after the export horizon, costs the cycle nothing while
idle, and comes back on its first event with its counters where they were."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.cli import breaker as admin
from aggregator.engine.cycle import Aggregator
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.scrape import samples, scrape

pytestmark = BOTH_BACKENDS

REQUESTS = "gatewayz_provider_requests_total"


def exported(aggregator: Aggregator) -> dict[str, float]:
    """provider -> its successful calls counter, as /metrics shows it."""
    return {
        dict(labels)["provider"]: value
        for (name, labels), value in samples(scrape(aggregator)).items()
        if name == REQUESTS and dict(labels).get("outcome") == "success"
    }


def test_an_idle_provider_leaves_metrics_and_returns_with_its_counters(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    for _ in range(7):
        metrics.record("seasonal", 0.2)
    metrics.record("steady", 0.2)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(export_horizon_seconds=3600, providers=("listed",))

    def hgetalls_of_a_cycle() -> int:
        before = int(r.hget(keys.redis_ops, "hgetall") or 0)
        aggregator.run_cycle()
        return int(r.hget(keys.redis_ops, "hgetall") or 0) - before

    aggregator.run_cycle()
    three_read = hgetalls_of_a_cycle()
    assert exported(aggregator) == {"seasonal": 7.0, "steady": 1.0, "listed": 0.0}

    clock.advance(1800)
    metrics.record("steady", 0.2)
    assert metrics.flush(timeout=5)
    clock.advance(1801)  # seasonal: idle for 3601 s; steady: 1801 s
    aggregator.run_cycle()
    two_read = hgetalls_of_a_cycle()
    assert exported(aggregator) == {"steady": 2.0, "listed": 0.0}  # --providers always
    # Each provider read is four hashes (breaker, transitions, totals, exemplars): steady and
    # listed are read, not the idle one.
    assert three_read - two_read == 4

    for _ in range(3):
        metrics.record("seasonal", 0.2)
    assert metrics.flush(timeout=5)
    aggregator.run_cycle()
    assert exported(aggregator) == {"seasonal": 10.0, "steady": 2.0, "listed": 0.0}


def test_a_forced_breaker_stays_exported_after_the_aggregator_was_down_past_the_horizon(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("forced", 0.2)
    metrics.record("plain", 0.2)
    assert metrics.flush(timeout=5)
    first = make_aggregator(export_horizon_seconds=3600)
    assert admin.run("open", "forced", first.settings, clock) == 0
    first.run_cycle()
    assert set(exported(first)) == {"forced", "plain"}
    clock.advance(2 * 3600)  # no aggregator ran for two hours: nothing refreshed the registry
    restarted = make_aggregator(export_horizon_seconds=3600)
    restarted.run_cycle()
    assert set(exported(restarted)) == {"forced"}  # its first read looked at the idle names
    restarted.run_cycle()
    assert set(exported(restarted)) == {"forced"}  # and the leader keeps it active since
