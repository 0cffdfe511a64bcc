"""The dashboard's figures beyond a provider's own (pure, no Redis): model rows from the workers'
model metrics, the system's uptime, response time and last incident."""

from __future__ import annotations

import pytest

from aggregator.core.backend import BackendFamily
from aggregator.core.dashboard_figures import (
    ModelFigures,
    last_incident,
    model_figures,
    response_time_ms,
    system_uptime,
)
from aggregator.core.health import WindowCounts
from aggregator.core.snapshot import ProviderHealth, provider_health
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState
from gatewayz_protocol.partitions import LATENCY_PARTITIONS

NOW = 1_800_000_000.0


def calls(
    name: str, labelnames: tuple[str, ...], *samples: tuple[tuple[str, ...], float]
) -> BackendFamily:
    return BackendFamily(name, "counter", "", labelnames, (), tuple(samples), (), 0, 0)


def latency(*series: tuple[tuple[str, str], int, float]) -> BackendFamily:
    """model_inference_duration_seconds: (labels, count, sum) per series (one bucket: +Inf)."""
    histograms = tuple((labels, (count,), total) for labels, count, total in series)
    return BackendFamily(
        "model_inference_duration_seconds",
        "histogram",
        "",
        ("provider", "model"),
        (),
        (),
        histograms,
        0,
        0,
    )


LABELS = ("provider", "model", "status")


def test_a_row_per_model_of_the_providers_shown() -> None:
    families = (
        calls(
            "model_inference_requests",
            LABELS,
            (("openai", "gpt-4o", "success"), 18),
            (("openai", "gpt-4o", "failure"), 2),
            (("openai", "gpt-4o", "rate_limited"), 3),  # a call, neither success nor failure
            (("groq", "llama", "success"), 5),
            (("gone", "old", "success"), 9),  # its provider is not in the snapshot
        ),
        latency((("openai", "gpt-4o"), 23, 4.6), (("groq", "llama"), 5, 1.0), (("x", "y"), 1, 1.0)),
    )
    assert model_figures(families, {"openai", "groq"}) == (
        ModelFigures("groq", "llama", 5, 0, 5, 0.2),
        ModelFigures("openai", "gpt-4o", 18, 2, 23, pytest.approx(0.2)),  # type: ignore[arg-type]
    )


def test_the_origins_status_values_and_label_orders() -> None:
    """status_values="origin" writes success/error; a declaration may order labels otherwise."""
    family = calls(
        "model_inference_requests_total",
        ("status", "model", "provider"),
        (("success", "m", "p"), 3),
        (("error", "m", "p"), 1),
    )
    assert model_figures((family,), {"p"}) == (ModelFigures("p", "m", 3, 1, 4, None),)


def test_no_model_metrics_no_rows() -> None:
    assert model_figures((), {"p"}) == ()
    other = calls("model_inference_requests", ("provider", "status"), (("p", "success"), 1))
    gauge = BackendFamily("model_inference_requests", "gauge", "", LABELS, (), (), (), 0, 0)
    assert model_figures((other, gauge), {"p"}) == ()


def health(
    successes: int = 0,
    failures: int = 0,
    state: str = CLOSED,
    since: float = 0.0,
    partition: int = 3,
) -> ProviderHealth:
    parts = [0] * LATENCY_PARTITIONS
    parts[partition] = successes
    window = WindowCounts(tuple(parts), failures, 0, 0)
    breaker = BreakerState(state=state, since=since)
    return provider_health("p", window, breaker, {}, {}, 2.0, 10.0)


def test_system_uptime() -> None:
    assert system_uptime([health(30, 10), health(10, 0)]) == 80.0
    assert system_uptime([]) == 100.0
    # no success nor failure anywhere: the share of closed breakers
    assert system_uptime([health(), health(state=OPEN), health(state=HALF_OPEN), health()]) == 50.0


def test_response_time_is_the_p95s_weighted_by_successful_calls() -> None:
    fast, slow = health(30, partition=3), health(10, partition=8)
    assert fast.latency_p95_seconds is not None and slow.latency_p95_seconds is not None
    expected = 1000 * (30 * fast.latency_p95_seconds + 10 * slow.latency_p95_seconds) / 40
    assert response_time_ms([fast, slow, health(0, 5)]) == pytest.approx(expected)
    assert response_time_ms([health(0, 5)]) is None


def test_the_last_incident_is_one_in_progress() -> None:
    assert last_incident([health(state=CLOSED, since=NOW)]) is None
    providers = [health(state=OPEN, since=NOW - 60), health(state=HALF_OPEN, since=NOW - 5)]
    assert last_incident([*providers, health(since=NOW)]) == NOW - 5
