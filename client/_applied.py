"""Markers of what a writer applied, so a batch whose transaction's reply was lost is never
applied twice.

Each transaction a writer sends also records, in an ``applied`` hash (``Keys.applied``), which
events (or which batch without events) it applied: on a Redis Cluster one marker per slot
(``_slots``), on one Redis or a Sentinel-managed one a marker in ``{metrics}``'s
(``LostReplies``). The marker is written by the transaction itself, so it holds exactly when the
batch does: a restart from the append-only file keeps both or neither, a replica promoted by a
failover has both or neither. When the connection dies after a transaction was sent, its
outcome is unknown; before sending that batch again the writer reads its marker, and a batch it
names is not sent again.

One part of a transaction may not have run though it did: the backend metric increments' script
call, when Redis had forgotten the script (a restart, a failover, ``SCRIPT FLUSH``), did nothing
while the rest ran. So that call sets a second marker itself (``increments_field``) once it
applied them; a transaction that ran without it has its increments sent again, alone, as when
the reply said NOSCRIPT (torture seed 171003: without it, a cut reply after a restart lost them).

Markers carry the time they were written; writers forget the old ones (writers gone for good)
with a transaction they send anyway.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis

from client._acknowledged import IN_ORDER, AcknowledgedLog, kept_commands, marker_text
from client._batch import Batch
from client._resend import resend_on_one_redis
from client._transaction import Transactions
from gatewayz_protocol import scripts
from gatewayz_protocol.keys import Keys
from gatewayz_transport.routing import Command
from gatewayz_transport.scripts import may_run_again, register

MARKER_LIFETIME_SECONDS: Final = 3600.0
"""A marker older than this is forgotten (``PRUNE_MARKERS``): a marker is read only by a retry
whose transaction's reply was lost, seconds later as a rule. A writer that could not ask Redis
again for an hour may apply that batch twice."""
PRUNE_EVERY_SECONDS: Final = MARKER_LIFETIME_SECONDS / 4
"""How often a writer prunes an applied hash, with a transaction it sends there anyway."""


def increments_field(writer_id: str) -> str:
    """The applied hash's field the increments' script call sets (beside the writer's marker
    in ``{metrics}``'s: no writer id holds ``+``)."""
    return f"{writer_id}+i"


def covers(applied: tuple[int, int] | None, ids: tuple[int, int]) -> bool:
    """Whether a marker's ids hold ``ids`` (a half of a batch whose whole it names)."""
    return applied is not None and applied[0] <= ids[0] and ids[1] <= applied[1]


def encode_marker(ids: tuple[int, int], written_at: float) -> str:
    """``r<first id>:<count>:<unix time>``: what a writer applied, and when."""
    return f"r{ids[0]}:{ids[1] - ids[0]}:{int(written_at)}"


def decode_marker(raw: Any) -> tuple[int, int] | None:
    """The ids a marker names (with or without its time: older clients wrote none)."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        first, count = text[1:].split(":")[:2]
        return int(first), int(first) + int(count)
    except ValueError:
        return None


class BatchIds:
    """The ids a marker names for a batch: its events' (``[first, end)``); for a batch without
    events (backend metric values, a leftover sent again) a number of its own, below every
    event id, that stays the same while that batch is retried."""

    def __init__(self) -> None:
        self._last: Batch | None = None
        self._eventless = 0

    def of(self, batch: Batch) -> tuple[int, int]:
        new = batch is not self._last
        self._last = batch
        if batch.events:
            return batch.first_id, batch.first_id + batch.events
        if new:
            self._eventless += 1
        return -self._eventless - 1, -self._eventless


class IncrementsMarker:
    """What a batch's increments' script call sets once it applied them (``increments_field``
    in ``{metrics}``'s applied hash), read after a lost reply on one Redis as on a cluster. The
    same for every attempt at a batch and for the half of a split batch that carries them (the
    whole batch's ids and first time): a cluster recognises a call that did nothing in an
    earlier attempt by its arguments."""

    def __init__(
        self, keys: Keys, writer_id: str, now: Callable[[], float], batch_ids: BatchIds
    ) -> None:
        self._key = keys.applied(keys.metric_schema)
        self._field = increments_field(writer_id)
        self._now = now
        self._ids = batch_ids
        self._named: tuple[tuple[int, int], str] | None = None

    def of(self, batch: Batch) -> tuple[str, str, str]:
        """(applied hash, field, value) for ``batch``'s increments' call."""
        ids = batch.lineage if batch.events else self._ids.of(batch)
        if self._named is None or self._named[0] != ids:
            self._named = (ids, encode_marker(ids, self._now()))
        return self._key, self._field, self._named[1]


class MarkerPruning:
    """When a writer forgets the old markers of an applied hash (``PRUNE_MARKERS``, with a
    transaction it sends there anyway), one policy for one Redis and a cluster's slots alike:
    each hash at most every ``PRUNE_EVERY_SECONDS``; the script loaded before the first pruning
    (a call inside a transaction goes by SHA); a pruning answered by a node that forgot it (a
    restart, a failover, ``SCRIPT FLUSH``) has it loaded again and that hash pruned with the
    next transaction."""

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        now: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``now``: the shared clock, the time markers carry; ``monotonic``: when to prune."""
        self._script = register(client, scripts.PRUNE_MARKERS)
        self._loaded = False
        self._now = now
        self.monotonic = monotonic
        self._pruned: dict[str, float] = {}  # applied hash -> when this writer last pruned it

    def due(self, applied: str) -> list[tuple[Any, ...]]:
        """The call that prunes ``applied`` with this transaction; none when it is not due.
        Loads the script first when needed (raises redis.RedisError when that fails)."""
        now = self.monotonic()
        if now - self._pruned.get(applied, -math.inf) < PRUNE_EVERY_SECONDS:
            return []
        if not self._loaded:
            self._script.load()  # on a cluster, on every master
            self._loaded = True
        self._pruned[applied] = now
        cutoff = int(self._now() - MARKER_LIFETIME_SECONDS)
        return [("EVALSHA", self._script.sha, 1, applied, cutoff)]

    def answered(self, applied: str, reply: Any) -> None:
        """The reply of ``applied``'s pruning call, in a transaction that ran."""
        if isinstance(reply, Exception) and may_run_again(reply):
            self._loaded = False
            self._pruned.pop(applied, None)


class LostReplies:
    """On one Redis (or a Sentinel-managed one): each transaction carries this writer's marker
    in ``{metrics}``'s applied hash; a batch whose last transaction's outcome is unknown is sent
    again only if the marker does not name it (its markers read first, only then)."""

    def __init__(
        self,
        transactions: Transactions,
        keys: Keys,
        writer_id: str,
        retention: int,
        now: Callable[[], float],
        unreported: Counter[str],
        batch_ids: BatchIds,
        acked: AcknowledgedLog[list[Command]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``now``: the shared clock, the time markers carry; ``unreported``: the writer's count
        of Redis operations not reported yet (the markers' reads add to it); ``batch_ids``: the
        writer's (the increments' marker names the same ids); ``acked``: where each transaction
        sent is kept until no failover can lose it."""
        self._transactions = transactions
        self._key = keys.applied(keys.metric_schema)
        self._writer_id = writer_id
        self._retention = retention
        self._now = now
        self._unreported = unreported
        self._ids = batch_ids
        self._unknown: Batch | None = None
        self._acked = acked
        self._read_at: int | None = None  # where the last transaction read the marker first
        self._ran_marker: str | None = None  # what the batch found to have run wrote: not sent
        self.pruning = MarkerPruning(transactions.client, now, monotonic)

    def queue(self, plan: Any, batch: Batch, ops: Counter[str], fresh: bool) -> range:
        """The marker (and, when due, the hash's TTL and the pruning of old markers) after the
        batch's commands in ``plan``; returns where they sit (their replies are the writer's
        own). The TTL is set with the first transaction and every ``PRUNE_EVERY_SECONDS``
        (each increments' call sets it too), not with every one. ``fresh``: the transaction
        goes on a connection the last did not, maybe to another server: the marker there is
        read first (``_acknowledged``; on one connection, a server that changed fails it)."""
        start = len(plan)
        add = plan.execute_command
        self._read_at = start if fresh else None
        if fresh:
            add("HGET", self._key, self._writer_id)
            ops["hget"] += 1
        add("HSET", self._key, self._writer_id, encode_marker(self._ids.of(batch), self._now()))
        ops["hset"] += 1
        for command in self.pruning.due(self._key):
            add("EXPIRE", self._key, self._retention)
            add(*command)
            ops.update({"expire": 1, "evalsha": 1})
        return range(start, len(plan))

    def resender(self, load_scripts: Callable[[], Any]) -> Callable[[], None]:
        """What sends again the transactions a failover lost (``_resend``), on the writer's
        transactions, the scripts loaded first."""
        marker = (self._key, self._writer_id)
        return functools.partial(
            resend_on_one_redis, self._transactions, self._acked, marker, load_scripts
        )

    def applied(self, replies: list[Any], placed: range, commands: list[Command]) -> None:
        """The transaction (``commands``) ran: no outcome is unknown, the pruning (if it had
        one) is answered, and a transaction sent is kept until no failover can lose it, with
        the marker it wrote and the one it found (``_acknowledged``)."""
        self._unknown = None
        read_at = self._read_at
        written_at = placed.start if read_at is None else read_at + 1
        if placed.stop - written_at > 2:
            self.pruning.answered(self._key, replies[written_at + 2])
        ran, self._ran_marker = self._ran_marker, None
        previous = IN_ORDER if read_at is None else replies[read_at]
        if ran is not None:  # found to have run, not sent: kept with the marker it wrote then
            commands = list(commands)
            commands[written_at] = (*commands[written_at][:3], ran)
            previous = IN_ORDER
        kept = kept_commands(commands, replies)
        marker, size = commands[written_at][3], sum(map(len, kept))
        self._acked.acknowledged(0, marker, kept, previous, size)

    def send(
        self,
        batch: Batch,
        length: int,
        script_calls: Sequence[int],
        send: Callable[[], list[Any]],
    ) -> list[Any]:
        """The replies of ``batch``'s transaction (``length`` commands, the increments' script
        calls at ``script_calls``): sent (``send``) unless it is the one whose reply was lost
        and its marker says it ran; then its replies are unknown (None), but for a script call
        that did nothing (answered NOSCRIPT: sent again, alone, by the flush pass)."""
        ran = self.ran_before(batch)
        if ran is None:
            try:
                return send()
            except redis.ResponseError:
                raise  # Redis refused it: nothing of it ran
            except BaseException:
                self._unknown = batch  # sent, maybe in part, and no reply came: it may have run
                raise
        replies: list[Any] = [None] * length
        if not ran.increments:
            for index in script_calls:
                replies[index] = redis.exceptions.NoScriptError("NOSCRIPT (a lost reply's)")
        return replies

    def ran_before(self, batch: Batch) -> Ran | None:
        """When ``batch`` is the one whose outcome was unknown and its marker says it ran:
        what of it ran; else None (send it). Reads the markers: raises redis.RedisError while
        Redis cannot answer."""
        if batch is not self._unknown:
            return None
        # on the transactions' connection: the server they go to, which the pool may not name
        marker, increments = self._transactions.reads(
            [
                ("HGET", self._key, self._writer_id),
                ("HGET", self._key, increments_field(self._writer_id)),
            ]
        )
        self._unreported["hget"] += 2
        self._unknown = None  # known now: it ran, or it is sent
        ids = self._ids.of(batch)
        if decode_marker(marker) != ids:
            return None
        self._ran_marker = marker_text(marker)
        # (the increments' marker names the whole batch a half came from: ``RedisWriter``)
        return Ran(increments=covers(decode_marker(increments), ids))


@dataclass(frozen=True)
class Ran:
    """A transaction whose reply was lost, found to have run."""

    increments: bool
    """Its increments' script call (if it had one) applied them: Redis knew the script."""
