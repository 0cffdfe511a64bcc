"""The client's batch writer: each batch in one MULTI/EXEC round trip, which also carries the
writer's own commands (``_own_commands``): on one Redis, the reservation of the event ids of the
batches after it and, once a second, a measurement of the shared clock. One round trip per
flush pass."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

from client._acknowledged import AcknowledgedLog
from client._applied import BatchIds, IncrementsMarker, LostReplies
from client._batch import Batch, ProviderBatch
from client._event_ids import EventIds
from client._instruments import Drained
from client._ledger import Notes
from client._metric_writes import MetricWrites, SpecCheck
from client._own_commands import OwnCommands
from client._resend import Resends
from client._sharding import ShardPlan
from client._slots import ClusterWrites, CommandList
from client._transaction import Transactions, pack_transaction
from gatewayz_protocol import scripts
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.fields import (
    BREAKER_REJECTED_FIELD,
    LOG_RECORDS_DROPPED_FIELD,
    dropped_field,
    encode_exemplar,
    exemplar_field,
    rejected_field,
)
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.routing import Command
from gatewayz_transport.scripts import ScriptCalls, register


@dataclass(frozen=True)
class WriteReport:
    """What Redis did with a batch it received."""

    refused_events: int = 0
    """Events whose window write Redis refused (the rest of the batch was applied)."""
    errors: tuple[str, ...] = ()
    """Every command error of the transaction (empty: all applied)."""
    conflicts: tuple[str, ...] = ()
    """Metrics whose spec in Redis differs from this process's."""
    declared: tuple[tuple[str, str | None], ...] = ()
    """Per declaration the batch carried, the spec Redis holds for it (None: not read)."""
    increments_refused: bool = False
    """Redis refused the script call of the batch's counter and histogram increments (an error
    it would give again: they are lost, and counted)."""
    extra_replies: tuple[Any, ...] = ()
    """The replies of the batch's ``extra`` commands, in order (errors as exceptions), when the
    transaction ran."""
    leftover: Drained | None = None
    """The batch's counter and histogram increments, when their script call did nothing because
    Redis did not know the script (a restart, a failover, ``SCRIPT FLUSH``) while the rest of
    the transaction ran: to be written again, alone (the script is loaded first)."""


class RedisWriter:
    """Writes batches for one namespace."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        window_ttl: int,
        retention: int,
        writer_id: str = "",
        max_series: int = 1000,
        gauge_ttl: int = 30,
        clock: SharedClock | None = None,
        writer_label: str = "",
        shards: ShardPlan | None = None,
        now: Callable[[], float] | None = None,
    ):
        """``clock``: measured against Redis's TIME (with id reservations, and on one Redis in
        a batch's transaction once a second), and its skew written (under ``writer_label``)
        with each batch; None: the process's clock is the shared one (tests inject one).
        ``now``: the shared time (by default ``clock``'s, or the system clock's). ``shards``:
        providers split over several slots."""
        self._redis = connection
        self._keys = keys
        self._window_ttl = window_ttl
        self._retention = retention
        self._clock = clock
        self._writer_label = writer_label
        self._shards = shards or ShardPlan()
        instruments = register(connection, scripts.INSTRUMENTS)
        self._metrics = MetricWrites(keys, instruments, retention, max_series, gauge_ttl, writer_id)
        self._cluster: ClusterWrites | None = None
        self._single: redis.Redis | None = None
        self._transactions: Transactions | None = None
        self._lost: LostReplies | None = None
        unreported: Counter[str] = Counter()  # Redis operations, until the next report
        shared_now = now or (clock.now if clock is not None else time.time)
        batch_ids = BatchIds()  # what the markers name (``_applied``)
        self._increments = IncrementsMarker(keys, writer_id, shared_now, batch_ids)
        acked: AcknowledgedLog[list[Command]] = AcknowledgedLog()  # (``_acknowledged``)
        load = self._metrics.script.load
        if isinstance(connection, RedisCluster):
            self._cluster = ClusterWrites(
                connection, keys, writer_id, retention, shared_now, batch_ids, acked, load
            )
            self._resends = Resends(acked, self._cluster.resend_lost)
        else:
            self._single = connection
            tx = self._transactions = Transactions(connection)
            self._lost = LostReplies(
                tx, keys, writer_id, retention, shared_now, unreported, batch_ids, acked
            )
            self._resends = Resends(acked, self._lost.resender(load))
        self._ids = EventIds(connection, keys, retention, clock, self._cluster, unreported)
        self._own = OwnCommands(
            keys, self._ids, clock, writer_label, self._single is not None, unreported
        )
        self._script_missing = False  # Redis forgot the instruments script: load it first

    def reserve_event_ids(self, count: int) -> int:
        """The first of ``count`` event ids no other writer of the namespace gets: from a block
        an earlier transaction reserved ahead, or a reservation's round trip (raises
        redis.RedisError). A missing counter (new or emptied Redis) starts at a random id, so a
        batch reserved before Redis was emptied and written after it is unlikely to reuse ids
        written since."""
        return self._resends.round_trip(lambda: self._ids.reserve(count))

    def _ready(self, batch: Batch) -> None:
        """Before anything of the batch is sent (an error here: nothing was): the instruments
        script loaded again when Redis forgot it; the shared clock measured when the batch
        carries times to move onto it (gauges, exemplars) and it never was."""
        if self._script_missing:
            self._metrics.script.load()
            self._script_missing = False
        drained, clock = batch.instruments, self._clock
        timed = drained is not None and bool(drained.gauges or drained.exemplars)
        if timed and clock is not None and not clock.measured:
            self._ids.on_counter_node(self._ids.measure)

    def write(self, batch: Batch) -> WriteReport:
        """Apply the batch in one MULTI/EXEC round trip (on a cluster: one per slot, see
        ``_slots``). Raises redis.RedisError when the transaction did not run (connection lost:
        nothing or everything was applied; EXECABORT: nothing was), else reports what Redis
        refused of it (Redis runs every other command) and what is left to send again. After a
        failed round trip, the acknowledged transactions a failover lost are sent again first
        (``_acknowledged``)."""
        return self._resends.around(lambda: self._write(batch))

    def _write(self, batch: Batch) -> WriteReport:
        self._ready(batch)
        ops: Counter[str] = Counter()
        plan = CommandList()
        windows = self._queue_providers(plan, batch, ops)
        _queue_notes(plan, self._keys, batch.notes, ops)
        script_calls = ScriptCalls(plan)  # type: ignore[arg-type]  # queues like a pipeline
        checks: list[SpecCheck] = []
        if batch.instruments is not None:
            offset = self._clock.offset if self._clock is not None else 0.0
            marker = self._increments.of(batch)
            checks = self._metrics.queue(plan, script_calls, batch.instruments, offset, ops, marker)
        placed = self._own.queue(plan, batch, ops)
        lost = self._lost
        try:
            send = functools.partial(self._send, batch, plan)
            if lost is None:
                replies = send()
            else:  # (queueing may load the pruning script first: a round trip that may fail)
                assert self._transactions is not None
                fresh = self._transactions.fresh()
                placed.marker = lost.queue(plan, batch, ops, fresh)
                replies = lost.send(batch, len(plan), script_calls.indexes, send)
        except BaseException:
            self._own.failed()
            raise
        self._own.applied(replies, placed, ops)
        if lost is not None:
            lost.applied(replies, placed.marker, plan.commands)
        leftover = None
        missing = script_calls.missing(replies)
        if missing and batch.instruments is not None:
            self._script_missing = True
            leftover = batch.instruments.increments()
            for index in missing:
                replies[index] = None  # not applied yet: the leftover carries it
        return WriteReport(
            increments_refused=any(isinstance(replies[i], Exception) for i in script_calls.indexes),
            refused_events=sum(
                events for index, events in windows.items() if isinstance(replies[index], Exception)
            ),
            errors=placed.errors_but_own(replies),
            conflicts=tuple(
                name
                for index, name, spec in checks
                if _stored(replies[index]) is not None and _text(replies[index]) != spec
            ),
            declared=tuple((name, _stored(replies[index])) for index, name, _ in checks),
            extra_replies=placed.extra_replies(replies),
            leftover=leftover,
        )

    def _queue_providers(
        self, plan: CommandList, batch: Batch, ops: Counter[str]
    ) -> dict[int, int]:
        """Each provider's events (window members, counters, exemplars) and calls its breaker
        turned away, on the batch's shard; then the registry's last-seen times and the shard
        counts. Returns the command index of each window ZADD -> its events (counted as
        dropped when Redis refuses it)."""
        keys, add = self._keys, plan.execute_command
        windows: dict[int, int] = {}
        last_seen: list[str | float] = []
        shards, lineage = self._shards, batch.lineage[0]
        for provider, pbatch in batch.providers.items():
            shard = shards.shard(provider, lineage)
            window_keys = keys.window_keys(provider, shard)
            for partition, members in pbatch.partitions.items():
                key = window_keys[partition]
                windows[len(plan)] = len(members) // 2
                add("ZADD", key, *members)
                add("EXPIRE", key, self._window_ttl)
                ops["zadd"] += 1
                ops["expire"] += 1
            totals_key = keys.totals(provider, shard)
            for name, amount in pbatch.totals.items():
                add("HINCRBY", totals_key, name, amount)
                ops["hincrby"] += 1
            add("EXPIRE", totals_key, self._retention)
            ops["expire"] += 1
            last_seen += [pbatch.last_seen, provider]
            if pbatch.models:
                self._queue_models(plan, provider, pbatch, ops)
            if pbatch.exemplars:
                self._queue_exemplars(plan, keys.exemplars(provider, shard), pbatch, ops)
        for provider, count in batch.notes.breaker_rejected.items():
            totals_key = keys.totals(provider, shards.shard(provider, lineage))
            add("HINCRBY", totals_key, BREAKER_REJECTED_FIELD, count)
            add("EXPIRE", totals_key, self._retention)
            ops["hincrby"] += 1
            ops["expire"] += 1
        if last_seen:
            # Providers here passed admission (the cap); re-adding them restores a registry
            # lost with an emptied Redis. GT only ever moves last-seen times forward.
            add("ZADD", keys.providers, "GT", *last_seen)
            add("EXPIRE", keys.providers, self._retention)
            ops["zadd"] += 1
            ops["expire"] += 1
        _queue_shard_counts(plan, self._keys, self._shards, self._retention, batch, ops)
        return windows

    def _queue_models(
        self, plan: CommandList, provider: str, pbatch: ProviderBatch, ops: Counter[str]
    ) -> None:
        """The model scopes' window members (the same members as the provider's: a retried
        ZADD adds nothing twice) and their last-seen times in the provider's model registry,
        all in the provider's hash tag (``gatewayz_protocol.model_scopes``)."""
        keys, add = self._keys, plan.execute_command
        seen: list[str | float] = []
        for model, windows in pbatch.models.items():
            window_keys = keys.model_window_keys(provider, model)
            for index, members in windows.items():
                add("ZADD", window_keys[index], *members)
                add("EXPIRE", window_keys[index], self._window_ttl)
                ops["zadd"] += 1
                ops["expire"] += 1
            seen += [pbatch.last_seen, model]
        registry = keys.models(provider)
        add("ZADD", registry, "GT", *seen)
        add("EXPIRE", registry, self._retention)
        ops["zadd"] += 1
        ops["expire"] += 1

    def _queue_exemplars(
        self, plan: CommandList, key: str, pbatch: ProviderBatch, ops: Counter[str]
    ) -> None:
        fields = [
            item
            for bucket, exemplar in pbatch.exemplars.items()
            for item in (exemplar_field(bucket), encode_exemplar(exemplar))
        ]
        plan.execute_command("HSET", key, *fields)
        plan.execute_command("EXPIRE", key, self._retention)
        ops.update({"hset": 1, "expire": 1})

    def _send(self, batch: Batch, plan: CommandList) -> list[Any]:
        """The transaction's replies (errors as exceptions). On one Redis: sent raw
        (``_transaction``), the local clock read just before it went and just after its reply
        came (a ``TIME`` in it is placed between)."""
        if self._transactions is not None:
            packed = pack_transaction(plan.commands)
            local = self._clock.local if self._clock is not None else time.monotonic
            sent_at = local()
            replies = self._transactions.run(packed, len(plan))
            self._own.round_trip = (sent_at, local())
            return replies
        assert self._cluster is not None
        return self._cluster.write(batch, plan.commands)


def _queue_shard_counts(
    plan: CommandList,
    keys: Keys,
    shards: ShardPlan,
    retention: int,
    batch: Batch,
    ops: Counter[str],
) -> None:
    """The shard count of each split provider of the batch: the aggregator sums every shard a
    writer may have used."""
    shard_counts: list[str | int] = []
    for provider in batch.providers:
        if (count := shards.count(provider)) > 1:
            shard_counts += [count, provider]
    if shard_counts:
        plan.execute_command("ZADD", keys.shards, "GT", *shard_counts)
        plan.execute_command("EXPIRE", keys.shards, retention)
        ops["zadd"] += 1
        ops["expire"] += 1


def _queue_notes(plan: CommandList, keys: Keys, notes: Notes, ops: Counter[str]) -> None:
    """The process's counts noted since the last batch: rejections, drops, log records
    dropped."""
    add = plan.execute_command
    for cause, count in notes.rejected.items():
        add("HINCRBY", keys.client_stats, rejected_field(cause), count)
        ops["hincrby"] += 1
    for cause, count in notes.dropped.items():
        add("HINCRBY", keys.client_stats, dropped_field(cause), count)
        ops["hincrby"] += 1
    if notes.log_records_dropped:
        add("HINCRBY", keys.client_stats, LOG_RECORDS_DROPPED_FIELD, notes.log_records_dropped)
        ops["hincrby"] += 1


def _stored(reply: object) -> str | None:
    """An HGET's reply as text; None for nothing or an error (the declaration is sent again)."""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return reply if isinstance(reply, str) else None


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)
