"""What a worker can say of a provider's circuit breaker: ``BreakerStatus`` (the answer of
``breaker()``, which takes nothing, and of ``admit()``, which decides a call), the
``CircuitOpenError`` a turned-away call raises, and when such a call may be retried (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from gatewayz_protocol.breaker_state import OPEN

BREAKER_REJECTED = "breaker_rejected"
"""What a timed block that a ``CircuitOpenError`` escaped is booked as (``call.booked_as``):
nothing, the rejection having been counted where the breaker decided (``allow()``,
``admit()``, ``guard=True``), in ``gatewayz_circuit_breaker_rejected_calls_total``."""


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A provider's breaker as this process sees it. True when ``allowed``, so
    ``if metrics.admit(provider):`` reads as ``if metrics.allow(provider):``."""

    provider: str
    state: str | None
    """``closed``, ``open`` or ``half_open``; None when this process knows no state for it
    (Redis never reached, or past the cap on providers cached): such calls pass (fail open)."""
    allowed: bool
    """``admit()``: whether this call may go to the provider (in half-open, a trial permit was
    taken for it). ``breaker()``: whether a call would be let through, no permit taken: closed
    or unknown, or half-open while this process was not refused a permit in the last refresh
    interval (only ``admit()`` can tell whether a permit is free)."""
    retry_after_s: float | None = None
    """When not allowed, seconds until a call may be let through as far as is known: open,
    until its deadline (0 once it passed: the aggregator's next evaluation moves it to
    half-open); half-open with its trial permits taken, until this process asks for one again
    (at most the refresh interval). None when allowed, and when no deadline is known (forced
    open by an operator)."""
    open_until: float | None = None
    """When an automatic open ends, as unix time on Redis's clock; None when not open or forced
    open."""
    forced: bool = False
    """An operator forced the state (never changed automatically)."""

    def __bool__(self) -> bool:
        return self.allowed


class CircuitOpenError(RuntimeError):
    """A call the provider's breaker turned away: raised by ``track(provider, guard=True)`` and
    ``gateway.inference(..., guard=True)`` before the block runs; ``retry_after_s`` as in
    ``BreakerStatus``. Raised inside a timed block, it books the call as ``breaker_rejected``
    (nothing written: count the rejection where the breaker decided)."""

    def __init__(self, provider: str, state: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"circuit breaker for {provider!r} is {state}: call not allowed")
        self.provider = provider
        self.state = state
        self.retry_after_s = retry_after_s

    @classmethod
    def of(cls, status: BreakerStatus) -> CircuitOpenError:
        """The error for a call ``status`` turned away."""
        return cls(status.provider, status.state or OPEN, status.retry_after_s)


def open_deadline(state: str | None, open_until: float, forced: bool) -> float | None:
    """When an open breaker ends (Redis's clock), if it will by itself."""
    if state != OPEN or forced or open_until <= 0.0:
        return None
    return open_until


def retry_after(
    state: str | None, deadline: float | None, now: float, denied_until: float, monotonic: float
) -> float | None:
    """Seconds until a call turned away may be let through: an open breaker's ``deadline``
    (``open_deadline``) minus ``now`` on the same clock, or for a half-open one until this
    process asks for a permit again (``denied_until`` on the ``monotonic`` clock); at least 0;
    None when nothing says (forced open)."""
    if state == OPEN:
        return None if deadline is None else max(0.0, deadline - now)
    return max(0.0, denied_until - monotonic)
