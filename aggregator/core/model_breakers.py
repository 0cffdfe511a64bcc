"""The optional model breakers (``gatewayz_protocol.model_scopes``), as pure functions: what a
cycle read of one (provider, model) scope, the transition due, and what the snapshot exports.

A model breaker is the provider's state machine (``core.breaker``) on its own calls, with its
provider's configuration (``breaker_providers``). It is judged by the breaker cycle like a
provider's, but is neither woken by workers (wakes name providers) nor held back by the
max-open-share guard (which bounds providers not admitting traffic).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import ConfigDict

from aggregator.core.breaker import (
    BreakerCalls,
    BreakerConfig,
    Transition,
    counting_start,
    evaluate,
)
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.schema import DATA_CONFIG
from gatewayz_protocol.breaker_state import BreakerState


@dataclass(frozen=True)
class ModelBreaker:
    """One (provider, model) breaker as a snapshot exports it."""

    __pydantic_config__: ClassVar[ConfigDict] = DATA_CONFIG

    provider: str
    model: str
    breaker: BreakerState = field(default_factory=BreakerState)


@dataclass(frozen=True)
class ModelReading:
    """One model scope as a cycle read it: its breaker, and its calls made after the breaker's
    counting start (successes, failures, rate-limited)."""

    provider: str
    model: str
    breaker: BreakerState
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0

    def calls(self, config: BreakerConfig) -> BreakerCalls:
        """The calls the breaker judges (rate-limited ones as failures unless configured
        otherwise, as a provider's)."""
        failures = self.failures + (self.rate_limited if config.rate_limited_is_failure else 0)
        return BreakerCalls(self.successes, failures)


def model_counting_start(state: BreakerState, now: float, config: BreakerConfig) -> float:
    """From when a model breaker's calls are counted: the provider's rule."""
    return counting_start(state, now, config)


def decide_models(
    readings: Iterable[ModelReading], now: float, policy: BreakerPolicy
) -> list[tuple[ModelReading, Transition]]:
    """The transitions due now, each model breaker judged by its provider's configuration."""
    due = []
    for reading in readings:
        config = policy.config(reading.provider)
        transition = evaluate(reading.breaker, reading.calls(config), now, config)
        if transition is not None:
            due.append((reading, transition))
    return due


def exported(
    readings: Sequence[ModelReading], applied: dict[tuple[str, str], BreakerState]
) -> tuple[ModelBreaker, ...]:
    """The model breakers to export: each read one, in its state after this cycle's writes
    (``applied``: the transitions that landed), sorted by provider and model."""
    rows = [
        ModelBreaker(r.provider, r.model, applied.get((r.provider, r.model), r.breaker))
        for r in readings
    ]
    return tuple(sorted(rows, key=lambda row: (row.provider, row.model)))
