"""The workers' own metrics in /metrics (their Counters, Gauges, Histograms, as the snapshot
holds them), minus any that would clash with the aggregator's own families."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from aggregator.core.snapshot import Snapshot
from aggregator.serve.exemplars import with_exemplars
from gatewayz_protocol.fields import Exemplar

RESERVED_NAMES = frozenset(
    {
        "provider_availability",
        "provider_error_rate",
        "provider_response_time_seconds",
        "gatewayz_provider_health_score",
        "gatewayz_provider_latency_p95_seconds",
        "gatewayz_provider_window_requests",
        "gatewayz_circuit_breaker_state",
        "gatewayz_provider_requests",
        "gatewayz_cost_by_provider",
        "gatewayz_provider_tokens",
        "gatewayz_circuit_breaker_transitions",
        "gatewayz_circuit_breaker_rejected_calls",
        "gatewayz_circuit_breaker_forced",
        "gatewayz_circuit_breaker_open_suppressed",
        "gatewayz_redis_operations",
        "gatewayz_client_events_rejected",
        "gatewayz_client_events_dropped",
        "gatewayz_metrics_series_dropped",
        "gatewayz_metrics_values_rejected",
        "gatewayz_log_records_dropped",
    }
)
"""Names the aggregator itself exports; a worker metric that would clash with one (or with an
earlier worker metric) is not served."""
RESERVED_PREFIXES = ("gatewayz_aggregator_", "gatewayz_redis_", "gatewayz_client_")


def _sample_names(name: str, kind: str) -> set[str]:
    """Every sample and family name a metric may occupy in either exposition format."""
    base = name.removesuffix("_total")
    names = {name, base, f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    return names


def backend_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    dropped = CounterMetricFamily(
        "gatewayz_metrics_series_dropped",
        "Updates to backend metric series beyond the per-metric cardinality cap, all workers",
        labels=["metric"],
    )
    rejected = CounterMetricFamily(
        "gatewayz_metrics_values_rejected",
        "Invalid backend metric values (negative counter increments, NaN, inf), all workers",
        labels=["metric"],
    )
    taken = {n for name in RESERVED_NAMES for n in _sample_names(name, "histogram")}
    for family in snapshot.backend:
        dropped.add_metric([family.name], family.dropped)
        rejected.add_metric([family.name], family.rejected)
        exposed = _sample_names(family.name, family.kind)
        if family.name.startswith(RESERVED_PREFIXES) or exposed & taken:
            continue  # would clash with another family: the scrape must stay parseable
        taken |= exposed
        labelnames = list(family.labelnames)
        metric: CounterMetricFamily | GaugeMetricFamily
        if family.kind == "counter":
            metric = CounterMetricFamily(family.name, family.help, labels=labelnames)
        elif family.kind == "gauge":
            metric = GaugeMetricFamily(family.name, family.help, labels=labelnames)
        else:
            le = [floatToGoString(b) for b in family.buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
            histogram = HistogramMetricFamily(family.name, family.help, labels=labelnames)
            linked: dict[tuple[str, ...], dict[str, Exemplar]] = {}
            for labels, bucket, exemplar in family.exemplars:
                linked.setdefault(tuple(labels), {})[str(bucket)] = exemplar
            for labels, counts, total in family.histograms:
                buckets = with_exemplars(le, counts, linked.get(tuple(labels), {}))
                histogram.add_metric(list(labels), buckets, total)
            yield histogram
            continue
        for labels, value in family.samples:
            metric.add_metric(list(labels), value)
        yield metric
    yield dropped
    yield rejected
