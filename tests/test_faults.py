"""Faults with real processes: a slow Redis, an aggregator killed and restarted, a worker killed
with events still buffered."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest
import redis
from fastapi.testclient import TestClient

from aggregator.cli import breaker as admin
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from client import ClientSettings, MetricsClient
from devtools.redis_server import RedisProcess, free_port, start_redis
from gatewayz_protocol.keys import Keys
from tests.support.clock import FakeClock
from tests.support.processes import wait_for
from tests.support.scrape import Samples, samples, scrape_url


@pytest.fixture
def server() -> Iterator[RedisProcess]:
    process = start_redis(extra_args=["--enable-debug-command", "local"])
    yield process
    process.stop()


def test_a_slow_redis_neither_delays_scrapes_nor_overlaps_cycles(
    server: RedisProcess,
    namespace: str,
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
) -> None:
    metrics = MetricsClient(settings=ClientSettings(redis_url=server.url, namespace=namespace))
    metrics.record("openrouter", 0.2)
    assert metrics.flush(timeout=5)
    metrics.close(timeout=1)
    clock.now = time.time()
    aggregator = make_aggregator(url=server.url)
    assert aggregator.run_cycle() is not None
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")

    inside, most_inside = 0, 0
    read = aggregator._reader.read

    def counting_read(*args: object, **kwargs: object) -> object:
        nonlocal inside, most_inside
        inside += 1
        most_inside = max(most_inside, inside)
        try:
            return read(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            inside -= 1

    aggregator._reader.read = counting_read  # type: ignore[method-assign]
    slept: list[object] = []
    sleeper = threading.Thread(
        target=lambda: slept.append(
            redis.Redis.from_url(server.url).execute_command("DEBUG", "SLEEP", "1.5")
        )
    )
    sleeper.start()
    time.sleep(0.1)  # let DEBUG SLEEP take hold of the server
    cycles = [threading.Thread(target=aggregator.run_cycle) for _ in range(3)]
    for cycle in cycles:
        cycle.start()
    started = time.perf_counter()
    response = http.get("/metrics")
    scrape_seconds = time.perf_counter() - started
    print(f"\nscrape while Redis sleeps: {scrape_seconds * 1000:.1f} ms")
    assert response.status_code == 200
    assert 'gatewayz_provider_window_requests{provider="openrouter"} 1.0' in response.text
    for thread in [sleeper, *cycles]:
        thread.join(timeout=30)
    assert slept == [b"OK"]  # Redis really was asleep while we scraped
    assert most_inside == 1  # the cycles waited for each other
    assert aggregator.status.cycles_ok == 4


def _counters(port: int) -> Samples:
    """The counter and histogram samples an aggregator process serves, but for its own."""
    return {
        (name, labels): value
        for (name, labels), value in samples(scrape_url(port)).items()
        if name.endswith(("_total", "_count", "_bucket", "_sum"))
        and not name.startswith("gatewayz_aggregator_")  # the process's own counters
    }


def _start_aggregator(redis_url: str, namespace: str, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "aggregator", "--redis-url", redis_url, "--namespace", namespace,
        "--port", str(port), "--interval", "0.5", "--log-level", "WARNING",
    ]  # fmt: skip
    return subprocess.Popen(command, stderr=subprocess.DEVNULL)


def _counters_once_served(port: int, provider: str) -> Samples:
    """``_counters`` from the first scrape that has a series of ``provider``."""
    scraped: list[Samples] = []

    def served() -> bool:
        scraped.append(_counters(port))
        return any(("provider", provider) in labels for _, labels in scraped[-1])

    wait_for(served)
    return scraped[-1]


def test_an_aggregator_killed_and_restarted_loses_no_counter_or_forced_state(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for _ in range(40):
        metrics.record("openrouter", 0.3, status_code=200, tokens=5, cost_usd=0.01)
    metrics.record("openrouter", 4.0, status_code=503)
    assert metrics.flush(timeout=5)
    port = free_port()
    first = _start_aggregator(redis_url, namespace, port)
    try:
        before = _counters_once_served(port, "openrouter")
        settings = admin.parse_settings(["--redis-url", redis_url, "--namespace", namespace])
        assert admin.run("open", "vendor", settings) == 0
        first.send_signal(signal.SIGKILL)
        first.wait()
        metrics.record("openrouter", 0.3)
        assert metrics.flush(timeout=5)
        second = _start_aggregator(redis_url, namespace, port)
        try:
            after = _counters_once_served(port, "vendor")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        metrics.close(timeout=1)
    backwards = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1) < v}
    assert backwards == {}
    success = (
        "gatewayz_provider_requests_total",
        (("outcome", "success"), ("provider", "openrouter")),
    )
    assert (before[success], after[success]) == (40, 41)
    assert r.hget(keys.breaker("vendor"), "forced") == b"1"
    assert r.hget(keys.breaker("vendor"), "state") == b"open"


def _worker(redis_url: str, namespace: str, ready: Connection) -> None:
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=redis_url, namespace=namespace, flush_interval_seconds=60)
    )
    for _ in range(1000):
        metrics.record("openrouter", 0.1)
    metrics.flush(timeout=10)  # these reached Redis
    for _ in range(500):
        metrics.record("openrouter", 0.1)  # these wait for the next flush, 60 s away
    ready.send(metrics.stats()["buffered"])
    time.sleep(60)


def test_a_worker_killed_with_events_buffered_loses_exactly_those(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    worker = context.Process(target=_worker, args=(redis_url, namespace, child_end))
    worker.start()
    assert parent_end.poll(60)
    assert parent_end.recv() == 500
    os.kill(worker.pid or 0, signal.SIGKILL)
    worker.join(timeout=10)
    # everything flushed is there; the loss is what was buffered since the last flush
    assert r.hget(keys.totals("openrouter"), "n:success") == b"1000"
