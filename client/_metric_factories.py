"""The backend metric factories of ``MetricsClient``, with prometheus_client's constructor
arguments: ``metrics.counter(...)`` where prometheus_client has ``Counter(...)``. ``registry`` is
accepted and unused (the aggregator serves every metric); see ``_metric_registry`` for how names
are built and what a conflicting declaration does, and the README's migration table."""

from __future__ import annotations

from collections.abc import Iterable

from client._metric_registry import DEFAULT_BUCKETS, MetricRegistry
from client._metric_types import (
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    InfoMetric,
    SummaryMetric,
)


class MetricFactories:
    """Declaring backend metrics on a client (mixed into ``MetricsClient``)."""

    _metrics: MetricRegistry

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
        """A counter exported by the aggregator, summed over all workers. Like
        prometheus_client, a ``_total`` suffix is optional (always exported). Floats are exact
        to 1e-9. ValueError for an invalid declaration; one that conflicts with the name's
        first declaration returns a handle whose updates are refused and counted."""
        return self._metrics.counter(
            name, documentation, labelnames, namespace, subsystem, unit, registry
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
        return self._metrics.gauge(
            name, documentation, labelnames, namespace, subsystem, unit, registry,
            multiprocess_mode=multiprocess_mode, combine=combine,
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
        """A histogram whose buckets, sum and count add up over all workers; its ``buckets``
        are declared once per name across the fleet (the first declaration in Redis wins)."""
        return self._metrics.histogram(
            name, documentation, labelnames, namespace, subsystem, unit, registry, buckets=buckets
        )

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
        return self._metrics.summary(
            name, documentation, labelnames, namespace, subsystem, unit, registry
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
        """An info (``.info({"version": "1.2"})``), served as ``<name>_info{...} 1`` once per
        distinct set of labels the live processes hold."""
        return self._metrics.info(name, documentation, labelnames, namespace, subsystem, unit)
