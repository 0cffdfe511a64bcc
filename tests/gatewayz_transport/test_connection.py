"""Connections (gatewayz_transport.connection): pipelines packed by hiredis into one buffer,
byte for byte what redis-py would send."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from devtools.redis_cluster import LocalCluster
from gatewayz_transport.connection import connect
from gatewayz_transport.urls import check_url
from tests.support.acl import user_without

COMMANDS = [
    ("MULTI",),
    ("ZADD", "ns:{openrouter}:w:ok:3", "1800000000.250", "AAAAAA", "1800000000.251", "AAAAAB"),
    ("EXPIRE", "ns:{openrouter}:w:ok:3", 360),
    ("HINCRBY", "ns:{openrouter}:totals", "n:success", -5),
    ("SET", "ns:event_ids", b"\x00\xff binary", "NX"),
    ("INCRBYFLOAT", "k", 0.5),
    ("SCRIPT LOAD", "return 1"),  # two words: redis-py splits them
    ("EXEC",),
]


def test_a_pipeline_is_one_buffer_of_what_redis_py_would_send(redis_url: str) -> None:
    ours = connect(redis_url, socket_timeout=1.0).connection_pool.make_connection()
    plain = redis.Connection()
    packed = ours.pack_commands(COMMANDS)
    assert packed == [b"".join(plain.pack_commands(COMMANDS))]
    assert packed[0].startswith(b"*1\r\n$5\r\nMULTI\r\n*6\r\n$4\r\nZADD\r\n")
    members = [x for i in range(5_000) for x in ("1.000", f"{i:06d}")]
    big = [("MULTI",), *[("ZADD", f"k{i}", *members) for i in range(3)], ("EXEC",)]
    assert len(plain.pack_commands(big)) == 5  # redis-py alone: one sendall per big command
    assert len(ours.pack_commands(big)) == 1


def test_an_argument_redis_cannot_encode_is_a_data_error(redis_url: str) -> None:
    ours = connect(redis_url, socket_timeout=1.0).connection_pool.make_connection()
    with pytest.raises(redis.DataError):
        ours.pack_commands([("SET", "k", object())])


def test_the_url_picks_one_redis_a_cluster_or_sentinel_without_io() -> None:
    nowhere = "127.0.0.1:1"  # nothing listens: building a connection must not connect
    cluster = connect(f"redis+cluster://u:p%40ss@{nowhere},127.0.0.2:7001", socket_timeout=0.2)
    assert isinstance(cluster, RedisCluster)
    with pytest.raises(redis.ConnectionError, match="Redis Cluster unreachable"):
        cluster.ping()  # an outage like any other, raised at the first command
    master = connect(f"redis+sentinel://{nowhere},127.0.0.2/gatewayz/2", socket_timeout=0.2)
    pool = master.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "gatewayz" and pool.connection_kwargs["db"] == 2
    for good in (
        "redis://localhost:6379/0",
        "redis+cluster://h:7000",
        "rediss+cluster://h:7000,h2:7001",
        "redis+sentinel://h:26379/mymaster",
        "rediss+sentinel://:secret@h,h2:26380/mymaster/3",
    ):
        check_url(good)
    for bad in (
        "http://h:1",
        "redis+cluster://h:7000/3",  # a cluster has only db 0
        "redis+cluster://h:7000,h2",  # a seed without a port
        "redis+sentinel://h:26379",  # no master name
        "redis+sentinel://h:26379/m/x",
        "redis+sentinel://h:port/m",
    ):
        with pytest.raises(ValueError):
            check_url(bad)


def test_a_cluster_user_refused_cluster_slots_is_told_so(redis_cluster: LocalCluster) -> None:
    # redis-py reads the refusal as "Cluster mode is not enabled on this node"
    with user_without(redis_cluster.url, "cluster|slots") as url:
        cluster = connect(url, socket_timeout=2.0)
        with pytest.raises(redis.ConnectionError) as raised:
            cluster.ping()
    said = str(raised.value)
    assert said.startswith("Redis Cluster unreachable: ")
    # redis-py 5.0 passes the refusal on; later releases replace it (the probe tells it then)
    assert said.endswith("no permissions to run the 'cluster|slots' command)") or said.endswith(
        "Please provide at least one reachable node: this user has no permissions to run the "
        "'cluster|slots' command"
    ), said


def test_a_urls_timeouts_win_unless_the_callers_must() -> None:
    """redis-py takes a URL's ``?socket_timeout=`` and ``?socket_connect_timeout=`` over the
    arguments; ``timeout_wins`` keeps the caller's (the client's breaker connection: its timeout
    is ``allow()``'s promise, ``allow_timeout_seconds``), the URL's other options as given."""
    query = "?socket_timeout=5&client_name=gw&socket_connect_timeout=6"
    url = f"redis://127.0.0.1:1/0{query}"
    timeouts = ("socket_timeout", "socket_connect_timeout", "client_name")
    for wins, expected in ((False, (5.0, 6.0, "gw")), (True, (0.25, 0.25, "gw"))):
        pooled = connect(url, 0.25, timeout_wins=wins).connection_pool.connection_kwargs
        assert tuple(pooled[name] for name in timeouts) == expected
    only = connect("redis://127.0.0.1:1/0?socket_timeout=5", 0.25, timeout_wins=True)
    assert only.connection_pool.connection_kwargs["socket_timeout"] == 0.25
    cluster = connect(f"redis+cluster://127.0.0.1:1,127.0.0.2:2{query}", 0.25, timeout_wins=True)
    settings = cluster._deferred_settings  # type: ignore[union-attr]
    assert (settings["url"], settings["socket_timeout"]) == (
        "redis://127.0.0.1:1?client_name=gw",
        0.25,
    )
