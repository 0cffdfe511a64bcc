"""Counter, Gauge and Histogram handles with labels, as prometheus_client shapes them, over the
instrument store; and the registry that declares them once per process.

A redeclaration must match (name, type, help, label names, buckets, combine mode) or raises
ValueError, as does ``labels()`` with the wrong label names or count. Every update (``inc``,
``dec``, ``set``, ``observe``) never raises: an invalid value (negative counter increment, NaN,
inf, not a number) is rejected and counted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from client._exemplars import valid_exemplar
from client._instruments import InstrumentStore, Series
from gatewayz_protocol.specs import MetricSpec

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

MAX_VALUE = 1e15
"""Largest magnitude one update may carry: far above any real increment, far below the 64-bit
integers Redis adds (so a pre-aggregated batch can never overflow a hash field)."""


def _number(amount: object, allow_negative: bool = False) -> float | None:
    """``amount`` as a float when it is a valid update, else None (never raises)."""
    try:
        number = float(amount)  # type: ignore[arg-type]
    except Exception:
        return None
    low = -MAX_VALUE if allow_negative else 0.0
    return number if low <= number <= MAX_VALUE else None


def _label_value(value: object) -> str:
    """A label value as a string Redis can store: ``str()`` (as prometheus_client), with lone
    surrogates replaced, and a placeholder for an object whose ``str()`` fails."""
    try:
        text = value if type(value) is str else str(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text.encode("utf-8", "replace").decode("utf-8")


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
        key = tuple(_label_value(v) for v in values)
        child = self._children.get(key)
        if child is None:
            series = self._store.get_series(self.spec, key)
            child = self._child(series) if series is not None else _Dropped(self._store, self.spec)
            if series is not None:
                self._children[key] = child
        return child

    def series(self, *values: object) -> Series | None:
        """The series ``labels(*values)`` updates; None past the cardinality cap (its updates
        are dropped and counted)."""
        series: Series | None = getattr(self.labels(*values), "_series", None)
        return series

    def count_drop(self) -> None:
        """One update of a series past the cap, dropped and counted."""
        self._store.count_drop(self.spec.name)

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


class _CounterChild:
    def __init__(self, store: InstrumentStore, series: Series):
        self._store, self._series = store, series

    def inc(self, amount: float = 1) -> None:
        number = _number(amount)
        if number is None:
            self._store.count_reject(self._series.spec.name)
        else:
            self._store.add(self._series, amount if type(amount) is int else number)


class CounterMetric(_Metric):
    def _child(self, series: Series) -> _CounterChild:
        return _CounterChild(self._store, series)

    def inc(self, amount: float = 1) -> None:
        self._unlabelled().inc(amount)


class _GaugeChild:
    def __init__(self, store: InstrumentStore, series: Series):
        self._store, self._series = store, series

    def set(self, value: float) -> None:
        self._update(value, replace=True)

    def inc(self, amount: float = 1) -> None:
        self._update(amount)

    def dec(self, amount: float = 1) -> None:
        self._update(amount, sign=-1.0)

    def _update(self, value: object, replace: bool = False, sign: float = 1.0) -> None:
        number = _number(value, allow_negative=True)
        if number is None:
            self._store.count_reject(self._series.spec.name)
        elif replace:
            self._store.set_gauge(self._series, number)
        else:
            self._store.set_gauge(self._series, None, sign * number)


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

    def observe(self, value: float, exemplar: Mapping[str, str] | None = None) -> None:
        """As prometheus_client's: ``exemplar`` labels (e.g. ``{"trace_id": ...}``) link the
        observation's bucket to a trace in the OpenMetrics exposition (an invalid one is left
        out)."""
        number = _number(value)
        if number is None:
            self._store.count_reject(self._series.spec.name)
        else:
            labels = valid_exemplar(exemplar) if exemplar is not None else None
            self._store.observe(self._series, number, labels)

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

    def observe(self, value: float, exemplar: Mapping[str, str] | None = None) -> None:
        self._unlabelled().observe(value, exemplar)

    def time(self) -> Any:
        return self._unlabelled().time()


_Handle = TypeVar("_Handle", CounterMetric, GaugeMetric, HistogramMetric)


class MetricRegistry:
    """The handles declared on one client: a repeated declaration returns the same handle."""

    def __init__(self, store: InstrumentStore) -> None:
        self._store = store
        self._handles: dict[str, Any] = {}

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> CounterMetric:
        return self._declare(
            CounterMetric,
            lambda: MetricSpec(
                name.removesuffix("_total"), "counter", documentation, tuple(labelnames)
            ),
        )

    def gauge(
        self, name: str, documentation: str, labelnames: Sequence[str], combine: str
    ) -> GaugeMetric:
        return self._declare(
            GaugeMetric,
            lambda: MetricSpec(name, "gauge", documentation, tuple(labelnames), combine=combine),
        )

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> HistogramMetric:
        return self._declare(
            HistogramMetric,
            lambda: MetricSpec(
                name,
                "histogram",
                documentation,
                tuple(labelnames),
                tuple(float(b) for b in buckets if b != math.inf),
            ),
        )

    def _declare(self, kind: type[_Handle], make_spec: Callable[[], MetricSpec]) -> _Handle:
        """ValueError (never another exception) when the arguments make no valid spec or one
        that conflicts with an earlier declaration."""
        try:
            spec = make_spec()
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"invalid metric declaration: {exc!r}") from None
        self._store.declare(spec)  # raises on a conflicting redeclaration
        existing = self._handles.get(spec.name)
        if existing is None:
            existing = self._handles[spec.name] = kind(self._store, spec)
        return existing
