"""The figures the gateway frontend's ``/health/dashboard`` asks for that the snapshot holds only
in parts: a row per model, and the system's uptime, response time and last incident. Pure
functions of one snapshot (README "Health dashboard").

**Per model.** The aggregator keeps windows per provider only. What it knows per model comes
from the workers' own metrics, when the gateway books its calls with
``GatewayMetrics.record_inference()``/``inference()``: ``model_inference_requests_total
{provider, model, status}`` and ``model_inference_duration_seconds{provider, model}``,
cumulative since their Redis hash began (not windowed). A model row counts those: successes
(``status="success"``), failures (``failure``, or ``error`` under ``status_values="origin"``,
which also holds what the outcome classes call rate limited and caller errors), every call,
and the mean latency (the histogram's sum over its count: every outcome). Without those metrics
there is no model row. Only models of providers in the snapshot are shown.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from aggregator.core.backend import BackendFamily
from aggregator.core.snapshot import ProviderHealth
from gatewayz_protocol.breaker_state import CLOSED

MODEL_CALLS: Final = frozenset({"model_inference_requests", "model_inference_requests_total"})
"""The model calls counter: a family keeps a counter's name without ``_total`` (as
prometheus_client does), the exposition adds it."""
MODEL_LATENCY: Final = "model_inference_duration_seconds"
SUCCESS_STATUSES: Final = frozenset({"success"})
FAILURE_STATUSES: Final = frozenset({"failure", "error"})
"""``status`` label values counted as failures: the outcome class, or the origin's ``error``."""


@dataclass(frozen=True)
class ModelFigures:
    """One (provider, model) from the workers' model metrics, since those began."""

    provider: str
    model: str
    successes: int = 0
    failures: int = 0
    calls: int = 0
    latency_mean_seconds: float | None = None
    """Mean latency of its calls, every outcome; None without any."""


def model_figures(
    families: Sequence[BackendFamily], providers: Collection[str]
) -> tuple[ModelFigures, ...]:
    """A row per (provider, model) of ``providers`` found in the model metrics, sorted by
    provider then model; empty without those metrics."""
    counts: dict[tuple[str, str], list[int]] = {}
    latency: dict[tuple[str, str], tuple[float, int]] = {}
    for family in families:
        if family.name in MODEL_CALLS and family.kind == "counter":
            _count_calls(family, providers, counts)
        elif family.name == MODEL_LATENCY and family.kind == "histogram":
            _sum_latency(family, providers, latency)
    rows = []
    for key in sorted(counts.keys() | latency.keys()):
        successes, failures, calls = counts.get(key, [0, 0, 0])
        total, observed = latency.get(key, (0.0, 0))
        mean = total / observed if observed else None
        rows.append(ModelFigures(key[0], key[1], successes, failures, calls, mean))
    return tuple(rows)


def _positions(family: BackendFamily, names: Sequence[str]) -> list[int] | None:
    labels = family.labelnames
    return [labels.index(name) for name in names] if set(names) <= set(labels) else None


def _count_calls(
    family: BackendFamily, providers: Collection[str], counts: dict[tuple[str, str], list[int]]
) -> None:
    positions = _positions(family, ("provider", "model", "status"))
    if positions is None:
        return
    p, m, s = positions
    for labels, value in family.samples:
        if labels[p] not in providers:
            continue
        row = counts.setdefault((labels[p], labels[m]), [0, 0, 0])
        calls = int(value)
        row[0] += calls if labels[s] in SUCCESS_STATUSES else 0
        row[1] += calls if labels[s] in FAILURE_STATUSES else 0
        row[2] += calls


def _sum_latency(
    family: BackendFamily,
    providers: Collection[str],
    latency: dict[tuple[str, str], tuple[float, int]],
) -> None:
    positions = _positions(family, ("provider", "model"))
    if positions is None:
        return
    p, m = positions
    for labels, cumulative, total in family.histograms:
        if labels[p] in providers and cumulative:
            key = (labels[p], labels[m])
            before_sum, before_count = latency.get(key, (0.0, 0))
            latency[key] = (before_sum + total, before_count + cumulative[-1])


def _window(health: ProviderHealth, outcome: str) -> int:
    return health.window_by_outcome.get(outcome, 0)


def system_uptime(providers: Sequence[ProviderHealth]) -> float:
    """Percent of the window's successes among successes and failures, all providers together
    (rate-limited calls and caller errors in neither, as for the error rate); with no such call,
    the percent of providers whose breaker is closed; 100 with no provider."""
    successes = sum(_window(p, "success") for p in providers)
    calls = successes + sum(_window(p, "failure") for p in providers)
    if calls:
        return 100.0 * successes / calls
    if not providers:
        return 100.0
    return 100.0 * sum(p.breaker.state == CLOSED for p in providers) / len(providers)


def response_time_ms(providers: Sequence[ProviderHealth]) -> float | None:
    """The providers' window p95 of successful calls in milliseconds, averaged weighted by their
    successful calls in the window (the per-provider figure, for the system); None without a
    successful call."""
    weighted = [
        (p.latency_p95_seconds, _window(p, "success"))
        for p in providers
        if p.latency_p95_seconds is not None and _window(p, "success") > 0
    ]
    calls = sum(n for _, n in weighted)
    if not calls:
        return None
    return 1000.0 * sum(p95 * n for p95, n in weighted) / calls


def last_incident(providers: Sequence[ProviderHealth]) -> float | None:
    """When the latest incident in progress began: the most recent transition of a breaker that
    is open or half-open now (the snapshot keeps no history of closed ones); None when every
    breaker is closed."""
    times = [p.breaker.since for p in providers if p.breaker.state != CLOSED and p.breaker.since]
    return max(times, default=None)
