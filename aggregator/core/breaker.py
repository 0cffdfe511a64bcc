"""Circuit-breaker state machine: a pure function of (state, calls since transition, now).

closed -> open       calls in the breaker window (8 s, never before the last transition)
                     >= min_calls and failure rate >= threshold
open -> half_open    once now >= open_until (open time doubles per consecutive re-open, capped)
half_open -> closed  after half_open_calls calls since the transition, failure rate < threshold
half_open -> open    same count, failure rate >= threshold; or half_open_timeout passed with
                     fewer trial calls
On a worker's wake (``gatewayz_protocol.wakes``), a closed breaker is also judged over the calls
of the last ``recent_window_seconds`` (same minimum and rate): after a long healthy spell the
8 s window needs 4 s of failures to reach a 50% rate, the recent one half a second.
A forced state (operator command) never changes automatically. ``limit_open_share`` keeps the
share of providers that do not admit traffic under a configured bound.

Counting only calls made after the last transition is what keeps a recovered provider closed
while its old failures are still inside the 5-minute window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState


@dataclass(frozen=True)
class BreakerConfig:
    min_calls: int = 20
    failure_rate: float = 0.5
    open_seconds: float = 30.0
    max_open_seconds: float = 300.0
    half_open_calls: int = 5
    half_open_timeout_seconds: float = 60.0
    rate_limited_is_failure: bool = True
    max_open_share: float = 1.0
    window_seconds: float = 8.0
    """A closed breaker judges the calls of the last ``window_seconds`` (since its last
    transition at most): short, so an outage is seen within seconds even after hours of healthy
    traffic. Half-open trial calls count from the transition on."""
    recent_window_seconds: float = 1.0
    """On a worker's wake, a closed breaker is also judged over the calls of the last
    ``recent_window_seconds`` (since its last transition at most), ``min_calls`` and
    ``failure_rate`` alike: an outage opens it about half this time after it began, where the
    breaker window alone takes half of ``window_seconds``. 0: wakes judge the breaker window
    only."""


@dataclass(frozen=True)
class BreakerCalls:
    """Calls counted by the breaker since its last transition (caller errors excluded)."""

    successes: int
    failures: int

    @property
    def total(self) -> int:
        return self.successes + self.failures

    @property
    def failure_rate(self) -> float:
        return self.failures / self.total if self.total else 0.0


@dataclass(frozen=True)
class Transition:
    old: BreakerState
    new: BreakerState
    reason: str
    calls: BreakerCalls = BreakerCalls(0, 0)


def counting_start(state: BreakerState, now: float, config: BreakerConfig) -> float:
    """Calls made after this time are the ones ``evaluate`` must be given."""
    if state.state == CLOSED:
        return max(state.since, now - config.window_seconds)
    return state.since


def recent_start(state: BreakerState, now: float, config: BreakerConfig) -> float:
    """Calls made after this time are the ones ``evaluate_woken`` judges as recent (a closed
    breaker's; otherwise the same as ``counting_start``)."""
    if state.state == CLOSED:
        return max(state.since, now - config.recent_window_seconds)
    return state.since


def evaluate_woken(
    state: BreakerState,
    calls: BreakerCalls,
    recent: BreakerCalls,
    now: float,
    config: BreakerConfig,
) -> Transition | None:
    """The transition due now when a worker woke the breaker: ``evaluate`` on ``calls`` (made
    after ``counting_start``), and for a closed breaker also on ``recent`` (made after
    ``recent_start``), which may open it sooner. Nothing else differs: an open or half-open
    breaker is decided exactly as by a cycle."""
    transition = evaluate(state, calls, now, config)
    if transition is not None or state.state != CLOSED or config.recent_window_seconds <= 0:
        return transition
    transition = evaluate(state, recent, now, config)
    if transition is None:
        return None
    window = f" in the last {config.recent_window_seconds:g}s (woken)"
    return replace(transition, reason=transition.reason + window)


def open_duration(consecutive_opens: int, config: BreakerConfig) -> float:
    """Open time for the n-th consecutive opening (n >= 1): base * 2^(n-1), capped."""
    exponent = max(0, consecutive_opens - 1)
    if exponent > 62:
        return config.max_open_seconds
    return float(min(config.open_seconds * (2**exponent), config.max_open_seconds))


def _open(state: BreakerState, now: float, config: BreakerConfig) -> BreakerState:
    opens = state.consecutive_opens + 1
    # A deadline is only ever extended, never shortened.
    until = max(now + open_duration(opens, config), state.open_until)
    return BreakerState(OPEN, now, state.epoch + 1, until, opens)


def evaluate(
    state: BreakerState, calls: BreakerCalls, now: float, config: BreakerConfig
) -> Transition | None:
    """The transition due now, or None. ``calls`` must count the calls made after
    ``counting_start(state, now, config)``."""
    if state.forced:
        return None
    rate = calls.failure_rate
    if state.state == CLOSED:
        if calls.total >= config.min_calls and rate >= config.failure_rate:
            return Transition(
                state,
                _open(state, now, config),
                f"failure rate {rate:.3f} >= {config.failure_rate} over {calls.total} calls",
                calls,
            )
        return None
    if state.state == OPEN:
        if now >= state.open_until:
            new = replace(state, state=HALF_OPEN, since=now, epoch=state.epoch + 1)
            return Transition(state, new, f"open time elapsed at {state.open_until:.3f}")
        return None
    if state.state == HALF_OPEN:
        if calls.total < config.half_open_calls:
            if now - state.since >= config.half_open_timeout_seconds:
                return Transition(
                    state,
                    _open(state, now, config),
                    f"half-open timeout: {calls.total} of {config.half_open_calls} trial calls "
                    f"in {config.half_open_timeout_seconds:g}s",
                    calls,
                )
            return None
        if rate < config.failure_rate:
            new = BreakerState(CLOSED, now, state.epoch + 1, state.open_until, 0)
            return Transition(
                state,
                new,
                f"trial failure rate {rate:.3f} < {config.failure_rate} over {calls.total} calls",
                calls,
            )
        return Transition(
            state,
            _open(state, now, config),
            f"trial failure rate {rate:.3f} >= {config.failure_rate} over {calls.total} calls",
            calls,
        )
    raise ValueError(f"unknown breaker state {state.state!r}")


def limit_open_share(
    planned: Sequence[tuple[str, Transition]],
    current: Mapping[str, BreakerState],
    max_share: float,
) -> tuple[list[tuple[str, Transition]], list[tuple[str, Transition]]]:
    """(kept, suppressed): closed -> open transitions beyond ``max_share`` of all providers not
    admitting traffic (open or half_open, forced or not) are suppressed, the worst failure rates
    opening first. Other transitions are always kept."""
    limit = math.floor(max_share * len(current) + 1e-9)
    not_admitting = sum(1 for s in current.values() if s.state != CLOSED)
    for _, transition in planned:
        if transition.old.state != CLOSED and transition.new.state == CLOSED:
            not_admitting -= 1
    openings = sorted(
        (item for item in planned if item[1].old.state == CLOSED),
        key=lambda item: (-item[1].calls.failure_rate, item[0]),
    )
    suppressed: list[tuple[str, Transition]] = []
    for item in openings:
        if not_admitting < limit:
            not_admitting += 1
        else:
            suppressed.append(item)
    kept = [item for item in planned if item not in suppressed]
    return kept, suppressed
