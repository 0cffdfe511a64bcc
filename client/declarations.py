"""Declaring backend metrics on a MetricsClient (counter, gauge, histogram)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from client.instruments import (
    DEFAULT_BUCKETS,
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    InstrumentStore,
    MetricSpec,
)


class MetricDeclarations:
    """The declaration half of MetricsClient's API; values live in ``_instruments``."""

    _instruments: InstrumentStore
    _metrics: dict[str, Any]

    def counter(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> CounterMetric:
        """A counter exported by the aggregator, summed over all workers. Like
        prometheus_client, a ``_total`` suffix is optional (always exported). Floats are exact
        to 1e-9."""
        spec = MetricSpec(name.removesuffix("_total"), "counter", documentation, tuple(labelnames))
        return self._declare(spec, CounterMetric)  # type: ignore[no-any-return]

    def gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        combine: str = "sum",
    ) -> GaugeMetric:
        """A gauge; ``combine`` says how workers' values merge: sum, max, min or latest. A
        process's values vanish ``gauge_ttl_seconds`` after it stops refreshing them (dies)."""
        spec = MetricSpec(name, "gauge", documentation, tuple(labelnames), combine=combine)
        return self._declare(spec, GaugeMetric)  # type: ignore[no-any-return]

    def histogram(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> HistogramMetric:
        """A histogram whose buckets, sum and count add up over all workers."""
        bounds = tuple(float(b) for b in buckets if b != math.inf)
        spec = MetricSpec(name, "histogram", documentation, tuple(labelnames), bounds)
        return self._declare(spec, HistogramMetric)  # type: ignore[no-any-return]

    def _declare(self, spec: MetricSpec, kind: type[Any]) -> Any:
        self._instruments.declare(spec)  # raises on a conflicting redeclaration
        existing = self._metrics.get(spec.name)
        if existing is None:
            existing = self._metrics[spec.name] = kind(self._instruments, spec)
        return existing
