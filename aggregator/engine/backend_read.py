"""The read of the workers' own metrics (their Counters, Gauges, Histograms): the commands and
how their replies decode, side by side (``plan.Plan``). Round one: the specs and the processes
with gauges; round two: per metric its series, values and exemplars, and per process its gauge
values. A reply equal to the last read's is not decoded again (``core.reuse.Reuse``).

Both are bounded, since any writer of ``{metrics}`` keys adds to them (a metric named per
model, a fleet recycling workers): at most ``max_families`` metrics, the first by name, and the
``MAX_GAUGE_WRITERS`` processes that wrote gauges last; how many are left out is counted
(``families_over_cap``, ``writers_over_cap``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from aggregator.core.readings import BackendReading, Skips
from aggregator.core.reuse import Reuse
from aggregator.engine.plan import Plan
from aggregator.option_table import MAX_METRIC_FAMILIES
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.specs import spec_of
from gatewayz_transport.raw import as_dict, as_text

DEFAULT_MAX_FAMILIES = MAX_METRIC_FAMILIES.default
MAX_GAUGE_WRITERS = 10_000
"""Processes whose gauges a cycle reads at most, the latest to write them: a fleet's live
workers (hosts x workers) with room to spare; the others wait for the retention to forget
them. 100,000 cost a 0.9 s cycle."""


class BackendRead:
    """``decoded``: what the last backend read decoded; the caller calls its ``finish()`` once
    the reading is made."""

    def __init__(
        self, keys: Keys, decoded: Reuse | None = None, max_families: int = DEFAULT_MAX_FAMILIES
    ) -> None:
        self._keys = keys
        self._max_families = max_families
        self.families_over_cap = 0
        """Declared metrics beyond ``max_families``: neither read nor exported."""
        self.writers_over_cap = 0
        """Processes with gauges beyond ``MAX_GAUGE_WRITERS``: their gauges not read."""
        self._decoded = Reuse() if decoded is None else decoded
        self.skips = Skips(keys)
        self._schema: dict[str, str] = {}
        self._schema_read = object()
        """The schema's decoding, by identity: the same object while its reply is unchanged
        (a gauge hash decodes under the schema read; one reused is so under the same)."""
        self._writers: list[str] = []
        self._series: dict[str, list[str]] = {}
        self._data: dict[str, dict[str, int]] = {}
        self._exemplars: dict[str, dict[str, str]] = {}
        self._gauges: list[dict[str, str]] = []
        self._expired: list[str] = []  # writers whose gauge hash is gone

    def first_round(self, prune_below: float | None) -> Plan:
        """The specs and the processes with gauges; ``prune_below`` (the maintaining reader's):
        first forget the processes whose last gauge write is older."""
        keys = self._keys
        commands: list[tuple[Any, ...]] = [("HGETALL", keys.metric_schema)]
        if prune_below is not None:
            commands.append(("ZREMRANGEBYSCORE", keys.gauge_writers, "-inf", repr(prune_below)))
        commands.append(("ZRANGE", keys.gauge_writers, 0, MAX_GAUGE_WRITERS - 1, "REV"))
        commands.append(("ZCARD", keys.gauge_writers))
        plan = Plan()
        plan.add(commands, self._decode_first)
        return plan

    def _decode_first(self, replies: list[Any]) -> None:
        key, skips = self._keys.metric_schema, self.skips
        self._schema, self._schema_read = self._decoded.decode(
            key, replies[0], skips, lambda raw: (skips.specs(key, as_dict(raw)), object())
        )
        self._writers = [as_text(writer) for writer in replies[-2]]
        self.writers_over_cap = max(0, int(replies[-1]) - len(self._writers))
        self.families_over_cap = max(0, len(self._schema) - self._max_families)

    def second_round(self) -> Plan:
        keys = self._keys
        plan = Plan()
        for name in self._read_names():
            commands = [
                ("SMEMBERS", keys.metric_series(name)),
                ("HGETALL", keys.metric_data(name)),
                ("HGETALL", keys.metric_exemplars(name)),
            ]
            plan.add(commands, partial(self._decode_metric, name))
        gauges = [("HGETALL", keys.gauge_values(writer)) for writer in self._writers]
        plan.add(gauges, self._decode_gauges)
        return plan

    def _read_names(self) -> list[str]:
        """The metrics read: the first ``max_families`` by name."""
        return sorted(self._schema)[: self._max_families]

    def _decode_metric(self, name: str, replies: list[Any]) -> None:
        members, values, latest = replies
        keys, skips, decoded = self._keys, self.skips, self._decoded
        spec = spec_of(self._schema[name])  # one ``read_specs`` kept: never None
        assert spec is not None
        series = keys.metric_series(name)
        self._series[name] = decoded.decode(  # keyed with the spec its members are read under
            (series, spec),
            members,
            skips,
            lambda raw: skips.series(series, [as_text(m) for m in raw], spec),
        )
        key = keys.metric_data(name)
        self._data[name] = decoded.decode(
            key, values, skips, lambda raw: skips.ints(key, as_dict(raw))
        )
        examples = keys.metric_exemplars(name)
        self._exemplars[name] = decoded.decode(
            examples, latest, skips, lambda raw: skips.metric_exemplars(examples, as_dict(raw))
        )

    def _decode_gauges(self, replies: list[Any]) -> None:
        pairs = list(zip(self._writers, replies, strict=True))
        self._gauges = [self._gauge_values(writer, raw) for writer, raw in pairs]
        self._expired = [writer for writer, raw in pairs if not raw]

    def _gauge_values(self, writer: str, raw: Any) -> dict[str, str]:
        key, skips, schema = self._keys.gauge_values(writer), self.skips, self._schema
        return self._decoded.decode(
            (key, self._schema_read),
            raw,
            skips,
            lambda raw: skips.gauges(key, as_dict(raw), schema),
        )

    def reading(self) -> BackendReading:
        """What the rounds read: processes whose gauge hash is gone (expired) are the expired
        writers, to forget; one holding nothing usable is skipped, not forgotten."""
        live = [values for values in self._gauges if values]
        expired = self._expired
        read = {name: self._schema[name] for name in self._read_names()}
        return BackendReading(read, self._series, self._data, live, expired, self._exemplars)
