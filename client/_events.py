"""What ``record()`` and ``record_inference()`` accept, as pure functions: validation of one
provider call into an event tuple, and of the values booked beside it.

Two kinds of value, two rules. What the provider's health event is made of (provider, latency,
status code or outcome) is checked first, and one bad value rejects the call: nothing is booked.
Every other value (tokens, cost, credits, TTFB, TTFC, model, endpoint, exemplar) is checked on
its own: a bad one is left out, counted by cause, and the rest of the call is booked. A value
that is 0, None, False or empty means none given.

Bounds keep every value inside what Redis's 64-bit integers add up exactly: a latency of at most
a day, at most 1e12 tokens and 1e6 USD (or credits) per call."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from client._outcome import classify_status, plain_status
from gatewayz_protocol.fields import NANO_USD_PER_USD
from gatewayz_protocol.names import is_valid_provider
from gatewayz_protocol.partitions import OUTCOME_CODES, UNWINDOWED

Event = (
    tuple[str, float, float, int, int, int, dict[str, str] | None]
    | tuple[str, float, float, int, int, int, dict[str, str] | None, str]
)
"""(provider, time on the client's clock, latency seconds, outcome code, tokens, cost in nano-USD,
exemplar labels or None[, model]): the model (bounded) only for a call of a provider with model
breakers (``breaker_models``), whose model scope it also feeds. The client's clock is the
monotonic one (moved onto Redis's by the offset measured when the batch is built), or an
injected clock taken as the shared one. Codes: ``OUTCOMES``' (0..3), ``CANCELLED`` (no
latency, no window member) and ``USAGE`` (tokens and cost added to a call booked earlier:
nothing else)."""

_MAX_CACHED_NAMES = 4096
MAX_LATENCY_SECONDS = 86_400.0  # a day: longer is a bug, and it must fit Redis's integers
MAX_TOKENS = 10**12
MAX_COST_USD = 1e6
MAX_CREDITS = 1e6
_STATUS_CLASSES: dict[int, int] = {code: classify_status(code) for code in range(100, 600)}
"""Outcome code of every valid HTTP status: one dict lookup on the hot path."""
RECORDED_OUTCOMES: Final = {**OUTCOME_CODES, **UNWINDOWED}
"""The outcomes ``record(outcome=...)`` takes: the four classes, and ``cancelled``."""

Omitted = list[tuple[str, object]]
"""(cause, value) of each value left out of a call that was booked."""


class Rejected(Exception):
    """A call that cannot become an event; ``cause`` is the counted reason."""

    def __init__(self, cause: str, value: object) -> None:
        super().__init__(cause)
        self.cause = cause
        self.value = value


class EventValidator:
    """Checks what a call's health event is made of; remembers valid provider names so the hot
    path skips the regex for them (up to a bound, so a flood of names cannot grow it)."""

    def __init__(self) -> None:
        self._valid_names: set[str] = set()

    def validate(
        self, provider: str, latency_s: float, status_code: int | None, outcome: str | None
    ) -> int:
        """The event's outcome code, or raises Rejected (TypeError on odd types)."""
        if provider not in self._valid_names:
            if not is_valid_provider(provider):
                raise Rejected("invalid_provider", provider)
            if len(self._valid_names) < _MAX_CACHED_NAMES:
                self._valid_names.add(provider)
        try:
            in_range = 0.0 <= latency_s <= MAX_LATENCY_SECONDS
        except ArithmeticError:  # a Decimal NaN refuses to be compared (decimal.InvalidOperation)
            in_range = False
        if not in_range:
            raise Rejected("invalid_latency", latency_s)
        if status_code is not None:
            if outcome is not None:
                raise Rejected("status_and_outcome", (status_code, outcome))
            if type(status_code) is not int:
                status_code = plain_status(status_code)  # type: ignore[assignment]
            found = _STATUS_CLASSES.get(status_code) if type(status_code) is int else None
            if found is None:
                raise Rejected("invalid_status_code", status_code)
            return found
        if outcome is None:
            return 0
        maybe = RECORDED_OUTCOMES.get(outcome) if type(outcome) is str else None
        if maybe is None:
            raise Rejected("invalid_outcome", outcome)
        return maybe

    def valid_provider(self, provider: object) -> bool:
        """Whether ``provider`` is a name ``validate()`` takes (never raises)."""
        try:
            return provider in self._valid_names or is_valid_provider(provider)
        except Exception:
            return False


def plain_number(value: object) -> int | float | None:
    """``value`` as a plain int or float when it is a number the client takes: an int (not a
    bool), a float, a subclass of either, or a finite ``decimal.Decimal`` (what a database
    driver returns for a NUMERIC column, a price say) as a float; None otherwise. A Decimal is
    as welcome as the float a cost or a credit amount ends up as: Redis adds integers, and each
    amount is rounded to one before it gets there. Never raises."""
    if type(value) is int or type(value) is float:
        return value
    try:
        if isinstance(value, Decimal):
            return float(value) if value.is_finite() else None
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
    except Exception:  # an odd subclass whose conversion fails: not a number
        pass
    return None


def token_count(value: object) -> int | None:
    """A token count as an int (an integral float or Decimal such as 12.0 is 12; none given is
    0), or None when it is not one in [0, 1e12]. Never raises."""
    if type(value) is int:
        return value if 0 <= value <= MAX_TOKENS else None
    try:
        if not value:
            return 0
    except Exception:
        return None
    number = plain_number(value)
    if type(number) is float and number.is_integer():
        number = int(number)
    return number if type(number) is int and 0 <= number <= MAX_TOKENS else None


def nano_usd(value: object) -> int | None:
    """A cost in USD as integer nano-USD (none given is 0), or None when it is not a number in
    [0, 1e6]. Never raises."""
    try:
        if not value:
            return 0
        if not 0.0 <= value <= MAX_COST_USD:  # type: ignore[operator]
            return None
        return round(value * NANO_USD_PER_USD)  # type: ignore[operator]
    except Exception:
        return None


def credits_amount(value: object) -> int | float | None:
    """Credits as an int or float in [0, 1e6] (a Decimal as a float; none given is 0), or None.
    Never raises."""
    number = plain_number(value)
    if number is not None:
        return number if 0.0 <= number <= MAX_CREDITS else None
    try:
        return 0 if not value else None
    except Exception:
        return None


def seconds_or_none(value: object) -> tuple[float | None, bool]:
    """(a TTFB or TTFC in seconds, or None when not measured; whether it was valid): a number in
    [0, a day] (a Decimal too), or None. Never raises."""
    if value is None:
        return None, True
    number = plain_number(value)
    if number is not None and 0.0 <= number <= MAX_LATENCY_SECONDS:
        return float(number), True
    return None, False


InferenceValues = tuple[str | None, str | None, int, int, int | float, float | None, float | None]
"""(model, endpoint, input tokens, output tokens, credits, TTFB, TTFC) as checked: None for a
model, endpoint, TTFB or TTFC left out, 0 for a count left out."""


def check_inference(
    model: object,
    endpoint: object,
    input_tokens: object,
    output_tokens: object,
    credits: object,
    ttfb_s: object,
    ttfc_s: object,
    omitted: Omitted,
) -> InferenceValues:
    """What ``record_inference()`` takes beyond ``record()``'s arguments, each value checked on
    its own: a bad one is left out and appended to ``omitted`` with its cause. A model that is
    not a string leaves out every per-model metric; an endpoint, the TTFB (the one metric it
    labels). Never raises."""
    if type(model) is not str:
        omitted.append(("invalid_model", model))
        model = None
    if type(endpoint) is not str:
        omitted.append(("invalid_endpoint", endpoint))
        endpoint = None
    counts = []
    for count in (input_tokens, output_tokens):
        checked = count if type(count) is int and 0 <= count <= MAX_TOKENS else token_count(count)
        if checked is None:
            omitted.append(("invalid_tokens", count))
        counts.append(checked or 0)
    amount = credits_amount(credits)
    if amount is None:
        omitted.append(("invalid_credits", credits))
    ttfb, ttfb_ok = seconds_or_none(ttfb_s)
    if not ttfb_ok:
        omitted.append(("invalid_ttfb", ttfb_s))
    ttfc, ttfc_ok = seconds_or_none(ttfc_s)
    if not ttfc_ok:
        omitted.append(("invalid_ttfc", ttfc_s))
    return model, endpoint, counts[0], counts[1], amount or 0, ttfb, ttfc
