"""Counter, Gauge and Histogram with labels, pre-aggregated in memory and flushed with the event
batches, so the aggregator serves every worker's metrics from one endpoint.

Declared once per process through ``MetricsClient.counter()/gauge()/histogram()``; a
redeclaration must match (name, type, help, label names, buckets, combine mode) or raises
ValueError.
Values are kept exactly: a counter or a histogram sum is an integer part plus an integer count of
nano-units, so adding 0.1 a million times gives exactly 100000. Updates never raise: an invalid
value (negative counter increment, NaN, inf) is rejected and counted.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter as _Tally
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

NANO: int = 1_000_000_000
COMBINE_MODES = ("sum", "max", "min", "latest")
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is; the same everywhere it is declared."""

    name: str
    kind: str  # counter, gauge, histogram
    help: str
    labelnames: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    combine: str = ""  # gauges only: sum, max, min, latest

    def __post_init__(self) -> None:
        if not _METRIC_NAME.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")
        if self.kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"{self.name}: unknown metric type {self.kind!r}")
        for label in self.labelnames:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r} for {self.name}")
        if len(set(self.labelnames)) != len(self.labelnames):
            raise ValueError(f"duplicate label names for {self.name}")
        if self.kind == "histogram":
            if not self.buckets or list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError(f"{self.name}: buckets must be increasing and non-empty")
            if not all(math.isfinite(b) for b in self.buckets):
                raise ValueError(f"{self.name}: buckets must be finite (+Inf is implicit)")
        if self.kind == "gauge" and self.combine not in COMBINE_MODES:
            raise ValueError(f"{self.name}: combine must be one of {COMBINE_MODES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MetricSpec:
        data = json.loads(text)
        return cls(
            name=data["name"],
            kind=data["kind"],
            help=data["help"],
            labelnames=tuple(data["labelnames"]),
            buckets=tuple(data["buckets"]),
            combine=data["combine"],
        )


def series_id(labelvalues: Sequence[str]) -> str:
    """A series' label values as one hash-field-safe string (JSON array)."""
    return json.dumps(list(labelvalues), ensure_ascii=False, separators=(",", ":"))


def split_amount(amount: float) -> tuple[int, int]:
    """(integer part, nano-units) of a finite non-negative number."""
    if type(amount) is int:
        return amount, 0
    whole = math.floor(amount)
    return int(whole), round((amount - whole) * NANO)


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
        self.clock = clock
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
        ints, nanos = split_amount(amount)
        with self.lock:
            series.ints += ints
            series.nanos += nanos
            series.updates += 1
            self._mark(series)
        self.on_update()

    def observe(self, series: Series, value: float) -> None:
        bounds = series.spec.buckets
        index = len(bounds)
        for i, bound in enumerate(bounds):
            if value <= bound:
                index = i
                break
        ints, nanos = split_amount(value)
        with self.lock:
            series.buckets[index] += 1
            series.ints += ints
            series.nanos += nanos
            series.updates += 1
            self._mark(series)
        self.on_update()

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

    def drain(self, include_all_gauges: bool) -> Drained:
        """Take the pending counter/histogram deltas (zeroing them) and the gauge values to
        write: the changed ones, or all of them when ``include_all_gauges`` (a TTL refresh)."""
        with self.lock:
            deltas: list[tuple[MetricSpec, str, int, list[tuple[str, int]]]] = []
            gauge_changed = False
            for s in self.dirty:
                s.dirty = False
                if s.spec.kind == "gauge":
                    gauge_changed = True
                    continue
                fields = [(f"i:{s.sid}", s.ints), (f"n:{s.sid}", s.nanos)]
                fields += [(f"b{i}:{s.sid}", c) for i, c in enumerate(s.buckets) if c]
                deltas.append((s.spec, s.sid, s.updates, [(f, v) for f, v in fields if v]))
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
        return Drained(deltas, gauges, specs, dropped, rejected, version)


@dataclass(frozen=True)
class Drained:
    deltas: list[tuple[MetricSpec, str, int, list[tuple[str, int]]]]
    """(spec, series id, updates, [(hash field, increment)])"""
    gauges: list[tuple[str, str, float, float]]  # (metric, series id, value, updated_at)
    specs: list[MetricSpec]
    dropped: dict[str, int]
    rejected: dict[str, int]
    version: int = 0

    @property
    def empty(self) -> bool:
        return not (self.deltas or self.gauges or self.specs or self.dropped or self.rejected)


class _Metric:
    def __init__(self, store: InstrumentStore, spec: MetricSpec):
        self._store = store
        self.spec = store.declare(spec)
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: object, **named: object) -> Any:
        """The child for one label set (as prometheus_client's ``labels()``)."""
        names = self.spec.labelnames
        if named:
            if values or set(named) != set(names):
                raise ValueError(f"{self.spec.name}: labels are {names}, got {sorted(named)}")
            values = tuple(named[n] for n in names)
        if len(values) != len(names):
            raise ValueError(f"{self.spec.name}: expected {len(names)} label values")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            # A lone surrogate cannot be encoded for Redis: store it replaced, once per series.
            safe = tuple(v.encode("utf-8", "replace").decode("utf-8") for v in key)
            series = self._store.get_series(self.spec, safe)
            child = self._child(series) if series is not None else _Dropped(self._store, self.spec)
            if series is not None:
                self._children[key] = child
        return child

    def _child(self, series: Series) -> Any:
        raise NotImplementedError

    def _unlabelled(self) -> Any:
        if self.spec.labelnames:
            raise ValueError(f"{self.spec.name} has labels: use .labels(...)")
        return self.labels()


class _Dropped:
    """A series past the cardinality cap: every update is dropped and counted."""

    def __init__(self, store: InstrumentStore, spec: MetricSpec):
        self._store, self._name = store, spec.name

    def _drop(self, *_: object, **__: object) -> None:
        self._store.count_drop(self._name)

    inc = dec = set = observe = _drop

    @contextmanager
    def time(self) -> Iterator[None]:
        yield
        self._drop()


MAX_VALUE = 1e15
"""Largest magnitude one update may carry: far above any real increment, far below the 64-bit
integers Redis adds (so a pre-aggregated batch can never overflow a hash field)."""


def _valid(amount: object, allow_negative: bool = False) -> bool:
    try:
        number = float(amount)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False
    return -MAX_VALUE <= number <= MAX_VALUE if allow_negative else 0 <= number <= MAX_VALUE


class _CounterChild:
    def __init__(self, store: InstrumentStore, series: Series):
        self._store, self._series = store, series

    def inc(self, amount: float = 1) -> None:
        if _valid(amount):
            self._store.add(self._series, amount if type(amount) is int else float(amount))
        else:
            self._store.count_reject(self._series.spec.name)


class CounterMetric(_Metric):
    def _child(self, series: Series) -> _CounterChild:
        return _CounterChild(self._store, series)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)


class _GaugeChild:
    def __init__(self, store: InstrumentStore, series: Series):
        self._store, self._series = store, series

    def set(self, value: float) -> None:
        if _valid(value, allow_negative=True):
            self._store.set_gauge(self._series, float(value))
        else:
            self._store.count_reject(self._series.spec.name)

    def inc(self, amount: float = 1) -> None:
        if _valid(amount, allow_negative=True):
            self._store.set_gauge(self._series, None, float(amount))
        else:
            self._store.count_reject(self._series.spec.name)

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)


class GaugeMetric(_Metric):
    def _child(self, series: Series) -> _GaugeChild:
        return _GaugeChild(self._store, series)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._unlabelled().dec(amount)


class _HistogramChild:
    def __init__(self, store: InstrumentStore, series: Series):
        self._store, self._series = store, series

    def observe(self, value: float) -> None:
        if _valid(value):
            self._store.observe(self._series, float(value))
        else:
            self._store.count_reject(self._series.spec.name)

    @contextmanager
    def time(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started)


class HistogramMetric(_Metric):
    def _child(self, series: Series) -> _HistogramChild:
        return _HistogramChild(self._store, series)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def time(self) -> Any:
        return self._unlabelled().time()
