"""Outcome classes: how a call's status code or exception becomes success/failure/...

Pure functions; the hot path of ``MetricsClient.record()`` calls them.
"""

from __future__ import annotations

from gatewayz_protocol.partitions import CALLER_ERROR, FAILURE, OUTCOMES, RATE_LIMITED, SUCCESS


def classify_status(status_code: int) -> int:
    """Outcome code of an HTTP status: 429 rate_limited, 408 and 5xx failure, other 4xx
    caller_error, 1xx-3xx success. Raises ValueError outside 100..599."""
    if type(status_code) is not int or not 100 <= status_code <= 599:
        raise ValueError(f"invalid status_code {status_code!r}")
    if status_code < 400:
        return SUCCESS
    if status_code == 429:
        return RATE_LIMITED
    if status_code == 408 or status_code >= 500:
        return FAILURE
    return CALLER_ERROR


def status_of_exception(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (``exc.status_code`` as in FastAPI's
    HTTPException and openai/anthropic SDK errors, or ``exc.response.status_code`` as in httpx).
    An exception whose attributes cannot be read carries none."""
    try:
        status = getattr(exc, "status_code", None)
        if status is None:
            status = getattr(getattr(exc, "response", None), "status_code", None)
    except Exception:
        return None
    if type(status) is int and 100 <= status <= 599:
        return status
    return None


def classify_exception(exc: BaseException) -> int:
    """Outcome code of a call that raised: the class of its status code when it carries one,
    otherwise a provider failure (timeouts, connection errors, anything unexpected)."""
    status = status_of_exception(exc)
    return FAILURE if status is None else classify_status(status)


def outcome_of_block(
    exc: BaseException | None, status_code: int | None, outcome: str | None
) -> str | None:
    """The outcome to record for a timed block (track(), inference()): what the block set, else
    the class of the exception that escaped it, else None (success or the status code)."""
    if exc is not None and status_code is None and outcome is None:
        return OUTCOMES[classify_exception(exc)]
    return outcome
