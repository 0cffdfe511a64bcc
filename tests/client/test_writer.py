"""The client's batch writer on a real Redis, through MetricsClient: scripts run by their SHA (and
again, exactly once, when Redis forgot them), and a batch Redis refuses in part."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from client import ClientSettings, MetricsClient
from client._event_ids import ID_GAP_PER_MASTER
from client._writer import RedisWriter
from devtools.redis_server import start_redis
from gatewayz_protocol.hooks import register_log_drops
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import SUCCESS, latency_partition, window_partition
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.processes import need_tool
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
        # after the cache was flushed, the registry's and the first id reservation's at the
        # first flush, the applied markers' pruning at the second (its first call met NOSCRIPT)
        assert _calls(private_redis, "script|load") == 5
        # every flush, one admission, one reservation asking which master hands out ids, one
        # pruning of the applied markers
        assert _succeeded(private_redis, "evalsha") == 20 + 1 + 1 + 1
        data = private_redis.hgetall(keys.metric_data("requests"))
        assert data[b'i:["/a"]'] == b"40"  # every increment once, none twice
        assert _window_events(private_redis, keys, "openrouter") == 20
        totals = private_redis.hgetall(keys.totals("openrouter"))
        assert totals[b"n:success"] == b"20"
    finally:
        metrics.close(timeout=2)


def test_increments_whose_script_redis_forgot_wait_for_memory_then_count_once(
    private_redis: redis.Redis, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis restarted (its script cache empty) and near maxmemory: the batch's transaction ran,
    # its increments' script call met NOSCRIPT, and the batch's own writes used the headroom, so
    # running the call again was refused for memory. Before: window 3,000/3,000, counter 0,
    # flush() True, nothing dropped.
    port = private_redis.connection_pool.connection_kwargs["port"]
    settings = ClientSettings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        namespace="oom",
        flush_interval_seconds=30.0,  # everything below waits for flush()
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.05,
    )
    metrics = MetricsClient(settings=settings, clock=clock)
    requests = metrics.counter("requests_total", "Requests")
    keys = Keys("oom")
    try:
        requests.inc()
        metrics.record("openrouter", 0.2, status_code=200)
        assert metrics.flush(timeout=5)
        real_send = RedisWriter._send

        def send_then_full(self: RedisWriter, batch: Any, plan: Any) -> list[Any]:
            replies = real_send(self, batch, plan)
            private_redis.config_set("maxmemory", 1)  # the batch's writes took the headroom
            return replies

        monkeypatch.setattr(RedisWriter, "_send", send_then_full)
        private_redis.script_flush()
        for _ in range(3000):
            requests.inc()
            metrics.record("openrouter", 0.2, status_code=200)
        assert metrics.flush(timeout=1) is False  # the increments are not in Redis yet
        assert _window_events(private_redis, keys, "openrouter") == 3001
        assert private_redis.hget(keys.metric_data("requests"), "i:[]") == b"1"
        monkeypatch.setattr(RedisWriter, "_send", real_send)
        private_redis.config_set("maxmemory", 0)  # the operator makes room
        assert metrics.flush(timeout=5) is True
        assert private_redis.hget(keys.metric_data("requests"), "i:[]") == b"3001"  # once each
        stats = metrics.stats()
        assert (stats["dropped"], stats["write_errors"], stats["metric_updates_dropped"]) == (
            0,
            0,
            {},
        )
    finally:
        private_redis.config_set("maxmemory", 0)
        metrics.close(timeout=2)


@pytest.fixture
def debuggable_redis() -> Iterator[redis.Redis]:
    """A redis-server of the test's own that takes DEBUG (a promotion's new replication id)."""
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis(extra_args=["--enable-debug-command", "local"])
    connection = redis.Redis.from_url(server.url)
    yield connection
    connection.close()
    server.stop()


def test_writers_failing_together_move_the_ids_once_per_master_not_per_failure(
    debuggable_redis: redis.Redis,
) -> None:
    # Before: every writer jumped 2**24 ids after each failed reservation: 8 writers through one
    # OOM episode moved the counter by 8 x 2**24, and 4,096 writer-failures wrapped the id space.
    port = debuggable_redis.connection_pool.connection_kwargs["port"]
    keys = Keys("ids")
    connection = connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0)
    writers = [RedisWriter(connection, keys, 360, 3600, writer_id=f"w{i}") for i in range(8)]

    def counter() -> int:
        return int(debuggable_redis.get(keys.event_ids) or 0)

    def episode() -> int:
        """Every writer fails to reserve (Redis out of memory), then reserves 10 ids."""
        before = counter()
        debuggable_redis.config_set("maxmemory", 1)
        for writer in writers:
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                writer.reserve_event_ids(10)
        debuggable_redis.config_set("maxmemory", 0)
        blocks = [writer.reserve_event_ids(10) for writer in writers]
        assert len({block // 10 for block in blocks}) == len(writers)  # blocks apart
        return counter() - before

    try:
        firsts = sorted(writer.reserve_event_ids(10) for writer in writers)
        assert all(b - a >= 10 for a, b in itertools.pairwise(firsts))
        assert episode() == 80  # the same master: nothing can have been lost, no jump
        assert episode() == 80
        debuggable_redis.execute_command("DEBUG", "CHANGE-REPL-ID")  # a replica promoted
        assert episode() == ID_GAP_PER_MASTER + 80  # one jump for all eight writers
        assert episode() == 80
    finally:
        debuggable_redis.config_set("maxmemory", 0)
        connection.close()


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
