"""What record() and record_inference() accept, as pure functions: the event's outcome code and
cost in nano-USD for a valid call, the counted cause (and the offending value) for each way a
call is invalid, and the bounds, inclusive. Outcome codes as the README numbers them: success 0,
failure 1, rate_limited 2, caller_error 3."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from client._events import EventValidator, Rejected, check_inference


def validate(
    provider: Any = "openrouter",
    latency_s: Any = 0.42,
    status_code: Any = None,
    outcome: Any = None,
    tokens: Any = 0,
    cost_usd: Any = 0.0,
) -> tuple[int, int]:
    return EventValidator().validate(provider, latency_s, status_code, outcome, tokens, cost_usd)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ({}, (0, 0)),  # neither status nor outcome: a success
        ({"status_code": 200}, (0, 0)),
        ({"status_code": 302}, (0, 0)),
        ({"status_code": 503}, (1, 0)),
        ({"status_code": 408}, (1, 0)),
        ({"status_code": 429}, (2, 0)),
        ({"status_code": 404}, (3, 0)),
        ({"outcome": "failure"}, (1, 0)),
        ({"outcome": "rate_limited"}, (2, 0)),
        ({"outcome": "caller_error"}, (3, 0)),
        ({"cost_usd": 0.0031}, (0, 3_100_000)),
        ({"cost_usd": 1e6}, (0, 10**15)),  # the largest cost
        ({"cost_usd": Decimal("0.25")}, (0, 250_000_000)),
        ({"latency_s": 86_400.0}, (0, 0)),  # a day: the longest latency
        ({"latency_s": 0}, (0, 0)),
        ({"tokens": 10**12}, (0, 0)),  # the most tokens
    ],
)
def test_a_valid_call_becomes_its_outcome_code_and_cost_in_nano_usd(
    call: dict[str, Any], expected: tuple[int, int]
) -> None:
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
        ({"status_code": 200, "outcome": "success"}, "status_and_outcome", (200, "success")),
        ({"tokens": -1}, "invalid_tokens", -1),
        ({"tokens": 1.5}, "invalid_tokens", 1.5),
        ({"tokens": True}, "invalid_tokens", True),
        ({"tokens": 10**12 + 1}, "invalid_tokens", 10**12 + 1),
        ({"cost_usd": -0.01}, "invalid_cost", -0.01),
        ({"cost_usd": 1e6 + 1}, "invalid_cost", 1e6 + 1),
        ({"cost_usd": math.inf}, "invalid_cost", math.inf),
    ],
)
def test_an_invalid_call_is_rejected_with_its_cause_and_value(
    call: dict[str, Any], cause: str, value: object
) -> None:
    with pytest.raises(Rejected) as rejected:
        validate(**call)
    assert (rejected.value.cause, rejected.value.value) == (cause, value)


def test_nan_is_rejected_as_the_value_it_was() -> None:
    for call, cause in (({"latency_s": math.nan}, "invalid_latency"),
                        ({"cost_usd": math.nan}, "invalid_cost")):  # fmt: skip
        with pytest.raises(Rejected) as rejected:
            validate(**call)
        assert rejected.value.cause == cause
        assert math.isnan(rejected.value.value)  # type: ignore[arg-type]


def test_arguments_of_the_wrong_type_raise_type_error_for_the_caller_to_count() -> None:
    # record() counts these as invalid_argument
    for call in ({"latency_s": "0.1"}, {"cost_usd": "1"}, {"latency_s": None}):
        with pytest.raises(TypeError):
            validate(**call)


def test_a_provider_name_is_checked_once_then_remembered() -> None:
    validator = EventValidator()
    assert validator.validate("openrouter", 0.1, None, None, 0, 0.0) == (0, 0)
    assert validator.validate("openrouter", 0.2, 503, None, 0, 0.0) == (1, 0)
    with pytest.raises(Rejected):
        validator.validate("open router", 0.1, None, None, 0, 0.0)  # never remembered


def test_an_inference_adds_its_token_counts_or_is_rejected_with_a_cause() -> None:
    assert check_inference("gpt", "/v1/chat", 100, 40, 0.5, 0.1, None) == 140
    assert check_inference("gpt", "", 0, 0, 0, None, None) == 0
    assert check_inference("gpt", "", 0, 0, 1e6, 86_400.0, 0.0) == 0  # the bounds, inclusive
    cases: list[tuple[tuple[Any, ...], str, object]] = [
        ((None, "", 0, 0, 0.0, None, None), "invalid_argument", (None, "")),
        (("gpt", 7, 0, 0, 0.0, None, None), "invalid_argument", ("gpt", 7)),
        (("gpt", "", -1, 0, 0.0, None, None), "invalid_tokens", -1),
        (("gpt", "", 0, 2.0, 0.0, None, None), "invalid_tokens", 2.0),
        (("gpt", "", 0, 0, -0.5, None, None), "invalid_credits", -0.5),
        (("gpt", "", 0, 0, True, None, None), "invalid_credits", True),
        (("gpt", "", 0, 0, "1", None, None), "invalid_credits", "1"),
        (("gpt", "", 0, 0, 1e6 + 1, None, None), "invalid_credits", 1e6 + 1),
        (("gpt", "", 0, 0, 0.0, -0.1, None), "invalid_latency", -0.1),
        (("gpt", "", 0, 0, 0.0, None, 86_401), "invalid_latency", 86_401),
    ]
    for args, cause, value in cases:
        with pytest.raises(Rejected) as rejected:
            check_inference(*args)
        assert (rejected.value.cause, rejected.value.value) == (cause, value), args
