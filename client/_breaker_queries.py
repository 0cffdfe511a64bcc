"""The breaker queries a ``MetricsClient`` offers: ``allow()`` and ``admit()`` decide a call (a
half-open trial permit taken, a rejection counted), ``breaker()`` only says what the breaker is
(nothing taken, nothing counted), each with its ``async`` twin that never makes an event loop
wait for Redis. All answer from the per-process cache the breaker refresher keeps fresh on its
own thread (``client._breaker_refresh``). One per process
(``ProcessParts``): a forked child gets its own.

Given a ``model`` of a provider listed in ``breaker_models``, each also consults that model's
breaker (a second cache of the same kind, whose names are ``provider/model`` scopes): a call is
allowed only when both breakers allow it, and a breaker that refuses from its cache (open, or a
permit denied to this process since its last refresh) keeps the other's half-open permit
untaken, even the first time a process asks (both states are read before any permit is taken).
Both half-open, the provider's permit is taken first and the model's then only if it was
granted: the provider's permits are shared by all its models, so it is the one likelier to be
refused. When the model's permit is then denied, the provider's was taken for nothing: nothing
gives a permit back (the permit script only takes, and workers may not delete permits), so it
stays taken until it expires (``--breaker-permit-seconds``, 30 s) or the provider's next
transition. At most one per process, model and refresh interval (the denial is remembered),
and only while the model, whose permit limit is the provider's (one global count), holds more
live permits than the provider: every model permit being taken after a provider permit, that
needs model permits taken while the provider was not half-open, or provider permits gone
first (expired, or deleted by a transition). For any other provider ``model`` changes nothing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from client._breaker_status import BreakerStatus

if TYPE_CHECKING:
    from client._breaker_gate import BreakerGate
    from client._flusher import Flusher
    from client._ledger import Ledger
    from client._model_scopes import ModelScopes


class BreakerQueries:
    """Answers from ``gate`` (the breaker cache); counts rejections in ``ledger``; pokes
    ``flusher``, which ships the counts."""

    def __init__(
        self,
        gate: BreakerGate,
        ledger: Ledger,
        flusher: Flusher,
        models: ModelScopes | None = None,
        model_gate: BreakerGate | None = None,
    ) -> None:
        """``models`` and ``model_gate``: the model scopes and their breakers' cache (None:
        no provider has model breakers)."""
        self._gate = gate
        self._ledger = ledger
        self._flusher = flusher
        self._models = models if model_gate is not None else None
        self._model_gate = model_gate

    def _scope(self, provider: str, model: object) -> str | None:
        """The model scope a query of ``provider`` with ``model`` also consults, or None."""
        if model is None or self._models is None:
            return None
        return self._models.scope(provider, model)

    def allow(self, provider: str, model: str | None = None) -> bool:
        """Whether ``provider``'s cluster-wide circuit breaker lets a call through now.

        closed: True, from a local cache refreshed every 0.5 s (no I/O). open: False.
        half_open: True for at most the configured number of trial calls across all workers
        (a permit taken atomically in Redis), False for the rest. With Redis unreachable it
        answers from the last known state, and with none it fails open (True). Rejections are
        counted in ``gatewayz_circuit_breaker_rejected_calls_total``. Never raises. It may wait
        for Redis (up to ``allow_timeout_seconds``): the first time a provider is asked about,
        and for a half-open trial permit. In ``async`` code use ``allow_async()``.
        ``admit()`` answers the same, and says when a call turned away may be retried.
        ``model``: for a provider of ``breaker_models``, the call's model, whose own breaker
        must allow the call too (rejections are counted for the provider).
        """
        try:
            scope = self._scope(provider, model)
            if scope is None:
                allowed = self._gate.allow(provider)
            else:
                allowed = self._allow_both(provider, scope)
        except Exception:
            return True
        return self._verdict(provider, allowed)

    def _allow_both(self, provider: str, scope: str) -> bool:
        """Both breakers' states are learned before any permit is taken: a permit taken for a
        call the other breaker refuses is lost to the trials (an open provider's workers would
        use up its half-open model's permits). Both half-open: the provider's first, its
        permits being the scarcer (shared by all its models); see the module's docstring."""
        gate, model_gate = self._gate, self._model_gate
        assert model_gate is not None
        in_provider = gate.peek(provider)
        if in_provider is False:
            return False
        in_model = model_gate.peek(scope)
        if in_model is False:
            return False
        if in_provider is None and not gate.allow(provider):
            return False
        return in_model is True or model_gate.allow(scope)

    async def allow_async(self, provider: str, model: str | None = None) -> bool:
        """``allow()`` for an event loop: answered at once from the cache, and in a worker
        thread when Redis must be asked, so the loop never waits for Redis. Never raises."""
        try:
            allowed = self._gate.cached(provider)
            scope = self._scope(provider, model)
            if scope is not None and allowed is not False:
                assert self._model_gate is not None
                in_model = self._model_gate.cached(scope)
                allowed = in_model if in_model is not True else allowed
        except Exception:
            return True
        if allowed is None:
            return await asyncio.to_thread(self.allow, provider, model)
        return self._verdict(provider, allowed)

    def admit(self, provider: str, model: str | None = None) -> BreakerStatus:
        """``allow()``'s decision as a ``BreakerStatus``: true when the call may go (a half-open
        trial permit taken for it); when not, ``retry_after_s`` says when to try again (None:
        no deadline known) and the rejection is counted, as ``allow()`` does. With a ``model``
        whose breaker refused, the status is that breaker's (``provider`` reads
        ``provider/model``). Never raises."""
        allowed = self.allow(provider, model)
        return self._status(provider, allowed, model)

    async def admit_async(self, provider: str, model: str | None = None) -> BreakerStatus:
        """``admit()`` for an event loop (see ``allow_async()``). Never raises."""
        allowed = await self.allow_async(provider, model)
        return self._status(provider, allowed, model)

    def breaker(self, provider: str, model: str | None = None) -> BreakerStatus:
        """What ``provider``'s breaker is, taking nothing: no half-open trial permit, no
        rejection counted, from the cache ``allow()`` uses (Redis is read once for a provider
        this process never asked about, as ``allow()`` does). For filtering a failover chain
        before calling any of it: ``allowed`` is false while open (``retry_after_s``: until
        when) and true while half-open unless this process was just refused a permit; then
        ``admit()`` the provider actually called. With a ``model`` (``breaker_models``): the
        model's breaker's status when it does not allow calls and the provider's does.
        Never raises."""
        try:
            status = self._gate.status(provider)
            scope = self._scope(provider, model)
            if scope is not None and status.allowed:
                assert self._model_gate is not None
                in_model = self._model_gate.status(scope)
                status = status if in_model.allowed else in_model
        except Exception:
            return BreakerStatus(provider, None, True)
        return status

    async def breaker_async(self, provider: str, model: str | None = None) -> BreakerStatus:
        """``breaker()`` for an event loop: from the cache at once, or in a worker thread for
        a provider never asked about. Never raises."""
        try:
            known = self._gate.knows(provider)
            scope = self._scope(provider, model)
            if scope is not None:
                assert self._model_gate is not None
                known = known and self._model_gate.knows(scope)
        except Exception:
            known = True
        if not known:
            return await asyncio.to_thread(self.breaker, provider, model)
        return self.breaker(provider, model)

    def _status(self, provider: str, allowed: bool, model: str | None = None) -> BreakerStatus:
        try:
            scope = self._scope(provider, model)
            if scope is not None and not allowed:
                assert self._model_gate is not None
                if self._model_gate.cached(scope) is False:  # the model's breaker refused
                    return self._model_gate.status(scope, allowed)
            return self._gate.status(provider, allowed)
        except Exception:
            return BreakerStatus(provider, None, allowed)

    def _verdict(self, provider: str, allowed: bool) -> bool:
        if not allowed:
            self._ledger.reject_call(provider)
            self._flusher.poke()  # ships the count
        return allowed
