"""The workers' own metrics in /metrics (their Counters, Gauges, Histograms, Summaries and Infos,
as the snapshot holds them, rendered as prometheus_client renders its own), minus any that would
clash with the aggregator's own families or an earlier one; and each metric's counts (updates
dropped, rejected, refused for a conflicting declaration, label values truncated).

A summary is its ``_count`` and ``_sum`` (prometheus_client's multiprocess mode); an info is
``<name>_info{...} 1`` per distinct label set; a counter's exemplar is on its ``_total`` sample
(OpenMetrics only); a histogram with a negative bucket has no ``_sum`` and ``_count`` (the
OpenMetrics rule prometheus_client's histogram family applies), and neither has a series whose
sum is negative (OpenMetrics refuses one; no client writes one).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from aggregator.core.backend import BackendFamily
from aggregator.core.snapshot import Snapshot
from aggregator.serve.exemplars import prom_exemplar, with_exemplars
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
        "gatewayz_model_circuit_breaker_state",
        "gatewayz_provider_requests",
        "gatewayz_cost_by_provider",
        "gatewayz_provider_tokens",
        "gatewayz_circuit_breaker_transitions",
        "gatewayz_circuit_breaker_rejected_calls",
        "gatewayz_provider_cancelled_calls",
        "gatewayz_circuit_breaker_forced",
        "gatewayz_circuit_breaker_open_suppressed",
        "gatewayz_redis_operations",
        "gatewayz_client_events_rejected",
        "gatewayz_client_events_dropped",
        "gatewayz_metrics_series_dropped",
        "gatewayz_metrics_values_rejected",
        "gatewayz_metrics_conflicting_updates",
        "gatewayz_metrics_label_values_truncated",
        "gatewayz_log_records_dropped",
    }
)
"""Names the aggregator itself exports; a worker metric that would clash with one (or with an
earlier worker metric) is not served."""
RESERVED_PREFIXES = ("gatewayz_aggregator_", "gatewayz_redis_", "gatewayz_client_")

_COUNTS = (
    (
        "gatewayz_metrics_series_dropped",
        "Updates to backend metric series beyond the per-metric cardinality cap, all workers",
        "dropped",
    ),
    (
        "gatewayz_metrics_values_rejected",
        "Invalid backend metric values (negative counter increments, NaN, inf), all workers",
        "rejected",
    ),
    (
        "gatewayz_metrics_conflicting_updates",
        "Backend metric updates refused, all workers: their process declared the metric "
        "otherwise (type, labels, buckets, combine mode, unit) than the declaration served",
        "conflicts",
    ),
    (
        "gatewayz_metrics_label_values_truncated",
        "Backend metric label values longer than the clients' bound, truncated (and suffixed "
        "with a hash of the whole value), all workers",
        "truncated",
    ),
)
"""The per-metric counts: family name, help, BackendFamily attribute."""


def _sample_names(name: str, kind: str) -> set[str]:
    """Every sample and family name a metric may occupy in either exposition format."""
    base = name.removesuffix("_total")
    names = {name, base, f"{base}_total", f"{base}_created"}
    if kind in ("histogram", "summary"):
        names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "info":
        names.add(f"{name}_info")
    return names


def backend_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    """The workers' families served (``served_families``), then the per-metric counts."""
    for family in served_families(snapshot):
        yield metric_of(family)
    yield from count_metrics(snapshot)


def served_families(snapshot: Snapshot) -> list[BackendFamily]:
    """The workers' families served: those that clash with none of the aggregator's own nor
    with an earlier one (the scrape must stay parseable)."""
    served = []
    taken = {n for name in RESERVED_NAMES for n in _sample_names(name, "histogram")}
    for family in snapshot.backend:
        exposed = _sample_names(family.name, family.kind)
        if family.name.startswith(RESERVED_PREFIXES) or exposed & taken:
            continue
        taken |= exposed
        served.append(family)
    return served


def count_metrics(snapshot: Snapshot) -> list[Metric]:
    """Each metric's counts (updates dropped, values rejected, conflicts, truncations)."""
    counts = [CounterMetricFamily(name, text, labels=["metric"]) for name, text, _ in _COUNTS]
    for family in snapshot.backend:
        for counted, (_, _, attribute) in zip(counts, _COUNTS, strict=True):
            counted.add_metric([family.name], getattr(family, attribute))
    return list(counts)


def metric_of(family: BackendFamily) -> Metric:
    """One workers' family as prometheus_client's family of its kind (its exposition depends
    on it alone)."""
    labelnames = list(family.labelnames)
    name, text, unit = family.name, family.help, family.unit
    if family.kind == "counter":
        return _counter(family)
    if family.kind == "histogram":
        return _histogram(family)
    if family.kind == "summary":
        summary = SummaryMetricFamily(name, text, labels=labelnames, unit=unit)
        for labels, counts, total in family.histograms:
            if total >= 0 and counts[-1] >= 0:  # OpenMetrics refuses negative ones: no client
                summary.add_metric(list(labels), counts[-1], total)  # writes one
        return summary
    if family.kind == "info":
        info = InfoMetricFamily(name, text, labels=labelnames)
        for labels, pairs in family.infos:
            info.add_metric(list(labels), dict(pairs))
        return info
    gauge = GaugeMetricFamily(name, text, labels=labelnames, unit=unit)
    for labels, value in family.samples:
        gauge.add_metric(list(labels), value)
    return gauge


def _counter(family: BackendFamily) -> CounterMetricFamily:
    """Each series' ``_total``, with the latest exemplar of an increment when there is one
    (set on the sample: the family's ``add_metric`` takes none before prometheus_client 0.21)."""
    counter = CounterMetricFamily(
        family.name, family.help, labels=list(family.labelnames), unit=family.unit
    )
    linked = {tuple(labels): exemplar for labels, _, exemplar in family.exemplars}
    for labels, value in family.samples:
        counter.add_metric(list(labels), value)
        exemplar = prom_exemplar(linked[labels]) if labels in linked else None
        if exemplar is not None:
            total = counter.samples[-1]
            counter.samples[-1] = Sample(total.name, total.labels, total.value, None, exemplar)
    return counter


def _histogram(family: BackendFamily) -> HistogramMetricFamily:
    le = [floatToGoString(b) for b in family.buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
    histogram = HistogramMetricFamily(
        family.name, family.help, labels=list(family.labelnames), unit=family.unit
    )
    linked: dict[tuple[str, ...], dict[str, Exemplar]] = {}
    for labels, bucket, exemplar in family.exemplars:
        linked.setdefault(tuple(labels), {})[str(bucket)] = exemplar
    for labels, counts, total in family.histograms:
        buckets = with_exemplars(le, counts, linked.get(tuple(labels), {}))
        # With a negative bucket there is no sum (prometheus_client leaves it out); a negative
        # sum with none (no client writes one) is left out too: OpenMetrics refuses it.
        histogram.add_metric(list(labels), buckets, total if total >= 0 else None)
    return histogram
