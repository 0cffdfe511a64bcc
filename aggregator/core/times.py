"""Times as people read them: in logs and in the commands' output (pure)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(t: float) -> str:
    """ISO 8601 UTC, to the second."""
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):  # a time no writer of this project writes
        return f"{t!r} (no date)"


def relative(t: float, now: float) -> str:
    """``in 12 s`` / ``12 s ago`` (min, h, d beyond 2 minutes, 2 hours, 2 days)."""
    delta = t - now
    size = abs(delta)
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= 2 * seconds:
            amount = f"{size / seconds:.0f} {unit}"
            break
    else:
        amount = f"{size:.0f} s"
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def human(t: float, now: float) -> str:
    """``2026-01-01T12:00:00Z (12 s ago)``; ``never`` for 0."""
    return "never" if t <= 0 else f"{iso(t)} ({relative(t, now)})"
