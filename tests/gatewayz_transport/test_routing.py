"""Pipelines routed per node on a real Redis Cluster (``protocol/routing.py``): replies in the
order queued, callbacks applied as on one Redis, and a stale layout after a reshard followed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.redis_cluster import LocalCluster
from gatewayz_transport.connection import connect
from gatewayz_transport.routing import NodeRoutedPipeline, command_key, pipeline, slot_of
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
    pipe = pipeline(connection)
    for key in KEYS:
        pipe.hgetall(key)
    pipe.zcount("{k0}:missing", "-inf", "+inf")
    after = pipe.execute()
    expected = [{b"n": str(i).encode(), b"m": str(-i).encode()} for i in range(len(KEYS))]
    assert before == expected
    assert after == [*expected, 0]
    for key in moving:  # MOVED: redis-py learned the new layout, the moved reads sent again
        assert own_cluster.master_of_slot(slot_of(key)).port == own_cluster.nodes[1].port
        assert connection.get_node_from_key(key).port == own_cluster.nodes[1].port


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # the slots Redis's own documentation shows (CLUSTER KEYSLOT, the cluster tutorial)
        ("somekey", 11058),
        ("foo", 12182),
        ("hello", 866),
        ("foo{hash_tag}", 2515),
        ("bar{hash_tag}", 2515),
        (b"foo", 12182),
    ],
)
def test_the_slot_of_a_key(key: str | bytes, slot: int) -> None:
    assert slot_of(key) == slot


def test_keys_of_one_provider_share_its_slot() -> None:
    assert (
        slot_of("ns:{openrouter}:totals")
        == slot_of("ns:{openrouter}:w:ok:3")
        == slot_of("openrouter")
    )


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (("ZCOUNT", "ns:{p}:w:fail", "-inf", "+inf"), "ns:{p}:w:fail"),
        (("HGETALL", b"k"), b"k"),
        (("EVALSHA", "0" * 40, 2, "ns:{p}:breaker", "ns:{p}:permits", "holder"), "ns:{p}:breaker"),
        (("evalsha", "0" * 40, 1, "first", "arg"), "first"),
        (("EVAL", "return 1", 1, "k1"), "k1"),
        (("EVALSHA_RO", "0" * 40, 1, "ro"), "ro"),
    ],
)
def test_a_command_runs_in_the_slot_of_its_first_key(
    command: tuple[object, ...], key: object
) -> None:
    assert command_key(command) == key
