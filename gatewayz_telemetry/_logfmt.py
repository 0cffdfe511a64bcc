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


_CUT = "truncated=true"


def format_line(record: logging.LogRecord, max_chars: int) -> str:
    """``msg`` first, then the logger, the extras in the order given, the trace ids and the
    exception. A line longer than ``max_chars`` keeps what fits, the value it stops in cut
    inside its quotes, then says ``truncated=true``: still logfmt, never longer than the limit
    (but for a limit under that marker's 14 characters, where only a cut marker fits)."""
    fields: list[tuple[str, Any]] = [("msg", record.getMessage()), ("logger", record.name)]
    for name, value in vars(record).items():
        if name not in _STANDARD and not name.startswith("_"):
            fields.append((_key(name), value))
    ids = trace_ids()
    if ids is not None:  # before the traceback, so a cut line keeps them
        fields += [("trace_id", ids[0]), ("span_id", ids[1])]
    if record.exc_info and record.exc_info[0] is not None:
        fields.append(("exc", logging.Formatter().formatException(record.exc_info)))
    elif record.exc_text:
        fields.append(("exc", record.exc_text))
    rendered = [f"{name}={_value(value)}" for name, value in fields]
    line = " ".join(rendered)
    if len(line) <= max_chars:
        return line
    return _cut(fields, rendered, max_chars)


def _cut(fields: list[tuple[str, Any]], rendered: list[str], max_chars: int) -> str:
    budget = max_chars - len(_CUT) - 1  # room before " truncated=true"
    kept: list[str] = []
    for (name, value), text in zip(fields, rendered, strict=True):
        room = budget - sum(len(k) + 1 for k in kept)
        if len(text) <= room:
            kept.append(text)
            continue
        part = _longest_fit(name, value if isinstance(value, str) else str(value), room)
        if part is not None:
            kept.append(part)
        break
    return " ".join([*kept, _CUT]) if kept or max_chars >= len(_CUT) else _CUT[:max_chars]


def _longest_fit(name: str, text: str, room: int) -> str | None:
    """``name=value`` with the longest prefix of ``text`` whose rendering fits ``room``."""
    low, high = 0, len(text)
    best = None
    while low <= high:  # the rendered length grows with the prefix: bisect it
        middle = (low + high) // 2
        candidate = f"{name}={_value(text[:middle])}"
        if len(candidate) <= room:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best
