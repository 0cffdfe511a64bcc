"""Outcome classes: how a call's status code or exception becomes success/failure/...

Pure functions; the hot path of ``MetricsClient.record()`` calls them.
"""

from __future__ import annotations

from client._breaker_status import BREAKER_REJECTED, CircuitOpenError
from gatewayz_protocol.partitions import (
    CALLER_ERROR,
    CANCELLED,
    FAILURE,
    OUTCOMES,
    RATE_LIMITED,
    SUCCESS,
    UNWINDOWED,
)

CANCELLED_OUTCOME = next(name for name, code in UNWINDOWED.items() if code == CANCELLED)
"""``cancelled``: the caller gave up on the call before the provider's answer was seen."""


def plain_status(value: object) -> object:
    """``value`` as a plain int when it is an int of a subclass other than bool: an IntEnum such
    as ``http.HTTPStatus`` or ``httpx.codes`` (FastAPI's HTTPException keeps the one it was
    given, and Starlette sends it as the response's status) is the status it stands for.
    Anything else comes back unchanged, for the caller's ``type(...) is int`` check to reject:
    a bool is no status. Never raises."""
    if type(value) is int:
        return value
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    except Exception:  # an odd subclass whose int() fails: not a status
        pass
    return value


def classify_status(status_code: int) -> int:
    """Outcome code of an HTTP status: 429 rate_limited, 408 and 5xx failure, other 4xx
    caller_error, 1xx-3xx success (an IntEnum status is its int). Raises ValueError outside
    100..599."""
    status_code = plain_status(status_code)  # type: ignore[assignment]
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
        status = plain_status(status)
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
    what escaped it says, else None (success or the status code). An exception (``Exception``)
    is the provider's answer: the class of its status code, or a failure. A ``CircuitOpenError``
    is ``breaker_rejected``: the call never reached the provider. Anything else that ends a
    block is the caller giving up (``asyncio.CancelledError`` of a task cancelled because its
    client went away, ``GeneratorExit`` of a stream closed early, ``KeyboardInterrupt``,
    ``SystemExit``): ``cancelled``."""
    if exc is not None and status_code is None and outcome is None:
        if not isinstance(exc, Exception):
            return CANCELLED_OUTCOME
        if isinstance(exc, CircuitOpenError):
            return BREAKER_REJECTED
        return OUTCOMES[classify_exception(exc)]
    return outcome


_OUTCOME_NAMES: dict[int | str | None, str] = {
    **{code: OUTCOMES[classify_status(code)] for code in range(100, 600)},
    **{outcome: outcome for outcome in (*OUTCOMES, *UNWINDOWED)},
    None: OUTCOMES[SUCCESS],
}


def outcome_name(status_code: object, outcome: object) -> str:
    """The outcome class of a call ``record()`` accepted with ``status_code`` or ``outcome``
    (neither: success). One dict lookup (two for an int subclass that does not hash as its
    int)."""
    key = outcome if status_code is None else status_code
    try:
        return _OUTCOME_NAMES[key]  # type: ignore[index]
    except KeyError:
        return _OUTCOME_NAMES[plain_status(key)]  # type: ignore[index]
