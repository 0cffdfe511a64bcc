"""The cycle's evaluate step: the breakers' decisions (``core.decisions``) as writes, and what
the commit made of them: the states after it, logged."""

from __future__ import annotations

import logging

from aggregator.core.breaker import BreakerConfig, Transition
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.decisions import Decisions, decide
from aggregator.core.readings import Reading
from aggregator.core.snapshot import Snapshot
from aggregator.core.times import human
from aggregator.engine.writer import FENCED, Committed, PlannedWrite
from gatewayz_protocol.breaker_state import HALF_OPEN, OPEN, BreakerState

log = logging.getLogger("gatewayz.aggregator")


class BreakerStep:
    """Decides the breakers each cycle and remembers which openings the max-open-share guard
    held back (the snapshot exports them as ``open_suppressed``)."""

    def __init__(self, config: BreakerConfig | BreakerPolicy) -> None:
        self._policy = config if isinstance(config, BreakerPolicy) else BreakerPolicy(config)
        self._config = self._policy.default
        self.suppressed: frozenset[str] = frozenset()

    def decide(self, reading: Reading, last: Snapshot | None, now: float) -> Decisions:
        decisions = decide(reading.providers, last, now, self._policy)
        for name, transition in decisions.suppressed:
            log.warning(
                "breaker %s: would open (%s) but %.0f%% of providers are already open",
                name,
                transition.reason,
                self._config.max_open_share * 100,
            )
        self.suppressed = frozenset(name for name, _ in decisions.suppressed)
        return decisions

    @staticmethod
    def writes(decisions: Decisions) -> list[PlannedWrite]:
        """The transitions, compare-and-set on the epoch read, then the restores (epoch 0: only
        where the state is still missing)."""
        writes = [
            PlannedWrite(name, t.old.epoch, t.new, f"{t.old.state}>{t.new.state}")
            for name, t in decisions.transitions
        ]
        return writes + [PlannedWrite(name, 0, s, "") for name, s in decisions.restores.items()]

    def settle(
        self, decisions: Decisions, committed: Committed, states: dict[str, BreakerState]
    ) -> list[Transition]:
        """Apply to ``states`` what the commit wrote; the transitions applied. (A result of
        ``FENCED``: a newer leader exists, the caller steps down.)"""
        kept = len(decisions.transitions)
        for (name, state), result in zip(
            decisions.restores.items(), committed.results[kept:], strict=True
        ):
            if result == 1:
                states[name] = state
                log.warning(
                    "breaker %s: its state vanished from Redis (evicted?); restored %s from the "
                    "last snapshot",
                    name,
                    "forced " + state.state if state.forced else state.state,
                )
        applied = []
        for (name, transition), result in zip(
            decisions.transitions, committed.results[:kept], strict=True
        ):
            if result == 1:
                states[name] = transition.new
                applied.append(transition)
                self._log_applied(name, transition)
            elif result != FENCED:
                log.warning("breaker %s: epoch moved on before our write; re-read next cycle", name)
        return applied

    def _log_applied(self, name: str, transition: Transition) -> None:
        log.info(
            "breaker %s: %s -> %s (%s); epoch %d, calls counted %d, next deadline %s",
            name,
            transition.old.state,
            transition.new.state,
            transition.reason,
            transition.new.epoch,
            transition.calls.total,
            _deadline(transition.new, self._policy.config(name)),
        )


def _deadline(state: BreakerState, config: BreakerConfig) -> str:
    """When the state is next decided, as people read it (the transition's time is "now")."""
    if state.forced:
        return "none (forced)"
    if state.state == OPEN:
        return f"half_open at {human(state.open_until, state.since)}"
    if state.state == HALF_OPEN:
        timeout_at = state.since + config.half_open_timeout_seconds
        return (
            f"decide after {config.half_open_calls} trial calls or at "
            f"{human(timeout_at, state.since)}"
        )
    return "none"
