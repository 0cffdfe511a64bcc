"""Commands routed to the Redis Cluster node serving each key's slot, fast.

redis-py's cluster pipeline resolves every queued command through its routing policies
(tens of microseconds each): a cycle reading 200 providers' windows cost three times what it
costs on one Redis. Here a pipeline queues as usual (``redis.client.Pipeline``, no I/O), and
``execute`` groups the commands by the node of their key's slot, writes every node's commands
in one buffer, all nodes before reading any, and parses each reply with redis-py's own
callbacks. A command a node refused for now (it did nothing) is sent again: after MOVED to the
slot's new node once the cluster's layout was asked for again; after ASK (its slot is being
migrated and its key is not on the node any more) to the node the redirection names, right
after ASKING on the same connection, that command only and without learning anything of the
layout from it; after TRYAGAIN (a multi-key command whose keys a migration split) after a
pause, except a multi-key EXISTS, answered key by key (the split lasts as long as the
migration). Nothing else is ever sent twice.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster

from gatewayz_transport.connection import Connection, pooled_connection

Command = tuple[Any, ...]
_SCRIPT_COMMANDS = frozenset(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"))
_REDIRECTED = (redis.exceptions.MovedError, redis.exceptions.AskError)
_REFUSED_FOR_NOW = (*_REDIRECTED, redis.exceptions.TryAgainError)
ROUNDS = 6
"""Exchanges a routed call makes at most: the first, then one for each refusal a command meets
in turn (ASK during a migration, MOVED once it ended, TRYAGAIN while a migration splits the
keys of a multi-key command): after that the refusal is the command's reply."""
TRYAGAIN_PAUSE_SECONDS = 0.05
"""How long a command refused with TRYAGAIN waits before it is sent again."""


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


def read_raw(client: redis.Redis, connection: Any, indexes: list[int]) -> list[Any]:
    """The replies as the connection's parser returns them (hiredis's, with ``redis[hiredis]``),
    through redis-py's public ``Connection.read_response``: no command's reply callback."""
    replies: list[Any] = []
    append, read = replies.append, connection.read_response
    for _ in indexes:
        try:
            append(read())
        except redis.ResponseError as exc:
            append(exc)
    return replies


@dataclass
class Route:
    """Commands (by index) sent to one node in one buffer: the node serving their slots, or
    (``asking``) the node an ASK named, each command then right after an ASKING."""

    client: redis.Redis
    indexes: list[int]
    host: str
    """The node's host: what a redirection that names none means (``MOVED 3999 :6381``)."""
    asking: bool = False


def _by_node(cluster: RedisCluster, keys: Sequence[Any]) -> list[Route]:
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
    return [
        Route(cluster.get_redis_connection(node), indexes, node.host)
        for node, indexes in by_node.values()
    ]


def _exchange(
    routes: list[Route], commands: Sequence[Command], read: Reader, replies: list[Any]
) -> list[tuple[int, str]]:
    """Each route's commands in one buffer to its node, every node written before any is read;
    fills ``replies`` (errors as exceptions) and returns the indexes refused for now (MOVED,
    ASK, TRYAGAIN: not run), each with the host of the node that refused it. A connection
    failure is raised, the connections dropped."""
    sent = []
    try:
        for route in routes:
            connection = pooled_connection(route.client.connection_pool)
            sent.append((route, connection))
            queued = [commands[i] for i in route.indexes]
            if route.asking:  # ASKING holds for the next command only
                queued = [part for command in queued for part in (("ASKING",), command)]
            packed = connection.pack_commands(queued)  # type: ignore[no-untyped-call]
            connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
        refused = []
        for route, connection in sent:
            reader = _after_asking(read) if route.asking else read
            found = reader(route.client, connection, route.indexes)
            for index, reply in zip(route.indexes, found, strict=True):
                replies[index] = reply
                if isinstance(reply, redis.ResponseError) and isinstance(reply, _REFUSED_FOR_NOW):
                    refused.append((index, route.host))  # (an ordinary reply: one check)
        return refused
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        for _, connection in sent:
            connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        for route, connection in sent:
            route.client.connection_pool.release(connection)


def _after_asking(read: Reader) -> Reader:
    """``read`` for commands each sent right after an ASKING: its reply (OK) is skipped (an
    ASKING refused leaves the command to answer for itself: a redirection again)."""

    def read_asked(client: redis.Redis, connection: Any, indexes: list[int]) -> list[Any]:
        replies = []
        for index in indexes:
            with contextlib.suppress(redis.ResponseError):
                connection.read_response()
            replies += read(client, connection, [index])
        return replies

    return read_asked


def refresh_layout(cluster: RedisCluster, *errors: BaseException) -> None:
    """Have redis-py learn the cluster's layout again, through its public command path (it
    offers no public call for it): a PING to every primary it knows, after which a primary
    that did not answer makes it read the layout again; and for each MOVED among ``errors``
    an EXISTS of a key in that slot, whose MOVED it follows by learning the slot's node (an
    ASK teaches nothing: the slot stays its node's until the migration ends). Errors are left
    to the caller's next attempt (every node unreachable: the next call asks again)."""
    with contextlib.suppress(Exception):
        cluster.ping(target_nodes=RedisCluster.PRIMARIES)
    moved = redis.exceptions.MovedError
    for slot in {int(e.slot_id) for e in errors if isinstance(e, moved)}:
        with contextlib.suppress(Exception):
            cluster.exists(key_in_slot(slot))


def _redirected(
    cluster: RedisCluster,
    keys: Sequence[Any],
    refused: list[tuple[int, str]],
    replies: list[Any],
    asked_nodes: list[ClusterNode],
) -> list[Route]:
    """Where the commands refused for now go next: MOVED and TRYAGAIN to their slot's node
    (after the layout was asked for again, after a pause), ASK to the node it names, with
    ASKING. A node the layout does not show yet (a new node importing its first slot) gets a
    client of its own, added to ``asked_nodes`` (the caller closes them)."""
    moved = {i for i, _ in refused if isinstance(replies[i], redis.exceptions.MovedError)}
    if moved:
        refresh_layout(cluster, *(replies[i] for i in sorted(moved)))
    if any(isinstance(replies[i], redis.exceptions.TryAgainError) for i, _ in refused):
        time.sleep(TRYAGAIN_PAUSE_SECONDS)
    asked: dict[tuple[str, int], list[int]] = {}
    again = set()
    for index, origin in refused:
        reply = replies[index]
        if isinstance(reply, redis.exceptions.AskError) and index not in moved:
            asked.setdefault((reply.host or origin, int(reply.port)), []).append(index)
        else:
            again.add(index)
    routes = _by_node(cluster, [k if i in again else None for i, k in enumerate(keys)])
    for (host, port), indexes in asked.items():
        node = cluster.get_node(host=host, port=port)  # type: ignore[no-untyped-call]
        if node is None:
            node = ClusterNode(host, port)  # type: ignore[no-untyped-call]
            asked_nodes.append(node)
        routes.append(Route(cluster.get_redis_connection(node), indexes, host, asking=True))
    return routes


def execute_routed(connection: Connection, commands: Sequence[Command], read: Reader) -> list[Any]:
    """``commands`` on one Redis, or routed per node on a cluster (a command refused for now
    sent again where the refusal says, at most ``ROUNDS`` exchanges in all; a multi-key EXISTS
    a migration splits answered key by key)."""
    replies: list[Any] = [None] * len(commands)
    if not isinstance(connection, RedisCluster):
        _exchange([Route(connection, list(range(len(commands))), "")], commands, read, replies)
        return replies
    keys: list[Any] = [command_key(c) for c in commands]
    routes = _by_node(connection, keys)
    asked_nodes: list[ClusterNode] = []
    split: list[int] = []
    try:
        for attempt in range(ROUNDS):
            try:
                refused = _exchange(routes, commands, read, replies)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                refresh_layout(connection)  # a node gone: ask for the new layout
                raise
            split += [i for i, _ in refused if _counts_per_key(commands[i], replies[i])]
            refused = [(i, host) for i, host in refused if i not in split]
            if not refused or attempt == ROUNDS - 1:
                break
            routes = _redirected(connection, keys, refused, replies, asked_nodes)
    finally:
        for node in asked_nodes:  # (redis-py 5.0 leaves open a pool it was given)
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
                node.redis_connection.close()
    if split:
        _exists_per_key(connection, commands, split, replies)
    return replies


def _counts_per_key(command: Command, reply: Any) -> bool:
    """A multi-key EXISTS refused with TRYAGAIN: during a migration its keys are split between
    the two nodes, or missing on the one importing (it refuses every multi-key command that
    names a key it lacks, for as long as the migration lasts)."""
    name = command[0].decode() if isinstance(command[0], bytes) else str(command[0])
    return isinstance(reply, redis.exceptions.TryAgainError) and name.upper() == "EXISTS"


def _exists_per_key(
    cluster: RedisCluster, commands: Sequence[Command], indexes: list[int], replies: list[Any]
) -> None:
    """Each of these EXISTS answered as one EXISTS per key it names, summed: what EXISTS counts
    (every key that exists, as often as it is named), each key asked where it is now."""
    singles = [("EXISTS", key) for index in indexes for key in commands[index][1:]]
    found = iter(execute_routed(cluster, singles, read_raw))
    for index in indexes:
        part = [next(found) for _ in commands[index][1:]]
        errors = [reply for reply in part if isinstance(reply, Exception)]
        replies[index] = errors[0] if errors else sum(int(reply) for reply in part)


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
