"""How the flusher retries a round trip Redis did not take, and whether Redis is reachable.

Exponential backoff, from ``backoff_initial_seconds`` doubling to ``backoff_max_seconds``: a
retry re-sends the same request, so a Redis that is down or refusing for now costs one
reconnect per backoff, never a busy loop. ``flush()`` and ``close()`` cut a wait short; stop()
ends the retries. Whether the last round trip reached Redis is logged once per change.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Final, Literal, TypeVar

from gatewayz_transport.errors import explained

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
    ) -> None:
        """``stopping``: whether stop() was called (the flusher's own state, read here)."""
        self._initial = initial
        self._maximum = maximum
        self._stopping = stopping
        self._cut_short = threading.Event()
        self.redis_ok = True
        """Whether the last round trip reached Redis (``stats()["redis_ok"]``)."""

    def run(
        self, attempt: Callable[[], _T], retry_if: Callable[[Exception], bool]
    ) -> _T | Literal[Stopped.STOPPED]:
        """``attempt()``, retried with exponential backoff while it fails with an error
        ``retry_if`` accepts, until it succeeds or stop() is called (then STOPPED); any other
        error is raised."""
        failures = 0
        while True:
            try:
                result = attempt()
            except Exception as exc:
                if not retry_if(exc):
                    raise
                failures += 1
                if not self._wait_to_retry(exc, self.delay(failures)):
                    return STOPPED
                continue
            if not self.redis_ok:
                self.redis_ok = True
                log.warning("metrics flush to Redis recovered")
            return result

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row: the initial backoff, doubling to the
        maximum."""
        return float(min(self._initial * 2 ** min(failures - 1, 30), self._maximum))

    def failed(self, message: str, exc: BaseException) -> None:
        """A round trip failed: Redis is not OK, and ``message`` (with ``%s``: the error) is
        logged if it was until now."""
        if self.redis_ok:
            self.redis_ok = False
            log.error(message, explained(exc))

    def cut_short(self) -> None:
        """End the current (or the next) wait at once: flush() or close() asks."""
        self._cut_short.set()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or until ``cut_short()``."""
        self._cut_short.wait(seconds)
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
