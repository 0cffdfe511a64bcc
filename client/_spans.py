"""The ``model_inference`` span of a timed provider call, through OpenTelemetry's API when the
application uses it (then it is a child of the request span, and current inside the block, so
logs and nested spans link to it). Nothing here imports OpenTelemetry: an application that does
not use it pays one dict lookup per call."""

from __future__ import annotations

import sys
from typing import Any

from client._exemplars import current_exemplar

SPAN_NAME = "model_inference"
TRACER_NAME = "gatewayz.metrics.client"


class CallSpan:
    """Opened when a timed call starts, finished when it ends; never raises."""

    __slots__ = ("_otel", "_scope", "_span")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self._span: Any = None
        self._scope: Any = None
        self._otel = sys.modules.get("opentelemetry.trace")
        if self._otel is None:
            return
        try:
            tracer = self._otel.get_tracer(TRACER_NAME)
            self._span = tracer.start_span(SPAN_NAME, attributes=attributes)
            self._scope = self._otel.use_span(self._span, end_on_exit=False)
            self._scope.__enter__()
        except Exception:  # a broken or partial OpenTelemetry: no span, never an error
            self._span = self._scope = None

    def finish(
        self, attributes: dict[str, Any], error: BaseException | None, failed: bool
    ) -> dict[str, str] | None:
        """Set the outcome's attributes, record ``error``, mark the span failed if ``failed``,
        end it; returns the exemplar labels that link to it (None: no sampled span)."""
        span = self._span
        if span is None:
            return current_exemplar()
        try:
            exemplar = current_exemplar()  # this span's ids: still current here
            span.set_attributes({k: v for k, v in attributes.items() if v is not None})
            if error is not None:
                span.record_exception(error)
            if failed:
                status = sys.modules.get("opentelemetry.trace.status")
                if status is not None:
                    span.set_status(status.Status(status.StatusCode.ERROR))
            self._scope.__exit__(None, None, None)
            span.end()
            return exemplar
        except Exception:
            return None
