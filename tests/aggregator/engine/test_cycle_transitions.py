"""The transition counts a cycle serves on a real Redis: those of the transitions the cycle
applied itself are in its own snapshot and scrape, beside the state they led to, on the leader
and on a follower (every series of one scrape from the same cycle, docs/guides/metrics.md).
Before, the counts came from the reading taken before the commit: one cycle behind the state."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.core.snapshot import ProviderHealth, Snapshot
from aggregator.engine.cycle import Aggregator
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.scrape import samples, scrape

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]

TRANSITIONS = "gatewayz_circuit_breaker_transitions_total"
STATE = "gatewayz_circuit_breaker_state"


def _one(snapshot: Snapshot | None, provider: str) -> ProviderHealth:
    assert snapshot is not None
    (found,) = [p for p in snapshot.providers if p.provider == provider]
    return found


def _scraped(aggregator: Aggregator, provider: str) -> tuple[str, dict[str, float]]:
    """The breaker state one scrape shows for ``provider``, and its transition counts by
    ``from>to``."""
    values = samples(scrape(aggregator))
    (state,) = [
        dict(labels)["state"]
        for (name, labels), value in values.items()
        if name == STATE and dict(labels)["provider"] == provider and value == 1
    ]
    counts = {
        f"{dict(labels)['from_state']}>{dict(labels)['to_state']}": value
        for (name, labels), value in values.items()
        if name == TRANSITIONS and dict(labels)["provider"] == provider
    }
    return state, counts


def test_a_cycle_serves_the_transitions_it_applied_with_the_state_they_led_to(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    leader = make_aggregator(
        instance="leader", breaker=BreakerConfig(min_calls=20, open_seconds=30)
    )
    follower = make_aggregator(instance="follower")
    clock.advance(-1)  # the calls at T0 - 1, the cycle at T0
    for _ in range(20):
        metrics.record("flaky", 1.0, status_code=503)
    assert metrics.flush(timeout=5)
    clock.advance(1)

    opened = leader.run_cycle()  # 20 failures of 20 calls: closed -> open
    assert r.hgetall(keys.transitions("flaky")) == {b"closed>open": b"1"}
    assert _one(opened, "flaky").transitions == {"closed>open": 1}
    assert _scraped(leader, "flaky") == ("open", {"closed>open": 1.0})
    assert follower.run_cycle() == opened
    assert _scraped(follower, "flaky") == ("open", {"closed>open": 1.0})

    clock.advance(30)  # open_seconds elapsed: open -> half_open
    half_open = leader.run_cycle()
    counts = {"closed>open": 1, "open>half_open": 1}
    assert r.hgetall(keys.transitions("flaky")) == {
        name.encode(): str(count).encode() for name, count in counts.items()
    }
    assert _one(half_open, "flaky").transitions == counts
    assert _scraped(leader, "flaky") == ("half_open", {"closed>open": 1.0, "open>half_open": 1.0})
    assert follower.run_cycle() == half_open

    clock.advance(5)  # no transition: the counts read from Redis are the ones served already
    unchanged = leader.run_cycle()
    assert _one(unchanged, "flaky") is _one(half_open, "flaky")  # reused as it stands
    assert _scraped(leader, "flaky") == ("half_open", {"closed>open": 1.0, "open>half_open": 1.0})
