"""The breaker caches' refresh, on a thread of its own.

``allow()`` answers from a per-process cache (``client._breaker_gate``) that must follow the
breakers in Redis within the refresh interval. The refresh used to run on the flusher's thread,
so a write Redis held (``CLIENT PAUSE WRITE``, a slow node, a full socket timeout) held the
cache too: allow() kept letting calls through to a provider whose breaker had opened. Here it
has its own thread and its own connection (the gate's), reads only, and nothing the flusher
waits on can delay it.

The thread starts with the first cached state, in the process that asks (never in a preloaded
master that only constructed the client), sleeps until the next state falls due or a breaker is
hurried, and stops with the client. A refresh that fails (Redis unreachable) is tried again a
refresh interval later, never in a busy loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("gatewayz.metrics.client")

IDLE_SECONDS = 5.0
"""The longest the thread sleeps when nothing is due (a new state or a hurry wakes it)."""


class Refreshable(Protocol):
    """A breaker cache (``BreakerGate``) as the refresher sees it."""

    def seconds_until_refresh(self) -> float: ...

    def refresh_if_due(self) -> bool:
        """Refresh what is due; False when Redis did not answer."""
        ...

    @property
    def retry_seconds(self) -> float:
        """How long to wait after a refresh Redis did not answer."""
        ...


class BreakerRefresher:
    """Keeps the caches it watches fresh, on its own thread."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._caches: list[Refreshable] = []
        self._monotonic = monotonic
        self._retry_at = -math.inf
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.refreshes = 0
        """Refresh rounds so far (each reads what was due, in one round trip per cache)."""

    def watch(self, cache: Refreshable) -> None:
        self._caches.append(cache)

    def notify(self) -> None:
        """A state was cached or a breaker hurried: start the thread with the first, and have
        it look at its schedule again."""
        if self._thread is None:
            self._start()
        self._wake.set()

    def stop(self, timeout: float) -> None:
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def seconds_until_due(self) -> float:
        """How long the thread may sleep: until a cached state falls due, or until a failed
        refresh may be tried again (infinity: nothing cached)."""
        due = min((cache.seconds_until_refresh() for cache in self._caches), default=math.inf)
        return max(due, self._retry_at - self._monotonic(), 0.0)

    def refresh_once(self) -> None:
        """One round: every cache refreshes what is due (the thread's step; tests call it)."""
        self.refreshes += 1
        failed = [cache for cache in self._caches if not cache.refresh_if_due()]
        if failed:
            delay = min(cache.retry_seconds for cache in failed)
            self._retry_at = self._monotonic() + delay
        else:
            self._retry_at = -math.inf

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run, name="gatewayz-metrics-breakers", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            wait = self.seconds_until_due()
            if wait > 0:
                self._wake.wait(min(wait, IDLE_SECONDS))
                self._wake.clear()
                continue
            try:
                self.refresh_once()
            except Exception:  # never dies while the client is open
                log.exception("breaker cache refresh failed unexpectedly")
                self._wake.wait(IDLE_SECONDS)
