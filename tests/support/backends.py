"""The Redis backends tests run on: one Redis, or a local Redis Cluster (``BOTH_BACKENDS``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from devtools.redis_cluster import LocalCluster, start_cluster
from devtools.redis_server import RedisProcess, start_redis
from gatewayz_protocol.keys import Keys
from tests.support.processes import need_redis_tools

BOTH_BACKENDS = pytest.mark.both_backends
"""Runs each test that uses Redis against one Redis and against a Redis Cluster, with the same
assertions (on a module: ``pytestmark = BOTH_BACKENDS``)."""


def open_redis(url: str) -> redis.Redis:
    """A plain client for assertions: one Redis, or (``redis+cluster://``) the cluster."""
    if url.startswith("redis+cluster://"):
        seeds = url[len("redis+cluster://") :].split(",")
        nodes = [ClusterNode(host, int(port)) for host, port in (s.split(":") for s in seeds)]
        return cast(redis.Redis, RedisCluster(startup_nodes=nodes))  # same commands, by key
    return redis.Redis.from_url(url)


def empty_namespace(url: str, namespace: str) -> None:
    """Delete every key of ``namespace`` (on every master of a cluster)."""
    connection = open_redis(url)
    for key in list(connection.scan_iter(match=Keys(namespace).pattern(), count=1000)):
        connection.delete(key)
    connection.close()


def local_cluster() -> Iterator[LocalCluster]:
    """A local Redis Cluster of 3 masters, stopped after the fixture that yields from it."""
    need_redis_tools()
    cluster = start_cluster(masters=3)
    yield cluster
    cluster.stop()


REDIS_PASSWORD = "requirepass-Pw-5n2Qx"
"""The password of ``password_redis``'s server."""

AUTH_HINT = (
    "Redis wants other credentials: put them in GATEWAYZ_REDIS_URL or --redis-url as "
    "redis://user:password@host:port/db"
)
"""What the aggregator adds to an error of Redis refusing its credentials (written out, not
imported: the tests say what an operator reads)."""


def password_redis() -> Iterator[RedisProcess]:
    """A throw-away redis-server started with ``--requirepass REDIS_PASSWORD``, stopped after
    the fixture that yields from it."""
    need_redis_tools()
    server = start_redis(extra_args=("--requirepass", REDIS_PASSWORD))
    try:
        yield server
    finally:
        server.stop()
