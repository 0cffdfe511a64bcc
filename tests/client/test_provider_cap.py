"""A flood of provider names cannot grow Redis or /metrics without bound: the registry admits at
most max_providers, cluster-wide; later names' events are dropped and counted."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.engine.cycle import Aggregator
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS


def test_the_registry_admits_at_most_max_providers_across_clients(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    first = make_client(clock=clock, max_providers=3)
    for name in ("p1", "p2", "p3", "p4", "p5"):
        first.record(name, 0.1)
        first.record(name, 0.1)
    assert first.flush(timeout=5)
    second = make_client(clock=clock, max_providers=3)
    second.record("p6", 0.1)
    second.record("p1", 0.1)  # an admitted provider keeps working for everyone
    assert second.flush(timeout=5)

    assert sorted(m.decode() for m in r.zrange(keys.providers, 0, -1)) == ["p1", "p2", "p3"]
    assert first.stats()["rejected"] == {"too_many_providers": 4}  # p4, p5: two events each
    assert second.stats()["rejected"] == {"too_many_providers": 1}
    assert not any(b"p4" in key or b"p6" in key for key in r.scan_iter(match=keys.pattern()))
    snapshot = make_aggregator().run_cycle()
    assert snapshot is not None
    assert {p.provider: p.window_requests for p in snapshot.providers} == {
        "p1": 3,
        "p2": 2,
        "p3": 2,
    }
    assert snapshot.client_rejected == {"too_many_providers": 5}


def test_idle_providers_do_not_hold_places_under_the_cap(
    make_client: Callable[..., MetricsClient],
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    early = make_client(clock=clock, max_providers=2, export_horizon_seconds=3600)
    for name in ("p1", "p2"):
        early.record(name, 0.1)
    assert early.flush(timeout=5)
    clock.advance(3601)  # p1 and p2 have been idle for longer than the horizon
    later = make_client(clock=clock, max_providers=2, export_horizon_seconds=3600)
    for name in ("p3", "p4", "p5"):
        later.record(name, 0.1)
    later.record("p1", 0.1)  # a known name comes back, whatever the cap
    assert later.flush(timeout=5)
    assert later.stats()["rejected"] == {"too_many_providers": 1}  # p5: p3, p4 are active
    registered = {m.decode(): s for m, s in r.zrange(keys.providers, 0, -1, withscores=True)}
    assert sorted(registered) == ["p1", "p2", "p3", "p4"]
    assert registered["p1"] == clock.now  # its first event after the idle hour
