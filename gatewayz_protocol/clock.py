"""The clock every writer shares: the Redis server's, read as the local clock plus an offset.

Hosts' clocks drift; a window must not. Each process measures its offset to Redis's ``TIME``
with a round trip it makes anyway and keeps it, so reading the shared time costs no I/O. Window
scores, gauge times and the aggregator's "now" all come from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

MAX_ROUND_TRIP_SECONDS: Final = 0.5
"""A measurement over a slower round trip is ignored (once there is one): its error, up to half
the round trip, would be worse than the offset it replaces."""


class SharedClock:
    """Local time corrected to Redis's clock. ``offset`` is Redis minus local, in seconds."""

    def __init__(self, local: Callable[[], float] = time.time) -> None:
        self._local = local
        self.offset = 0.0
        self.measured = False

    def local(self) -> float:
        return self._local()

    def now(self) -> float:
        return self._local() + self.offset

    def observe(self, redis_time: tuple[int, int], sent_at: float, received_at: float) -> None:
        """Take a ``TIME`` reply (seconds, microseconds) that Redis made between the local times
        ``sent_at`` and ``received_at`` (the midpoint is the best guess of when)."""
        if received_at - sent_at > MAX_ROUND_TRIP_SECONDS and self.measured:
            return
        seconds, micros = redis_time
        self.offset = seconds + micros / 1_000_000 - (sent_at + received_at) / 2
        self.measured = True
