"""One process's parts of a client: what a forked child must never share with its parent.

The buffer and the ledger (a child must not re-send its parent's events), the connections, the
breaker cache, the writer id (members and gauge values are named after it), the flusher and the
breaker refresher (whose threads a child does not inherit). Built when the client is
constructed and again in every forked child; building them does no I/O and starts no thread.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from client._admission import ProviderAdmission, RedisRegistry
from client._breaker_gate import BreakerGate, RedisBreakerStore
from client._breaker_queries import BreakerQueries
from client._breaker_refresh import BreakerRefresher
from client._buffer import EventBuffer
from client._events import Event
from client._flusher import Flusher
from client._instruments import InstrumentStore
from client._ledger import Ledger
from client._model_scopes import ModelAdmission, ModelScopes, is_scope, model_breaker_keys
from client._settings import ClientSettings
from client._wake import BreakerWakes, WakeRule
from client._writer import RedisWriter
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection, connect


@dataclass(frozen=True)
class ProcessParts:
    writer_id: str
    """This process's name in Redis (event members, gauge values, breaker permits)."""
    ledger: Ledger
    buffer: EventBuffer
    gate: BreakerGate
    flusher: Flusher
    breakers: BreakerQueries
    """``allow()``, ``admit()``, ``breaker()`` and their async twins, on this process's gate."""
    refresher: BreakerRefresher
    """Keeps the breaker caches fresh, on a thread apart from the flusher's."""
    models: ModelScopes | None = None
    """The model scopes calls feed (None: no provider in ``breaker_models``)."""

    @classmethod
    def build(
        cls,
        settings: ClientSettings,
        keys: Keys,
        instruments: InstrumentStore,
        clock: Callable[[], float],
        shared_clock: bool,
    ) -> ProcessParts:
        """``shared_clock``: ``clock`` is the monotonic clock, to be corrected to Redis's (the
        host's wall clock only read for the skew exported); else it is taken as the shared
        clock as it is (tests)."""
        writer_id = secrets.token_urlsafe(6)
        corrected = SharedClock(clock, wall=_wall_clock) if shared_clock else None
        shared_now = corrected.now if corrected is not None else clock
        connection = connect(settings.redis_url, settings.socket_timeout_seconds)
        ledger = Ledger()
        buffer = EventBuffer(settings.max_buffer, ledger.evicted)
        refresher = BreakerRefresher()
        gate = BreakerGate(
            RedisBreakerStore(
                connect(settings.redis_url, settings.allow_timeout_seconds, timeout_wins=True), keys
            ),
            holder_prefix=writer_id,
            refresh_seconds=settings.breaker_refresh_seconds,
            max_entries=settings.max_providers,
            now=shared_now,
            on_schedule=refresher.notify,
        )
        refresher.watch(gate)
        writer = _writer(settings, keys, connection, writer_id, corrected, shared_now)
        admission = ProviderAdmission(
            RedisRegistry(connection, keys, settings.export_horizon_seconds),
            settings.max_providers,
            shared_now,
        )
        rule = WakeRule(settings.breaker_wake_failures)
        wakes = BreakerWakes(rule, keys.breaker_wakes, time.monotonic, gate.hurry)
        models = _ModelParts.build(
            settings, keys, writer_id, connection, shared_now, ledger, refresher.notify
        )
        if models.gate is not None:
            refresher.watch(models.gate)
        flusher = Flusher(
            buffer,
            ledger,
            instruments,
            writer,
            admission,
            settings,
            clock=corrected,
            wakes=wakes.mark,
            models=models.admitted,
        )
        breakers = BreakerQueries(gate, ledger, flusher, models.scopes, models.gate)
        return cls(writer_id, ledger, buffer, gate, flusher, breakers, refresher, models.scopes)


@dataclass(frozen=True)
class _ModelParts:
    """The model breakers' parts of a process (``breaker_models``; none listed: nothing)."""

    scopes: ModelScopes | None = None
    gate: BreakerGate | None = None
    """The model breakers' cache (names: ``provider/model`` scopes)."""
    admitted: Callable[[list[Event]], list[Event]] | None = None

    @classmethod
    def build(
        cls,
        settings: ClientSettings,
        keys: Keys,
        writer_id: str,
        connection: Connection,
        shared_now: Callable[[], float],
        ledger: Ledger,
        on_schedule: Callable[[], None] = lambda: None,
    ) -> _ModelParts:
        if not settings.breaker_models:
            return cls()
        scopes = ModelScopes(settings.breaker_models, settings.max_label_value_bytes)
        model_gate = BreakerGate(
            RedisBreakerStore(
                connect(settings.redis_url, settings.allow_timeout_seconds, timeout_wins=True),
                keys,
                model_breaker_keys(keys),
            ),
            holder_prefix=writer_id,
            refresh_seconds=settings.breaker_refresh_seconds,
            max_entries=len(scopes.providers) * settings.max_models_per_provider,
            now=shared_now,
            valid=is_scope,
            on_schedule=on_schedule,
        )
        admission = ModelAdmission.build(
            connection,
            keys,
            scopes.providers,
            settings.max_models_per_provider,
            settings.export_horizon_seconds,
            shared_now,
            ledger,
        )
        return cls(scopes, model_gate, admission.admitted)


def _writer(
    settings: ClientSettings,
    keys: Keys,
    connection: Connection,
    writer_id: str,
    corrected: SharedClock | None,
    shared_now: Callable[[], float],
) -> RedisWriter:
    return RedisWriter(
        connection,
        keys,
        settings.window_ttl_seconds,
        int(settings.retention_seconds),
        writer_id=writer_id,
        max_series=settings.max_series_per_metric,
        gauge_ttl=math.ceil(settings.gauge_ttl_seconds),
        clock=corrected,
        writer_label=f"{socket.gethostname()}:{os.getpid()}",
        shards=settings.shard_plan,
        now=shared_now,
    )


def _wall_clock() -> float:
    """The host's clock, looked up at each call: only read for the skew exported."""
    return time.time()
