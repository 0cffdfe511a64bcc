"""Redis at maxmemory, and a Redis that evicts: real redis-servers configured for the fault, a
worker in a process of its own, the aggregator and its /readyz and /metrics."""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from collections.abc import Iterator
from multiprocessing.synchronize import Event
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from aggregator.cli import breaker as admin
from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.settings import AggregatorSettings
from client import ClientSettings, GatewayMetrics, MetricsClient
from devtools.redis_server import RedisProcess, start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.clock import FakeClock
from tests.support.processes import need_tool, wait_for
from tests.support.scrape import samples, scrape

CALLS = 5_000


def _server(policy: str) -> Iterator[RedisProcess]:
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis(extra_args=["--maxmemory", "16mb", "--maxmemory-policy", policy])
    yield server
    server.stop()


@pytest.fixture
def noeviction() -> Iterator[RedisProcess]:
    yield from _server("noeviction")


@pytest.fixture
def allkeys_lru() -> Iterator[RedisProcess]:
    yield from _server("allkeys-lru")


def _fill(connection: redis.Redis, megabytes: int) -> None:
    """Write ``megabytes`` of 64 KB junk keys."""
    chunk = b"x" * 65_536
    for index in range(megabytes * 16):
        connection.set(f"junk:{index}", chunk)


def _run_out_of_memory(connection: redis.Redis) -> int:
    """Lower maxmemory under what Redis holds (as growth or an operator would): with
    noeviction it refuses every write that needs memory. Returns the new maxmemory."""
    _fill(connection, megabytes=4)
    used = int(connection.info("memory")["used_memory"])
    limit = used - 1024 * 1024
    connection.config_set("maxmemory", limit)
    return limit


def _aggregator(url: str, namespace: str, clock: FakeClock, **settings: Any) -> Aggregator:
    merged = AggregatorSettings(redis_url=url, namespace=namespace, **settings)
    return Aggregator(merged, connect(url, socket_timeout=2.0), clock=clock)


def _worker(url: str, namespace: str, blocked: Event, go: Event, results: Any) -> None:
    """Records CALLS calls while Redis refuses writes, says so, and flushes once told to."""
    metrics = MetricsClient(
        settings=ClientSettings(
            redis_url=url, namespace=namespace, backoff_initial_seconds=0.05, max_batch=1_000
        )
    )
    for index in range(CALLS):
        metrics.record("openrouter", 0.2, status_code=200 if index % 10 else 503)
    flushed_while_full = metrics.flush(timeout=1.0)
    results.put(("blocked", flushed_while_full, metrics.stats()))
    blocked.set()
    go.wait(60)
    flushed = metrics.flush(timeout=30)
    results.put(("done", flushed, metrics.stats()))
    metrics.close(timeout=5)


def test_redis_out_of_memory_delays_events_loses_none_and_keeps_the_breaker_working(
    noeviction: RedisProcess, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = f"oom-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    r = redis.Redis.from_url(noeviction.url)
    aggregator = _aggregator(noeviction.url, namespace, clock, breaker=BreakerConfig())
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    aggregator.run_cycle()
    assert http.get("/readyz").status_code == 200
    # Before the memory runs out: a provider's failures reach the window.
    metrics = MetricsClient(redis_url=noeviction.url, namespace=namespace, clock=clock)
    for _ in range(30):
        metrics.record("down", 1.0, status_code=503)
    assert metrics.flush(timeout=5)
    assert metrics.allow("down") is True

    limit = _run_out_of_memory(r)
    context = multiprocessing.get_context("spawn")
    blocked, go, results = context.Event(), context.Event(), context.Queue()
    worker = context.Process(target=_worker, args=(noeviction.url, namespace, blocked, go, results))
    worker.start()
    try:
        assert blocked.wait(60)
        stage, flushed, stats = results.get(timeout=10)
        assert (stage, flushed) == ("blocked", False)  # not everything got there: it says so
        assert stats["dropped"] == 0 and stats["redis_ok"] is False
        assert r.hget(keys.totals("openrouter"), "n:success") is None

        # The breaker works on: the leader opens "down" while Redis refuses every plain write.
        clock.advance(1)
        caplog.set_level(logging.WARNING)
        (opened,) = aggregator.run_breaker_cycle()
        assert (opened.old.state, opened.new.state) == ("closed", "open")
        wait_for(lambda: metrics.allow("down") is False, timeout=5)
        assert admin.run("open", "vendor", aggregator.settings, clock) == 0  # operators too
        aggregator.run_cycle()
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("redis is out of memory: it refuses writes")
        s = samples(scrape(aggregator))
        assert s[("gatewayz_redis_out_of_memory", ())] == 1.0
        assert s[("gatewayz_redis_memory_max_bytes", ())] == limit
        assert s[("gatewayz_redis_memory_used_bytes", ())] > limit

        r.config_set("maxmemory", 16 * 1024 * 1024)  # the operator makes room
        go.set()
        stage, flushed, stats = results.get(timeout=60)
        assert (stage, flushed) == ("done", True)
        assert stats["dropped"] == 0
        worker.join(timeout=30)
        assert worker.exitcode == 0
    finally:
        go.set()
        worker.join(timeout=30)
        metrics.close(timeout=1)
    totals = {k.decode(): int(v) for k, v in r.hgetall(keys.totals("openrouter")).items()}
    assert (totals["n:success"], totals["n:failure"]) == (CALLS * 9 // 10, CALLS // 10)
    assert r.hget(keys.client_stats, "dropped:buffer_full") is None
    # The first cycle after room was made may still count refusals made before it (Redis's
    # errorstat_OOM grew since the cycle before); the next one without any is ready.
    for _ in range(2):
        clock.advance(1)
        aggregator.run_cycle()
    assert http.get("/readyz").status_code == 200
    assert samples(scrape(aggregator))[("gatewayz_redis_out_of_memory", ())] == 0.0
    r.close()


def test_an_evicting_policy_is_reported_and_a_vanished_breaker_is_restored(
    allkeys_lru: RedisProcess, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = f"lru-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    r = redis.Redis.from_url(allkeys_lru.url)
    metrics = MetricsClient(redis_url=allkeys_lru.url, namespace=namespace, clock=clock)
    for _ in range(30):
        metrics.record("down", 1.0, status_code=503)
    assert metrics.flush(timeout=5)
    aggregator = _aggregator(allkeys_lru.url, namespace, clock)
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    caplog.set_level(logging.WARNING, logger="gatewayz.aggregator")
    clock.advance(1)
    aggregator.run_cycle()
    assert admin.run("open", "vendor", aggregator.settings, clock) == 0
    clock.advance(1)
    aggregator.run_cycle()
    warnings = [r for r in caplog.records if "maxmemory-policy is allkeys-lru" in r.message]
    assert len(warnings) == 1  # logged once, not every cycle
    ready = http.get("/readyz")
    assert ready.status_code == 503
    assert "maxmemory-policy allkeys-lru can evict" in ready.json()["reason"]
    s = samples(scrape(aggregator))
    assert s[("gatewayz_redis_maxmemory_policy_safe", (("policy", "allkeys-lru"),))] == 0.0
    assert s[("gatewayz_redis_evicted_keys_total", ())] == 0

    _fill(r, megabytes=40)  # LRU makes room: keys are evicted, silently for Redis
    evicted = int(r.info("stats")["evicted_keys"])
    assert evicted > 0
    # Whether LRU picked them or not, the breaker states go as eviction would take them.
    r.delete(keys.breaker("down"), keys.breaker("vendor"))
    clock.advance(1)
    aggregator.run_cycle()
    s = samples(scrape(aggregator))
    assert s[("gatewayz_redis_evicted_keys_total", ())] >= evicted
    state = {
        provider: {k.decode(): v.decode() for k, v in r.hgetall(keys.breaker(provider)).items()}
        for provider in ("down", "vendor")
    }
    assert (state["down"]["state"], state["down"]["forced"]) == ("open", "0")
    assert (state["vendor"]["state"], state["vendor"]["forced"]) == ("open", "1")
    # a restore is not a transition (LRU may have taken the transitions hash too)
    assert set(r.hkeys(keys.transitions("vendor"))) <= {b"closed>open"}
    assert int(r.hget(keys.transitions("vendor"), "closed>open") or 0) <= 1
    assert any("restored open" in record.message for record in caplog.records)
    wait_for(lambda: metrics.allow("down") is False, timeout=5)
    metrics.close(timeout=1)
    r.close()


def test_calls_with_1_mb_model_names_never_wedge_the_flusher(noeviction: RedisProcess) -> None:
    """Issue 24 item 1: one request with a 1 MB model name added 24.8 MB to Redis; a few of them
    filled it, and the worker's flusher then retried its oversized batch for ever. Here Redis
    has 16 MB, half of them used: every label value is bounded (256 bytes), every batch carries
    at most ``max_batch_bytes`` of increments, so the calls are written at once, in a few KB."""
    namespace = f"long-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    r = redis.Redis.from_url(noeviction.url)
    _fill(r, megabytes=8)
    used_before = int(r.info("memory")["used_memory"])
    settings = ClientSettings(redis_url=noeviction.url, namespace=namespace)
    metrics = MetricsClient(settings=settings)
    gateway = GatewayMetrics(metrics)
    try:
        for index in range(4):
            model = f"{index}" + "m" * (1 << 20)
            gateway.record_inference(
                "openrouter", model, 0.5, status_code=200, input_tokens=10, output_tokens=5,
                endpoint="/v1/chat/completions", ttfb_s=0.1, ttfc_s=0.2,
            )  # fmt: skip
        assert metrics.flush(timeout=10)
        stats = metrics.stats()
        assert (stats["dropped"], stats["metric_updates_dropped"], stats["redis_ok"]) == (
            0,
            {},
            True,
        )
    finally:
        metrics.close(timeout=1)
    assert int(r.info("memory")["used_memory"]) - used_before < 1_000_000
    data = {
        k.decode(): int(v)
        for k, v in r.hgetall(keys.metric_data("model_inference_requests")).items()
    }
    assert sorted(v for k, v in data.items() if k.startswith("i:")) == [1, 1, 1, 1]
    assert data["!truncated"] == 4
    r.close()
