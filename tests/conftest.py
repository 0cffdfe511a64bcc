"""Shared fixtures: a real Redis (REDIS_URL), one namespace per test, cleaned up afterwards.

``REDIS_URL`` is the test harness's variable (``make test``, ``devtools.redis_server``,
``devtools.redis_cluster``, ``devtools.redis_sentinel``, ``devtools.dep_matrix``), not the
product's: ``pytest_configure`` hands it to everything the tests start as ``GATEWAYZ_REDIS_URL``
and takes ``REDIS_URL`` out of the tests' environment, so no process they start reads the
deprecated name (and says so)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_cluster import LocalCluster
from devtools.redis_server import start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.backends import empty_namespace, local_cluster, open_redis
from tests.support.clock import FakeClock
from tests.support.processes import need_tool


def pytest_configure(config: pytest.Config) -> None:
    harness = os.environ.pop("REDIS_URL", "")
    if harness:
        os.environ["GATEWAYZ_REDIS_URL"] = harness


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
    return os.environ.get("GATEWAYZ_REDIS_URL") or "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """One local Redis Cluster for the session's tests that run on both."""
    yield from local_cluster()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, single_redis_url: str) -> str:
    """The harness's Redis (REDIS_URL, then GATEWAYZ_REDIS_URL); a local cluster's URL for the
    ``cluster`` side of ``BOTH_BACKENDS``."""
    if getattr(request, "param", "single") == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return single_redis_url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    empty_namespace(redis_url, name)


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
