"""The clock every writer shares: the Redis server's, read as a local clock plus an offset.

Hosts' clocks drift, and they are stepped (NTP, an operator, a VM resumed); a window must not
move with them. Each process measures its offset to Redis's ``TIME`` with a round trip it makes
anyway and keeps it, so reading the shared time costs no I/O. Window scores, gauge times and the
aggregator's "now" all come from it.

The local clock a client reads is the monotonic one: a step of the host's wall clock moves
neither an event already recorded nor the offset (the interval between two monotonic readings is
real time), so only Redis's clock places events. The wall clock is read once per measurement,
for the skew that is exported (``skew``: how far off the host's clock is), never to place
anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

MAX_ROUND_TRIP_SECONDS: Final = 0.5
"""A measurement over a slower round trip is ignored (once there is one): its error, up to half
the round trip, would be worse than the offset it replaces."""


class SharedClock:
    """A local clock corrected to Redis's. ``offset`` is Redis minus local, in seconds.

    ``local`` is the clock read (``time.monotonic`` in a client, so that stepping the host's
    clock changes nothing; the host's clock by default). ``wall``: the host's calendar clock,
    read only for ``skew``; None when ``local`` is that clock. Before the first measurement the
    shared time is the host's clock."""

    def __init__(
        self, local: Callable[[], float] = time.time, wall: Callable[[], float] | None = None
    ) -> None:
        self._local = local
        self._wall = wall
        self.offset = 0.0 if wall is None else wall() - local()
        self.skew = 0.0
        """Redis's clock minus the host's wall clock, at the last measurement taken."""
        self.measured = False

    def local(self) -> float:
        return self._local()

    def now(self) -> float:
        return self._local() + self.offset

    def observe(self, redis_time: tuple[int, int], sent_at: float, received_at: float) -> bool:
        """Take a ``TIME`` reply (seconds, microseconds) that Redis made between the local times
        ``sent_at`` and ``received_at`` (the midpoint is the best guess of when). A round trip
        that is negative (the local clock was stepped back meanwhile: only a wall clock can be)
        or, once there is a measurement, slower than ``MAX_ROUND_TRIP_SECONDS`` (or stepped
        forward meanwhile) is ignored. Returns whether it was taken."""
        round_trip = received_at - sent_at
        if not round_trip >= 0.0 or (round_trip > MAX_ROUND_TRIP_SECONDS and self.measured):
            return False
        seconds, micros = redis_time
        redis_now = seconds + micros / 1_000_000
        self.offset = redis_now - (sent_at + round_trip / 2)
        # the wall clock read once, just after the reply: at the midpoint it read half a round
        # trip less (a clock stepped since the reply is caught at the next measurement)
        wall = received_at if self._wall is None else self._wall()
        self.skew = redis_now - (wall - round_trip / 2)
        self.measured = True
        return True
