"""A log record as one logfmt line: ``msg="..." logger=... provider=openrouter trace_id=...``.

High-cardinality values (provider, model, user id, duration, trace ids) belong here, in the
line, where Loki's ``| logfmt`` parses them at query time; as labels each value would create a
stream of its own.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

# Every attribute a plain LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",  # 3.12+
}
_UNQUOTED_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+@,")


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and all(char in _UNQUOTED_SAFE for char in text):
        return text
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _key(name: str) -> str:
    cleaned = "".join(char if char.isalnum() or char == "_" else "_" for char in name)
    return cleaned or "_"


def trace_ids() -> tuple[str, str] | None:
    """The current span's ``(trace_id, span_id)`` in hex, or None outside a span.

    OpenTelemetry is an optional extra and is never imported from here: if no code in this
    process imported ``opentelemetry.trace``, no span can be current, and a process without
    tracing pays one dict lookup per record.
    """
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def format_line(record: logging.LogRecord, max_chars: int) -> str:
    """``msg`` first, then the logger, the extras in the order given, the trace ids and the
    exception; a line longer than ``max_chars`` is cut (and says so) to bound memory."""
    fields = [f"msg={_value(record.getMessage())}", f"logger={_value(record.name)}"]
    for name, value in vars(record).items():
        if name not in _STANDARD and not name.startswith("_"):
            fields.append(f"{_key(name)}={_value(value)}")
    ids = trace_ids()
    if ids is not None:  # before the traceback, so a cut line keeps them
        fields.append(f"trace_id={ids[0]} span_id={ids[1]}")
    if record.exc_info and record.exc_info[0] is not None:
        fields.append(f"exc={_value(logging.Formatter().formatException(record.exc_info))}")
    elif record.exc_text:
        fields.append(f"exc={_value(record.exc_text)}")
    line = " ".join(fields)
    if len(line) > max_chars:
        line = line[: max(0, max_chars - 16)] + " truncated=true"
    return line
