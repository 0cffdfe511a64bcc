"""The client's batch writer: event ids, and each batch in one MULTI/EXEC round trip."""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass

import redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from client._batch import Batch
from client._instruments import Drained
from protocol import scripts
from protocol.clock import SharedClock
from protocol.connection import ScriptCalls, register
from protocol.event_ids import EVENT_ID_BITS
from protocol.fields import (
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
from protocol.keys import Keys


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
        connection: redis.Redis,
        keys: Keys,
        window_ttl: int,
        retention: int,
        writer_id: str = "",
        max_series: int = 1000,
        gauge_ttl: int = 30,
        clock: SharedClock | None = None,
        writer_label: str = "",
    ):
        """``clock``: measured against Redis's TIME with each id reservation, and its offset
        written (under ``writer_label``) with each batch; None: the process's clock is the
        shared one (tests inject one)."""
        self._redis = connection
        self._keys = keys
        self._window_ttl = window_ttl
        self._retention = retention
        self._writer_id = writer_id
        self._max_series = max_series
        self._gauge_ttl = gauge_ttl
        self._clock = clock
        self._writer_label = writer_label
        self._instruments = register(connection, scripts.INSTRUMENTS)
        self._unreported_ops: Counter[str] = Counter()

    def reserve_event_ids(self, count: int) -> int:
        """The first of ``count`` event ids no other writer of the namespace gets (one round
        trip; raises redis.RedisError). A missing counter (new or emptied Redis) starts at a
        random id, so a batch reserved before Redis was emptied and written after it is
        unlikely to reuse ids written since."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.event_ids, secrets.randbelow(1 << EVENT_ID_BITS), nx=True)
        pipe.incrby(self._keys.event_ids, count)
        pipe.expire(self._keys.event_ids, self._retention)
        pipe.time()  # the shared clock, measured with a round trip made anyway
        clock = self._clock
        sent_at = clock.local() if clock is not None else 0.0
        _, last, _, redis_time = pipe.execute()
        if clock is not None:
            clock.observe(redis_time, sent_at, clock.local())
        self._unreported_ops.update({"set": 1, "incrby": 1, "expire": 1, "time": 1})
        return int(last) - count

    def write(self, batch: Batch) -> WriteReport:
        """Apply the batch in one MULTI/EXEC round trip. Raises redis.RedisError when the
        transaction did not run (connection lost: nothing or everything was applied; EXECABORT:
        nothing was), else reports what Redis refused of it (Redis runs every other command)."""
        keys = self._keys
        ops: Counter[str] = Counter()
        pipe = self._redis.pipeline(transaction=True)
        windows: dict[int, int] = {}  # reply index of a window ZADD -> its events
        last_seen: dict[str, float] = {}
        for provider, pbatch in batch.providers.items():
            window_keys = keys.window_keys(provider)
            for partition, members in pbatch.partitions.items():
                key = window_keys[partition]
                windows[len(pipe)] = len(members) // 2
                pipe.execute_command("ZADD", key, *members)  # type: ignore[no-untyped-call]
                pipe.expire(key, self._window_ttl)
                ops["zadd"] += 1
                ops["expire"] += 1
            totals_key = keys.totals(provider)
            for name, amount in pbatch.totals.items():
                pipe.hincrby(totals_key, name, amount)
                ops["hincrby"] += 1
            pipe.expire(totals_key, self._retention)
            ops["expire"] += 1
            last_seen[provider] = pbatch.last_seen
            if pbatch.exemplars:
                exemplars_key = keys.exemplars(provider)
                pipe.hset(
                    exemplars_key,
                    mapping={
                        exemplar_field(bucket): encode_exemplar(exemplar)
                        for bucket, exemplar in pbatch.exemplars.items()
                    },
                )
                pipe.expire(exemplars_key, self._retention)
                ops.update({"hset": 1, "expire": 1})
        notes = batch.notes
        for provider, count in notes.breaker_rejected.items():
            pipe.hincrby(keys.totals(provider), BREAKER_REJECTED_FIELD, count)
            pipe.expire(keys.totals(provider), self._retention)
            ops["hincrby"] += 1
            ops["expire"] += 1
        if last_seen:
            # Providers here passed admission (the cap); re-adding them restores a registry
            # lost with an emptied Redis. GT only ever moves last-seen times forward.
            pipe.zadd(keys.providers, last_seen, gt=True)
            pipe.expire(keys.providers, self._retention)
            ops["zadd"] += 1
            ops["expire"] += 1
        for cause, count in notes.rejected.items():
            pipe.hincrby(keys.client_stats, rejected_field(cause), count)
            ops["hincrby"] += 1
        for cause, count in notes.dropped.items():
            pipe.hincrby(keys.client_stats, dropped_field(cause), count)
            ops["hincrby"] += 1
        if notes.log_records_dropped:
            pipe.hincrby(keys.client_stats, LOG_RECORDS_DROPPED_FIELD, notes.log_records_dropped)
            ops["hincrby"] += 1
        if self._clock is not None and self._clock.measured:
            value = clock_offset_value(self._clock.offset, self._clock.now())
            pipe.hset(keys.clock_offsets, self._writer_label, value)
            ops["hset"] += 1
        script_calls = ScriptCalls(pipe)
        checks: list[tuple[int, str, str]] = []
        if batch.instruments is not None:
            checks = self._queue_instruments(pipe, script_calls, batch.instruments, ops)
        ops.update(self._unreported_ops)
        for operation, count in ops.items():
            pipe.hincrby(keys.redis_ops, operation, count)
        replies = script_calls.rerun_missing(pipe.execute(raise_on_error=False))
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
        self, pipe: Pipeline, script_calls: ScriptCalls, drained: Drained, ops: Counter[str]
    ) -> list[tuple[int, str, str]]:
        """Queue the backend metrics' writes; returns (reply index, metric, spec JSON) of the
        HGETs that tell whether Redis holds the same spec."""
        keys = self._keys
        checks: list[tuple[int, str, str]] = []
        for spec in drained.specs:
            spec_json = spec.to_json()
            pipe.hsetnx(keys.metric_schema, spec.name, spec_json)
            checks.append((len(pipe), spec.name, spec_json))
            pipe.hget(keys.metric_schema, spec.name)
            ops["hsetnx"] += 1
            ops["hget"] += 1
        if drained.specs:
            pipe.expire(keys.metric_schema, self._retention)
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
        by_metric_exemplars: dict[str, dict[FieldT, EncodableT]] = {}
        for name, sid, bucket, exemplar in drained.exemplars:
            latest = by_metric_exemplars.setdefault(name, {})
            latest[exemplar_field(bucket, sid)] = encode_exemplar(exemplar)
        for name, encoded in by_metric_exemplars.items():
            pipe.hset(keys.metric_exemplars(name), mapping=encoded)
            pipe.expire(keys.metric_exemplars(name), self._retention)
            ops.update({"hset": 1, "expire": 1})  # (a series past the cap shows none)
        for counts, field_name in (
            (drained.dropped, SERIES_DROPPED_FIELD),
            (drained.rejected, VALUES_REJECTED_FIELD),
        ):
            for name, count in counts.items():
                pipe.hincrby(keys.metric_data(name), field_name, count)
                ops["hincrby"] += 1
        if drained.gauges:
            # Times on the shared clock: "latest" must not be won by the fastest host clock.
            offset = self._clock.offset if self._clock is not None else 0.0
            gauge_key = keys.gauge_values(self._writer_id)
            pipe.delete(gauge_key)
            pipe.hset(
                gauge_key,
                mapping={
                    gauge_field(name, sid): gauge_value(value, updated_at + offset)
                    for name, sid, value, updated_at in drained.gauges
                },
            )
            pipe.expire(gauge_key, self._gauge_ttl)
            newest = max(g[3] for g in drained.gauges) + offset
            pipe.zadd(keys.gauge_writers, {self._writer_id: newest})
            pipe.expire(keys.gauge_writers, self._retention)
            ops.update({"del": 1, "hset": 1, "expire": 2, "zadd": 1})
        return checks


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)
