"""The breaker queries a ``MetricsClient`` offers: ``allow()`` and ``admit()`` decide a call (a
half-open trial permit taken, a rejection counted), ``breaker()`` only says what the breaker is
(nothing taken, nothing counted), each with its ``async`` twin that never makes an event loop
wait for Redis. All answer from the per-process cache the flusher refreshes. One per process
(``ProcessParts``): a forked child gets its own."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from client._breaker_status import BreakerStatus

if TYPE_CHECKING:
    from client._breaker_gate import BreakerGate
    from client._flusher import Flusher
    from client._ledger import Ledger


class BreakerQueries:
    """Answers from ``gate`` (the breaker cache); counts rejections in ``ledger``; pokes
    ``flusher`` (which refreshes the cache and ships the counts)."""

    def __init__(self, gate: BreakerGate, ledger: Ledger, flusher: Flusher) -> None:
        self._gate = gate
        self._ledger = ledger
        self._flusher = flusher

    def allow(self, provider: str) -> bool:
        """Whether ``provider``'s cluster-wide circuit breaker lets a call through now.

        closed: True, from a local cache refreshed every 0.5 s (no I/O). open: False.
        half_open: True for at most the configured number of trial calls across all workers
        (a permit taken atomically in Redis), False for the rest. With Redis unreachable it
        answers from the last known state, and with none it fails open (True). Rejections are
        counted in ``gatewayz_circuit_breaker_rejected_calls_total``. Never raises. It may wait
        for Redis (up to ``allow_timeout_seconds``): the first time a provider is asked about,
        and for a half-open trial permit. In ``async`` code use ``allow_async()``.
        ``admit()`` answers the same, and says when a call turned away may be retried.
        """
        try:
            allowed = self._gate.allow(provider)
        except Exception:
            return True
        return self._verdict(provider, allowed)

    async def allow_async(self, provider: str) -> bool:
        """``allow()`` for an event loop: answered at once from the cache, and in a worker
        thread when Redis must be asked, so the loop never waits for Redis. Never raises."""
        try:
            allowed = self._gate.cached(provider)
        except Exception:
            return True
        if allowed is None:
            return await asyncio.to_thread(self.allow, provider)
        return self._verdict(provider, allowed)

    def admit(self, provider: str) -> BreakerStatus:
        """``allow()``'s decision as a ``BreakerStatus``: true when the call may go (a half-open
        trial permit taken for it); when not, ``retry_after_s`` says when to try again (None:
        no deadline known) and the rejection is counted, as ``allow()`` does. Never raises."""
        allowed = self.allow(provider)
        return self._status(provider, allowed)

    async def admit_async(self, provider: str) -> BreakerStatus:
        """``admit()`` for an event loop (see ``allow_async()``). Never raises."""
        allowed = await self.allow_async(provider)
        return self._status(provider, allowed)

    def breaker(self, provider: str) -> BreakerStatus:
        """What ``provider``'s breaker is, taking nothing: no half-open trial permit, no
        rejection counted, from the cache ``allow()`` uses (Redis is read once for a provider
        this process never asked about, as ``allow()`` does). For filtering a failover chain
        before calling any of it: ``allowed`` is false while open (``retry_after_s``: until
        when) and true while half-open unless this process was just refused a permit; then
        ``admit()`` the provider actually called. Never raises."""
        try:
            status = self._gate.status(provider)
            self._flusher.poke()  # keeps the cached states refreshed
        except Exception:
            return BreakerStatus(provider, None, True)
        return status

    async def breaker_async(self, provider: str) -> BreakerStatus:
        """``breaker()`` for an event loop: from the cache at once, or in a worker thread for
        a provider never asked about. Never raises."""
        try:
            known = self._gate.knows(provider)
        except Exception:
            known = True
        if not known:
            return await asyncio.to_thread(self.breaker, provider)
        return self.breaker(provider)

    def _status(self, provider: str, allowed: bool) -> BreakerStatus:
        try:
            return self._gate.status(provider, allowed)
        except Exception:
            return BreakerStatus(provider, None, allowed)

    def _verdict(self, provider: str, allowed: bool) -> bool:
        if not allowed:
            self._ledger.reject_call(provider)
        self._flusher.poke()  # keeps the cached states refreshed, and ships the count
        return allowed
