"""The client's batch writer on a real Redis, through MetricsClient: scripts run by their SHA (and
again, exactly once, when Redis forgot them), and a batch Redis refuses in part."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from client import ClientSettings, MetricsClient
from gatewayz_protocol.hooks import register_log_drops
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import SUCCESS, latency_partition, window_partition
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.scrape import samples, scrape

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]


def _calls(connection: redis.Redis, command: str) -> int:
    stats = connection.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def _succeeded(connection: redis.Redis, command: str) -> int:
    stats = connection.info("commandstats")[f"cmdstat_{command}"]
    return int(stats["calls"]) - int(stats["failed_calls"])


def _window_events(r: redis.Redis, keys: Keys, provider: str) -> int:
    return sum(int(r.zcard(key)) for key in keys.window_keys(provider) if r.type(key) == b"zset")


def test_scripts_run_by_sha_and_a_forgotten_one_runs_once(
    private_redis: redis.Redis, clock: FakeClock
) -> None:
    url = "redis://127.0.0.1:{}/0".format(private_redis.connection_pool.connection_kwargs["port"])
    keys = Keys("sha")
    metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace="sha"), clock=clock)
    requests = metrics.counter("requests_total", "Requests", ["route"])
    try:
        private_redis.config_resetstat()
        for flush in range(20):
            requests.labels("/a").inc(2)
            metrics.record("openrouter", 0.2, status_code=200)
            if flush == 10:
                private_redis.script_flush()  # a restart, a failover: Redis forgot them
            assert metrics.flush(timeout=5)
        assert _calls(private_redis, "eval") == 0  # no script body with every call
        # loaded when Redis did not know them: the instruments script at the first flush and
        # after the cache was flushed, the registry's at the first flush
        assert _calls(private_redis, "script|load") == 3
        assert _succeeded(private_redis, "evalsha") == 20 + 1  # every flush, one admission
        data = private_redis.hgetall(keys.metric_data("requests"))
        assert data[b'i:["/a"]'] == b"40"  # every increment once, none twice
        assert _window_events(private_redis, keys, "openrouter") == 20
        totals = private_redis.hgetall(keys.totals("openrouter"))
        assert totals[b"n:success"] == b"20"
    finally:
        metrics.close(timeout=2)


def test_a_batch_redis_refuses_in_part_counts_the_refused_events_as_dropped(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    # One window partition of "broken" is a hash: its ZADD fails inside the transaction, which
    # Redis runs all the same. Only those events are lost, and they are counted.
    broken = keys.window_keys("broken")[window_partition(SUCCESS, latency_partition(0.2))]
    r.hset(broken, "not", "a sorted set")
    metrics = make_client(clock=clock, flush_interval_seconds=30.0)
    for _ in range(3):
        metrics.record("broken", 0.2, status_code=200)
    metrics.record("broken", 5.0, status_code=200)  # another partition: written
    for _ in range(4):
        metrics.record("healthy", 0.2, status_code=200)
    assert metrics.flush(timeout=5) is False  # not everything got there
    stats = metrics.stats()
    assert (stats["settled"], stats["dropped"], stats["write_errors"]) == (8, 3, 1)
    assert _window_events(r, keys, "healthy") == 4
    assert _window_events(r, keys, "broken") == 1
    metrics.record("healthy", 0.2, status_code=200)
    assert metrics.flush(timeout=5) is True
    assert r.hget(keys.client_stats, "dropped:refused") == b"3"


class _Telemetry:
    """Stands in for ``gatewayz_telemetry``: its count of log records given up on, registered
    through the hook as ``setup()`` registers it."""

    def __init__(self) -> None:
        self.dropped = 0

    def log_records_dropped(self) -> int:
        return self.dropped


def test_log_records_dropped_are_counted_like_every_client_counter(
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    request: pytest.FixtureRequest,
) -> None:
    telemetry = _Telemetry()
    telemetry.dropped = 5  # before the client: not its to count
    unregister = register_log_drops(telemetry.log_records_dropped)
    request.addfinalizer(unregister)
    metrics = make_client(clock=clock)
    telemetry.dropped = 12
    metrics.record("openrouter", 0.2)
    assert metrics.flush(timeout=5)
    telemetry.dropped = 15
    metrics.record("openrouter", 0.2)
    assert metrics.flush(timeout=5)
    assert r.hget(keys.client_stats, "log_records_dropped") == b"10"
    metrics.close(timeout=5)  # in this one process the client would count the next drop too
    aggregator = make_aggregator()
    telemetry.dropped = 16  # the aggregator's own sender: it counts its drops too
    aggregator.run_cycle()
    clock.advance(1)
    snapshot = aggregator.run_cycle()
    assert snapshot is not None and snapshot.log_records_dropped == 11
    assert samples(scrape(aggregator))[("gatewayz_log_records_dropped_total", ())] == 11
