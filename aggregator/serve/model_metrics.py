"""The model breakers' family (``breaker_models``): one-hot states per (provider, model), a
family of its own beside the seed's ``gatewayz_circuit_breaker_state``, whose labels stay the
seed's."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from aggregator.core.snapshot import Snapshot
from gatewayz_protocol.breaker_state import STATES


def model_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    """The model breakers of the ``breaker_models`` providers (no series without any)."""
    family = GaugeMetricFamily(
        "gatewayz_model_circuit_breaker_state",
        "Circuit breaker state of each model of the providers with model breakers "
        "(--breaker-models), one-hot over closed, open, half_open",
        labels=["provider", "model", "state"],
    )
    for row in snapshot.model_breakers:
        for state in STATES:
            value = 1.0 if row.breaker.state == state else 0.0
            family.add_metric([row.provider, row.model, state], value)
    yield family
