"""Exemplars: the trace a histogram observation belongs to, from OpenTelemetry's active span.

Nothing here imports OpenTelemetry: an application that uses it has loaded it, and one that does
not pays one dict lookup per timed call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from gatewayz_protocol.fields import MAX_EXEMPLAR_LABEL_CHARACTERS, exemplar_labels_ok

log = logging.getLogger("gatewayz.metrics.client")

MAX_LABEL_CHARACTERS = MAX_EXEMPLAR_LABEL_CHARACTERS
INVALID_EXEMPLAR = "invalid_exemplar"
"""The cause an exemplar left out is counted under (the call itself is recorded)."""


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of the active, sampled span, or None."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    try:
        return exemplar_of(otel.get_current_span().get_span_context())
    except Exception:  # a broken or partial OpenTelemetry: no exemplar, never an error
        return None


def exemplar_of(context: Any) -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of an OpenTelemetry ``SpanContext`` when it is valid and
    sampled, else None (raises what a broken one raises)."""
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def valid_exemplar(labels: object) -> dict[str, str] | None:
    """``labels`` as exemplar labels when OpenMetrics takes them (label names of its grammar,
    at most 128 characters of names and values in all: ``exemplar_labels_ok``), else None: an
    odd exemplar is left out (the callers count it), never a reason to reject the observation,
    and never stored, where it would make Prometheus refuse every scrape."""
    if not isinstance(labels, Mapping) or not labels:
        return None
    try:
        items = {str(k): str(v) for k, v in labels.items()}
    except Exception:
        return None
    return items if exemplar_labels_ok(items) else None


def checked_exemplar(exemplar: object, reject: Callable[[str], bool]) -> dict[str, str] | None:
    """``exemplar`` as labels (``valid_exemplar``), or None and counted through ``reject``
    (the ledger's: the exemplar left out under ``INVALID_EXEMPLAR``, the call itself recorded),
    logged the first time. A falsy one (``{}``, ``False``, ``0``, ``""``: ``labels or {}``
    in a gateway) is none given, as None is: nothing counted."""
    labels = valid_exemplar(exemplar)
    if labels is None and _given(exemplar):
        try:
            if reject(INVALID_EXEMPLAR):
                log.warning(
                    "metrics exemplar left out (%s): %.80r; the call is recorded without it, "
                    "further ones are only counted",
                    INVALID_EXEMPLAR,
                    exemplar,
                )
        except Exception:  # logging misconfigured, interpreter shutting down...
            pass
    return labels


def _given(exemplar: object) -> bool:
    """Whether ``exemplar`` is meant as one: not falsy (an object whose truth raises is)."""
    try:
        return bool(exemplar)
    except Exception:
        return True
