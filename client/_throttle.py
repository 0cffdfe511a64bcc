"""A complaint that recurs (the same refusal, batch after batch) said at most once a period, with
how many times it came up unsaid: a Redis that refuses every batch for good would otherwise log
an error per flush pass, twenty a second per worker."""

from __future__ import annotations

import time
from collections.abc import Callable

SAY_EVERY_SECONDS = 60.0


class Throttle:
    """``due()`` before saying it: None while it was said less than ``period`` seconds ago."""

    def __init__(
        self, period: float = SAY_EVERY_SECONDS, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._period = period
        self._monotonic = monotonic
        self._said_at = -float("inf")
        self._unsaid = 0

    def due(self) -> str | None:
        """None while the complaint was said less than a period ago (this time is counted);
        else what to add to it: "" the first time, how often it came up unsaid since after."""
        now = self._monotonic()
        if now - self._said_at < self._period:
            self._unsaid += 1
            return None
        unsaid, self._unsaid, self._said_at = self._unsaid, 0, now
        return f" ({unsaid} more times since it was last said)" if unsaid else ""
