"""MetricsClient: what a gateway worker imports to record provider calls.

``record()`` validates and appends a tuple to an in-memory buffer under a lock: no I/O, no
exception. A background flusher thread, started lazily on the first event (so a Gunicorn
``--preload`` master never runs one), drains the buffer into Redis in one MULTI/EXEC round trip
per batch, retrying with exponential backoff while Redis is unreachable (``client.flushing``).
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
from typing import Any

from client.admission import ProviderAdmission
from client.breaker_gate import BreakerGate, CircuitOpenError
from client.declarations import MetricDeclarations
from client.events import Event, EventValidator, Rejected
from client.flushing import Flushing
from client.instruments import InstrumentStore
from client.keys import Keys
from client.settings import ClientSettings
from client.tracking import CallTracker
from client.writer import RedisWriter, connect

log = logging.getLogger("gatewayz.metrics.client")


class MetricsClient(MetricDeclarations, Flushing):
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
        self._wake = threading.Event()  # flush now: a batch is ready, or flush()/close()
        self._retry_now = threading.Event()  # cut a retry backoff short: flush()/close()
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
        self._retry_now.set()
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
        self._retry_now.set()
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


def _call(ref: weakref.ref[MetricsClient], method: str) -> None:
    client = ref()
    if client is not None:
        getattr(client, method)()
