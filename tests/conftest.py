"""Shared fixtures: a real Redis (REDIS_URL), one namespace per test, cleaned up afterwards."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from aggregator.breaker import BreakerConfig
from aggregator.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_cluster import LocalCluster, start_cluster
from devtools.redis_server import start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect


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
def single_redis_url() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def local_cluster() -> Iterator[LocalCluster]:
    """A local Redis Cluster of 3 masters, stopped after the fixture that yields from it."""
    need_tool("redis-server", "apt-get install redis-server")
    need_tool("redis-cli", "apt-get install redis-server")
    cluster = start_cluster(masters=3)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """One local Redis Cluster for the session's tests that run on both."""
    yield from local_cluster()


BOTH_BACKENDS = pytest.mark.both_backends
"""Runs each test that uses Redis against one Redis and against a Redis Cluster, with the same
assertions (on a module: ``pytestmark = BOTH_BACKENDS``)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, single_redis_url: str) -> str:
    """REDIS_URL; a local cluster's URL for the ``cluster`` side of ``BOTH_BACKENDS``."""
    if getattr(request, "param", "single") == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return single_redis_url


def open_redis(url: str) -> redis.Redis:
    """A plain client for assertions: one Redis, or (``redis+cluster://``) the cluster."""
    if url.startswith("redis+cluster://"):
        seeds = url[len("redis+cluster://") :].split(",")
        nodes = [ClusterNode(host, int(port)) for host, port in (s.split(":") for s in seeds)]
        return cast(redis.Redis, RedisCluster(startup_nodes=nodes))  # same commands, by key
    return redis.Redis.from_url(url)


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    connection = open_redis(redis_url)
    for key in list(connection.scan_iter(match=Keys(name).pattern(), count=1000)):
        connection.delete(key)
    connection.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    connection = open_redis(redis_url)
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
