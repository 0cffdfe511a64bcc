"""The client's batch writer: event ids, and each batch in one MULTI/EXEC round trip."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster
from redis.typing import EncodableT, FieldT

from client._batch import Batch
from client._instruments import Drained
from client._sharding import ShardPlan
from client._slots import ClusterWrites, CommandList
from gatewayz_protocol import scripts
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.event_ids import EVENT_ID_BITS
from gatewayz_protocol.fields import (
    BREAKER_REJECTED_FIELD,
    LOG_RECORDS_DROPPED_FIELD,
    SERIES_DROPPED_FIELD,
    VALUES_REJECTED_FIELD,
    clock_offset_value,
    dropped_field,
    encode_exemplar,
    exemplar_field,
    gauge_field,
    gauge_value,
    rejected_field,
)
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.scripts import ScriptCalls, register

ID_GAP_AFTER_FAILURE = 1 << 24
"""Ids skipped by the first reservation after a failed one: more than a failover could lose
(the increments a master acknowledged and did not replicate), 4,096 failovers per id cycle."""


@dataclass(frozen=True)
class WriteReport:
    """What Redis did with a batch it received."""

    refused_events: int = 0
    """Events whose window write Redis refused (the rest of the batch was applied)."""
    errors: tuple[str, ...] = ()
    """Every command error of the transaction (empty: all applied)."""
    conflicts: tuple[str, ...] = ()
    """Metrics whose spec in Redis differs from this process's."""


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
    ):
        """``clock``: measured against Redis's TIME with each id reservation, and its offset
        written (under ``writer_label``) with each batch; None: the process's clock is the
        shared one (tests inject one). ``shards``: providers split over several slots."""
        self._redis = connection
        self._keys = keys
        self._window_ttl = window_ttl
        self._retention = retention
        self._writer_id = writer_id
        self._max_series = max_series
        self._gauge_ttl = gauge_ttl
        self._clock = clock
        self._writer_label = writer_label
        self._shards = shards or ShardPlan()
        self._instruments = register(connection, scripts.INSTRUMENTS)
        self._cluster: ClusterWrites | None = None
        self._single: redis.Redis | None = None
        if isinstance(connection, RedisCluster):
            self._cluster = ClusterWrites(connection, keys, writer_id, retention)
        else:
            self._single = connection
        self._unreported_ops: Counter[str] = Counter()
        self._skip_ids = 0

    def reserve_event_ids(self, count: int) -> int:
        """The first of ``count`` event ids no other writer of the namespace gets (one round
        trip; raises redis.RedisError). A missing counter (new or emptied Redis) starts at a
        random id, so a batch reserved before Redis was emptied and written after it is
        unlikely to reuse ids written since."""
        try:
            if self._single is not None:
                return self._reserve(self._single, count)
            cluster = self._cluster
            assert cluster is not None
            return cluster.refreshing_after_errors(
                lambda: self._reserve(cluster.node_of(self._keys.event_ids), count)
            )
        except BaseException:
            # Redis may come back as a promoted replica that missed the last increments:
            # the next block is taken above them (other writers jump too), so no id repeats.
            self._skip_ids = ID_GAP_AFTER_FAILURE
            raise

    def _reserve(self, connection: redis.Redis, count: int) -> int:
        pipe = connection.pipeline(transaction=False)
        pipe.set(self._keys.event_ids, secrets.randbelow(1 << EVENT_ID_BITS), nx=True)
        pipe.incrby(self._keys.event_ids, count + self._skip_ids)
        pipe.expire(self._keys.event_ids, self._retention)
        pipe.time()  # the shared clock, measured with a round trip made anyway
        clock = self._clock
        sent_at = clock.local() if clock is not None else 0.0
        _, last, _, redis_time = pipe.execute()
        if clock is not None:
            clock.observe(redis_time, sent_at, clock.local())
        self._unreported_ops.update({"set": 1, "incrby": 1, "expire": 1, "time": 1})
        self._skip_ids = 0
        return int(last) - count

    def write(self, batch: Batch) -> WriteReport:
        """Apply the batch in one MULTI/EXEC round trip (on a cluster: one per slot, see
        ``_slots``). Raises redis.RedisError when the transaction did not run (connection lost:
        nothing or everything was applied; EXECABORT: nothing was), else reports what Redis
        refused of it (Redis runs every other command)."""
        keys = self._keys
        ops: Counter[str] = Counter()
        plan = CommandList()
        add = plan.execute_command
        windows: dict[int, int] = {}  # command index of a window ZADD -> its events
        last_seen: list[str | float] = []
        shard_counts: list[str | int] = []
        shards, lineage = self._shards, batch.lineage[0]
        for provider, pbatch in batch.providers.items():
            shard = shards.shard(provider, lineage)
            if shards.count(provider) > 1:
                shard_counts += [shards.count(provider), provider]
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
            if pbatch.exemplars:
                exemplars_key = keys.exemplars(provider, shard)
                fields = [
                    item
                    for bucket, exemplar in pbatch.exemplars.items()
                    for item in (exemplar_field(bucket), encode_exemplar(exemplar))
                ]
                add("HSET", exemplars_key, *fields)
                add("EXPIRE", exemplars_key, self._retention)
                ops.update({"hset": 1, "expire": 1})
        notes = batch.notes
        for provider, count in notes.breaker_rejected.items():
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
        if shard_counts:  # the aggregator sums every shard a writer may have used
            add("ZADD", keys.shards, "GT", *shard_counts)
            add("EXPIRE", keys.shards, self._retention)
            ops["zadd"] += 1
            ops["expire"] += 1
        for cause, count in notes.rejected.items():
            add("HINCRBY", keys.client_stats, rejected_field(cause), count)
            ops["hincrby"] += 1
        for cause, count in notes.dropped.items():
            add("HINCRBY", keys.client_stats, dropped_field(cause), count)
            ops["hincrby"] += 1
        if notes.log_records_dropped:
            add("HINCRBY", keys.client_stats, LOG_RECORDS_DROPPED_FIELD, notes.log_records_dropped)
            ops["hincrby"] += 1
        if self._clock is not None and self._clock.measured:
            value = clock_offset_value(self._clock.offset, self._clock.now())
            add("HSET", keys.clock_offsets, self._writer_label, value)
            ops["hset"] += 1
        script_calls = ScriptCalls(plan)  # type: ignore[arg-type]  # queues like a pipeline
        checks: list[tuple[int, str, str]] = []
        if batch.instruments is not None:
            checks = self._queue_instruments(plan, script_calls, batch.instruments, ops)
        ops.update(self._unreported_ops)
        for operation, count in ops.items():
            add("HINCRBY", keys.redis_ops, operation, count)
        if self._single is not None:
            pipe = self._single.pipeline(transaction=True)
            for command in plan.commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            replies = pipe.execute(raise_on_error=False)
        else:
            assert self._cluster is not None
            replies = self._cluster.write(batch, plan.commands)
        replies = script_calls.rerun_missing(replies)
        self._unreported_ops.clear()
        errors = [reply for reply in replies if isinstance(reply, Exception)]
        return WriteReport(
            refused_events=sum(
                events for index, events in windows.items() if isinstance(replies[index], Exception)
            ),
            errors=tuple(str(error) for error in errors),
            conflicts=tuple(name for index, name, spec in checks if _text(replies[index]) != spec),
        )

    def _queue_instruments(
        self, plan: CommandList, script_calls: ScriptCalls, drained: Drained, ops: Counter[str]
    ) -> list[tuple[int, str, str]]:
        """Queue the backend metrics' writes; returns (command index, metric, spec JSON) of the
        HGETs that tell whether Redis holds the same spec."""
        keys = self._keys
        add = plan.execute_command
        checks: list[tuple[int, str, str]] = []
        for spec in drained.specs:
            spec_json = spec.to_json()
            add("HSETNX", keys.metric_schema, spec.name, spec_json)
            checks.append((len(plan), spec.name, spec_json))
            add("HGET", keys.metric_schema, spec.name)
            ops["hsetnx"] += 1
            ops["hget"] += 1
        if drained.specs:
            add("EXPIRE", keys.metric_schema, self._retention)
            ops["expire"] += 1
        if drained.deltas:
            by_metric: dict[str, list[tuple[str, int, list[tuple[str, int]]]]] = {}
            for spec, sid, updates, fields in drained.deltas:
                by_metric.setdefault(spec.name, []).append((sid, updates, fields))
            script_keys: list[str] = []
            args: list[str | int] = [self._max_series, self._retention]
            for name, series in by_metric.items():
                script_keys += [keys.metric_series(name), keys.metric_data(name)]
                args.append(len(series))
                for sid, updates, fields in series:
                    args += [sid, updates, len(fields)]
                    for field_name, amount in fields:
                        args += [field_name, amount]
            script_calls.queue(self._instruments, script_keys, args)
            ops["evalsha"] += 1
        by_metric_exemplars: dict[str, list[FieldT | EncodableT]] = {}
        for name, sid, bucket, exemplar in drained.exemplars:
            latest = by_metric_exemplars.setdefault(name, [])
            latest += [exemplar_field(bucket, sid), encode_exemplar(exemplar)]
        for name, encoded in by_metric_exemplars.items():
            add("HSET", keys.metric_exemplars(name), *encoded)
            add("EXPIRE", keys.metric_exemplars(name), self._retention)
            ops.update({"hset": 1, "expire": 1})  # (a series past the cap shows none)
        for counts, field_name in (
            (drained.dropped, SERIES_DROPPED_FIELD),
            (drained.rejected, VALUES_REJECTED_FIELD),
        ):
            for name, count in counts.items():
                add("HINCRBY", keys.metric_data(name), field_name, count)
                ops["hincrby"] += 1
        if drained.gauges:
            # Times on the shared clock: "latest" must not be won by the fastest host clock.
            offset = self._clock.offset if self._clock is not None else 0.0
            gauge_key = keys.gauge_values(self._writer_id)
            add("DEL", gauge_key)
            add(
                "HSET",
                gauge_key,
                *(
                    item
                    for name, sid, value, updated_at in drained.gauges
                    for item in (gauge_field(name, sid), gauge_value(value, updated_at + offset))
                ),
            )
            add("EXPIRE", gauge_key, self._gauge_ttl)
            newest = max(g[3] for g in drained.gauges) + offset
            add("ZADD", keys.gauge_writers, newest, self._writer_id)
            add("EXPIRE", keys.gauge_writers, self._retention)
            ops.update({"del": 1, "hset": 1, "expire": 2, "zadd": 1})
        return checks


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)
