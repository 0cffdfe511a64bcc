"""Exemplars: the trace a histogram observation belongs to, from OpenTelemetry's active span.

Nothing here imports OpenTelemetry: an application that uses it has loaded it, and one that does
not pays one dict lookup per timed call.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

MAX_LABEL_CHARACTERS = 128
"""OpenMetrics' bound on an exemplar's label names and values together."""


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of the active, sampled span, or None."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    try:
        context = otel.get_current_span().get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return None
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
    except Exception:  # a broken or partial OpenTelemetry: no exemplar, never an error
        return None


def valid_exemplar(labels: object) -> dict[str, str] | None:
    """``labels`` as exemplar labels when they can be one (strings, at most 128 characters in
    all), else None: an odd exemplar is left out, never a reason to reject the observation."""
    if not isinstance(labels, Mapping) or not labels:
        return None
    try:
        items = {str(k): str(v) for k, v in labels.items()}
    except Exception:
        return None
    if sum(len(k) + len(v) for k, v in items.items()) > MAX_LABEL_CHARACTERS:
        return None
    return items
