"""The read of the workers' own metrics (their Counters, Gauges, Histograms): the commands and
how their replies decode, side by side (``plan.Plan``). Round one: the specs and the processes
with gauges; round two: per metric its series, values and exemplars, and per process its gauge
values."""

from __future__ import annotations

from functools import partial
from typing import Any

from aggregator.core.readings import BackendReading, Skips
from aggregator.engine.plan import Plan
from gatewayz_protocol.keys import Keys
from gatewayz_transport.raw import as_dict, as_text


class BackendRead:
    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self.skips = Skips(keys)
        self._schema: dict[str, str] = {}
        self._writers: list[str] = []
        self._series: dict[str, list[str]] = {}
        self._data: dict[str, dict[str, int]] = {}
        self._exemplars: dict[str, dict[str, str]] = {}
        self._gauges: list[dict[str, str]] = []

    def first_round(self, prune_below: float | None) -> Plan:
        """The specs and the processes with gauges; ``prune_below`` (the maintaining reader's):
        first forget the processes whose last gauge write is older."""
        keys = self._keys
        commands: list[tuple[Any, ...]] = [("HGETALL", keys.metric_schema)]
        if prune_below is not None:
            commands.append(("ZREMRANGEBYSCORE", keys.gauge_writers, "-inf", repr(prune_below)))
        commands.append(("ZRANGE", keys.gauge_writers, 0, -1))
        plan = Plan()
        plan.add(commands, self._decode_first)
        return plan

    def _decode_first(self, replies: list[Any]) -> None:
        self._schema = self.skips.texts(self._keys.metric_schema, as_dict(replies[0]))
        self._writers = [as_text(writer) for writer in replies[-1]]

    def second_round(self) -> Plan:
        keys = self._keys
        plan = Plan()
        for name in sorted(self._schema):
            commands = [
                ("SMEMBERS", keys.metric_series(name)),
                ("HGETALL", keys.metric_data(name)),
                ("HGETALL", keys.metric_exemplars(name)),
            ]
            plan.add(commands, partial(self._decode_metric, name))
        gauges = [("HGETALL", keys.gauge_values(writer)) for writer in self._writers]
        plan.add(gauges, self._decode_gauges)
        return plan

    def _decode_metric(self, name: str, replies: list[Any]) -> None:
        members, values, latest = replies
        self._series[name] = sorted(as_text(member) for member in members)
        keys, skips = self._keys, self.skips
        self._data[name] = skips.ints(keys.metric_data(name), as_dict(values))
        self._exemplars[name] = skips.texts(keys.metric_exemplars(name), as_dict(latest))

    def _decode_gauges(self, replies: list[Any]) -> None:
        keys = self._keys
        self._gauges = [
            self.skips.texts(keys.gauge_values(writer), as_dict(raw))
            for writer, raw in zip(self._writers, replies, strict=True)
        ]

    def reading(self) -> BackendReading:
        """What the rounds read: processes without gauge values left (their hash expired) are
        the expired writers, to forget."""
        live = [values for values in self._gauges if values]
        expired = [w for w, values in zip(self._writers, self._gauges, strict=True) if not values]
        return BackendReading(
            self._schema, self._series, self._data, live, expired, self._exemplars
        )
