"""The metric families of the served state: a custom collector that reads one immutable
ServedState per collect, so every series of one scrape comes from the same cycle.

The families come in three kinds (``exposition`` renders each kind its own way): the replica's
own (``status_metrics``, ``client_metrics``: a few series, new every cycle), those with series
per provider (``PROVIDER_GROUPS``: each provider's samples added on their own, so they can be
rendered for the providers that changed only), and the workers' metrics (``backend_metrics``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from aggregator.core.served import CycleStatus, ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot
from aggregator.serve.backend_metrics import backend_metrics
from aggregator.serve.exemplars import with_exemplars
from aggregator.serve.model_metrics import model_metrics
from aggregator.serve.redis_metrics import redis_metrics
from gatewayz_protocol.breaker_state import STATES
from gatewayz_protocol.partitions import OUTCOMES


def _le_labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """le label values exactly as prometheus_client's own Histogram writes them ("1.0", "+Inf")."""
    return (*(floatToGoString(b) for b in bounds), "+Inf")  # type: ignore[no-untyped-call]


DROP_CAUSES = ("buffer_full", "refused", "error", "shutdown")
"""Why clients give events up (always exported, so a rate is defined before the first drop)."""


def _window(seconds: float) -> str:
    return f"{seconds:g}s sliding window"


class SnapshotCollector(Collector):
    """Yields the metric families of the served state at collect time."""

    def __init__(self, served: Callable[[], ServedState]):
        self._served = served

    def collect(self) -> Iterator[Metric]:
        served = self._served()
        snapshot = served.snapshot
        yield from status_metrics(served)
        if snapshot is None:
            return
        le = le_labels(snapshot)
        for group in PROVIDER_GROUPS:
            families = group.families(snapshot)
            for health in snapshot.providers:
                group.add(families, health, le)
            yield from families
        yield from backend_metrics(snapshot)
        yield from client_metrics(snapshot)
        yield from model_metrics(snapshot)


def status_metrics(served: ServedState) -> Iterator[Metric]:
    """The replica's own families, first in the exposition."""
    yield from _status_metrics(served.snapshot, served.status)
    yield from _replica_metrics(served)


def le_labels(snapshot: Snapshot) -> tuple[str, ...]:
    """The ``le`` label values of ``provider_response_time_seconds`` in ``snapshot``."""
    return _le_labels(snapshot.histogram_bounds)


@dataclass(frozen=True)
class ProviderGroup:
    """Families with series per provider: ``families(snapshot)`` makes them without samples,
    ``add(families, health, le)`` adds one provider's samples to them (the same samples
    whichever providers are added before or after it: ``le`` from ``le_labels``)."""

    families: Callable[[Snapshot], list[Metric]]
    add: Callable[[list[Any], ProviderHealth, tuple[str, ...]], None]


def _replica_metrics(served: ServedState) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "gatewayz_aggregator_interval_seconds",
        "Seconds between metrics cycles (--interval): a snapshot older than a few is stale",
        value=served.interval_seconds,
    )
    yield GaugeMetricFamily(
        "gatewayz_aggregator_breaker_interval_seconds",
        "Seconds between breaker evaluations (--breaker-interval)",
        value=served.breaker_interval_seconds,
    )
    yield CounterMetricFamily(
        "gatewayz_aggregator_breaker_cycles_failed",
        "Breaker cycles this replica ran as leader that failed: no breaker was evaluated, each "
        "kept its state (the log says why)",
        value=served.status.breaker_cycles_failed,
    )
    yield from redis_metrics(served.status)
    leader = GaugeMetricFamily(
        "gatewayz_aggregator_leader",
        "1 on the replica that holds the leader lease (evaluates breakers, computes "
        "snapshots), 0 on a follower",
        labels=["replica"],
    )
    leader.add_metric([served.instance], 1.0 if served.leader else 0.0)
    yield leader


def _health_families(snapshot: Snapshot) -> list[Metric]:
    """The seed's window figures per provider, and the breaker's state."""
    window = _window(snapshot.window_seconds)
    availability = GaugeMetricFamily(
        "provider_availability",
        f"Provider availability (1=up, 0=down): 0 while its circuit breaker is not closed; "
        f"{window}",
        labels=["provider"],
    )
    err = GaugeMetricFamily(
        "provider_error_rate",
        f"Error rate 0-1: failures / (successes + failures) over the {window}",
        labels=["provider"],
    )
    health = GaugeMetricFamily(
        "gatewayz_provider_health_score",
        f"Health score 0-1: 0.4*availability + 0.3*(1-error_rate) + 0.3*latency_score; {window}",
        labels=["provider"],
    )
    p95 = GaugeMetricFamily(
        "gatewayz_provider_latency_p95_seconds",
        f"p95 latency of successful calls over the {window} (absent without traffic)",
        labels=["provider"],
    )
    window_requests = GaugeMetricFamily(
        "gatewayz_provider_window_requests",
        f"Calls recorded in the {window}, all outcomes (0 = no traffic)",
        labels=["provider"],
    )
    breaker = GaugeMetricFamily(
        "gatewayz_circuit_breaker_state",
        "Circuit breaker state, one-hot over closed, open, half_open",
        labels=["provider", "state"],
    )
    return [availability, err, health, p95, window_requests, breaker]


def _add_health(families: list[Any], p: ProviderHealth, le: tuple[str, ...]) -> None:
    availability, err, health, p95, window_requests, breaker = families
    labels = [p.provider]
    availability.add_metric(labels, p.availability)
    err.add_metric(labels, p.error_rate)
    health.add_metric(labels, p.health_score)
    if p.latency_p95_seconds is not None:
        p95.add_metric(labels, p.latency_p95_seconds)
    window_requests.add_metric(labels, p.window_requests)
    for state in STATES:
        value = 1.0 if p.breaker.state == state else 0.0
        breaker.add_metric([p.provider, state], value)


def _counter_families(snapshot: Snapshot) -> list[Metric]:
    """Each provider's cumulative counters, and what its breaker did."""
    response_time = HistogramMetricFamily(
        "provider_response_time_seconds",
        "Response time of every recorded provider call, all workers, since first recorded",
        labels=["provider"],
    )
    requests = CounterMetricFamily(
        "gatewayz_provider_requests",
        "Provider calls recorded, by outcome class, all workers",
        labels=["provider", "outcome"],
    )
    cost = CounterMetricFamily(
        "gatewayz_cost_by_provider", "Cost USD, all workers", labels=["provider"]
    )
    tokens = CounterMetricFamily(
        "gatewayz_provider_tokens", "Tokens used, all workers", labels=["provider"]
    )
    transitions = CounterMetricFamily(
        "gatewayz_circuit_breaker_transitions",
        "Circuit breaker transitions applied, all aggregator replicas",
        labels=["provider", "from_state", "to_state"],
    )
    rejected_calls = CounterMetricFamily(
        "gatewayz_circuit_breaker_rejected_calls",
        "Calls that workers' allow() turned away because the breaker was not closed",
        labels=["provider"],
    )
    forced = GaugeMetricFamily(
        "gatewayz_circuit_breaker_forced",
        "1 when an operator forced the breaker state (never changed automatically)",
        labels=["provider"],
    )
    suppressed = GaugeMetricFamily(
        "gatewayz_circuit_breaker_open_suppressed",
        "1 when the breaker would open but the max-open-share guard keeps it closed",
        labels=["provider"],
    )
    return [response_time, requests, cost, tokens, transitions, rejected_calls, forced, suppressed]


def _add_counters(families: list[Any], p: ProviderHealth, le: tuple[str, ...]) -> None:
    response_time, requests, cost, tokens, transitions, rejected_calls, forced, suppressed = (
        families
    )
    labels = [p.provider]
    buckets = with_exemplars(le, p.histogram_cumulative, p.exemplars)
    response_time.add_metric(labels, buckets, p.latency_sum_seconds)
    for outcome in OUTCOMES:
        count = p.requests_total.get(outcome, 0)
        requests.add_metric([p.provider, outcome], count)
    cost.add_metric(labels, p.cost_usd)
    tokens.add_metric(labels, p.tokens_total)
    for pair, count in sorted(p.transitions.items()):
        from_state, _, to_state = pair.partition(">")
        transitions.add_metric([p.provider, from_state, to_state], count)
    rejected_calls.add_metric(labels, p.breaker_rejected_total)
    forced.add_metric(labels, 1.0 if p.breaker.forced else 0.0)
    suppressed.add_metric(labels, 1.0 if p.open_suppressed else 0.0)


def _cancelled_families(snapshot: Snapshot) -> list[Metric]:
    """Calls not attempted to the end: apart from the requests by outcome class, whose sum is
    the latency histogram's count."""
    cancelled = CounterMetricFamily(
        "gatewayz_provider_cancelled_calls",
        "Provider calls the caller abandoned before the answer (client gone, task cancelled), "
        "all workers: outside the requests, the window, the error rate and the breaker",
        labels=["provider"],
    )
    return [cancelled]


def _add_cancelled(families: list[Any], p: ProviderHealth, le: tuple[str, ...]) -> None:
    families[0].add_metric([p.provider], p.cancelled_total)


PROVIDER_GROUPS = (
    ProviderGroup(_health_families, _add_health),
    ProviderGroup(_counter_families, _add_counters),
    ProviderGroup(_cancelled_families, _add_cancelled),
)
"""The families with series per provider, in the exposition's order."""


def client_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    """What every process reports beside its events: Redis commands, rejections, drops, clock
    offsets."""
    redis_ops = CounterMetricFamily(
        "gatewayz_redis_operations",
        "Redis commands issued by clients and aggregators, all processes",
        labels=["operation"],
    )
    for operation, count in sorted(snapshot.redis_ops.items()):
        redis_ops.add_metric([operation], count)
    yield redis_ops
    rejected = CounterMetricFamily(
        "gatewayz_client_events_rejected",
        "Calls rejected by clients as invalid, and values left out of calls booked (tokens, "
        "cost, credits, TTFB, TTFC, model, endpoint, exemplar), by cause, all workers",
        labels=["reason"],
    )
    for reason, count in sorted(snapshot.client_rejected.items()):
        rejected.add_metric([reason], count)
    yield rejected
    dropped = CounterMetricFamily(
        "gatewayz_client_events_dropped",
        "Events clients gave up on, by cause: buffer_full (evicted from a full buffer), "
        "refused (Redis refused them for good), error (a bug), shutdown (closed while "
        "Redis was unreachable)",
        labels=["cause"],
    )
    by_cause = dict.fromkeys(DROP_CAUSES, 0) | snapshot.client_dropped_by_cause
    for cause, count in sorted(by_cause.items()):
        dropped.add_metric([cause], count)
    yield dropped
    yield CounterMetricFamily(
        "gatewayz_log_records_dropped",
        "Log records the processes' Loki senders gave up on (Loki slow or down), all workers "
        "and aggregators",
        value=snapshot.log_records_dropped,
    )
    offsets = GaugeMetricFamily(
        "gatewayz_client_clock_offset_seconds",
        "Redis's clock minus each writer's (host:pid), as last measured (within 10 min); "
        "events are moved onto Redis's clock by it",
        labels=["writer"],
    )
    for writer, offset in sorted(snapshot.client_clock_offsets.items()):
        offsets.add_metric([writer], offset)
    yield offsets


def _status_metrics(snapshot: Snapshot | None, status: CycleStatus) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "gatewayz_aggregator_cycles",
        "Aggregation cycles that completed",
        value=status.cycles_ok,
    )
    yield CounterMetricFamily(
        "gatewayz_aggregator_cycles_failed",
        "Aggregation cycles that failed (the previous snapshot kept being served)",
        value=status.cycles_failed,
    )
    yield GaugeMetricFamily(
        "gatewayz_aggregator_cycle_duration_seconds",
        "Duration of the last aggregation cycle",
        value=status.last_duration_seconds,
    )
    if status.last_success_at is not None:
        yield GaugeMetricFamily(
            "gatewayz_aggregator_last_success_timestamp_seconds",
            "Unix time of this replica's last successful cycle",
            value=status.last_success_at,
        )
    if status.clock_offset_seconds is not None:
        yield GaugeMetricFamily(
            "gatewayz_aggregator_clock_offset_seconds",
            "Redis's clock minus this replica's, as measured at its last cycle",
            value=status.clock_offset_seconds,
        )
    skipped = CounterMetricFamily(
        "gatewayz_redis_values_skipped",
        "Values read from Redis that no writer of this project writes (another version, a "
        "bug, a hand edit), skipped by this replica, by key kind; each key is named once in "
        "its log",
        labels=["kind"],
    )
    for kind, count in sorted(status.values_skipped.items()):
        skipped.add_metric([kind], count)
    yield skipped
    yield from _over_cap_metrics(status)
    if snapshot is not None:
        yield GaugeMetricFamily(
            "gatewayz_aggregator_snapshot_timestamp_seconds",
            "Unix time the served snapshot was computed (by the leader)",
            value=snapshot.taken_at,
        )
        yield GaugeMetricFamily(
            "gatewayz_aggregator_snapshot_cycle",
            "Number of the served snapshot, shared by the replicas (equal on those serving it)",
            value=snapshot.cycle,
        )


def _over_cap_metrics(status: CycleStatus) -> Iterator[Metric]:
    """What the last reads left out beyond their caps."""
    yield GaugeMetricFamily(
        "gatewayz_aggregator_providers_over_cap",
        "Providers active in the registry beyond --max-providers at this replica's last read: "
        "neither read nor exported (the most recently seen are)",
        value=status.providers_over_cap,
    )
    yield GaugeMetricFamily(
        "gatewayz_aggregator_metric_families_over_cap",
        "Workers' backend metrics beyond --max-metric-families at this replica's last read (a "
        "leader's): neither read nor exported (the first by name are)",
        value=status.metric_families_over_cap,
    )
    yield GaugeMetricFamily(
        "gatewayz_aggregator_gauge_writers_over_cap",
        "Processes with gauges beyond the 10,000 that wrote them last, at this replica's last "
        "read (a leader's): their gauges not read until the retention forgets them",
        value=status.gauge_writers_over_cap,
    )
