"""What record() and record_inference() accept, as pure functions: the event's outcome code for a
valid call and the counted cause (and offending value) for each way its health event is invalid;
then each auxiliary value on its own (tokens, cost, credits, TTFB, TTFC, model, endpoint), left
out alone. Bounds inclusive. Outcome codes as the README numbers them: success 0, failure 1,
rate_limited 2, caller_error 3; cancelled 4 (no window partition)."""

from __future__ import annotations

import math
from decimal import Decimal
from enum import IntEnum
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from client._events import (
    EventValidator,
    Omitted,
    Rejected,
    check_inference,
    credits_amount,
    nano_usd,
    plain_number,
    seconds_or_none,
    token_count,
)


def validate(
    provider: Any = "openrouter",
    latency_s: Any = 0.42,
    status_code: Any = None,
    outcome: Any = None,
) -> int:
    return EventValidator().validate(provider, latency_s, status_code, outcome)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ({}, 0),  # neither status nor outcome: a success
        ({"status_code": 200}, 0),
        ({"status_code": 302}, 0),
        ({"status_code": 503}, 1),
        ({"status_code": 408}, 1),
        ({"status_code": 429}, 2),
        ({"status_code": 404}, 3),
        ({"outcome": "failure"}, 1),
        ({"outcome": "rate_limited"}, 2),
        ({"outcome": "caller_error"}, 3),
        ({"outcome": "cancelled"}, 4),
        ({"latency_s": 86_400.0}, 0),  # a day: the longest latency
        ({"latency_s": 0}, 0),
    ],
)
def test_a_valid_call_becomes_its_outcome_code(call: dict[str, Any], expected: int) -> None:
    assert validate(**call) == expected


@pytest.mark.parametrize(
    ("call", "cause", "value"),
    [
        ({"provider": "bad name"}, "invalid_provider", "bad name"),
        ({"provider": "a" * 65}, "invalid_provider", "a" * 65),
        ({"provider": "-a"}, "invalid_provider", "-a"),
        ({"latency_s": -0.001}, "invalid_latency", -0.001),
        ({"latency_s": 86_400.5}, "invalid_latency", 86_400.5),
        ({"latency_s": math.inf}, "invalid_latency", math.inf),
        ({"status_code": 99}, "invalid_status_code", 99),
        ({"status_code": 600}, "invalid_status_code", 600),
        ({"status_code": 200.0}, "invalid_status_code", 200.0),
        ({"status_code": True}, "invalid_status_code", True),
        ({"outcome": "SUCCESS"}, "invalid_outcome", "SUCCESS"),
        ({"outcome": ""}, "invalid_outcome", ""),
        ({"outcome": "breaker_rejected"}, "invalid_outcome", "breaker_rejected"),
        ({"status_code": 200, "outcome": "success"}, "status_and_outcome", (200, "success")),
    ],
)
def test_an_invalid_health_event_is_rejected_with_its_cause_and_value(
    call: dict[str, Any], cause: str, value: object
) -> None:
    with pytest.raises(Rejected) as rejected:
        validate(**call)
    assert (rejected.value.cause, rejected.value.value) == (cause, value)


class _Upstream(IntEnum):
    BUSY = 503


class _NoInt(int):
    def __int__(self) -> int:
        raise RuntimeError("no int")


def test_a_status_given_as_an_int_enum_is_the_status_it_stands_for() -> None:
    # FastAPI's HTTPException keeps the HTTPStatus it was given; httpx.codes is an IntEnum too
    statuses = (HTTPStatus.OK, httpx.codes.TOO_MANY_REQUESTS, HTTPStatus.NOT_FOUND, _Upstream.BUSY)
    assert [validate(status_code=status) for status in statuses] == [0, 2, 3, 1]
    for odd in (HTTPStatus.CONTINUE - 1, _NoInt(200)):  # an int subclass, but no status
        with pytest.raises(Rejected) as rejected:
            validate(status_code=odd)
        assert rejected.value.cause == "invalid_status_code"


def test_a_nan_latency_is_rejected_as_the_value_it_was() -> None:
    with pytest.raises(Rejected) as rejected:
        validate(latency_s=math.nan)
    assert rejected.value.cause == "invalid_latency"
    assert math.isnan(rejected.value.value)  # type: ignore[arg-type]


def test_a_latency_of_the_wrong_type_raises_type_error_for_the_caller_to_count() -> None:
    # record() counts these as invalid_argument
    for latency in ("0.1", None):
        with pytest.raises(TypeError):
            validate(latency_s=latency)


def test_a_provider_name_is_checked_once_then_remembered() -> None:
    validator = EventValidator()
    assert validator.validate("openrouter", 0.1, None, None) == 0
    assert validator.validate("openrouter", 0.2, 503, None) == 1
    with pytest.raises(Rejected):
        validator.validate("open router", 0.1, None, None)  # never remembered
    assert validator.valid_provider("openrouter") and validator.valid_provider("fireworks.ai")
    assert not any(validator.valid_provider(p) for p in ("open router", None, [], "a" * 65))


class _Tokens(IntEnum):
    MANY = 400


class _Falsy:
    def __bool__(self) -> bool:
        raise RuntimeError("no bool")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        (12.0, 12),  # an integral float is the count it says
        (0, 0),
        (10**12, 10**12),  # the most tokens
        (1e12, 10**12),
        (None, 0),  # none given
        (False, 0),
        ("", 0),
        (-0.0, 0),
        (-1, None),
        (10**12 + 1, None),
        (1.5, None),
        (math.nan, None),
        (math.inf, None),
        (-2.0, None),
        (True, None),
        ("12", None),
        (Decimal(3), 3),  # a NUMERIC column's count: integral, as 3.0 is
        (Decimal("1e12"), 10**12),
        (Decimal("2.5"), None),
        (Decimal("NaN"), None),
        (Decimal("-1"), None),
        (_Tokens.MANY, 400),  # an int subclass is its int
        (_Falsy(), None),
    ],
)
def test_a_token_count_is_an_int_or_left_out(value: object, expected: int | None) -> None:
    checked = token_count(value)
    assert checked == expected
    assert checked is None or type(checked) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0031, 3_100_000),
        (1e6, 10**15),  # the largest cost
        (Decimal("0.25"), 250_000_000),
        (True, 1_000_000_000),  # a bool is a number: 1 USD, as before
        (7, 7_000_000_000),
        (None, 0),
        (0.0, 0),
        (-0.01, None),
        (1e6 + 1, None),
        (math.inf, None),
        (math.nan, None),
        ("1", None),
        (_Falsy(), None),
    ],
)
def test_a_cost_is_nano_usd_or_left_out(value: object, expected: int | None) -> None:
    assert nano_usd(value) == expected


def test_credits_and_seconds_or_left_out() -> None:
    assert [credits_amount(v) for v in (0.5, 3, 1e6, None, 0.0)] == [0.5, 3, 1e6, 0, 0.0]
    assert [credits_amount(v) for v in (-0.5, True, "1", 1e6 + 1, math.nan)] == [None] * 5
    assert credits_amount(_Falsy()) is None
    assert [seconds_or_none(v) for v in (None, 0, 0.25, 86_400)] == [
        (None, True), (0.0, True), (0.25, True), (86_400.0, True),
    ]  # fmt: skip
    assert [seconds_or_none(v) for v in (-0.1, 86_401, math.nan, True, "1")] == [(None, False)] * 5


def test_a_finite_decimal_is_a_number_wherever_a_number_is_taken() -> None:
    # What a database driver returns for a NUMERIC column (a price, a balance)
    assert credits_amount(Decimal("0.0025000")) == 0.0025
    assert type(credits_amount(Decimal("0.0025000"))) is float
    assert [credits_amount(Decimal(v)) for v in ("1e6", "0", "-0.5", "1000001")] == [
        1e6, 0, None, None,
    ]  # fmt: skip
    assert [seconds_or_none(Decimal(v)) for v in ("0.25", "86400", "-0.1")] == [
        (0.25, True), (86_400.0, True), (None, False),
    ]  # fmt: skip
    assert validate(latency_s=Decimal("0.42"), status_code=503) == 1
    for odd in ("NaN", "sNaN", "Infinity", "-Infinity"):  # not finite: left out, never raised
        assert credits_amount(Decimal(odd)) is None
        assert seconds_or_none(Decimal(odd)) == (None, False)
        assert nano_usd(Decimal(odd)) is None
        with pytest.raises(Rejected) as rejected:
            validate(latency_s=Decimal(odd))
        assert rejected.value.cause == "invalid_latency"
    assert [plain_number(v) for v in (3, 0.5, Decimal("2"), _Tokens.MANY, True, "1", None)] == [
        3, 0.5, 2.0, 400, None, None, None,
    ]  # fmt: skip
    assert [type(plain_number(v)) for v in (Decimal("2"), _Tokens.MANY)] == [float, int]


def test_an_inference_keeps_its_valid_values_and_names_each_left_out() -> None:
    omitted: Omitted = []
    assert check_inference("gpt", "/v1/chat", 100, 40.0, 0.5, 0.1, None, omitted) == (
        "gpt", "/v1/chat", 100, 40, 0.5, 0.1, None,
    )  # fmt: skip
    assert omitted == []
    assert check_inference("gpt", "", 0, 0, 1e6, 86_400.0, 0.0, omitted) == (
        "gpt", "", 0, 0, 1e6, 86_400.0, 0.0,
    )  # the bounds, inclusive  # fmt: skip
    assert omitted == []
    cases: list[tuple[tuple[Any, ...], tuple[Any, ...], Omitted]] = [
        ((None, "", 1, 2, 0.0, None, None), (None, "", 1, 2, 0, None, None),
         [("invalid_model", None)]),
        (("gpt", 7, 0, 0, 0.0, 0.5, None), ("gpt", None, 0, 0, 0, 0.5, None),
         [("invalid_endpoint", 7)]),
        (("gpt", "", -1, 2.5, 0.0, None, None), ("gpt", "", 0, 0, 0, None, None),
         [("invalid_tokens", -1), ("invalid_tokens", 2.5)]),
        (("gpt", "", 3, 0, -0.5, None, None), ("gpt", "", 3, 0, 0, None, None),
         [("invalid_credits", -0.5)]),
        (("gpt", "", 0, 0, 0.0, -0.1, 86_401), ("gpt", "", 0, 0, 0, None, None),
         [("invalid_ttfb", -0.1), ("invalid_ttfc", 86_401)]),
    ]  # fmt: skip
    for args, values, causes in cases:
        omitted = []
        assert check_inference(*args, omitted) == values, args
        assert omitted == causes, args
