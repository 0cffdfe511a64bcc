"""Pipelines routed per node on a real Redis Cluster (``protocol/routing.py``): replies in the
order queued, callbacks applied as on one Redis, and a stale layout after a reshard followed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.redis_cluster import LocalCluster
from gatewayz_transport.connection import connect
from gatewayz_transport.routing import NodeRoutedPipeline, pipeline, slot_of
from tests.support.backends import local_cluster

KEYS = [f"{{k{i}}}:h" for i in range(40)]


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """Its own cluster: the test reshards it."""
    yield from local_cluster()


def test_replies_come_back_in_order_after_a_reshard(own_cluster: LocalCluster) -> None:
    connection = connect(own_cluster.url, socket_timeout=2.0)
    pipe = pipeline(connection)
    assert isinstance(pipe, NodeRoutedPipeline)
    for i, key in enumerate(KEYS):
        pipe.hset(key, mapping={"n": i, "m": -i})
    assert pipe.execute() == [2] * len(KEYS)
    source = own_cluster.nodes[0].port
    start = min(low for low, _ in own_cluster.slots_of(source))
    moving = [k for k in KEYS if start <= slot_of(k) < start + 3000]
    assert moving, "some keys live in the slots that move"

    pipe = pipeline(connection)
    for key in KEYS:
        pipe.hgetall(key)
    before = pipe.execute()
    own_cluster.reshard(source, own_cluster.nodes[1].port, 3000)  # the client is not told
    asked = []
    initialize = connection.nodes_manager.initialize
    connection.nodes_manager.initialize = lambda: asked.append(1) or initialize()  # type: ignore[method-assign, func-returns-value]
    pipe = pipeline(connection)
    for key in KEYS:
        pipe.hgetall(key)
    pipe.zcount("{k0}:missing", "-inf", "+inf")
    after = pipe.execute()
    expected = [{b"n": str(i).encode(), b"m": str(-i).encode()} for i in range(len(KEYS))]
    assert before == expected
    assert after == [*expected, 0]
    assert asked == [1]  # MOVED: the layout asked for once, the moved reads sent again
    for key in moving:
        assert own_cluster.master_of_slot(slot_of(key)).port == own_cluster.nodes[1].port
