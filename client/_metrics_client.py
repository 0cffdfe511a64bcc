"""MetricsClient: what a gateway worker imports to record provider calls.

It wires small parts together and holds the public methods: ``record()`` validates and appends
an event to the buffer (no I/O, no exception); the flusher thread, started on the first event (so
a Gunicorn ``--preload`` master never runs one), drains the buffer into Redis; the ledger keeps
every count and lets ``flush()`` wait. Two parts' methods are offered as the client's own
(``delegated``): the breaker queries ``allow()``, ``admit()``, ``breaker()`` and their async twins
(``BreakerQueries``, one per process), and the metric factories ``counter()``, ``gauge()``,
``histogram()``, ``summary()`` and ``info()`` (``MetricRegistry``).
"""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from client._breaker_queries import BreakerQueries
from client._breaker_status import CircuitOpenError
from client._delegation import delegated
from client._events import MAX_COST_USD, MAX_TOKENS, EventValidator, Rejected, nano_usd, token_count
from client._exemplars import checked_exemplar
from client._flusher import Flusher
from client._instruments import InstrumentStore
from client._ledger import CLOSED, Ledger
from client._metric_registry import MetricRegistry
from client._process_parts import ProcessParts
from client._settings import ClientSettings
from client._signals import unwatch as unwatch_shutdown
from client._signals import watch as watch_shutdown
from client._tracking import CallTracker
from gatewayz_protocol.fields import NANO_USD_PER_USD
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.model_scopes import MODEL_WINDOW_OF_OUTCOME
from gatewayz_protocol.partitions import CANCELLED, USAGE

log = logging.getLogger("gatewayz.metrics.client")

_MAX_WAIT_SECONDS = 86_400.0


class MetricsClient:
    """Records provider-call outcomes and ships them to Redis in the background.

    Thread-safe and fork-safe. Construct one per process (construction does no I/O)::

        metrics = MetricsClient(redis_url="redis://127.0.0.1:6379/0", namespace="gatewayz")
        metrics.record("openrouter", latency_s=0.42, status_code=200, tokens=1200)

    With ``settings.handle_sigterm`` (the default; ``GATEWAYZ_HANDLE_SIGTERM=0`` turns it off)
    the first client constructed in the main thread, while SIGTERM's handler is the default or
    a Python function, installs a process-wide SIGTERM handler that flushes every open client
    before the process ends as it would have; ``close()`` of the last one puts it back.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        namespace: str | None = None,
        settings: ClientSettings | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: by default the monotonic clock, corrected to Redis's (measured in the
        background), so every writer's events share one clock and a step of the host's clock
        moves none of them; an injected clock is taken as the shared one as it is (tests)."""
        base = settings or ClientSettings()
        given = {"redis_url": redis_url, "namespace": namespace}
        overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self.settings = replace(base, **overrides) if overrides else base
        self._keys = Keys(self.settings.namespace)
        self._clock = clock or time.monotonic
        self._shared_clock = clock is None
        self._validator = EventValidator()
        self._closed = False  # after close(), record() books nothing (nor a forked child's)
        self._instruments = InstrumentStore(
            self.settings.max_series_per_metric,
            self._clock,
            lambda: self._flusher.poke(),
            max_label_value_bytes=self.settings.max_label_value_bytes,
            max_batch_bytes=self.settings.max_batch_bytes,
            wall=clock or time.time,
            check_declarations=True,
            on_declare=lambda: self._flusher.poke(start=False),
        )
        self._metrics = MetricRegistry(self._instruments)
        self._start_process()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(ref, "_start_process"))
        atexit.register(_call, ref, "close")
        watch_shutdown(self, sigterm=self.settings.handle_sigterm)  # SIGTERM, os._exit children

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, clock: Callable[[], float] | None = None
    ) -> MetricsClient:
        """A client configured from the environment: GATEWAYZ_REDIS_URL, GATEWAYZ_NAMESPACE and
        the rest of ``ClientSettings.from_env()``'s variables."""
        return cls(settings=ClientSettings.from_env(env), clock=clock)

    def _start_process(self) -> None:
        """This process's own parts: at construction, and in a forked child, which must neither
        re-send its parent's buffered events nor rely on its parent's (absent) thread."""
        if hasattr(self, "_flusher"):
            self._instruments.reset_after_fork()
        parts = ProcessParts.build(
            self.settings, self._keys, self._instruments, self._clock, self._shared_clock
        )
        # Attributes of their own: record() reaches the buffer and the flusher in one lookup.
        self._ledger, self._buffer = parts.ledger, parts.buffer
        self._gate, self._flusher = parts.gate, parts.flusher
        self._refresher = parts.refresher
        self._breakers = parts.breakers
        self._models = parts.models

    # -- the circuit breaker (BreakerQueries) and backend metrics (MetricRegistry) -------------

    allow = delegated("_breakers", BreakerQueries.allow)
    allow_async = delegated("_breakers", BreakerQueries.allow_async)
    admit = delegated("_breakers", BreakerQueries.admit)
    admit_async = delegated("_breakers", BreakerQueries.admit_async)
    breaker = delegated("_breakers", BreakerQueries.breaker)
    breaker_async = delegated("_breakers", BreakerQueries.breaker_async)
    counter = delegated("_metrics", MetricRegistry.counter)
    gauge = delegated("_metrics", MetricRegistry.gauge)
    histogram = delegated("_metrics", MetricRegistry.histogram)
    summary = delegated("_metrics", MetricRegistry.summary)
    info = delegated("_metrics", MetricRegistry.info)

    # -- recording (hot path) ------------------------------------------------------------------

    def record(
        self,
        provider: str,
        latency_s: float,
        status_code: int | None = None,
        outcome: str | None = None,
        tokens: int = 0,
        cost_usd: float = 0.0,
        *,
        exemplar: Mapping[str, str] | None = None,
        model: str | None = None,
    ) -> bool:
        """Record one finished provider call. Never blocks on I/O, never raises.

        ``status_code`` (an int, or an IntEnum such as ``http.HTTPStatus``) decides the outcome
        class (success, failure, rate_limited, caller_error); ``outcome`` may be given instead,
        not both; neither means success. ``outcome="cancelled"``: the caller gave up before the
        provider's answer (counted, never in the window, the histogram, the error rate or the
        breaker; its latency is not kept). ``exemplar``: labels (such as ``{"trace_id": ...}``)
        linking the call's ``provider_response_time_seconds`` bucket to a trace (``track()``,
        ``gateway.inference()``: their span's). Returns whether the call was booked. A bad
        provider, latency, status code or outcome rejects it (counted by cause, nothing booked);
        a bad ``tokens`` (not a count in [0, 1e12]; 12.0 is 12), ``cost_usd`` or ``exemplar`` is
        left out, counted by cause, and the call is booked without it. ``model``: for a provider
        of ``breaker_models``, the model called, whose own breaker the call also feeds (bounded
        like a label value; not a non-empty string: left out, counted as ``invalid_model``);
        ignored for other providers. After ``close()``: False, counted as dropped (``closed``).
        """
        if self._closed:
            return _dropped_after_close(self._ledger)
        try:
            code = self._validator.validate(provider, latency_s, status_code, outcome)
            latency = float(latency_s)
        except Rejected as rejection:
            self._reject(rejection.cause, rejection.value)
            return False
        except Exception:
            self._reject("invalid_argument", provider)
            return False
        if type(tokens) is not int or not 0 <= tokens <= MAX_TOKENS:
            tokens = self._kept(token_count(tokens), "invalid_tokens", tokens)
        if type(cost_usd) is float and 0.0 <= cost_usd <= MAX_COST_USD:
            cost_nusd = round(cost_usd * NANO_USD_PER_USD) if cost_usd else 0
        else:
            cost_nusd = self._kept(nano_usd(cost_usd), "invalid_cost", cost_usd)
        if code >= CANCELLED:  # nothing of it in the histogram: no latency, no exemplar
            latency, exemplar = 0.0, None
        labels = None if exemplar is None else checked_exemplar(exemplar, self._ledger.reject)
        if model is not None and self._models is not None and code in MODEL_WINDOW_OF_OUTCOME:
            scoped = self._models.model(provider, model)
            if scoped is not None:
                at = self._clock()
                scoped_event = (provider, at, latency, code, tokens, cost_nusd, labels, scoped)
                self._flusher.notify(self._buffer.append(scoped_event))
                return True
            if provider in self._models.providers:
                self._reject("invalid_model", model)
        event = (provider, self._clock(), latency, code, tokens, cost_nusd, labels)
        self._flusher.notify(self._buffer.append(event))
        return True

    def _kept(self, value: int | None, cause: str, given: object) -> int:
        """``value`` as checked, or 0 with ``given`` counted as left out for ``cause``."""
        if value is None:
            self._reject(cause, given)
            return 0
        return value

    def _add_usage(self, provider: str, tokens: object, cost_usd: object) -> int | None:
        """Tokens and cost added to a call booked earlier (``add_usage()`` of ``track()`` and
        ``gateway.inference()``): one event that only adds to the provider's totals. Returns
        the cost accepted, in nano-USD (None: rejected, an invalid provider)."""
        if self._closed:
            _dropped_after_close(self._ledger)
            return None
        if not self._validator.valid_provider(provider):
            self._reject("invalid_provider", provider)
            return None
        count = self._kept(token_count(tokens), "invalid_tokens", tokens)
        cost_nusd = self._kept(nano_usd(cost_usd), "invalid_cost", cost_usd)
        if count or cost_nusd:
            event = (provider, self._clock(), 0.0, USAGE, count, cost_nusd, None)
            self._flusher.notify(self._buffer.append(event))
        return cost_nusd

    def track(self, provider: str, *, guard: bool = False, model: str | None = None) -> CallTracker:
        """Time a ``with`` block as one call to ``provider``.

        An exception inside the block records a failure, or the class of the status code it
        carries (``exc.status_code`` / ``exc.response.status_code``), and is re-raised. The
        caller giving up (``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``)
        records ``cancelled``, a ``CircuitOpenError`` nothing. Set ``status_code``,
        ``outcome``, ``tokens`` and ``cost_usd`` on the yielded object; after the block,
        ``call.booked_as`` says what was booked and ``call.add_usage()`` adds tokens and cost
        known later. With ``guard=True`` the breaker is asked first (``admit()``): when it
        rejects the call, CircuitOpenError (with ``retry_after_s``) is raised and the block
        never runs. ``model``: the model called, for a provider of ``breaker_models`` (its
        breaker asked too, and fed: ``record(model=...)``).
        """
        if guard:
            status = self.admit(provider, model)
            if not status:
                raise CircuitOpenError.of(status)
        return CallTracker(self, provider, model)

    def _reject(self, cause: str, value: object) -> None:
        _rejected(self._ledger, self._flusher, cause, value)

    # -- flushing ------------------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything recorded (and every rejection counted) before this call is in
        Redis, or ``timeout`` seconds pass (after ``close()``: none, no flusher is left). Returns
        True when it all got there: False on a timeout, and when events were given up on
        meanwhile (counted as dropped). Never raises."""
        return self._flush(0.0 if self._closed else _seconds(timeout))

    def _flush(self, seconds: float) -> bool:
        target, dropped = self._ledger.target(self._buffer.appended, self._instruments.version)
        if not self._flusher.started:
            if not self._instruments.declarations.specs:
                return self._ledger.wait(target, dropped, 0.0)  # nothing to write
            self._flusher.start()  # declarations only: they start no thread of their own
        self._flusher.wake()
        return self._ledger.wait(target, dropped, seconds)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush (up to ``timeout`` seconds) and stop the flusher and the breaker refresher;
        returns flush()'s answer. After it ``record()`` books nothing (``closed``: see there),
        and backend metric updates are counted as dropped (``closed``), never written.

        SIGTERM no longer flushes this client; when it is the last open client that asked for
        SIGTERM handling, the handler they installed is put back as it was (SIG_DFL, or the
        application's handler it chained), unless something replaced it since."""
        if self._closed:
            return self.flush()  # a second close() (the exit's): at once
        self._closed = True  # first: what record() and the metrics took until now is flushed,
        self._instruments.close()  # nothing after it (a flusher must not chase new updates)
        self._instruments.on_update = lambda: _updated_after_close(self._ledger, self._instruments)
        flushed = self._flush(_seconds(timeout))
        self._flusher.stop(max(1.0, self.settings.socket_timeout_seconds * 2))
        self._refresher.stop(max(1.0, self.settings.allow_timeout_seconds * 2))
        unwatch_shutdown(self)
        return flushed

    def stats(self) -> dict[str, Any]:
        """This process's counters: buffered, accepted, settled, dropped, rejected by cause,
        whether the last write reached Redis, batches Redis refused (part of), and backend
        metric updates given up on, by cause."""
        found: dict[str, Any] = {"buffered": len(self._buffer), "accepted": self._buffer.appended}
        found |= self._ledger.stats() | {"redis_ok": self._flusher.redis_ok}
        if refused := self._instruments.refused_after_close:
            found["metric_updates_dropped"] |= {CLOSED: refused}
        return found


def _seconds(timeout: object) -> float:
    """A timeout as seconds in [0, a day]: anything that is not a number counts as 0."""
    try:
        seconds = float(timeout)  # type: ignore[arg-type]
    except Exception:
        return 0.0
    return min(max(seconds, 0.0), _MAX_WAIT_SECONDS) if seconds == seconds else 0.0


def _rejected(ledger: Ledger, flusher: Flusher, cause: str, value: object) -> None:
    """A call (or a part of it: tokens, cost...) rejected for ``cause``: counted, to be
    written with the next batch, logged the first time."""
    try:
        first = ledger.reject(cause)
        flusher.poke()
        if first:
            log.warning(
                "metrics event rejected (%s): %.80r; further rejections of this cause are "
                "only counted",
                cause,
                value,
            )
    except Exception:  # logging misconfigured, interpreter shutting down...
        pass


def _dropped_after_close(ledger: Ledger) -> bool:
    """A call recorded after ``close()``: counted as dropped (``closed``) in this process,
    logged the first time; never buffered, since no flusher would write it (and a buffered
    event would hold every later ``flush()``, the exit's too, for its whole timeout). False:
    record()'s answer."""
    try:
        if ledger.dropped_after_close():
            log.warning(
                "metrics recorded after close() are dropped (counted as dropped, cause closed); "
                "further ones are only counted"
            )
    except Exception:  # logging misconfigured, interpreter shutting down...
        pass
    return False


def _updated_after_close(ledger: Ledger, instruments: InstrumentStore) -> None:
    """After ``close()``: a backend metric update the store refused (counted) is said the first
    time (the flusher's own bookkeeping, while it stops, comes here too: nothing to say)."""
    try:
        if instruments.refused_after_close and ledger.first_time("metric updates after close"):
            log.warning(
                "backend metric updates after close() are dropped (counted in "
                "stats()['metric_updates_dropped'], cause closed); further ones are only "
                "counted"
            )
    except Exception:  # logging misconfigured, interpreter shutting down...
        pass


def _call(ref: weakref.ref[MetricsClient], method: str) -> None:
    client = ref()
    if client is not None:
        getattr(client, method)()
