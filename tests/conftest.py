"""Shared fixtures: a real Redis (REDIS_URL), one namespace per test, cleaned up afterwards."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from aggregator.breaker import BreakerConfig
from aggregator.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_server import start_redis
from protocol.connection import connect
from protocol.keys import Keys


class FakeClock:
    """A settable clock for clients and the aggregator."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, poll: float = 0.05) -> None:
    """Poll ``condition`` until it holds (for end-to-end tests of real processes); a condition
    that cannot connect yet (OSError) has not held. Fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(poll)


def need_tool(name: str, install: str) -> None:
    """Skip (with one line saying what to install) when ``name`` is not on PATH; under CI
    (CI=true) fail instead: a skipped test there would count as coverage it is not."""
    if shutil.which(name) is None:
        message = f"{name} not found: install it ({install})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def private_redis() -> Iterator[redis.Redis]:
    """A redis-server of the test's own, for what must not touch the shared one (its command
    statistics, its script cache)."""
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis()
    connection = redis.Redis.from_url(server.url)
    yield connection
    connection.close()
    server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = redis.Redis.from_url(redis_url)
    keys = list(connection.scan_iter(match=Keys(name).pattern(), count=1000))
    if keys:
        connection.delete(*keys)
    connection.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(redis_url: str, namespace: str) -> Iterator[Callable[..., MetricsClient]]:
    clients: list[MetricsClient] = []

    def factory(clock: Callable[[], float] | None = None, **settings: Any) -> MetricsClient:
        merged = ClientSettings(redis_url=redis_url, namespace=namespace, **settings)
        client = MetricsClient(settings=merged, **({"clock": clock} if clock else {}))
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close(timeout=2.0)


@pytest.fixture
def make_aggregator(
    redis_url: str, namespace: str, clock: FakeClock
) -> Iterator[Callable[..., Aggregator]]:
    connections = []

    def factory(
        breaker: BreakerConfig | None = None, url: str | None = None, **settings: Any
    ) -> Aggregator:
        merged = AggregatorSettings(
            redis_url=url or redis_url,
            namespace=namespace,
            breaker=breaker or BreakerConfig(),
            **settings,
        )
        connection = connect(merged.redis_url, socket_timeout=2.0)
        connections.append(connection)
        return Aggregator(merged, connection, clock=clock)

    yield factory
    for connection in connections:
        connection.close()
