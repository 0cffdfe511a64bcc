"""``GET /health/history``'s answer (aggregator/serve/history.py): the leader's points read
from Redis, the lease holder, and what this replica says while Redis does not answer."""

from __future__ import annotations

from collections.abc import Callable

from aggregator.core.history import HISTORY_POINTS, HistoryPoint
from aggregator.engine.cycle import Aggregator
from aggregator.serve.history import history_response
from client import MetricsClient
from tests.support.clock import FakeClock

MakeAggregator = Callable[..., Aggregator]


def test_the_leaders_points_and_the_replicas_view(
    make_client: Callable[..., MetricsClient],
    make_aggregator: MakeAggregator,
    clock: FakeClock,
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(instance="one", interval_seconds=10.0)
    first = aggregator.run_cycle()
    clock.advance(60)  # the next minute: the leader writes the first minute's point
    aggregator.run_cycle()
    answer = history_response(aggregator)
    assert first is not None
    minute = int(first.taken_at // 60) * 60
    assert answer.providers == {"openrouter": [HistoryPoint(minute, 1.0, 0.0)]}
    assert (answer.instance, answer.leader, answer.leader_instance) == ("one", True, "one")
    assert answer.redis_reachable is True
    assert (answer.points, answer.max_age_seconds) == (HISTORY_POINTS, 30.0)


def test_without_redis_the_replica_says_so(make_aggregator: MakeAggregator) -> None:
    aggregator = make_aggregator(url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    answer = history_response(aggregator)
    assert answer.redis_reachable is False
    assert answer.leader_instance is None and answer.providers == {}
