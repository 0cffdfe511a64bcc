"""What one cycle's reading decides for the breakers: pure, over the reading, the last snapshot
and the time (``breaker`` is the state machine of one breaker; this is all of them at once)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.core.breaker import (
    BreakerCalls,
    BreakerConfig,
    Transition,
    evaluate,
    limit_open_share,
)
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.health import WindowCounts
from aggregator.core.model_breakers import ModelReading
from aggregator.core.readings import ProviderReading
from aggregator.core.snapshot import Snapshot
from gatewayz_protocol.breaker_state import CLOSED, BreakerState


@dataclass(frozen=True)
class Decisions:
    transitions: tuple[tuple[str, Transition], ...]
    """(provider, transition) to write, the max-open-share guard applied."""
    suppressed: tuple[tuple[str, Transition], ...]
    """Openings the guard held back."""
    restores: Mapping[str, BreakerState]
    """Breakers whose state vanished from Redis, to restore from the last snapshot."""
    models: tuple[tuple[ModelReading, Transition], ...] = ()
    """Model breakers' transitions to write (``breaker_models``), after the rest."""


def breaker_calls(counts: WindowCounts, config: BreakerConfig) -> BreakerCalls:
    """The calls a breaker judges: caller errors never; rate-limited ones as failures unless
    configured otherwise."""
    failures = counts.failures + (counts.rate_limited if config.rate_limited_is_failure else 0)
    return BreakerCalls(counts.successes, failures)


def vanished(states: Mapping[str, BreakerState], last: Snapshot | None) -> dict[str, BreakerState]:
    """Breakers the last snapshot shows acting (open, half-open or forced) whose state is gone
    from Redis (evicted, or Redis emptied): their last known state, to restore. A breaker
    silently closed would let traffic through to a dead provider."""
    if last is None:
        return {}
    restores = {}
    for health in last.providers:
        known = health.breaker
        now_in_redis = states.get(health.provider)
        if now_in_redis is None or now_in_redis.epoch != 0 or known.epoch == 0:
            continue
        if known.forced or known.state != CLOSED:
            restores[health.provider] = known
    return restores


def decide(
    providers: Sequence[ProviderReading],
    last: Snapshot | None,
    now: float,
    config: BreakerConfig | BreakerPolicy,
) -> Decisions:
    """Every breaker evaluated on its calls since it started counting, by its provider's
    configuration (``config``: one for all, or a policy); a breaker to restore is evaluated next
    cycle, from its restored state."""
    policy = config if isinstance(config, BreakerPolicy) else BreakerPolicy(config)
    states = {item.provider: item.breaker for item in providers}
    restores = vanished(states, last)
    planned = []
    for item in providers:
        if item.provider in restores:
            continue
        own = policy.config(item.provider)
        transition = evaluate(item.breaker, breaker_calls(item.breaker_counts, own), now, own)
        if transition is not None:
            planned.append((item.provider, transition))
    kept, suppressed = limit_open_share(planned, states, policy.default.max_open_share)
    return Decisions(tuple(kept), tuple(suppressed), restores)


def acting(states: Mapping[str, BreakerState]) -> list[str]:
    """Providers whose breaker acts: forced, or not closed (they must stay registered)."""
    return [name for name, state in states.items() if state.forced or state.state != CLOSED]


def acting_in(snapshot: Snapshot | None) -> list[str]:
    """The providers whose breaker acts in ``snapshot`` (a registry lost to eviction must not
    hide an open breaker: the next read includes them)."""
    return acting({p.provider: p.breaker for p in (snapshot.providers if snapshot else ())})
