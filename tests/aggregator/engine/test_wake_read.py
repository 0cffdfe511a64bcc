"""The read a woken breaker is judged on (aggregator/engine/wake_read.py), on a real Redis
(single and Cluster) with an injected clock: the calls since the counting start and since the
recent start, exact; caller errors never; a hand-edited shard count read as one shard; nothing
written."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import redis

from aggregator.core.breaker import BreakerCalls, BreakerConfig
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.engine.wake_read import read_woken
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS


def test_counts_since_each_start_exactly_and_writes_nothing(
    make_client: Callable[..., MetricsClient], clock: FakeClock, redis_url: str,
    r: redis.Redis, keys: Keys,
) -> None:  # fmt: skip
    metrics = make_client(clock=clock, breaker_wake_failures=0)
    start = clock.now
    for _ in range(10):  # each second: 6 ok, 3 failures, 1 rate limited, 2 caller errors
        for status in (200,) * 6 + (503,) * 3 + (429,) + (404,) * 2:
            metrics.record("p", 0.2, status_code=status)
        clock.advance(1.0)
    assert metrics.flush(timeout=5)
    r.zadd(keys.shards, {"p": 1000})  # not a count a client writes: one shard
    before = {key: r.dump(key) for key in r.scan_iter(match=keys.pattern(), count=1000)}
    now = start + 9.5  # the calls of seconds 1.5..9.5 (8 s) and 8.5..9.5 (1 s)
    connection = connect(redis_url, socket_timeout=5.0)
    ops: Counter[str] = Counter()
    try:
        policy = BreakerPolicy(BreakerConfig(), {"q": BreakerConfig(window_seconds=2.0)})
        (p, q), skips = read_woken(connection, keys, ["p", "q"], now, policy, 10.0, ops)
    finally:
        connection.close()
    # events of second k are at start + k: those after now - 8 are seconds 2..9 (8 of them)
    assert p.calls == BreakerCalls(successes=6 * 8, failures=4 * 8)
    assert p.recent == BreakerCalls(successes=6, failures=4)  # second 9
    assert q.calls == BreakerCalls(0, 0) and q.breaker.state == "closed"
    assert skips.found == []
    assert ops["hgetall"] == 2 and ops["zscore"] == 2 and ops["zcount"] == 2 * 2 * 23
    after = {key: r.dump(key) for key in r.scan_iter(match=keys.pattern(), count=1000)}
    assert after == before
