"""``GET /health/history``'s answer (aggregator/serve/history.py): the leader's points read
from Redis, the lease holder, and what this replica says while Redis does not answer."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.core.history import HISTORY_POINTS, HistoryPoint
from aggregator.engine.cycle import Aggregator
from aggregator.serve.history import history_response
from client import MetricsClient
from gatewayz_protocol.keys import Keys
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


def test_members_no_leader_writes_are_skipped_counted_and_the_rest_answered(
    make_client: Callable[..., MetricsClient],
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    # Before: one member that is not UTF-8 raised in HistoryPoint.decode (outside its try), and
    # /health/history answered 500 on every replica, for every provider, while it stayed.
    metrics = make_client(clock=clock)
    for provider in ("openrouter", "anthropic"):
        metrics.record(provider, 0.2, status_code=200)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(instance="one")
    first = aggregator.run_cycle()
    assert first is not None
    minute = int(first.taken_at // 60) * 60
    clock.advance(60)
    aggregator.run_cycle()  # writes the first minute's points
    spoiled = {
        b"\xff\xfe": 65,  # not UTF-8
        b"120|nan|0.5": 120,  # not a finite health score
        b"180|1e308|-5": 180,  # figures outside [0, 1]
        b"99999999999999999999999|0.5|0.5": 240,  # no date has that minute
        b"301|0.5|0.5": 301,  # not a minute's start
    }
    r.zadd(keys.history("openrouter"), spoiled)
    answer = history_response(aggregator)
    point = HistoryPoint(minute, 1.0, 0.0)
    assert answer.providers == {"openrouter": [point], "anthropic": [point]}
    assert aggregator.run_cycle() is not None
    assert aggregator.status.values_skipped == {"history": len(spoiled)}
