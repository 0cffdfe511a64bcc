"""Window member ids: reserved in blocks on the node holding the namespace's id counter, the
next block asked for in the transaction that writes a batch (one round trip per flush pass).

A pass names its events before it takes them (``FlushPass``), so it needs ids before its
transaction. They used to cost a round trip of their own every pass (with the shared clock
measured on it); now each transaction on one Redis also reserves the ids of the passes after it
(``ahead``: about four batches' worth, at least ``AHEAD_MIN``), and a pass whose events fit
in what is left makes no reservation round trip. A round trip is still made by the first
reservation, by one after a failed round trip (it asks whether the master changed: the counter
then jumps, ``scripts.RESERVE_IDS``) and by a pass with more events than are left (a burst).

What stays true: ids are reserved on the master before they name anything, and a writer whose
round trip failed forgets the ids it holds (a failover may have lost their reservation: the next
ones come from a reservation that asks whether the master changed). Ids held ahead are used
within a few flush intervals, and the ones never used are skipped (the id space counts them:
``gatewayz_protocol.event_ids``).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import redis

from client._slots import ClusterWrites
from gatewayz_protocol import scripts
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.event_ids import EVENT_ID_BITS
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.routing import Command
from gatewayz_transport.scripts import register

_T = TypeVar("_T")

ID_GAP_PER_MASTER = 1 << 24
"""Ids the counter skips once per new master of its slot (a replica promoted, a Redis
restarted): more than a failover could lose (the increments a master acknowledged and did not
replicate). A writer asks whether the master changed (``scripts.RESERVE_IDS``) with its first
reservation and its first after a failed round trip; the counter jumps once per master, not per
writer or per failure (out of memory, a timeout): 4,096 failovers per id cycle."""

AHEAD_MIN = 32
"""The fewest ids a transaction reserves ahead: a worker at 50 events/s needs a reservation
every ten passes or so."""
AHEAD_MAX = 4096
"""The most: a block reserved ahead is used within a few passes, or skipped."""
AHEAD_BATCHES = 4
"""A block reserved ahead holds this many batches like the last one."""


class EventIds:
    """A writer's window member ids: ``reserve`` names a batch's events, ``ahead``/``queue`` put
    the next block's reservation into the batch's own transaction (one Redis only; a Redis
    Cluster reserves each batch's ids on the counter's node, a round trip per pass)."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        retention: int,
        clock: SharedClock | None,
        cluster: ClusterWrites | None,
        ops: Counter[str],
    ) -> None:
        """``ops``: the writer's count of Redis operations not yet reported (added to)."""
        self._keys = keys
        self._retention = retention
        self._clock = clock
        self._single = connection if isinstance(connection, redis.Redis) else None
        self._cluster = cluster
        self._ops = ops
        self._script = register(connection, scripts.RESERVE_IDS)
        self._check_master = True  # the first reservation, and the first after a failed one
        self._next = self._end = 0  # the ids held: reserved, not yet naming anything
        self._high = 0  # the end of the highest block this writer was given
        self._need = 0  # the events of the last batch named: the next likely needs as many

    @property
    def held(self) -> int:
        """Ids reserved ahead and not used yet."""
        return self._end - self._next

    def reserve(self, count: int) -> int:
        """The first of ``count`` ids no other writer of the namespace gets: from the ids held
        when they suffice, else from a reservation (one round trip; raises redis.RedisError)."""
        self._need = count
        if self._end - self._next >= count:
            first = self._next
            self._next += count
            return first
        try:
            checked = self._check_master
            first = self.on_counter_node(lambda node: self._reserve(node, count))
            if not checked and first < self._high:
                # The counter went back (a master restarted from a snapshot, a replica promoted,
                # met on a connection opened again without a failed round trip): its ids may be
                # ones this writer named already. Asked again, whether the master changed.
                self.forget()
                first = self.on_counter_node(lambda node: self._reserve(node, count))
        except BaseException:
            self.forget()
            raise
        self._high = max(self._high, first + count)
        return first

    def forget(self) -> None:
        """A round trip failed (the writer's, or a reservation): Redis may come back as a
        promoted replica that missed the last increments, so the ids held are given up and the
        next reservation asks whether the master changed (the counter then jumps, once)."""
        self._next = self._end = 0
        self._check_master = True

    def ahead(self) -> int:
        """How many ids the next transaction reserves ahead: none on a Redis Cluster, none
        until a reservation asked whether the master changed, none while what is held covers a
        batch like the last one."""
        if self._single is None or self._check_master:
            return 0
        if self._end - self._next >= max(self._need, 1):
            return 0
        return min(max(AHEAD_MIN, AHEAD_BATCHES * self._need), AHEAD_MAX)

    def queue(self, count: int) -> list[Command]:
        """The commands reserving ``count`` ids, for the transaction (the reply of the second
        is the counter after it: ``took``)."""
        key = self._keys.event_ids
        start = secrets.randbelow(1 << EVENT_ID_BITS)  # of a counter that is missing
        return [("SET", key, start, "NX"), ("INCRBY", key, count), ("EXPIRE", key, self._retention)]

    def took(self, last: int, count: int) -> None:
        """The transaction reserved ``count`` ids up to ``last``: held (after the ones held,
        when they follow on)."""
        first = last - count
        if first < self._high:
            self.forget()  # the counter went back (``reserve``): not these
            return
        self._high = last
        if first != self._end:
            self._next = first
        self._end = last

    def on_counter_node(self, call: Callable[[redis.Redis], _T]) -> _T:
        """``call`` with a client of the node holding the id counter."""
        if self._single is not None:
            return call(self._single)
        cluster = self._cluster
        assert cluster is not None
        return cluster.refreshing_after_errors(lambda: call(cluster.node_of(self._keys.event_ids)))

    def _reserve(self, connection: redis.Redis, count: int) -> int:
        start = secrets.randbelow(1 << EVENT_ID_BITS)  # of a counter that is missing
        if self._check_master:
            last = self._script(
                keys=[self._keys.event_ids, self._keys.applied(self._keys.event_ids)],
                args=[count, start, ID_GAP_PER_MASTER, self._retention],
                client=connection,
            )
            self._check_master = False
            self._ops["evalsha"] += 1
            if self._clock is not None:
                self.measure(connection)
            return int(last) - count
        pipe = connection.pipeline(transaction=False)
        pipe.set(self._keys.event_ids, start, nx=True)
        pipe.incrby(self._keys.event_ids, count)
        pipe.expire(self._keys.event_ids, self._retention)
        pipe.time()  # the shared clock, measured with a round trip made anyway
        clock = self._clock
        sent_at = clock.local() if clock is not None else 0.0
        _, last, _, redis_time = pipe.execute()
        if clock is not None:
            clock.observe(redis_time, sent_at, clock.local())
        self._ops.update({"set": 1, "incrby": 1, "expire": 1, "time": 1})
        return int(last) - count

    def measure(self, connection: redis.Redis) -> None:
        """Measure the shared clock against Redis's TIME (one round trip)."""
        clock = self._clock
        assert clock is not None
        sent_at = clock.local()
        redis_time = connection.time()
        clock.observe(redis_time, sent_at, clock.local())
        self._ops["time"] += 1
