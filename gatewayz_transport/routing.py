"""Commands routed to the Redis Cluster node serving each key's slot, fast.

redis-py's cluster pipeline resolves every queued command through its routing policies
(tens of microseconds each): a cycle reading 200 providers' windows cost three times what it
costs on one Redis. Here a pipeline queues as usual (``redis.client.Pipeline``, no I/O), and
``execute`` groups the commands by the node of their key's slot, writes every node's commands
in one buffer, all nodes before reading any, and parses each reply with redis-py's own
callbacks. A command a node redirects (MOVED, ASK: it did nothing) is sent again once the
cluster's layout was asked for again; nothing else is ever sent twice.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import RedisCluster

from gatewayz_transport.connection import Connection, pooled_connection

Command = tuple[Any, ...]
_SCRIPT_COMMANDS = frozenset(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"))
_REDIRECTED = (redis.exceptions.MovedError, redis.exceptions.AskError)


def command_key(command: Command) -> Any:
    """The key whose slot a command runs in (EVAL/EVALSHA: its first key)."""
    name = command[0]
    if isinstance(name, str) and name.upper() in _SCRIPT_COMMANDS:
        return command[3]
    return command[1]


SLOTS = 16384


@functools.lru_cache(maxsize=1 << 16)
def slot_of(key: Any) -> int:
    """The cluster slot of ``key``, as the Redis Cluster specification defines it: CRC16
    (XMODEM) of the key, or of its hash tag (what lies between the first ``{`` and the next
    ``}``, when not empty), modulo 16384. Remembered: a cycle asks for the same keys every
    time."""
    raw = key if isinstance(key, bytes) else str(key).encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % SLOTS


@functools.lru_cache(maxsize=256)
def key_in_slot(slot: int) -> str:
    """A key whose slot is ``slot`` (the first of ``{0}``, ``{1}``, ... there: about 16,000
    tries, a few milliseconds, on the rare path of a redirection)."""
    for number in itertools.count():
        key = f"{{{number}}}"
        if slot_of(key) == slot:
            return key
    raise AssertionError("unreachable")


Reader = Callable[[redis.Redis, Any, list[int]], list[Any]]
"""Reads the replies of the commands at these indexes from a node's connection, in order; an
error reply is returned as its exception (``redis.ResponseError``), not raised."""


def _by_node(cluster: RedisCluster, keys: Sequence[Any]) -> list[tuple[redis.Redis, list[int]]]:
    """The node client serving each key's slot, with the indexes of its keys."""
    by_slot: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        if key is not None:
            by_slot.setdefault(slot_of(key), []).append(index)
    by_node: dict[str, tuple[Any, list[int]]] = {}
    try:
        for slot_indexes in by_slot.values():
            node = cluster.get_node_from_key(keys[slot_indexes[0]])  # type: ignore[no-untyped-call]
            by_node.setdefault(node.name, (node, []))[1].extend(slot_indexes)
    except redis.exceptions.RedisClusterException as exc:  # no node for a slot (failover)
        refresh_layout(cluster)
        raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc
    return [(cluster.get_redis_connection(node), indexes) for node, indexes in by_node.values()]


def _exchange(
    groups: list[tuple[redis.Redis, list[int]]],
    commands: Sequence[Command],
    read: Reader,
    replies: list[Any],
) -> list[int]:
    """Each group's commands in one buffer to its client's server, every server written before
    any is read; fills ``replies`` (errors as exceptions) and returns the indexes redirected
    (MOVED, ASK: not run). A connection failure is raised, the connections dropped."""
    sent = []
    try:
        for client, indexes in groups:
            connection = pooled_connection(client.connection_pool)
            sent.append((client, connection, indexes))
            packed = connection.pack_commands([commands[i] for i in indexes])  # type: ignore[no-untyped-call]
            connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
        redirected = []
        for client, connection, indexes in sent:
            for index, reply in zip(indexes, read(client, connection, indexes), strict=True):
                replies[index] = reply
                if isinstance(reply, _REDIRECTED):
                    redirected.append(index)
        return redirected
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        for _, connection, _ in sent:
            connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        for client, connection, _ in sent:
            client.connection_pool.release(connection)


def refresh_layout(cluster: RedisCluster, *errors: BaseException) -> None:
    """Have redis-py learn the cluster's layout again, through its public command path (it
    offers no public call for it): a PING to every primary it knows, after which a primary
    that did not answer makes it read the layout again; and for each redirection among
    ``errors`` (MOVED, ASK) an EXISTS of a key in that slot, whose MOVED it follows by
    learning the slot's node. Errors are left to the caller's next attempt (every node
    unreachable: the next call asks again)."""
    with contextlib.suppress(Exception):
        cluster.ping(target_nodes=RedisCluster.PRIMARIES)
    for slot in {int(e.slot_id) for e in errors if isinstance(e, _REDIRECTED)}:
        with contextlib.suppress(Exception):
            cluster.exists(key_in_slot(slot))


def execute_routed(connection: Connection, commands: Sequence[Command], read: Reader) -> list[Any]:
    """``commands`` on one Redis, or routed per node on a cluster (a redirected command sent
    again once, after the layout was asked for again)."""
    replies: list[Any] = [None] * len(commands)
    if not isinstance(connection, RedisCluster):
        _exchange([(connection, list(range(len(commands))))], commands, read, replies)
        return replies
    keys: list[Any] = [command_key(c) for c in commands]
    for attempt in range(2):
        try:
            redirected = _exchange(_by_node(connection, keys), commands, read, replies)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            refresh_layout(connection)  # a node gone: ask for the new layout
            raise
        if not redirected or attempt == 1:
            break
        refresh_layout(connection, *(replies[i] for i in redirected))
        again = set(redirected)
        keys = [key if i in again else None for i, key in enumerate(keys)]
    return replies


class NodeRoutedPipeline(Pipeline):
    """A non-transactional pipeline over a Redis Cluster, one buffer per node (see above)."""

    def __init__(self, cluster: RedisCluster) -> None:
        node_client = cluster.get_redis_connection(cluster.get_default_node())  # type: ignore[no-untyped-call]
        super().__init__(node_client.connection_pool, node_client.response_callbacks, False, None)
        self._cluster = cluster

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = list(self.command_stack)
        self.reset()

        def parse(client: redis.Redis, connection: Any, indexes: list[int]) -> list[Any]:
            replies = []
            for index in indexes:
                args, options = stack[index]
                try:
                    replies.append(client.parse_response(connection, args[0], **options))  # type: ignore[no-untyped-call]
                except redis.ResponseError as exc:
                    replies.append(exc)
            return replies

        replies = execute_routed(self._cluster, [args for args, _ in stack], parse)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies


def pipeline(connection: redis.Redis | RedisCluster) -> Pipeline:
    """A non-transactional pipeline: the connection's own, or on a cluster one routed per node."""
    if isinstance(connection, RedisCluster):
        return NodeRoutedPipeline(connection)
    return connection.pipeline(transaction=False)
