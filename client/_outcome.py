"""Outcome classes: how a call's status code or exception becomes success/failure/...

Pure functions; the hot path of ``MetricsClient.record()`` calls them.
"""

from __future__ import annotations

from protocol.partitions import CALLER_ERROR, FAILURE, OUTCOMES, RATE_LIMITED, SUCCESS


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


def is_failure(status_code: object, outcome: object) -> bool:
    """Whether a call's span is marked failed: a provider failure (5xx, 408, an exception
    without a status), not a rate limit or a caller error."""
    if outcome is not None:
        return isinstance(outcome, str) and outcome == OUTCOMES[FAILURE]
    return (
        type(status_code) is int
        and 100 <= status_code <= 599
        and (classify_status(status_code) == FAILURE)
    )


def span_attributes(
    status_code: object, outcome: object, tokens: object, cost_usd: object
) -> dict[str, object]:
    """The ``model_inference`` span's attributes for a finished call (plain values only)."""
    if outcome is None and type(status_code) is int and 100 <= status_code <= 599:
        outcome = OUTCOMES[classify_status(status_code)]
    elif outcome is None:
        outcome = OUTCOMES[SUCCESS]
    return {
        "outcome": outcome if isinstance(outcome, str) else None,
        "http.status_code": status_code if type(status_code) is int else None,
        "gen_ai.usage.total_tokens": tokens if type(tokens) is int and tokens else None,
        "cost_usd": cost_usd if type(cost_usd) in (int, float) and cost_usd else None,
    }


def outcome_of_block(
    exc: BaseException | None, status_code: int | None, outcome: str | None
) -> str | None:
    """The outcome to record for a timed block (track(), inference()): what the block set, else
    the class of the exception that escaped it, else None (success or the status code)."""
    if exc is not None and status_code is None and outcome is None:
        return OUTCOMES[classify_exception(exc)]
    return outcome
