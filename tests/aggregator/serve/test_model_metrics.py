"""The model breakers' family: one-hot per (provider, model), labels escaped by the exposition,
no series without model breakers. Pure, no Redis."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.snapshot import Snapshot
from aggregator.serve.model_metrics import model_metrics
from gatewayz_protocol.breaker_state import OPEN, BreakerState


class _Only(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self):  # type: ignore[no-untyped-def]
        return model_metrics(self._snapshot)


def _text(snapshot: Snapshot) -> str:
    registry = CollectorRegistry()
    registry.register(_Only(snapshot))
    return generate_latest(registry).decode()


def test_one_hot_per_model() -> None:
    rows = (
        ModelBreaker("openrouter", "openai/gpt-4o", BreakerState(OPEN, 1.0, 1, 31.0, 1)),
        ModelBreaker("openrouter", 'we"ird\\name'),
    )
    text = _text(Snapshot(1.0, 1, model_breakers=rows))
    prefix = "gatewayz_model_circuit_breaker_state{"
    assert f'{prefix}model="openai/gpt-4o",provider="openrouter",state="open"}} 1.0' in text
    assert f'{prefix}model="openai/gpt-4o",provider="openrouter",state="closed"}} 0.0' in text
    assert f'{prefix}model="we\\"ird\\\\name",provider="openrouter",state="closed"}} 1.0' in text
    assert text.count(prefix) == 6


def test_no_series_without_model_breakers() -> None:
    text = _text(Snapshot(1.0, 1))
    assert "# TYPE gatewayz_model_circuit_breaker_state gauge" in text
    assert "gatewayz_model_circuit_breaker_state{" not in text
