"""The ``model_inference`` span of a timed provider call, through OpenTelemetry's API when the
application uses it (then it is a child of the request span, and current inside the block, so
logs and nested spans link to it). Nothing here imports OpenTelemetry: an application that does
not use it pays one dict lookup per call."""

from __future__ import annotations

import contextlib
import contextvars
import sys
from typing import Any

from client._events import plain_number
from client._exemplars import current_exemplar, exemplar_of
from client._outcome import classify_status, plain_status
from gatewayz_protocol.partitions import FAILURE, OUTCOMES, SUCCESS

SPAN_NAME = "model_inference"
TRACER_NAME = "gatewayz.metrics.client"


_tracer: tuple[Any, Any] = (None, None)
"""(the ``opentelemetry.trace`` module, our tracer from it). One tracer for the process, as
OpenTelemetry's own ``tracer = trace.get_tracer(__name__)`` idiom: asked for before an SDK is
set, it is a proxy that follows the SDK once one is (and a process's provider is never replaced).
``get_tracer()`` on every call was a tenth of a gateway request's metrics work: it reads
``os.environ`` while no SDK is set."""


_NO_OP = object()
"""A CallSpan's token when OpenTelemetry's tracer gave the invalid no-op span."""


def _tracer_of(otel: Any) -> Any:
    global _tracer
    module, tracer = _tracer
    if module is not otel:
        tracer = otel.get_tracer(TRACER_NAME)
        _tracer = (otel, tracer)
    return tracer


class CallSpan:
    """Opened when a timed call starts, finished when it ends; never raises."""

    __slots__ = ("_otel", "_span", "_token")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self._span: Any = None
        self._token: Any = None
        self._otel = sys.modules.get("opentelemetry.trace")
        if self._otel is None:
            return
        try:
            span = _tracer_of(self._otel).start_span(SPAN_NAME, attributes=attributes)
            if not span.is_recording() and not span.get_span_context().is_valid:
                # No SDK (FastAPI imports OpenTelemetry's API whether or not it is used): the
                # span is the invalid no-op one, already current. Nothing to make current,
                # nothing to finish, no exemplar.
                self._token = _NO_OP
                return
            self._span = span
            # Current through a context token of our own, not use_span(): its exit detaches
            # wherever the block ends, which may be another context (_detach says when).
            context = sys.modules["opentelemetry.context"]  # imported by opentelemetry.trace
            self._token = context.attach(self._otel.set_span_in_context(span))
        except Exception:  # a broken or partial OpenTelemetry: no span, never an error
            self._span = self._token = None

    def finish(
        self,
        status_code: object,
        outcome: object,
        tokens: object,
        cost_usd: object,
        error: BaseException | None,
    ) -> dict[str, str] | None:
        """Set the call's outcome on the span, record ``error``, mark the span failed for a
        provider failure, end it; returns the exemplar labels that link to it (None: no sampled
        span)."""
        span = self._span
        if span is None:
            return None if self._token is _NO_OP else current_exemplar()
        try:
            # The call's own span, not whichever is current where the block ends: the request's
            # in a sync stream's last next(), which Starlette runs in a copy of its context.
            exemplar = exemplar_of(span.get_span_context())
            status_code = plain_status(status_code)  # an HTTPStatus is its int on the span
            attributes = _span_attributes(status_code, outcome, tokens, cost_usd)
            span.set_attributes({k: v for k, v in attributes.items() if v is not None})
            if error is not None:
                span.record_exception(error)
            if _is_failure(status_code, outcome):
                status = sys.modules.get("opentelemetry.trace.status")
                if status is not None:
                    span.set_status(status.Status(status.StatusCode.ERROR))
            _detach(self._token)
            span.end()
            return exemplar
        except Exception:
            return None


def _detach(token: Any) -> None:
    """Make the call's span current no more, in the context where it was made current. A block
    can end in another one: Starlette runs each ``next()`` of a sync streaming generator in a
    fresh copy of the request's context, and the event loop finalizes an abandoned async
    generator in a task of its own. There the span was never current and there is nothing to
    undo; OpenTelemetry's ``detach()`` would log "Failed to detach context" as an ERROR with a
    traceback for every such call, so the token is reset here and refused quietly."""
    if isinstance(token, contextvars.Token):  # OpenTelemetry's runtime context (the default)
        with contextlib.suppress(ValueError, RuntimeError):  # another context's, or used
            token.var.reset(token)
        return
    context = sys.modules.get("opentelemetry.context")
    if context is not None:  # a runtime context of the application's own: its detach()
        context.detach(token)


def _is_failure(status_code: object, outcome: object) -> bool:
    """Whether a call's span is marked failed: a provider failure (5xx, 408, an exception
    without a status), not a rate limit or a caller error."""
    if outcome is not None:
        return isinstance(outcome, str) and outcome == OUTCOMES[FAILURE]
    return (
        type(status_code) is int
        and 100 <= status_code <= 599
        and (classify_status(status_code) == FAILURE)
    )


def _span_attributes(
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
        "cost_usd": plain_number(cost_usd) or None,  # a Decimal as a float: a span takes no other
    }
