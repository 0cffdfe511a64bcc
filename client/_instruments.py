"""The instrument store: every backend metric series of one process (Counters, Gauges,
Histograms), pre-aggregated in memory and drained by the flusher into each batch.

Values are kept exactly: a counter or a histogram sum is an integer part plus an integer count of
nano-units, so adding 0.1 a million times gives exactly 100000.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter as _Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gatewayz_protocol.fields import Exemplar, bucket_field, int_field, nano_field, split_amount
from gatewayz_protocol.specs import MetricSpec, series_id


@dataclass
class Series:
    """One label set's pending deltas (counters, histograms) or current value (gauges)."""

    spec: MetricSpec
    labelvalues: tuple[str, ...]
    sid: str
    ints: int = 0
    nanos: int = 0
    buckets: list[int] = field(default_factory=list)  # histogram: per bucket, then +Inf
    value: float = 0.0  # gauge
    updated_at: float = 0.0  # gauge
    updates: int = 0  # counter/histogram updates since the last drain
    dirty: bool = False
    exemplars: dict[int, Exemplar] = field(default_factory=dict)  # histogram bucket -> latest


class InstrumentStore:
    """Every declared metric and series of one process; the flusher drains it."""

    def __init__(
        self,
        max_series_per_metric: int,
        clock: Callable[[], float] = time.time,
        on_update: Callable[[], None] = lambda: None,
    ):
        self.lock = threading.Lock()
        self.max_series = max_series_per_metric
        self.clock = clock  # the client's: times are moved onto the shared clock when written
        self.on_update = on_update  # starts the flusher; called outside the lock
        self.version = 0  # counts updates: flush() waits for the drained version to reach it
        self.specs: dict[str, MetricSpec] = {}
        self.series: dict[str, dict[tuple[str, ...], Series]] = {}
        self.dirty: list[Series] = []
        self.dropped: _Tally[str] = _Tally()
        self.rejected: _Tally[str] = _Tally()
        self.unwritten_specs: list[MetricSpec] = []

    def declare(self, spec: MetricSpec) -> MetricSpec:
        with self.lock:
            existing = self.specs.get(spec.name)
            if existing is not None:
                if existing != spec:
                    raise ValueError(
                        f"metric {spec.name!r} already declared differently: {existing} vs {spec}"
                    )
                return existing
            self.specs[spec.name] = spec
            self.series[spec.name] = {}
            self.unwritten_specs.append(spec)
            return spec

    def get_series(self, spec: MetricSpec, labelvalues: tuple[str, ...]) -> Series | None:
        """The series for these label values, or None past the per-metric cap."""
        with self.lock:
            table = self.series[spec.name]
            found = table.get(labelvalues)
            if found is None:
                if len(table) >= self.max_series:
                    return None
                found = Series(spec, labelvalues, series_id(labelvalues))
                if spec.kind == "histogram":
                    found.buckets = [0] * (len(spec.buckets) + 1)
                table[labelvalues] = found
            return found

    def reset_after_fork(self) -> None:
        """A forked child keeps every declaration but none of its parent's pending values (the
        parent ships those) and writes its specs again (the parent may never have)."""
        self.lock = threading.Lock()
        self.dirty = []
        for table in self.series.values():
            for series in table.values():
                series.ints = series.nanos = series.updates = 0
                series.buckets = [0] * len(series.buckets)
                series.value = series.updated_at = 0.0
                series.dirty = False
        self.dropped, self.rejected = _Tally(), _Tally()
        self.unwritten_specs = list(self.specs.values())
        self.version = 0

    def _mark(self, series: Series) -> None:
        self.version += 1
        if not series.dirty:
            series.dirty = True
            self.dirty.append(series)

    def add(self, series: Series, amount: float) -> None:
        with self.lock:
            self._add(series, amount)
        self.on_update()

    def observe(self, series: Series, value: float, exemplar: dict[str, str] | None = None) -> None:
        with self.lock:
            self._observe(series, value, exemplar)
        self.on_update()

    def update(
        self,
        adds: Sequence[tuple[Series, float]],
        observes: Sequence[tuple[Series, float, dict[str, str] | None]] = (),
    ) -> None:
        """Counter increments and histogram observations under one lock, with one
        ``on_update``: what one request or one model call books, as ``add()`` and ``observe()``
        one by one would (values already checked by the caller)."""
        with self.lock:
            for series, amount in adds:
                self._add(series, amount)
            for series, value, labels in observes:
                self._observe(series, value, labels)
        self.on_update()

    def _add(self, series: Series, amount: float) -> None:
        """Under the lock."""
        ints, nanos = split_amount(amount)
        series.ints += ints
        series.nanos += nanos
        series.updates += 1
        self._mark(series)

    def _observe(self, series: Series, value: float, exemplar: dict[str, str] | None) -> None:
        """Under the lock."""
        index = bisect_left(series.spec.buckets, value)  # "le": the first bound >= value
        if exemplar is not None:
            series.exemplars[index] = (exemplar, value, self.clock())
        series.buckets[index] += 1
        ints, nanos = split_amount(value)
        series.ints += ints
        series.nanos += nanos
        series.updates += 1
        self._mark(series)

    def set_gauge(self, series: Series, value: float | None, delta: float = 0.0) -> None:
        with self.lock:
            series.value = (series.value + delta) if value is None else value
            series.updated_at = self.clock()
            self._mark(series)
        self.on_update()

    def count_drop(self, name: str) -> None:
        with self.lock:
            self.dropped[name] += 1
            self.version += 1
        self.on_update()

    def count_reject(self, name: str) -> None:
        with self.lock:
            self.rejected[name] += 1
            self.version += 1
        self.on_update()

    @property
    def has_gauges(self) -> bool:
        """Whether a gauge holds a value (its hash in Redis needs its TTL refreshed)."""
        with self.lock:
            return any(
                s.spec.kind == "gauge" and s.updated_at
                for table in self.series.values()
                for s in table.values()
            )

    def drain(self, include_all_gauges: bool) -> Drained:
        """Take the pending counter/histogram deltas (zeroing them) and the gauge values to
        write: the changed ones, or all of them when ``include_all_gauges`` (a TTL refresh)."""
        with self.lock:
            deltas: list[tuple[MetricSpec, str, int, list[tuple[str, int]]]] = []
            exemplars: list[tuple[str, str, int, Exemplar]] = []
            gauge_changed = False
            for s in self.dirty:
                s.dirty = False
                if s.spec.kind == "gauge":
                    gauge_changed = True
                    continue
                fields = [(int_field(s.sid), s.ints), (nano_field(s.sid), s.nanos)]
                fields += [(bucket_field(i, s.sid), c) for i, c in enumerate(s.buckets) if c]
                deltas.append((s.spec, s.sid, s.updates, [(f, v) for f, v in fields if v]))
                exemplars += [(s.spec.name, s.sid, b, e) for b, e in s.exemplars.items()]
                s.exemplars = {}
                s.ints = s.nanos = s.updates = 0
                s.buckets = [0] * len(s.buckets)
            self.dirty = []
            # A process writes all its gauge values at once (one hash that expires as a whole),
            # when one changed or when their TTL needs refreshing.
            gauges = [
                (s.spec.name, s.sid, s.value, s.updated_at)
                for table in self.series.values()
                for s in table.values()
                if s.spec.kind == "gauge" and s.updated_at
            ]
            if not (gauge_changed or include_all_gauges):
                gauges = []
            specs, self.unwritten_specs = self.unwritten_specs, []
            dropped, self.dropped = dict(self.dropped), _Tally()
            rejected, self.rejected = dict(self.rejected), _Tally()
            version = self.version
        return Drained(deltas, gauges, specs, dropped, rejected, version, exemplars)


@dataclass(frozen=True)
class Drained:
    deltas: list[tuple[MetricSpec, str, int, list[tuple[str, int]]]]
    """(spec, series id, updates, [(hash field, increment)])"""
    gauges: list[tuple[str, str, float, float]]  # (metric, series id, value, updated_at)
    specs: list[MetricSpec]
    dropped: dict[str, int]
    rejected: dict[str, int]
    version: int = 0
    exemplars: list[tuple[str, str, int, Exemplar]] = field(default_factory=list)
    """(metric, series id, bucket, exemplar): the latest per bucket since the last drain"""

    @property
    def empty(self) -> bool:
        return not (self.deltas or self.gauges or self.specs or self.dropped or self.rejected)

    @property
    def updates(self) -> int:
        """Counter and histogram updates the deltas add up (what is lost if they are)."""
        return sum(updates for _, _, updates, _ in self.deltas)

    def increments(self) -> Drained:
        """Only the counter and histogram increments, of the same version: what is sent again
        when their script call did nothing (the rest of the batch was applied)."""
        return Drained(self.deltas, [], [], {}, {}, self.version)
