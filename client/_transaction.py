"""One MULTI/EXEC sent raw: packed into one buffer with hiredis, written once, its replies read
through redis-py's public ``Connection.read_response`` (no pipeline, no reply callbacks).

redis-py's pipeline costs a flush pass more Python than the transaction itself (its command
stack, per-command packing and argument checks, a reply callback per command): a pass with a
handful of events spent most of its CPU there. The cluster writer sends each slot's
transaction this way too (``_slots``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from gatewayz_transport.connection import pooled_connection
from gatewayz_transport.errors import is_transient
from gatewayz_transport.routing import Command, command_key

log = logging.getLogger("gatewayz.metrics.client")

SAY_EVERY_SECONDS = 60.0
IDLE_SECONDS = 1.0
"""A connection unused this long is looked at before a transaction is sent on it."""
MASTER_CHECK_SECONDS = 1.0
"""How often a Sentinel-managed connection asks the sentinels whether it still goes to the
master they name: a master stalled past their failover and resumed keeps taking writes (and
answering them) until they turn it into a replica, seconds later, which drops them."""
_said_at = [float("-inf")]  # when a refused MULTI was last logged, by any writer of the process

_MULTI = hiredis.pack_command(("MULTI",))
_EXEC = hiredis.pack_command(("EXEC",))


@dataclass
class Outcome:
    """What became of one transaction."""

    applied: bool
    replies: list[Any] = field(default_factory=list)
    """The transaction's replies (errors as exceptions), when applied."""
    error: BaseException | None = None
    """Why it was not applied (or, ``unknown``, why its outcome is unknown)."""
    unknown: bool = False


def pack_transaction(commands: Sequence[Command]) -> bytes:
    """MULTI, the commands, EXEC: one buffer (redis.DataError for an argument Redis has no
    encoding for, before anything is sent)."""
    try:
        return b"".join([_MULTI, *[hiredis.pack_command(tuple(c)) for c in commands], _EXEC])
    except TypeError as exc:
        raise redis.DataError(str(exc)) from exc


def read_transaction(connection: Any, queued: int) -> Outcome:
    """Read MULTI's reply, each QUEUED (or the refusal that aborts the transaction: MOVED, ASK,
    OOM...), then EXEC's."""
    refusal: BaseException | None = None
    try:
        connection.read_response()
    except redis.ResponseError as exc:
        if not is_transient(exc):  # NOPERM, an unknown command: Redis runs what follows
            return _ran_one_by_one(connection, queued, exc)
        # Redis runs MULTI even while busy, loading or stale; a proxy saying "not now" to it
        # refuses what follows as well: a transaction that did not run
        refusal = exc
    for _ in range(queued):
        try:
            connection.read_response()
        except redis.ResponseError as exc:
            refusal = refusal or exc
    try:
        replies = connection.read_response()
    except redis.ResponseError as exc:  # EXECABORT: nothing of it ran
        return Outcome(False, error=refusal or exc)
    if replies is None:  # a WATCH failed: cannot happen here, but nothing ran
        return Outcome(False, error=refusal or redis.WatchError("transaction discarded"))
    return Outcome(True, replies=list(replies))


def _ran_one_by_one(connection: Any, queued: int, refusal: BaseException) -> Outcome:
    """Redis refused MULTI (an ACL without it, a proxy without transactions): it ran each
    command as it came, and refuses EXEC. What they did is done: reported as applied, with
    their own replies, never sent again (that would apply them twice), and said once a
    minute."""
    replies: list[Any] = []
    for _ in range(queued):
        try:
            replies.append(connection.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    with contextlib.suppress(redis.ResponseError):
        connection.read_response()  # EXEC without MULTI
    now = time.monotonic()
    if now - _said_at[0] >= SAY_EVERY_SECONDS:
        _said_at[0] = now
        log.error(
            "Redis refused MULTI (%s): a batch's commands ran one by one, without a "
            "transaction's guarantees; this client needs MULTI/EXEC",
            refusal,
        )
    return Outcome(True, replies=replies)


class Transactions:
    """Transactions on one Redis over a connection of ``client``'s pool kept for them (the
    flusher's: one at a time), so a pass neither takes one from the pool nor has it checked
    for stray data (a ``poll`` each time): a connection that failed is given back, and the
    next transaction takes another."""

    def __init__(
        self, client: redis.Redis, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        pool = client.connection_pool
        self._sentinels = pool if isinstance(pool, SentinelConnectionPool) else None
        self._monotonic = monotonic
        self._asked_at = monotonic()  # when the sentinels were last asked for the master
        self._connection: Any = None
        self._fresh = True  # the connection was not used by a transaction that got its reply
        self._used_at = 0.0  # monotonic: when the connection last sent a transaction

    def fresh(self) -> bool:
        """Whether the next transaction goes on a connection the last one did not (taken from
        the pool now: maybe to another server). Raises redis.RedisError when none can be had."""
        self._connection_now()
        return self._fresh

    def _connection_now(self) -> Any:
        connection = self._connection
        now = self._monotonic()
        if connection is not None and now - self._used_at >= IDLE_SECONDS and _closed(connection):
            # Redis closed it while it was idle (its `timeout` setting): a fresh one, rather
            # than a failed round trip, an error logged and a retry after every quiet spell
            self._give_back(connection)
            connection = None
        if connection is not None and now - self._asked_at >= MASTER_CHECK_SECONDS:
            self._asked_at = now
            if self._replaced(connection):  # the next goes to the master named now
                self._give_back(connection)
                connection = None
        if connection is None:
            connection = self._connection = pooled_connection(self._client.connection_pool)
            self._fresh = True
        self._used_at = now
        return connection

    def run(self, packed: bytes, queued: int) -> list[Any]:
        """A transaction (``pack_transaction`` of ``queued`` commands) in one round trip: the
        commands' replies, errors as exceptions (Redis runs every other command of a
        transaction). Raises what discarded the transaction (nothing of it ran: the first
        refusal, OOM say, or EXECABORT), or the connection's error (the connection is dropped:
        nothing or everything was applied)."""
        connection = self._connection_now()
        try:
            connection.send_packed_command([packed], check_health=False)
            outcome = read_transaction(connection, queued)
        except BaseException:
            # whatever broke off the exchange (a timeout, an interrupt), the connection may
            # hold half a reply: given back closed, and the next transaction takes one from the
            # pool, which connects it as the pool does (a Sentinel pool: to the master it names
            # now; redis-py reconnecting by itself on send would go back to the old address)
            self._give_back(connection)
            raise
        self._fresh = False  # answered on it: the next goes to the same server
        if not outcome.applied:
            assert outcome.error is not None
            raise outcome.error
        return outcome.replies

    def read(self, *command: Any) -> Any:
        """One command's reply (``reads``)."""
        return self.reads([command])[0]

    def reads(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The commands' replies, in one round trip, from the server the transactions go to
        (on their connection: the pool's may name another by now, a Sentinel pool the new
        master while this one still writes to the old). Raises Redis's refusal, or what broke
        the exchange (the connection is dropped, as it is when a refusal leaves replies
        unread)."""
        connection = self._connection_now()
        replies: list[Any] = []
        try:
            packed = [hiredis.pack_command(tuple(command)) for command in commands]
            connection.send_packed_command(packed, check_health=False)
            for _ in commands:
                replies.append(connection.read_response())
        except redis.ResponseError:
            if len(replies) < len(commands) - 1:
                self._give_back(connection)
            raise
        except BaseException:
            self._give_back(connection)
            raise
        return replies

    @property
    def client(self) -> redis.Redis:
        return self._client

    def _replaced(self, connection: Any) -> bool:
        """Whether the sentinels name another master than the one ``connection`` goes to (a
        round trip to a sentinel; one that cannot answer leaves the connection alone)."""
        if self._sentinels is None:
            return False
        try:
            host, port = self._sentinels.get_master_address()  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False
        return (str(host), int(port)) != (str(connection.host), int(connection.port))

    def _give_back(self, connection: Any) -> None:
        self._connection = None
        connection.disconnect()
        self._client.connection_pool.release(connection)


def _closed(connection: Any) -> bool:
    """Whether Redis closed ``connection`` (or sent on it unasked): a look at its socket that
    does not wait."""
    try:
        return bool(connection.can_read(timeout=0))
    except (redis.ConnectionError, OSError):
        return True


def run_slot_transactions(
    cluster: RedisCluster, groups: dict[int, list[Command]]
) -> dict[int, Outcome]:
    """Each slot's commands as one MULTI/EXEC on the node serving it; a node's transactions go
    out in one write, all nodes are written before any is read. Every transaction is packed
    before anything is sent (redis.DataError for an argument Redis has no encoding for)."""
    packed = {slot: pack_transaction(commands) for slot, commands in groups.items()}
    by_node: dict[str, tuple[Any, list[int]]] = {}
    outcomes: dict[int, Outcome] = {}
    for slot in groups:
        try:
            node = cluster.get_node_from_key(command_key(groups[slot][0]))  # type: ignore[no-untyped-call]
        except Exception as exc:  # no node serves the slot now (a failover under way)
            outcomes[slot] = Outcome(False, error=redis.ConnectionError(str(exc)))
            continue
        entry = by_node.setdefault(node.name, (node, []))
        entry[1].append(slot)
    sent: list[tuple[Any, Any, list[int]]] = []
    for node, slots in by_node.values():
        pool = cluster.get_redis_connection(node).connection_pool
        try:
            connection = pooled_connection(pool)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            outcomes.update({s: Outcome(False, error=exc) for s in slots})
            continue
        try:
            connection.send_packed_command(  # type: ignore[no-untyped-call]
                [b"".join(packed[slot] for slot in slots)], check_health=False
            )
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()  # type: ignore[no-untyped-call]
            pool.release(connection)
            # a write that failed may have left part of the buffer: outcome unknown
            outcomes.update({s: Outcome(False, error=exc, unknown=True) for s in slots})
            continue
        sent.append((pool, connection, slots))
    for pool, connection, slots in sent:
        try:
            for slot in slots:
                outcomes[slot] = read_transaction(connection, len(groups[slot]))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            connection.disconnect()
            for slot in slots:
                outcomes.setdefault(slot, Outcome(False, error=exc, unknown=True))
        finally:
            pool.release(connection)
    return outcomes
