"""A provider's circuit breaker as stored in its ``breaker`` hash: the aggregator writes it (through
the transition script), workers read its ``state`` and the permit script its permit fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
STATES: Final = (CLOSED, OPEN, HALF_OPEN)

STATE_FIELD: Final = "state"
"""The field workers read; a missing hash or field means closed."""
FORCED_FIELD: Final = "forced"
"""``1`` while an operator-forced state holds."""


@dataclass(frozen=True)
class BreakerState:
    """One provider's breaker. ``since`` is the time of the last transition (0 = never),
    ``epoch`` counts transitions (compare-and-set token), ``forced`` marks a state set by an
    operator."""

    # How pydantic (the aggregator's HTTP API, snapshot decoding) reads this class; a plain
    # dict, so the contract imports no pydantic: a worker does not install it.
    __pydantic_config__: ClassVar[dict[str, object]] = {
        "extra": "forbid",
        "use_attribute_docstrings": True,
    }

    state: str = CLOSED
    """closed, open or half_open"""
    since: float = 0.0
    epoch: int = 0
    open_until: float = 0.0
    consecutive_opens: int = 0
    forced: bool = False


def encode_breaker(state: BreakerState, permits: int, permit_seconds: float) -> list[str]:
    """Field/value pairs of the hash: the state, plus what the permit script needs (how many
    half-open trial permits, and their lifetime in ms)."""
    return [
        STATE_FIELD, state.state,
        "since", repr(state.since),
        "epoch", str(state.epoch),
        "open_until", repr(state.open_until),
        "consecutive_opens", str(state.consecutive_opens),
        FORCED_FIELD, "1" if state.forced else "0",
        "permits", str(permits),
        "permit_ms", str(max(1, int(permit_seconds * 1000))),
    ]  # fmt: skip


def decode_breaker(raw: Mapping[bytes, bytes]) -> BreakerState:
    if not raw:
        return BreakerState()
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    return BreakerState(
        state=fields.get(STATE_FIELD, CLOSED),
        since=float(fields.get("since", 0.0)),
        epoch=int(fields.get("epoch", 0)),
        open_until=float(fields.get("open_until", 0.0)),
        consecutive_opens=int(fields.get("consecutive_opens", 0)),
        forced=fields.get(FORCED_FIELD) == "1",
    )


def decode_state_name(raw: bytes | str | None) -> str:
    """A ``state`` field as read by a worker: closed when absent."""
    if not raw:
        return CLOSED
    return raw.decode() if isinstance(raw, bytes) else str(raw)
