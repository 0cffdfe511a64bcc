"""What ``record()`` accepts: validation of one provider call into an event tuple (pure).

Bounds keep every value inside what Redis's 64-bit integers add up exactly: a latency of at most
a day, at most 1e12 tokens and 1e6 USD per call."""

from __future__ import annotations

import math

from client.keys import NANO_USD_PER_USD, is_valid_provider
from client.outcome import OUTCOME_CODES, classify_status

Event = tuple[str, float, float, int, int, int]
"""(provider, unix time, latency seconds, outcome code, tokens, cost in nano-USD)."""

_MAX_CACHED_NAMES = 4096
_INF = math.inf
MAX_LATENCY_SECONDS = 86_400.0  # a day: longer is a bug, and it must fit Redis's integers
MAX_TOKENS = 10**12
MAX_COST_USD = 1e6
_STATUS_CLASSES: dict[int, int] = {code: classify_status(code) for code in range(100, 600)}
"""Outcome code of every valid HTTP status: one dict lookup on the hot path."""


class Rejected(Exception):
    """A record() call that cannot become an event; ``cause`` is the counted reason."""

    def __init__(self, cause: str, value: object) -> None:
        super().__init__(cause)
        self.cause = cause
        self.value = value


class EventValidator:
    """Checks record() arguments; remembers valid provider names so the hot path skips the
    regex for them (up to a bound, so a flood of names cannot grow it)."""

    def __init__(self) -> None:
        self._valid_names: set[str] = set()

    def validate(
        self,
        provider: str,
        latency_s: float,
        status_code: int | None,
        outcome: str | None,
        tokens: int,
        cost_usd: float,
    ) -> tuple[int, int]:
        """(outcome code, cost in nano-USD), or raises Rejected (TypeError on odd types)."""
        if provider not in self._valid_names:
            if not is_valid_provider(provider):
                raise Rejected("invalid_provider", provider)
            if len(self._valid_names) < _MAX_CACHED_NAMES:
                self._valid_names.add(provider)
        if not 0.0 <= latency_s <= MAX_LATENCY_SECONDS:
            raise Rejected("invalid_latency", latency_s)
        if status_code is not None:
            if outcome is not None:
                raise Rejected("status_and_outcome", (status_code, outcome))
            found = _STATUS_CLASSES.get(status_code) if type(status_code) is int else None
            if found is None:
                raise Rejected("invalid_status_code", status_code)
            code = found
        elif outcome is None:
            code = 0
        else:
            maybe = OUTCOME_CODES.get(outcome)
            if maybe is None:
                raise Rejected("invalid_outcome", outcome)
            code = maybe
        if tokens and (type(tokens) is not int or not 0 <= tokens <= MAX_TOKENS):
            raise Rejected("invalid_tokens", tokens)
        cost_nusd = 0
        if cost_usd:
            if not 0.0 <= cost_usd <= MAX_COST_USD:
                raise Rejected("invalid_cost", cost_usd)
            cost_nusd = round(cost_usd * NANO_USD_PER_USD)
        return code, cost_nusd
