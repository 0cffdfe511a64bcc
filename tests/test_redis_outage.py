"""Redis dies and comes back (empty): a real server process that this test starts and kills."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from client import ClientSettings, MetricsClient
from devtools.redis_server import RedisProcess, start_redis
from gatewayz_protocol.keys import Keys
from tests.support.clock import FakeClock
from tests.support.listeners import BrokenServer
from tests.support.processes import wait_for


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    process = start_redis(allow_fake=True)
    yield process
    process.stop()


def test_clients_and_aggregator_ride_out_a_redis_outage(
    server: RedisProcess,
    namespace: str,
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
) -> None:
    settings = ClientSettings(
        redis_url=server.url,
        namespace=namespace,
        max_batch=100,
        max_buffer=1000,
        socket_timeout_seconds=0.5,
        backoff_initial_seconds=0.02,
        backoff_max_seconds=0.2,
    )
    metrics = MetricsClient(settings=settings, clock=clock)
    aggregator = make_aggregator(url=server.url, interval_seconds=10)
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    for _ in range(10):
        metrics.record("openrouter", 0.2)
    assert metrics.flush(timeout=5)
    before = aggregator.run_cycle()
    assert before is not None
    assert before.providers[0].window_requests == 10
    assert http.get("/readyz").status_code == 200

    server.kill()
    # named from the ids the last transaction reserved ahead: it waits in the batch the flusher
    # retries (before: no ids could be reserved for it, and it waited in the buffer)
    metrics.record("openrouter", 0.2)
    wait_for(lambda: not metrics.stats()["redis_ok"], timeout=10.0, poll=0.01)
    timings = []
    for _ in range(1500):
        started = time.perf_counter_ns()
        metrics.record("openrouter", 0.2)
        timings.append(time.perf_counter_ns() - started)
    timings.sort()
    print(
        f"\nrecord() while Redis is down: p50 {statistics.median(timings) / 1000:.1f} us, "
        f"p99 {timings[int(len(timings) * 0.99)] / 1000:.1f} us"
    )
    stats = metrics.stats()
    assert stats["buffered"] == 1000  # the bound
    assert stats["dropped"] == 500  # 1500 into a buffer of 1000: the 500 oldest go
    assert metrics.flush(timeout=0.2) is False

    clock.advance(5)
    assert aggregator.run_cycle() is None
    assert aggregator.snapshot is before  # the last snapshot keeps being served
    assert aggregator.status.cycles_failed == 1
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert "redis unreachable" in ready.json()["reason"]
    served = http.get("/metrics").text
    assert 'gatewayz_provider_window_requests{provider="openrouter"} 10.0' in served
    assert "gatewayz_aggregator_cycles_failed_total 1.0" in served

    restarted = start_redis(port=server.port, allow_fake=True)
    try:
        assert metrics.flush(timeout=15)
        assert metrics.stats()["redis_ok"]
        after = aggregator.run_cycle()
        assert after is not None
        # the restarted Redis is empty: what is there is the batch retried and the buffer
        assert after.providers[0].window_requests == 1001
        assert after.providers[0].requests_total["success"] == 1001
        assert after.client_dropped == 500
        assert http.get("/readyz").status_code == 200
        r = redis.Redis.from_url(restarted.url)
        assert r.hget(Keys(namespace).client_stats, "dropped:buffer_full") == b"500"
        r.close()
    finally:
        metrics.close(timeout=1)
        restarted.stop()


def test_backoff_holds_while_record_fills_the_buffer(namespace: str) -> None:
    # The flusher must back off (0.1 s, then 0.2 s) although record() keeps signalling a full
    # batch: a retry per signal would be a reconnect storm.
    down = BrokenServer()
    settings = ClientSettings(
        redis_url=down.redis_url,
        namespace=namespace,
        max_batch=10,
        max_buffer=1000,
        backoff_initial_seconds=0.1,
        backoff_max_seconds=0.2,
    )
    metrics = MetricsClient(settings=settings)
    try:
        started = time.monotonic()
        recorded = 0
        while time.monotonic() - started < 1.0:
            metrics.record("openrouter", 0.2)
            recorded += 1
        # at most one try per backoff period (+ the first, after one flush interval)
        assert 3 <= len(down.attempts) <= 1 + 1.0 / 0.1
        assert recorded > 1000  # the buffer was full and signalling all along
        assert metrics.stats()["buffered"] == 1000
        assert metrics.stats()["dropped"] == recorded - 1000
        before = len(down.attempts)
        assert metrics.flush(timeout=0.3) is False  # flush() asks for a try at once
        wait_for(lambda: len(down.attempts) > before, timeout=1.0)
    finally:
        metrics.close(timeout=0.1)
        down.close()
