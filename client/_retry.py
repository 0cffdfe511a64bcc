"""How the flusher retries a round trip Redis did not take, and whether Redis is reachable.

Exponential backoff, from ``backoff_initial_seconds`` doubling to ``backoff_max_seconds``: a
retry re-sends the same request, so a Redis that is down or refusing for now costs one
reconnect per backoff, never a busy loop. ``flush()`` and ``close()`` cut a wait short; stop()
ends the retries. Whether the last round trip reached Redis is logged once per change.

A wait runs the flusher's other duties when they fall due (``meanwhile``: the breaker cache's
refresh), so they keep their cadence however long a batch is retried.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Final, Literal, TypeVar

log = logging.getLogger("gatewayz.metrics.client")

_T = TypeVar("_T")


class Stopped(enum.Enum):
    """What ``Backoff.run()`` returns instead of a result when stop() ended the retries."""

    STOPPED = "stop() ended the retries while Redis was unreachable"


STOPPED: Final = Stopped.STOPPED


class Backoff:
    """The flusher's retry policy and its view of Redis's health (one per flusher thread)."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        stopping: Callable[[], bool],
        meanwhile: Callable[[], None] = lambda: None,
        next_due: Callable[[], float] = lambda: math.inf,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``stopping``: whether stop() was called (the flusher's own state, read here).
        ``meanwhile``: work a wait does when ``next_due()`` (seconds until it has some) says
        so: the breaker cache's refresh, which must not wait for a retried batch."""
        self._initial = initial
        self._maximum = maximum
        self._stopping = stopping
        self._meanwhile = meanwhile
        self._next_due = next_due
        self._monotonic = monotonic
        self._cut_short = threading.Event()
        self.redis_ok = True
        """Whether the last round trip reached Redis (``stats()["redis_ok"]``)."""

    def run(
        self, attempt: Callable[[], _T], retry_if: Callable[[Exception], bool]
    ) -> _T | Literal[Stopped.STOPPED]:
        """``attempt()``, retried with exponential backoff while it fails with an error
        ``retry_if`` accepts, until it succeeds or stop() is called (then STOPPED); any other
        error is raised."""
        backoff = self._initial
        while True:
            try:
                result = attempt()
            except Exception as exc:
                if not retry_if(exc):
                    raise
                if not self._wait_to_retry(exc, backoff):
                    return STOPPED
                backoff = min(backoff * 2, self._maximum)
                continue
            if not self.redis_ok:
                self.redis_ok = True
                log.warning("metrics flush to Redis recovered")
            return result

    def failed(self, message: str, exc: BaseException) -> None:
        """A round trip failed: Redis is not OK, and ``message`` (with ``%s``: the error) is
        logged if it was until now."""
        if self.redis_ok:
            self.redis_ok = False
            log.error(message, exc)

    def cut_short(self) -> None:
        """End the current (or the next) wait at once: flush() or close() asks."""
        self._cut_short.set()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until ``cut_short()``, doing ``meanwhile`` whenever it is due.
        If it is still due right after (it failed: Redis refuses reads too), the rest of the
        wait is waited out: one attempt per wait, never a busy loop."""
        deadline = self._monotonic() + seconds
        while True:
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                break
            due = self._next_due()
            if due > 0 and self._cut_short.wait(min(remaining, due)):
                break
            if due >= remaining:
                break  # waited out (nothing was due during it)
            self._meanwhile()
            if self._next_due() <= 0:
                self._cut_short.wait(max(0.0, deadline - self._monotonic()))
                break
        self._cut_short.clear()

    def _wait_to_retry(self, exc: BaseException, backoff: float) -> bool:
        """After a failed round trip: wait ``backoff`` seconds, or until flush() or close()
        asks. record() filling the buffer does not cut it short: with Redis down, that would
        turn the backoff into a busy loop of reconnects. False once stop() was called."""
        self.failed("metrics flush to Redis failed, retrying with backoff: %s", exc)
        if self._stopping():
            return False
        self.pause(backoff)
        return True
