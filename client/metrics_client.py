"""MetricsClient: what a gateway worker imports to record provider calls.

``record()`` validates and appends a tuple to an in-memory buffer under a lock: no I/O, no
exception. A background flusher thread, started lazily on the first event (so a Gunicorn
``--preload`` master never runs one), drains the buffer into Redis in one MULTI/EXEC round trip
per batch, retrying with exponential backoff while Redis is unreachable.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import redis

from client.admission import ProviderAdmission
from client.breaker_gate import BreakerGate, CircuitOpenError
from client.declarations import MetricDeclarations
from client.events import Event, EventValidator, Rejected
from client.instruments import (
    InstrumentStore,
)
from client.keys import Keys
from client.settings import ClientSettings
from client.tracking import CallTracker
from client.writer import Batch, RedisWriter, build_batch, connect

log = logging.getLogger("gatewayz.metrics.client")


class MetricsClient(MetricDeclarations):
    """Records provider-call outcomes and ships them to Redis in the background.

    Thread-safe and fork-safe. Construct one per process (construction does no I/O)::

        metrics = MetricsClient(redis_url="redis://127.0.0.1:6379/0", namespace="gatewayz")
        metrics.record("openrouter", latency_s=0.42, status_code=200, tokens=1200)
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        namespace: str | None = None,
        settings: ClientSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = settings or ClientSettings()
        overrides: dict[str, Any] = {}
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        if namespace is not None:
            overrides["namespace"] = namespace
        if overrides:
            base = ClientSettings(**{**base.__dict__, **overrides})
        self.settings = base
        self._keys = Keys(base.namespace)
        self._clock = clock
        self._validator = EventValidator()
        self._logged_causes: set[str] = set()
        self._instruments = InstrumentStore(base.max_series_per_metric, clock, self._on_update)
        self._metrics: dict[str, Any] = {}
        self._reset_process_state()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, "_reset_process_state"))
        atexit.register(_call, ref, "close")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time
    ) -> MetricsClient:
        """A client configured from REDIS_URL and METRICS_NAMESPACE (see ClientSettings)."""
        return cls(settings=ClientSettings.from_env(env), clock=clock)

    def _reset_process_state(self) -> None:
        """Fresh per-process state: called at construction and in a forked child, which must
        neither re-send its parent's buffered events nor rely on its parent's (absent) thread."""
        self._lock = threading.Lock()
        self._instruments.reset_after_fork()
        self._instruments_written = 0
        self._gauges_refreshed_at = 0.0
        self._settled_cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._buffer: deque[Event] = deque()
        self._writer_id = secrets.token_urlsafe(6)
        self._accepted = 0  # events appended to the buffer
        self._settled = 0  # events written to Redis or dropped
        self._rejected: Counter[str] = Counter()
        self._rejected_total: Counter[str] = Counter()
        self._dropped_unsent = 0
        self._dropped_total = 0
        self._stats_version = 0
        self._stats_written = 0
        self._breaker_rejected: Counter[str] = Counter()
        self._write_errors = 0  # batches Redis refused (not retried)
        self._flusher: threading.Thread | None = None
        self._closing = False
        self._redis_ok = True
        self._wake_at = max(1, self.settings.max_batch // 2)
        self._max_buffer = self.settings.max_buffer
        settings = self.settings
        # Constructing connections does no I/O; each process gets its own after a fork.
        self._writer = self._make_writer(settings.socket_timeout_seconds)
        self._admission = ProviderAdmission(
            self._writer.admit_providers, self.settings.max_providers, self._clock
        )
        gate_io = self._make_writer(settings.allow_timeout_seconds)
        self._gate = BreakerGate(
            gate_io.breaker_states,
            gate_io.take_permit,
            holder_prefix=self._writer_id,
            refresh_seconds=settings.breaker_refresh_seconds,
            max_entries=settings.max_providers,
        )

    def _make_writer(self, socket_timeout: float) -> RedisWriter:
        settings = self.settings
        return RedisWriter(
            connect(settings.redis_url, socket_timeout),
            self._keys,
            settings.window_ttl_seconds,
            int(settings.retention_seconds),
            writer_id=self._writer_id,
            max_series=settings.max_series_per_metric,
            gauge_ttl=int(settings.gauge_ttl_seconds + 0.999),
        )

    def _on_update(self) -> None:
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._start_flusher()

    # -- recording (hot path) ------------------------------------------------------------------

    def record(
        self,
        provider: str,
        latency_s: float,
        status_code: int | None = None,
        outcome: str | None = None,
        tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """Record one finished provider call. Never blocks on I/O, never raises.

        ``status_code`` decides the outcome class (see ``client.outcome``); ``outcome`` (one of
        success, failure, rate_limited, caller_error) may be given instead, not both; neither
        means success. Invalid calls are rejected and counted by cause.
        """
        try:
            code, cost_nusd = self._validator.validate(
                provider, latency_s, status_code, outcome, tokens, cost_usd
            )
            event = (provider, self._clock(), float(latency_s), code, tokens, cost_nusd)
        except Rejected as rejection:
            self._reject(rejection.cause, rejection.value)
            return
        except Exception:
            self._reject("invalid_argument", provider)
            return
        buffer = self._buffer
        with self._lock:
            if len(buffer) >= self._max_buffer:
                buffer.popleft()
                self._dropped_unsent += 1
                self._dropped_total += 1
                self._settled += 1
                self._stats_version += 1
            buffer.append(event)
            self._accepted += 1
            if self._flusher is None:
                self._start_flusher()
        if len(buffer) >= self._wake_at and not self._wake.is_set():
            self._wake.set()  # Event.set() takes a lock: only when it changes something

    def track(self, provider: str, *, guard: bool = False) -> CallTracker:
        """Time a ``with`` block as one call to ``provider``.

        An exception inside the block records a failure, or the class of the status code it
        carries (``exc.status_code`` / ``exc.response.status_code``), and is re-raised. Set
        ``status_code``, ``outcome``, ``tokens`` and ``cost_usd`` on the yielded object.
        With ``guard=True`` the breaker is asked first (``allow()``): when it rejects the call,
        CircuitOpenError is raised and the block never runs.
        """
        if guard and not self.allow(provider):
            raise CircuitOpenError(provider, self._gate.state(provider) or "open")
        return CallTracker(self, provider)

    def allow(self, provider: str) -> bool:
        """Whether ``provider``'s cluster-wide circuit breaker lets a call through now.

        closed: True, from a local cache refreshed every 0.5 s (no I/O). open: False.
        half_open: True for at most the configured number of trial calls across all workers
        (a permit taken atomically in Redis), False for the rest. With Redis unreachable it
        answers from the last known state, and with none it fails open (True). Rejections are
        counted in ``gatewayz_circuit_breaker_rejected_calls_total``. Never raises.
        """
        try:
            allowed = self._gate.allow(provider)
        except Exception:
            return True
        if not allowed:
            with self._lock:
                self._breaker_rejected[provider] += 1
                self._stats_version += 1
                if self._flusher is None:
                    self._start_flusher()
        elif self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._start_flusher()  # keeps the cached state refreshed
        return allowed

    def _reject(self, cause: str, value: object) -> None:
        try:
            with self._lock:
                self._rejected[cause] += 1
                self._rejected_total[cause] += 1
                self._stats_version += 1
                first = cause not in self._logged_causes
                self._logged_causes.add(cause)
                if self._flusher is None:
                    self._start_flusher()
            if first:
                log.warning(
                    "metrics event rejected (%s): %.80r; further rejections of this cause are "
                    "only counted",
                    cause,
                    value,
                )
        except Exception:  # logging misconfigured, interpreter shutting down...
            pass

    # -- flushing ------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything recorded (and every rejection counted) before this call is in
        Redis, or ``timeout`` seconds pass. Returns True when it all got there."""
        deadline = time.monotonic() + timeout
        instruments_target = self._instruments.version
        with self._lock:
            target = self._accepted
            stats_target = self._stats_version
            if self._flusher is None:
                return target == self._settled and stats_target == self._stats_written
        self._wake.set()
        with self._settled_cond:
            while (
                self._settled < target
                or self._stats_written < stats_target
                or self._instruments_written < instruments_target
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._settled_cond.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush (up to ``timeout`` seconds) and stop the flusher. Returns flush()'s answer."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closing = True
            flusher = self._flusher
        self._wake.set()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=max(1.0, self.settings.socket_timeout_seconds * 2))
        return flushed

    def stats(self) -> dict[str, Any]:
        """This process's counters: buffered, accepted, settled, dropped, rejected by cause."""
        with self._lock:
            return {
                "buffered": len(self._buffer),
                "accepted": self._accepted,
                "settled": self._settled,
                "dropped": self._dropped_total,
                "rejected": dict(self._rejected_total),
                "redis_ok": self._redis_ok,
                "write_errors": self._write_errors,
            }

    def _start_flusher(self) -> None:
        # Called with self._lock held, in the process that records (never in a preload master
        # that only constructed the client).
        if self._closing:
            return
        thread = threading.Thread(
            target=self._run_flusher,
            args=(self._writer_id,),
            name="gatewayz-metrics-flusher",
            daemon=True,
        )
        self._flusher = thread
        thread.start()

    def _take_batch(self) -> tuple[Batch, int]:
        """The next batch; raises redis.RedisError, taking nothing, when no ids can be
        reserved for its events."""
        with self._lock:
            count = min(len(self._buffer), self.settings.max_batch)
        # Only this thread shortens the buffer (record() drops the oldest to append), so the
        # ``count`` events are still there after the round trip.
        first_id = self._writer.reserve_event_ids(count) if count else 0
        now = time.monotonic()
        refresh_gauges = now - self._gauges_refreshed_at >= self.settings.gauge_ttl_seconds / 3
        if refresh_gauges:
            self._gauges_refreshed_at = now
        instruments = self._instruments.drain(include_all_gauges=refresh_gauges)
        with self._lock:
            buffer = self._buffer
            events = [buffer.popleft() for _ in range(count)]
        events = self._admitted_only(events)  # may count rejections: take the stats after it
        with self._lock:
            rejected = dict(self._rejected)
            self._rejected.clear()
            dropped = self._dropped_unsent
            self._dropped_unsent = 0
            breaker_rejected = dict(self._breaker_rejected)
            self._breaker_rejected.clear()
            stats_version = self._stats_version
        batch = build_batch(events, first_id, rejected, dropped, breaker_rejected)
        if not instruments.empty or instruments.version:
            batch = replace(batch, instruments=instruments)
        return batch, stats_version

    def _admitted_only(self, events: list[Event]) -> list[Event]:
        """Drop (and count) the events of providers the registry refused."""
        refused = self._admission.refused({event[0] for event in events})
        if not refused:
            return events
        kept = [event for event in events if event[0] not in refused]
        dropped = len(events) - len(kept)
        with self._settled_cond:
            self._rejected["too_many_providers"] += dropped
            self._rejected_total["too_many_providers"] += dropped
            self._stats_version += 1
            self._settled += dropped
            self._settled_cond.notify_all()
        if "too_many_providers" not in self._logged_causes:
            self._logged_causes.add("too_many_providers")
            log.warning(
                "provider registry is full (%d providers): events of new providers such as %r "
                "are dropped and counted",
                self.settings.max_providers,
                sorted(refused)[0],
            )
        return kept

    def _run_flusher(self, writer_id: str) -> None:
        """The flusher thread: never dies of an unexpected error while the client is open."""
        while True:
            try:
                self._flush_until_closed(writer_id)
                return
            except Exception:
                log.exception("metrics flusher failed unexpectedly; restarting it")
                self._wake.wait(self.settings.backoff_max_seconds)

    def _flush_until_closed(self, writer_id: str) -> None:
        settings = self.settings
        writer, gate = self._writer, self._gate
        backoff = settings.backoff_initial_seconds
        pending: tuple[Batch, int] | None = None
        while True:
            if pending is None:
                if not self._closing:
                    # Wait first, so a batch accumulates: one round trip per interval.
                    self._wake.wait(settings.flush_interval_seconds)
                    self._wake.clear()
                gate.refresh_if_due()
                try:
                    pending = self._take_batch()
                except (redis.RedisError, OSError) as exc:
                    # Nothing was taken: the events wait in the (bounded) buffer.
                    if not self._wait_to_retry(exc, writer_id, backoff):
                        return
                    backoff = min(backoff * 2, settings.backoff_max_seconds)
                    continue
                batch, stats_version = pending
                if batch.empty:
                    pending = None
                    with self._lock:
                        self._stats_written = max(self._stats_written, stats_version)
                        if batch.instruments is not None:
                            self._instruments_written = batch.instruments.version
                        if self._closing or self._writer_id != writer_id:
                            return
                    continue
            batch, stats_version = pending
            try:
                conflicts = writer.write(batch)
            except Exception as exc:
                if isinstance(exc, redis.ResponseError) or not isinstance(
                    exc, (redis.RedisError, OSError)
                ):
                    # Redis executed the transaction and refused a command, or the batch holds
                    # a value redis-py cannot encode: retrying would fail again, or apply the
                    # rest of the batch twice. Drop it, count it, keep the flusher alive.
                    log.error("metrics batch refused, not retried: %r", exc)
                    self._settle(batch, stats_version, write_error=True)
                    pending = None
                    continue
                if not self._wait_to_retry(exc, writer_id, backoff):
                    return
                backoff = min(backoff * 2, settings.backoff_max_seconds)
                continue
            if not self._redis_ok:
                self._redis_ok = True
                log.warning("metrics flush to Redis recovered")
            for name in conflicts:
                if name not in self._logged_causes:
                    self._logged_causes.add(name)
                    log.error(
                        "metric %r is declared differently in Redis (another deployment?); "
                        "the aggregator exports the first declaration",
                        name,
                    )
            backoff = settings.backoff_initial_seconds
            pending = None
            self._settle(batch, stats_version)

    def _wait_to_retry(self, exc: Exception, writer_id: str, backoff: float) -> bool:
        """After a failed round trip: wait ``backoff`` seconds (or until woken). False when
        the client is closing or this thread belongs to a parent process (stop, don't retry)."""
        if self._redis_ok:
            self._redis_ok = False
            log.error("metrics flush to Redis failed, retrying with backoff: %s", exc)
        with self._lock:
            if self._closing or self._writer_id != writer_id:
                return False
        self._wake.wait(backoff)
        self._wake.clear()
        return True

    def _settle(self, batch: Batch, stats_version: int, write_error: bool = False) -> None:
        """The batch is done with (written, or refused for good): wake flush() waiters."""
        with self._settled_cond:
            self._write_errors += write_error
            self._settled += batch.events
            self._stats_written = max(self._stats_written, stats_version)
            if batch.instruments is not None:
                self._instruments_written = batch.instruments.version
            self._settled_cond.notify_all()


def _call(ref: weakref.ref[MetricsClient], method: str) -> None:
    client = ref()
    if client is not None:
        getattr(client, method)()
