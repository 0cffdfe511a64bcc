"""A provider's circuit breaker as stored in its ``breaker`` hash: the aggregator writes it (through
the transition script), workers read its ``state`` and the permit script its permit fields."""

from __future__ import annotations

import math
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


def is_transition_field(name: str) -> bool:
    """Whether ``name`` is a field of a ``transitions`` hash: ``<from>><to>``, both states (an
    operator's command may count ``open>open``)."""
    old, arrow, new = name.partition(">")
    return bool(arrow) and old in STATES and new in STATES


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
        "permit_ms", str(max(1, round(permit_seconds * 1000))),
    ]  # fmt: skip


def decode_breaker(raw: Mapping[bytes, bytes]) -> BreakerState:
    """A breaker hash as a state (``read_breaker`` without the names of what it skipped)."""
    return read_breaker(raw)[0]


def read_breaker(raw: Mapping[bytes, bytes]) -> tuple[BreakerState, list[str]]:
    """A breaker hash as a state, and the names of the fields no writer of this project could
    have written (not UTF-8, a state that is not one, a number that is not one): each skipped,
    its default taken, so a hand edit or a foreign writer never stops a cycle. A missing hash is
    a closed breaker."""
    fields: dict[str, str] = {}
    bad: list[str] = []
    for name, value in raw.items():
        try:
            fields[name.decode()] = value.decode()
        except UnicodeDecodeError:
            bad.append(name.decode("utf-8", "replace"))
    state = fields.get(STATE_FIELD, CLOSED)
    if state not in STATES:
        bad.append(STATE_FIELD)
        state = CLOSED
    times = {key: _number(fields, key, float, bad) for key in ("since", "open_until")}
    counts = {key: _number(fields, key, int, bad) for key in ("epoch", "consecutive_opens")}
    state_read = BreakerState(
        state=state,
        since=float(times["since"]),
        epoch=int(counts["epoch"]),
        open_until=float(times["open_until"]),
        consecutive_opens=int(counts["consecutive_opens"]),
        forced=fields.get(FORCED_FIELD) == "1",
    )
    return state_read, bad


def _number(
    fields: Mapping[str, str], key: str, kind: type[int] | type[float], bad: list[str]
) -> int | float:
    """A finite number, or for a count at most 15 decimal digits (as the transition script and
    the lease read theirs: the two must agree, and Lua's numbers are exact up to 2^53); else 0
    with ``key`` noted in ``bad``."""
    text = fields.get(key)
    if text is None:
        return kind(0)
    if kind is int:
        if text.isascii() and text.isdigit() and len(text) <= 15:
            return int(text)
    else:
        try:
            number = float(text)
            if math.isfinite(number):
                return number
        except ValueError:
            pass
    bad.append(key)
    return kind(0)


def decode_state_name(raw: bytes | str | None) -> str:
    """A ``state`` field as read by a worker: closed when absent."""
    if not raw:
        return CLOSED
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return name if name in STATES else CLOSED
