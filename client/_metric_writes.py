"""The backend metrics' part of a batch: the commands that write what the instrument store drained
(declarations, counter, histogram and summary increments, exemplars, the updates dropped,
rejected or refused and the label values truncated, gauge and info values), queued into the
batch's transaction after the provider events."""

from __future__ import annotations

from collections import Counter

from redis.typing import EncodableT, FieldT

from client._instruments import Drained
from client._slots import CommandList
from gatewayz_protocol.fields import (
    CONFLICTS_FIELD,
    GAUGE_CAP_FIELD,
    SERIES_DROPPED_FIELD,
    TRUNCATED_FIELD,
    VALUES_REJECTED_FIELD,
    encode_exemplar,
    exemplar_field,
    gauge_field,
    gauge_value,
)
from gatewayz_protocol.keys import Keys
from gatewayz_transport.scripts import FlaggedScript, ScriptCalls

SpecCheck = tuple[int, str, str]
"""(index of an HGET's reply, metric name, the spec JSON this process declared)"""


class MetricWrites:
    """Queues one batch's backend metric writes for one writer (``RedisWriter``)."""

    def __init__(
        self,
        keys: Keys,
        script: FlaggedScript,
        retention: int,
        max_series: int,
        gauge_ttl: int,
        writer_id: str,
    ) -> None:
        """``script``: the registered instruments script (the series cap and the increments,
        applied in Redis); ``gauge_ttl``: how long this writer's gauge values outlive it."""
        self._keys = keys
        self.script = script
        self._retention = retention
        self._max_series = max_series
        self._gauge_ttl = gauge_ttl
        self._writer_id = writer_id

    def queue(
        self,
        plan: CommandList,
        script_calls: ScriptCalls,
        drained: Drained,
        offset: float,
        ops: Counter[str],
        marker: tuple[str, str, str] | None = None,
    ) -> list[SpecCheck]:
        """Queue ``drained``'s writes (gauge and exemplar times moved by ``offset`` onto the
        shared clock), counting each Redis operation in ``ops``; returns the HGETs that tell
        whether Redis holds the same spec as this process. ``marker``: (applied hash, field,
        value) the increments' script call sets once it applied them (``client._applied``)."""
        checks = self._queue_specs(plan, drained, ops)
        if drained.deltas:
            self._queue_increments(script_calls, drained, ops, marker)
        self._queue_exemplars_and_counts(plan, drained, offset, ops)
        if drained.gauges:
            self._queue_gauges(plan, drained, offset, ops)
        return checks

    def _queue_specs(
        self, plan: CommandList, drained: Drained, ops: Counter[str]
    ) -> list[SpecCheck]:
        """Each declaration the batch carries, unless one is there already (the first one
        wins), then read back: the instrument store writes a metric's values once Redis holds a
        compatible declaration (``_declarations``)."""
        keys, add = self._keys, plan.execute_command
        checks: list[SpecCheck] = []
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
        return checks

    def _queue_increments(
        self,
        script_calls: ScriptCalls,
        drained: Drained,
        ops: Counter[str],
        marker: tuple[str, str, str] | None,
    ) -> None:
        """Every counter and histogram increment in one script call: it admits each series up
        to the cap (``max_series``) and applies the increments of those it admitted."""
        by_metric: dict[str, list[tuple[str, int, list[tuple[str, int]]]]] = {}
        for spec, sid, updates, fields in drained.deltas:
            by_metric.setdefault(spec.name, []).append((sid, updates, fields))
        script_keys: list[str] = []
        args: list[str | int] = [self._max_series, self._retention]
        for name, series in by_metric.items():
            script_keys += [self._keys.metric_series(name), self._keys.metric_data(name)]
            args.append(len(series))
            for sid, updates, fields in series:
                args += [sid, updates, len(fields)]
                for field_name, amount in fields:
                    args += [field_name, amount]
        if marker is not None:
            applied, field_name, value = marker
            script_keys.append(applied)
            args += [field_name, value]
        script_calls.queue(self.script, script_keys, args)
        ops["evalsha"] += 1

    def _queue_exemplars_and_counts(
        self, plan: CommandList, drained: Drained, offset: float, ops: Counter[str]
    ) -> None:
        """The latest exemplar per bucket of each series (a series past the cap shows none),
        and per metric the updates dropped past the cap, rejected as invalid or refused (a
        conflicting declaration), and the label values truncated."""
        keys, add = self._keys, plan.execute_command
        by_metric: dict[str, list[FieldT | EncodableT]] = {}
        for name, sid, bucket, (labels, value, at) in drained.exemplars:
            latest = by_metric.setdefault(name, [])
            latest += [exemplar_field(bucket, sid), encode_exemplar((labels, value, at + offset))]
        for name, encoded in by_metric.items():
            add("HSET", keys.metric_exemplars(name), *encoded)
            add("EXPIRE", keys.metric_exemplars(name), self._retention)
            ops.update({"hset": 1, "expire": 1})
        counted: set[str] = set()
        for counts, field_name in (
            (drained.dropped, SERIES_DROPPED_FIELD),
            (drained.rejected, VALUES_REJECTED_FIELD),
            (drained.truncated, TRUNCATED_FIELD),
            (drained.conflicts, CONFLICTS_FIELD),
        ):
            for name, count in counts.items():
                add("HINCRBY", keys.metric_data(name), field_name, count)
                ops["hincrby"] += 1
                counted.add(name)
        for name in sorted(counted):  # a metric counted but never incremented expires too
            add("EXPIRE", keys.metric_data(name), self._retention)
            # and its admitted series with it: a set expiring under a data hash kept alive by
            # these counts admitted another cap's worth into it, every retention period
            add("EXPIRE", keys.metric_series(name), self._retention)
            ops["expire"] += 2

    def _queue_gauges(
        self, plan: CommandList, drained: Drained, offset: float, ops: Counter[str]
    ) -> None:
        """This writer's gauge values (and its series cap, which the aggregator applies across
        writers), replaced whole and expiring ``gauge_ttl`` after this write, and the writer's
        newest update time among the gauge writers. Times are on the
        shared clock: "latest" must not be won by the fastest host clock."""
        keys, add = self._keys, plan.execute_command
        gauge_key = keys.gauge_values(self._writer_id)
        add("DEL", gauge_key)
        add(
            "HSET",
            gauge_key,
            GAUGE_CAP_FIELD,
            self._max_series,
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
