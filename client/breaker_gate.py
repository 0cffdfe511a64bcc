"""Worker-side view of the cluster-wide circuit breakers: answers ``allow()`` from a local cache.

closed (or unknown: Redis never answered) -> True with no I/O; open -> False with no I/O;
half_open -> a trial permit taken atomically in Redis (at most N across all workers and hosts,
each expiring so a crashed worker cannot hold one forever). A denied permit is remembered until
the next refresh so a half-open provider does not cost a round trip per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from client.keys import is_valid_provider

log = logging.getLogger("gatewayz.metrics.client")

FetchStates = Callable[[list[str]], dict[str, str]]
"""providers -> their breaker state names (missing hash: "closed")."""
TakePermit = Callable[[str, str], tuple[str, bool]]
"""(provider, holder) -> (current state, permit granted)."""


class CircuitOpenError(RuntimeError):
    """Raised by ``track(provider, guard=True)`` when the provider's breaker rejects the call."""

    def __init__(self, provider: str, state: str) -> None:
        super().__init__(f"circuit breaker for {provider!r} is {state}: call not allowed")
        self.provider = provider
        self.state = state


@dataclass
class _Entry:
    state: str | None  # None: never learned (Redis unreachable) -> fail open
    refreshed_at: float
    denied_until: float = 0.0


class BreakerGate:
    def __init__(
        self,
        fetch_states: FetchStates,
        take_permit: TakePermit,
        holder_prefix: str,
        refresh_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = 2000,
    ) -> None:
        self._max_entries = max_entries
        self._fetch = fetch_states
        self._take = take_permit
        self._holder_prefix = holder_prefix
        self._refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._permits_taken = 0
        self._redis_errors_logged = False

    def state(self, provider: str) -> str | None:
        entry = self._entries.get(provider)
        return None if entry is None else entry.state

    def allow(self, provider: str) -> bool:
        entry = self._entries.get(provider)
        if entry is None:
            if not is_valid_provider(provider) or len(self._entries) >= self._max_entries:
                # No breaker can exist for it (record() rejects it), or a flood of names: the
                # cache stays bounded and such calls pass without a round trip.
                return True
            entry = self._learn(provider)
        state = entry.state
        if state == "open":
            return False
        if state != "half_open":
            return True
        now = self._monotonic()
        if now < entry.denied_until:
            return False
        with self._lock:
            self._permits_taken += 1
            holder = f"{self._holder_prefix}.{self._permits_taken:x}"
        try:
            current, granted = self._take(provider, holder)
        except Exception as exc:  # Redis unreachable: no permit can be had
            self._log_redis_error(exc)
            entry.denied_until = now + self._refresh_seconds
            return False
        entry.state = current
        if current == "half_open":
            if not granted:
                entry.denied_until = now + self._refresh_seconds
            return granted
        return current != "open"

    def _learn(self, provider: str) -> _Entry:
        try:
            state: str | None = self._fetch([provider]).get(provider, "closed")
        except Exception as exc:
            self._log_redis_error(exc)
            state = None
        entry = _Entry(state, self._monotonic())
        with self._lock:
            self._entries.setdefault(provider, entry)
            return self._entries[provider]

    def refresh_if_due(self) -> None:
        """Refresh every cached state older than the refresh interval (the flusher calls this)."""
        now = self._monotonic()
        due = [
            p
            for p, e in list(self._entries.items())
            if now - e.refreshed_at >= self._refresh_seconds
        ]
        if not due:
            return
        try:
            states = self._fetch(due)
        except Exception as exc:  # keep answering from the last known states
            self._log_redis_error(exc)
            return
        for provider in due:
            entry = self._entries[provider]
            new = states.get(provider, "closed")
            if new != entry.state:
                entry.denied_until = 0.0
            entry.state = new
            entry.refreshed_at = now
        self._redis_errors_logged = False

    def _log_redis_error(self, exc: Exception) -> None:
        if not self._redis_errors_logged:
            self._redis_errors_logged = True
            log.warning("breaker state unavailable, answering from the last known state: %s", exc)
