"""Pipelines routed per node on a real Redis Cluster (``protocol/routing.py``): replies in the
order queued, callbacks applied as on one Redis, a stale layout after a reshard followed, and a
slot in migration read and written exactly (ASK followed with ASKING, to a node the layout may
not show yet; TRYAGAIN sent again; MOVED learned)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from devtools.redis_cluster import LocalCluster
from gatewayz_transport import routing
from gatewayz_transport.connection import Connection, connect
from gatewayz_transport.raw import execute_raw
from gatewayz_transport.routing import (
    Command,
    NodeRoutedPipeline,
    command_key,
    pipeline,
    slot_of,
)
from tests.support.backends import local_cluster
from tests.support.slot_migration import SlotMigration, add_empty_master, ask, keys_on

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


# -- a slot in migration: ASK followed with ASKING, TRYAGAIN sent again, MOVED learned ---------

TAG = "{m}"
HASHES = [f"{TAG}:h{i}" for i in range(8)]
ZSETS = [f"{TAG}:z{i}" for i in range(8)]
ELSEWHERE = ["{other}:h", "{k7}:h"]


def _fill(connection: Connection) -> None:
    pipe = pipeline(connection)
    for i, key in enumerate(HASHES + ELSEWHERE):
        pipe.hset(key, mapping={"n": i})
    for i, key in enumerate(ZSETS):
        pipe.zadd(key, {f"m{j}": j for j in range(i + 1)})
    pipe.execute()


def _reads() -> list[Command]:
    return [
        *(("HGETALL", key) for key in HASHES + ELSEWHERE),
        *(("ZCOUNT", key, "-inf", "+inf") for key in ZSETS),
        ("ZCOUNT", f"{TAG}:missing", "-inf", "+inf"),
        ("EXISTS", f"{TAG}:missing"),
        ("HGETALL", f"{TAG}:missing"),
    ]


def _asking_calls(port: int) -> int:
    stats = ask(port, "INFO", "commandstats")  # parsed by redis-py
    return int(stats.get("cmdstat_asking", {}).get("calls", 0))


def test_reads_and_writes_follow_ask_while_a_slot_migrates(own_cluster: LocalCluster) -> None:
    connection = connect(own_cluster.url, socket_timeout=2.0)
    _fill(connection)
    expected = execute_raw(connection, _reads())
    migration = SlotMigration(own_cluster, slot_of(TAG)).begin()
    moved = HASHES[::2] + ZSETS[1::2]
    migration.move(moved)
    ask(migration.target, "CONFIG", "RESETSTAT")

    assert execute_raw(connection, _reads()) == expected  # exact, half of them through ASK
    # ASKING before each command the source refused (the keys moved, the missing ones), only
    assert _asking_calls(migration.target) == len(moved) + 3
    assert connection.get_node_from_key(TAG).port == migration.source  # ASK taught nothing
    # a multi-key EXISTS over keys the migration split (TRYAGAIN, for as long as it lasts):
    # counted key by key, each where it is
    exists = ("EXISTS", HASHES[0], HASHES[1], f"{TAG}:missing", HASHES[1], ZSETS[1])
    assert execute_raw(connection, [exists]) == [4]
    pipe = pipeline(connection)
    pipe.exists(*exists[1:])
    assert pipe.execute() == [4]

    pipe = pipeline(connection)  # redis-py's callbacks, writes: where each key is now
    for key in (HASHES[0], HASHES[1], f"{TAG}:new"):
        pipe.hincrby(key, "n", 10)
    pipe.hgetall(HASHES[0])
    assert pipe.execute() == [10, 11, 10, {b"n": b"10"}]
    assert keys_on(migration.source, migration.slot) & {HASHES[0].encode(), b"{m}:new"} == set()
    assert {HASHES[0].encode(), b"{m}:new"} <= keys_on(migration.target, migration.slot)

    migration.finish()
    pipe = pipeline(connection)
    pipe.hincrby(HASHES[0], "n", -10)
    pipe.hincrby(HASHES[1], "n", -10)
    assert pipe.execute() == [0, 1]
    assert execute_raw(connection, _reads()) == expected
    assert connection.get_node_from_key(TAG).port == migration.target  # MOVED: learned


def test_an_ask_to_a_node_the_layout_does_not_show_yet(own_cluster: LocalCluster) -> None:
    # Scaling out: a new node, without slots (absent from the layout redis-py knows),
    # importing its first slot
    connection = connect(own_cluster.url, socket_timeout=2.0)
    _fill(connection)
    expected = execute_raw(connection, _reads())
    new = add_empty_master(own_cluster)
    migration = SlotMigration(own_cluster, slot_of(TAG), target=new).begin()
    migration.move(HASHES[:5] + ZSETS[:3])
    assert connection.get_node(host="127.0.0.1", port=new) is None
    clients_before = ask(new, "CLIENT", "LIST").count(b"\n")

    assert execute_raw(connection, _reads()) == expected
    assert ask(new, "CLIENT", "LIST").count(b"\n") == clients_before  # its client closed

    migration.finish()
    assert execute_raw(connection, _reads()) == expected
    assert connection.get_node_from_key(TAG).port == new


def test_tryagain_is_sent_again_after_a_pause(
    own_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MGET of keys a migration split: TRYAGAIN from the source (ASK would name the target,
    # which does not hold them all either); sent again once the migration ended
    connection = connect(own_cluster.url, socket_timeout=2.0)
    split = [("MGET", f"{TAG}:a", f"{TAG}:b"), ("SET", f"{TAG}:a", "1"), ("SET", f"{TAG}:b", "2")]
    execute_raw(connection, split[1:])
    migration = SlotMigration(own_cluster, slot_of(TAG)).begin()
    migration.move([f"{TAG}:a"])
    pauses: list[float] = []
    monkeypatch.setattr(routing.time, "sleep", pauses.append)

    (refused,) = execute_raw(connection, split[:1])  # the split lasts: refused in the end
    assert isinstance(refused, redis.exceptions.TryAgainError)
    assert pauses == [routing.TRYAGAIN_PAUSE_SECONDS] * (routing.ROUNDS - 1)

    def finish_instead(seconds: float) -> None:
        monkeypatch.undo()  # time.sleep itself again, for what finishing waits for
        migration.finish()

    monkeypatch.setattr(routing.time, "sleep", finish_instead)
    assert execute_raw(connection, split[:1]) == [[b"1", b"2"]]  # TRYAGAIN, MOVED, done
