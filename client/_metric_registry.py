"""The metrics one client declares, with prometheus_client's constructor arguments: ``name,
documentation, labelnames=(), namespace='', subsystem='', unit='', registry=...`` and, per type,
``buckets`` (Histogram) or ``multiprocess_mode`` (Gauge).

The full name is built as prometheus_client builds it (``namespace_subsystem_name``, a counter's
``_total`` left off, ``_<unit>`` appended unless there). An invalid declaration (a bad name or
label name, unsorted buckets, an unknown mode) raises ValueError, as prometheus_client does. A
declaration that conflicts with an earlier one of the same name in this process (another type,
other labels, buckets, combine mode or unit) does not: it returns a handle whose updates are
refused and counted (``gatewayz_metrics_conflicting_updates_total``), and is logged once. The
same rule holds across processes (``_declarations``): the first declaration wins, and a request
path that happens to declare (a lazily built metric) is never broken by a raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

from client._instruments import InstrumentStore
from client._metric_types import (
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    InfoMetric,
    SummaryMetric,
)
from gatewayz_protocol.specs import COMBINE_MODES, MetricSpec

DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""prometheus_client's default buckets (then +Inf)."""

MULTIPROCESS_MODES: Final = {
    "all": "sum",
    "liveall": "sum",
    "sum": "sum",
    "livesum": "sum",
    "max": "max",
    "livemax": "max",
    "min": "min",
    "livemin": "min",
    "mostrecent": "latest",
    "livemostrecent": "latest",
}
"""prometheus_client's ``multiprocess_mode`` -> how workers' gauge values combine here. Every
mode is "live" here (a dead process's values expire); ``all`` (one series per pid there) sums."""

_Handle = TypeVar("_Handle", CounterMetric, GaugeMetric, HistogramMetric, SummaryMetric, InfoMetric)


def full_name(kind: str, name: str, namespace: str, subsystem: str, unit: str) -> str:
    """The metric's name as prometheus_client builds it."""
    if not name:
        raise ValueError("metric name should not be empty")
    full = "_".join(part for part in (namespace, subsystem, name) if part)
    if kind == "counter":
        full = full.removesuffix("_total")
    if unit and kind == "info":
        raise ValueError(f"an info cannot have a unit: {full}")
    if unit and not full.endswith("_" + unit):
        full += "_" + unit
    return full


def _gauge_combine(namespace: str, multiprocess_mode: str, combine: str | None) -> str:
    if namespace in COMBINE_MODES:  # gauge(name, doc, labels, "max"), from before namespaces
        raise ValueError(f"pass combine={namespace!r} by keyword (the 4th argument is namespace)")
    return gauge_combine(multiprocess_mode, combine)


def gauge_combine(multiprocess_mode: str, combine: str | None) -> str:
    """How workers' values of a gauge combine: ``combine``, or what ``multiprocess_mode`` means
    (ValueError for an unknown mode, or a mode and a combine that disagree)."""
    mode = MULTIPROCESS_MODES.get(multiprocess_mode)
    if mode is None:
        raise ValueError(f"invalid multiprocess_mode {multiprocess_mode!r}")
    if combine is None:
        return mode
    if multiprocess_mode != "all" and mode != combine:
        raise ValueError(f"multiprocess_mode={multiprocess_mode!r} and combine={combine!r} differ")
    return combine


class MetricRegistry:
    """The handles declared on one client: a repeated declaration returns the same handle."""

    def __init__(self, store: InstrumentStore) -> None:
        self._store = store
        self._handles: dict[str, Any] = {}

    def counter(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: object = None,
        _labelvalues: object = None,
    ) -> CounterMetric:
        """A counter exported by the aggregator, summed over all workers, with prometheus_client's
        constructor arguments (``registry`` accepted and unused: the aggregator serves every
        metric). A ``_total`` suffix is optional (always exported). Floats are exact to 1e-9.
        ValueError for an invalid declaration; one that conflicts with the name's first
        declaration returns a handle whose updates are refused and counted."""
        return self._declare(
            CounterMetric, "counter", name, documentation, labelnames, namespace, subsystem, unit
        )

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: object = None,
        _labelvalues: object = None,
        multiprocess_mode: str = "all",
        *,
        combine: str | None = None,
    ) -> GaugeMetric:
        """A gauge; ``combine`` says how workers' values merge: sum (default), max, min or
        latest (or prometheus_client's ``multiprocess_mode``: ``livemax`` is max...). A
        process's values vanish ``gauge_ttl_seconds`` after it stops refreshing them (dies)."""
        return self._declare(
            GaugeMetric, "gauge", name, documentation, labelnames, namespace, subsystem, unit,
            combine=lambda: _gauge_combine(namespace, multiprocess_mode, combine),
        )  # fmt: skip

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: object = None,
        _labelvalues: object = None,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> HistogramMetric:
        """A histogram whose buckets, sum and count add up over all workers. ``buckets``:
        increasing bounds (+Inf is implied), declared once per name across the fleet (the
        first declaration in Redis is the one served)."""
        return self._declare(
            HistogramMetric, "histogram", name, documentation, labelnames, namespace, subsystem,
            unit, buckets=lambda: tuple(float(b) for b in buckets if float(b) != math.inf),
        )  # fmt: skip

    def summary(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: object = None,
        _labelvalues: object = None,
    ) -> SummaryMetric:
        """A summary: its count and sum over all workers (no quantiles, as prometheus_client's
        multiprocess mode)."""
        return self._declare(
            SummaryMetric, "summary", name, documentation, labelnames, namespace, subsystem, unit
        )

    def info(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        namespace: str = "",
        subsystem: str = "",
        unit: str = "",
        registry: object = None,
        _labelvalues: object = None,
    ) -> InfoMetric:
        """An info (``.info({"version": "1.2"})``), served as prometheus_client serves one:
        ``<name>_info{...} 1``, once per distinct set of labels the live processes hold."""
        return self._declare(
            InfoMetric, "info", name, documentation, labelnames, namespace, subsystem, unit
        )

    def _declare(
        self,
        handle: type[_Handle],
        kind: str,
        name: str,
        documentation: str,
        labelnames: Iterable[str],
        namespace: str,
        subsystem: str,
        unit: str,
        **extra: Callable[[], Any],
    ) -> _Handle:
        """ValueError (never another exception) when the arguments make no valid spec;
        ``extra``: the spec's other fields, worked out inside that guard."""

        def make() -> MetricSpec:
            names = tuple(labelnames)
            if kind == "summary" and "quantile" in names:
                raise ValueError("'quantile' is a summary's reserved label name")
            fields = {field: value() for field, value in extra.items()}
            full = full_name(kind, name, namespace, subsystem, unit)
            return MetricSpec(full, kind, documentation, names, unit=unit, **fields)

        spec = _spec(make)
        declared = self._store.declare(spec)
        if declared is None:  # conflicts with this process's first declaration of the name
            first = self._store.declarations.specs[spec.name]
            self._store.declarations.log_conflict(spec.name, spec, first.to_json())
            return handle(self._store, spec, refused=True)
        existing = self._handles.get(spec.name)
        if existing is None:
            existing = self._handles[spec.name] = handle(self._store, declared)
        return existing


def _spec(make: Callable[[], MetricSpec]) -> MetricSpec:
    try:
        return make()
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"invalid metric declaration: {type(exc).__name__}") from None
