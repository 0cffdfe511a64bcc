"""End to end, real processes: a ``python -m aggregator`` whose breaker cycle runs once at start
and then not for an hour opens a failing provider's breaker within seconds, because a worker's
flush woke it (the wake stream, the leader's blocking read, the fenced transition), and the
worker's ``allow()`` then says False. On a single Redis, a Redis Cluster and behind Sentinel.
Nothing timed is asserted: deadlines only bound the wait (the cycle alone would take an hour).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from client import ClientSettings, MetricsClient
from devtools.processes import stop_process
from devtools.redis_cluster import LocalCluster
from devtools.redis_sentinel import start_sentinel
from devtools.redis_server import free_port
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.processes import need_tool, wait_for

ROOT = Path(__file__).resolve().parents[1]
HOUR = "3600"


@pytest.fixture(params=["single", "cluster", "sentinel"])
def backend_url(request: pytest.FixtureRequest, single_redis_url: str) -> Iterator[str]:
    if request.param == "single":
        yield single_redis_url
    elif request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        yield cluster.url
    else:
        need_tool("redis-server", "apt-get install redis-server")
        sentinel = start_sentinel(replicas=1)
        try:
            yield sentinel.url
        finally:
            sentinel.stop()


def test_a_wake_opens_the_breaker_without_waiting_for_the_cycle(backend_url: str) -> None:
    namespace = f"test-wake-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    command = [
        sys.executable, "-m", "aggregator", "--redis-url", backend_url, "--namespace", namespace,
        "--port", str(free_port()), "--interval", HOUR, "--breaker-interval", HOUR,
        "--log-level", "WARNING",
    ]  # fmt: skip
    aggregator = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
    connection = connect(backend_url, socket_timeout=5.0)
    metrics = MetricsClient(settings=ClientSettings(redis_url=backend_url, namespace=namespace))
    try:
        # leading, its one breaker cycle done (fences raised): the next is an hour away
        wait_for(lambda: connection.exists(keys.leader_lease) == 1, timeout=60)
        assert metrics.allow("down") is True
        for _ in range(200):
            metrics.record("down", 0.2, status_code=200)
        assert metrics.flush(timeout=10)
        time.sleep(1.2)  # the breaker window's successes are older than the recent window

        def failing_until_refused() -> bool:
            for _ in range(10):
                metrics.record("down", 0.2, status_code=503)
            metrics.flush(timeout=5)
            return metrics.allow("down") is False

        wait_for(failing_until_refused, timeout=60, poll=0.05)
        state = connection.hget(keys.breaker("down"), "state")
        assert state == b"open"
        assert connection.hget(keys.transitions("down"), "closed>open") == b"1"
        assert aggregator.poll() is None
    finally:
        metrics.close(timeout=5)
        stop_process(aggregator, timeout=15)
        for key in list(connection.scan_iter(match=keys.pattern(), count=1000)):
            connection.delete(key)
        connection.close()
    assert aggregator.returncode == 0, aggregator.stderr.read() if aggregator.stderr else b""


def test_nothing_failing_nothing_woken(single_redis_url: str) -> None:
    """The other half of the promise, counted: healthy traffic adds no wake, so the leader's
    blocking read stays blocked (its only command while nothing fails)."""
    namespace = f"test-wake-{uuid.uuid4().hex[:8]}"
    keys = Keys(namespace)
    settings = ClientSettings(redis_url=single_redis_url, namespace=namespace)
    metrics = MetricsClient(settings=settings)
    connection = redis.Redis.from_url(single_redis_url)
    try:
        for _ in range(500):
            metrics.record("fine", 0.2, status_code=200)
        assert metrics.flush(timeout=10)
        assert connection.exists(keys.breaker_wakes) == 0
    finally:
        metrics.close(timeout=5)
        for key in list(connection.scan_iter(match=keys.pattern(), count=1000)):
            connection.delete(key)
        connection.close()
