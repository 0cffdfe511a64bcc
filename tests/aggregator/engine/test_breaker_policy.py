"""Per-provider thresholds in the leader's evaluations on a real Redis (single and Cluster),
injected clock: two providers failing alike, one held to its own stricter minimum, in the
breaker cycle and when woken."""

from __future__ import annotations

from collections.abc import Callable

from aggregator.core.breaker_policy import parse_overrides
from aggregator.engine.cycle import Aggregator, woken_breakers
from client import MetricsClient
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]


def test_a_provider_with_its_own_minimum_stays_closed_where_the_others_open(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock, breaker_wake_failures=0)
    overrides = parse_overrides("patient:min_calls=40;woken:min_calls=40")
    aggregator = make_aggregator(breaker_providers=overrides)
    for provider in ("eager", "patient", "woken"):
        for _ in range(30):  # 30 failures: >= 20 (the global minimum), < 40
            metrics.record(provider, 0.2, status_code=503)
    assert metrics.flush(timeout=5)
    clock.advance(0.5)
    opened = aggregator.run_breaker_cycle()
    assert [t.new.state for t in opened] == ["open"]  # eager's
    assert dict(woken_breakers(aggregator).evaluate(["woken"]))["woken"].state == "closed"
    for _ in range(10):  # 40 now, all in the last second
        metrics.record("woken", 0.2, status_code=503)
    assert metrics.flush(timeout=5)
    clock.advance(0.1)
    assert dict(woken_breakers(aggregator).evaluate(["woken"]))["woken"].state == "open"
    assert aggregator.run_cycle() is not None and aggregator.snapshot is not None
    states = {p.provider: p.breaker.state for p in aggregator.snapshot.providers}
    assert states == {"eager": "open", "patient": "closed", "woken": "open"}
