"""What ``record()`` and ``record_inference()`` accept: validation of one provider call into an
event tuple (pure). One rule for both: a call is booked everywhere or rejected everywhere.

Bounds keep every value inside what Redis's 64-bit integers add up exactly: a latency of at most
a day, at most 1e12 tokens and 1e6 USD (or credits) per call."""

from __future__ import annotations

from client._outcome import classify_status
from gatewayz_protocol.fields import NANO_USD_PER_USD
from gatewayz_protocol.names import is_valid_provider
from gatewayz_protocol.partitions import OUTCOME_CODES

Event = tuple[str, float, float, int, int, int, dict[str, str] | None]
"""(provider, time on the client's clock, latency seconds, outcome code, tokens, cost in nano-USD,
exemplar labels or None). The client's clock is the monotonic one (moved onto Redis's by the
offset measured when the batch is built), or an injected clock taken as the shared one."""

_MAX_CACHED_NAMES = 4096
MAX_LATENCY_SECONDS = 86_400.0  # a day: longer is a bug, and it must fit Redis's integers
MAX_TOKENS = 10**12
MAX_COST_USD = 1e6
MAX_CREDITS = 1e6
_STATUS_CLASSES: dict[int, int] = {code: classify_status(code) for code in range(100, 600)}
"""Outcome code of every valid HTTP status: one dict lookup on the hot path."""


class Rejected(Exception):
    """A call that cannot become an event; ``cause`` is the counted reason."""

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
            maybe = OUTCOME_CODES.get(outcome) if type(outcome) is str else None
            if maybe is None:
                raise Rejected("invalid_outcome", outcome)
            code = maybe
        if tokens and not _is_count(tokens, MAX_TOKENS):
            raise Rejected("invalid_tokens", tokens)
        cost_nusd = 0
        if cost_usd:
            if not 0.0 <= cost_usd <= MAX_COST_USD:
                raise Rejected("invalid_cost", cost_usd)
            cost_nusd = round(cost_usd * NANO_USD_PER_USD)
        return code, cost_nusd


def check_inference(
    model: object,
    endpoint: object,
    input_tokens: object,
    output_tokens: object,
    credits: object,
    ttfb_s: object,
    ttfc_s: object,
) -> int:
    """What ``record_inference()`` takes beyond ``record()``'s arguments: the call's total tokens,
    or raises Rejected."""
    if type(model) is not str or type(endpoint) is not str:
        raise Rejected("invalid_argument", (model, endpoint))
    for count in (input_tokens, output_tokens):
        if not _is_count(count, MAX_TOKENS):
            raise Rejected("invalid_tokens", count)
    if not _is_number(credits, 0.0, MAX_CREDITS):
        raise Rejected("invalid_credits", credits)
    for seconds in (ttfb_s, ttfc_s):
        if seconds is not None and not _is_number(seconds, 0.0, MAX_LATENCY_SECONDS):
            raise Rejected("invalid_latency", seconds)
    return input_tokens + output_tokens  # type: ignore[operator,no-any-return]


def _is_count(value: object, limit: int) -> bool:
    return type(value) is int and 0 <= value <= limit


def _is_number(value: object, low: float, high: float) -> bool:
    """An int or float in [low, high]: not NaN, not a bool, not a numeric string."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return low <= value <= high
