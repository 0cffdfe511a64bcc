"""Pure unit tests for outcome classification (client/outcome.py)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import httpx
import pytest

from client import CircuitOpenError
from client._outcome import classify_exception, classify_status, outcome_name, outcome_of_block

# Outcome codes, written out (keys.OUTCOMES order): success, failure, rate_limited, caller_error
SUCCESS, FAILURE, RATE_LIMITED, CALLER_ERROR = 0, 1, 2, 3


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (100, SUCCESS),  # lowest valid status
        (200, SUCCESS),
        (204, SUCCESS),
        (301, SUCCESS),
        (399, SUCCESS),
        (400, CALLER_ERROR),
        (401, CALLER_ERROR),
        (404, CALLER_ERROR),
        (408, FAILURE),  # request timeout counts as a provider failure
        (422, CALLER_ERROR),
        (429, RATE_LIMITED),
        (499, CALLER_ERROR),
        (500, FAILURE),
        (503, FAILURE),
        (599, FAILURE),
    ],
)
def test_classify_status(status: int, expected: int) -> None:
    assert classify_status(status) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (HTTPStatus.CONTINUE, SUCCESS),
        (HTTPStatus.OK, SUCCESS),
        (HTTPStatus.REQUEST_TIMEOUT, FAILURE),
        (HTTPStatus.UNPROCESSABLE_ENTITY, CALLER_ERROR),
        (httpx.codes.TOO_MANY_REQUESTS, RATE_LIMITED),
        (httpx.codes.BAD_GATEWAY, FAILURE),
    ],
)
def test_a_status_given_as_an_int_enum_is_classified_as_its_int(
    status: HTTPStatus, expected: int
) -> None:
    assert classify_status(status) == expected


@pytest.mark.parametrize("status", [99, 600, -200, 0, "200", True, False, None, 200.0])
def test_classify_status_rejects_invalid(status: object) -> None:
    with pytest.raises(ValueError):
        classify_status(status)  # type: ignore[arg-type]


class StatusError(Exception):
    """Like FastAPI's HTTPException or an openai/anthropic SDK error."""

    def __init__(self, status_code: object) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class FakeResponse:
    def __init__(self, status_code: object) -> None:
        self.status_code = status_code


class ResponseError(Exception):
    """Like httpx.HTTPStatusError: the status is on ``.response``."""

    def __init__(self, status_code: object) -> None:
        super().__init__(f"response {status_code}")
        self.response = FakeResponse(status_code)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (StatusError(503), FAILURE),
        (StatusError(429), RATE_LIMITED),
        (StatusError(404), CALLER_ERROR),
        (StatusError(408), FAILURE),
        (StatusError(200), SUCCESS),
        (ResponseError(429), RATE_LIMITED),
        (ResponseError(422), CALLER_ERROR),
        (ResponseError(502), FAILURE),
        (StatusError(HTTPStatus.BAD_REQUEST), CALLER_ERROR),  # FastAPI keeps the enum given
        (StatusError(HTTPStatus.TOO_MANY_REQUESTS), RATE_LIMITED),
        (ResponseError(httpx.codes.SERVICE_UNAVAILABLE), FAILURE),
        (TimeoutError("read timed out"), FAILURE),
        (ConnectionError("refused"), FAILURE),
        (ConnectionResetError(), FAILURE),
        (Exception("boom"), FAILURE),
        (ValueError("unexpected"), FAILURE),
    ],
)
def test_classify_exception(exc: BaseException, expected: int) -> None:
    assert classify_exception(exc) == expected


@pytest.mark.parametrize("bad", [None, "429", 700, 42, True])
def test_exception_with_unusable_status_is_a_failure(bad: object) -> None:
    # no usable status code -> an unexpected error -> provider failure
    assert classify_exception(StatusError(bad)) == FAILURE
    assert classify_exception(ResponseError(bad)) == FAILURE


def test_status_code_none_falls_back_to_response() -> None:
    exc = StatusError(None)
    exc.response = FakeResponse(429)  # type: ignore[attr-defined]
    assert classify_exception(exc) == RATE_LIMITED


class _Status(Exception):
    status_code = 429


@pytest.mark.parametrize(
    ("exc", "status_code", "outcome", "expected"),
    [
        (None, None, None, None),  # success, or the status the block set
        (_Status(), None, None, "rate_limited"),
        (TimeoutError(), None, None, "failure"),
        (asyncio.CancelledError(), None, None, "cancelled"),  # the caller gave up
        (GeneratorExit(), None, None, "cancelled"),
        (KeyboardInterrupt(), None, None, "cancelled"),
        (CircuitOpenError("p", "open"), None, None, "breaker_rejected"),
        (asyncio.CancelledError(), 200, None, None),  # what the block set wins
        (asyncio.CancelledError(), None, "failure", "failure"),
        (TimeoutError(), None, "cancelled", "cancelled"),
    ],
)
def test_what_a_block_is_booked_as(
    exc: BaseException | None, status_code: int | None, outcome: str | None, expected: str | None
) -> None:
    assert outcome_of_block(exc, status_code, outcome) == expected


class _OddHash(int):
    """An int subclass that does not hash as its int: its outcome is still its int's."""

    def __hash__(self) -> int:
        return -7


def test_outcome_names_of_accepted_calls() -> None:
    assert [outcome_name(s, None) for s in (None, 200, 302, 408, 429, 404, 503)] == [
        "success", "success", "success", "failure", "rate_limited", "caller_error", "failure",
    ]  # fmt: skip
    statuses = (HTTPStatus.OK, HTTPStatus.TOO_MANY_REQUESTS, _OddHash(404), _OddHash(503))
    assert [outcome_name(s, None) for s in statuses] == [
        "success", "rate_limited", "caller_error", "failure",
    ]  # fmt: skip
    assert [outcome_name(None, o) for o in ("failure", "caller_error", "cancelled")] == [
        "failure", "caller_error", "cancelled",
    ]  # fmt: skip
