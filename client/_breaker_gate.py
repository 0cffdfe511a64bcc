"""Worker-side view of the cluster-wide circuit breakers: answers ``allow()`` from a local cache.

closed (or unknown: Redis never answered) -> True with no I/O; open -> False with no I/O;
half_open -> a trial permit taken atomically in Redis (at most N across all workers and hosts,
each expiring so a crashed worker cannot hold one forever). A denied permit is remembered until
the next refresh so a half-open provider does not cost a round trip per call.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gatewayz_protocol import scripts
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, STATE_FIELD, decode_state_name
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import is_valid_provider
from gatewayz_transport.connection import Connection
from gatewayz_transport.routing import pipeline
from gatewayz_transport.scripts import register

log = logging.getLogger("gatewayz.metrics.client")


class BreakerStore(Protocol):
    """Where breaker states live; both methods raise when Redis cannot answer."""

    def states(self, providers: list[str]) -> dict[str, str]:
        """providers -> their breaker state names (no state: "closed")."""
        ...

    def take_permit(self, provider: str, holder: str) -> tuple[str, bool]:
        """Try to take a half-open trial permit: (current state, granted)."""
        ...


class RedisBreakerStore:
    """The gate's Redis I/O: states in one pipelined read, permits through a script."""

    def __init__(self, connection: Connection, keys: Keys) -> None:
        self._redis = connection
        self._keys = keys
        self._permit = register(connection, scripts.PERMIT)

    def states(self, providers: list[str]) -> dict[str, str]:
        pipe = pipeline(self._redis)
        for provider in providers:
            pipe.hget(self._keys.breaker(provider), STATE_FIELD)
        replies = pipe.execute()
        return {p: decode_state_name(raw) for p, raw in zip(providers, replies, strict=True)}

    def take_permit(self, provider: str, holder: str) -> tuple[str, bool]:
        keys = self._keys
        state, granted = self._permit(
            keys=[keys.breaker(provider), keys.permits(provider)], args=[holder]
        )
        return decode_state_name(state), bool(granted)


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
    """The per-process cache of breaker states that answers ``allow()``."""

    def __init__(
        self,
        store: BreakerStore,
        holder_prefix: str,
        refresh_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = 2000,
    ) -> None:
        self._max_entries = max_entries
        self._store = store
        self._holder_prefix = holder_prefix
        self._refresh_seconds = refresh_seconds
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._permits_taken = 0
        self._redis_errors_logged = False

    def __len__(self) -> int:
        """Providers whose state is cached (at most ``max_entries``)."""
        return len(self._entries)

    def state(self, provider: str) -> str | None:
        entry = self._entries.get(provider)
        return None if entry is None else entry.state

    def allow(self, provider: str) -> bool:
        """Whether a call may go to ``provider`` now (Redis I/O only to learn a provider's state
        the first time, and to take a half-open trial permit)."""
        verdict = self.cached(provider)
        if verdict is None:
            entry = self._entries.get(provider) or self._learn(provider)
            verdict = self.cached(provider)
            if verdict is None:
                verdict = self._take_permit(provider, entry)
        return verdict

    def cached(self, provider: str) -> bool | None:
        """``allow()``'s answer when it needs no Redis I/O, else None (a provider never asked
        about, or a half-open one whose trial permit must be taken in Redis)."""
        entry = self._entries.get(provider)
        if entry is None:
            if not is_valid_provider(provider) or len(self._entries) >= self._max_entries:
                # No breaker can exist for it (record() rejects it), or a flood of names: the
                # cache stays bounded and such calls pass without a round trip.
                return True
            return None
        if entry.state == OPEN:
            return False
        if entry.state != HALF_OPEN:
            return True  # closed, or never learned (Redis unreachable): fail open
        return False if self._monotonic() < entry.denied_until else None

    def _take_permit(self, provider: str, entry: _Entry) -> bool:
        now = self._monotonic()
        with self._lock:
            self._permits_taken += 1
            holder = f"{self._holder_prefix}.{self._permits_taken:x}"
        try:
            current, granted = self._store.take_permit(provider, holder)
        except Exception as exc:  # Redis unreachable: no permit can be had
            self._log_redis_error(exc)
            entry.denied_until = now + self._refresh_seconds
            return False
        entry.state = current
        if current == HALF_OPEN:
            if not granted:
                entry.denied_until = now + self._refresh_seconds
            return granted
        return current != OPEN

    def _learn(self, provider: str) -> _Entry:
        try:
            state: str | None = self._store.states([provider]).get(provider, CLOSED)
        except Exception as exc:
            self._log_redis_error(exc)
            state = None
        entry = _Entry(state, self._monotonic())
        with self._lock:
            self._entries.setdefault(provider, entry)
            return self._entries[provider]

    def seconds_until_refresh(self) -> float:
        """Until the oldest cached state is due for a refresh (infinity: nothing cached)."""
        if not self._entries:
            return math.inf
        oldest = min(e.refreshed_at for e in list(self._entries.values()))
        return oldest + self._refresh_seconds - self._monotonic()

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
            states = self._store.states(due)
        except Exception as exc:  # keep answering from the last known states
            self._log_redis_error(exc)
            return
        for provider in due:
            entry = self._entries[provider]
            new = states.get(provider, CLOSED)
            if new != entry.state:
                entry.denied_until = 0.0
            entry.state = new
            entry.refreshed_at = now
        self._redis_errors_logged = False

    def _log_redis_error(self, exc: Exception) -> None:
        if not self._redis_errors_logged:
            self._redis_errors_logged = True
            log.warning("breaker state unavailable, answering from the last known state: %s", exc)
