"""The leader lease: which replica evaluates breakers, computes snapshots and publishes them.

A lease in Redis (``SET PX`` through a script, TTL 1.5 breaker intervals, renewed every half
interval) carries a fencing token from ``INCR``: every write of shared state is checked against
it in Redis, so a replica that lost the lease (a pause, a partition) can write nothing even
before it learns that it lost it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from aggregator.settings import describe_error

log = logging.getLogger("gatewayz.aggregator")


class LeaderLease:
    """This replica's view of the lease. ``hold(instance, ttl)`` acquires or renews it in Redis
    and returns the fencing token (0: another replica holds it); ``release(instance)`` gives it
    up."""

    def __init__(
        self,
        hold: Callable[[str, float, int], tuple[int, int]],
        release: Callable[[str], None],
        instance: str,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hold = hold
        self._release = release
        self._instance = instance
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._fence = 0  # our fencing token while we hold the lease, else 0
        self._refused = 0  # our last token a fence refused: never renewed, a new one is taken
        self._deadline = 0.0  # monotonic time our lease surely lasts until
        self._until_ms = 0  # Redis time (ms) at which Redis lets the lease expire
        self.taken_over = False
        """The last tick took the lease (a new token): the next commit raises the fences."""
        self.error: str | None = None
        """Why the last tick could not ask Redis for the lease (None: it could). A replica
        that never leads for this reason serves no snapshot of its own: /readyz says why."""

    @property
    def fence(self) -> int:
        """Our fencing token while we lead, else 0."""
        return self._fence if self.is_leader else 0

    @property
    def valid_until_ms(self) -> int | None:
        """Redis time (ms) at which our lease ends, by Redis's clock, while we lead."""
        return self._until_ms if self.is_leader else None

    @property
    def is_leader(self) -> bool:
        return self._fence > 0 and self._monotonic() < self._deadline

    def tick(self) -> bool:
        """Acquire or renew the lease; True while we lead. A Redis error means we stop leading
        once the lease we had may have expired."""
        was_leader = self.is_leader
        started = self._monotonic()
        try:
            token, until_ms = self._hold(self._instance, self._ttl, self._refused)
        except (redis.RedisError, OSError) as exc:
            error = describe_error(exc)
            if was_leader and not self.is_leader:
                log.warning("lost leadership: lease not renewed (%s)", error)
            elif error != self.error and not self.is_leader:
                # said once per kind of failure: a replica URL, a missing ACL grant, would
                # otherwise leave every replica following nobody, without a word
                log.error("cannot take the leader lease: %s", error)
            self.error = error
            return self.is_leader
        self.error = None
        if token:
            if token != self._fence:
                self.taken_over = True  # a new token: its fences are not raised yet
            self._fence = token
            self._deadline = started + self._ttl
            self._until_ms = until_ms
            if not was_leader:
                log.info("%s leads (fencing token %d)", self._instance, token)
        else:
            if was_leader:
                log.warning("%s lost leadership to another replica", self._instance)
            self._fence = 0
        return self.is_leader

    def deposed(self) -> None:
        """A fenced write was refused: a newer leader exists, or the token counter lost its
        value (the lease still names us: the next tick takes a new token above the fences)."""
        if self._fence:
            log.warning("%s: a write was fenced off, a newer leader exists", self._instance)
            self._refused = self._fence
        self._fence = 0

    def release(self) -> None:
        """Give the lease up at once (clean shutdown), so a follower takes over."""
        if self._fence:
            self._release(self._instance)
            self._fence = 0
