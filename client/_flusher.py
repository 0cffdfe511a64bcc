"""The flusher: the background thread that drains the event buffer into Redis.

One batch per round trip (MULTI/EXEC), at most one in flight, waiting ``flush_interval`` first so
events accumulate; an idle flusher sleeps until something is recorded or a gauge rewrite is due.
The thread only schedules: a pass (``_flush_pass``) takes, builds, delivers and settles a batch, and
``Backoff`` (``_retry``) retries while Redis is unreachable, keeping the batch it has taken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from client._admission import ProviderAdmission
from client._batch import Batch
from client._buffer import EventBuffer
from client._events import Event
from client._flush_pass import FlushPass, GaugeRefresh, Pass, Sink
from client._instruments import InstrumentStore
from client._ledger import Ledger
from client._retry import Backoff
from client._settings import ClientSettings
from gatewayz_protocol.clock import SharedClock

log = logging.getLogger("gatewayz.metrics.client")

IDLE_CHECK_SECONDS = 5.0
"""The longest an idle flusher sleeps without being woken."""


class Flusher:
    """Drains ``buffer``, the ledger's notes and the instrument store into ``sink`` on a thread of
    its own, started with the first event."""

    def __init__(
        self,
        buffer: EventBuffer,
        ledger: Ledger,
        instruments: InstrumentStore,
        sink: Sink,
        admission: ProviderAdmission,
        settings: ClientSettings,
        monotonic: Callable[[], float] = time.monotonic,
        clock: SharedClock | None = None,
        wakes: Callable[[Batch], Batch] = lambda batch: batch,
        models: Callable[[list[Event]], list[Event]] | None = None,
    ) -> None:
        """``clock``: event times are moved onto it (its offset, as the sink last measured it)
        when a batch is built; None: they are on the shared clock already. ``wakes``: marks
        each batch with the breakers to wake (``client._wake``). ``models``: leaves out of the
        events the models their provider's model registry refused (``client._model_scopes``).
        """
        self._buffer = buffer
        self._ledger = ledger
        self._instruments = instruments
        self._settings = settings
        self._wake = threading.Event()  # a batch is ready, work after idleness, or flush()
        self._idle = False  # asleep with nothing to send: the next record() wakes it
        self._urgent = False  # flush()/close() asked: no time for a batch to accumulate
        self.passes = 0
        """Flush passes so far (an idle flusher makes none between its deadlines)."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._refused_in_a_row = 0
        self._wake_at = max(1, settings.max_batch // 2)
        self._backoff = Backoff(
            settings.backoff_initial_seconds,
            settings.backoff_max_seconds,
            stopping=lambda: self._stopping,
        )
        self._gauges = GaugeRefresh(settings.gauge_ttl_seconds, monotonic)
        self._pass = FlushPass(
            buffer,
            ledger,
            instruments,
            sink,
            admission,
            self._backoff,
            self._gauges,
            max_batch=settings.max_batch,
            max_providers=settings.max_providers,
            clock=clock,
            wakes=wakes,
            models=models,
        )

    @property
    def redis_ok(self) -> bool:
        """Whether the last round trip reached Redis."""
        return self._backoff.redis_ok

    @property
    def started(self) -> bool:
        return self._thread is not None

    def notify(self, buffered: int) -> None:
        """An event was buffered (the hot path): start the thread with the first one, wake it
        when it sleeps idle or a batch is ready."""
        if self._thread is None:
            self.start()
        if self._idle or (buffered >= self._wake_at and not self._wake.is_set()):
            self._idle = False
            self._wake.set()  # Event.set() takes a lock: only when it changes something

    def poke(self, start: bool = True) -> None:
        """Something besides an event waits to be written (a backend metric value, a counted
        rejection): start the thread (unless ``start`` is False: it then waits for the next
        thing that starts it, ``flush()`` or ``close()``), wake it when it sleeps idle."""
        if self._thread is None:
            if not start:
                return
            self.start()
        if self._idle:
            self._idle = False
            self._wake.set()

    def start(self) -> None:
        """Start the thread, in the process that records (never in a preload master that only
        constructed the client). Idempotent; never after stop()."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(
                target=self._run, name="gatewayz-metrics-flusher", daemon=True
            )
            self._thread.start()

    def wake(self) -> None:
        """Flush now, cutting a retry backoff short."""
        self._urgent = True
        self._wake.set()
        self._backoff.cut_short()

    def stop(self, timeout: float) -> None:
        """Write what is waiting (unless Redis is unreachable), then end the thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        """Never dies of an unexpected error while the client is open."""
        while True:
            try:
                self._serve()
                return
            except Exception:
                log.exception("metrics flusher failed unexpectedly; restarting it")
                if self._stopping:
                    return
                self._backoff.pause(self._settings.backoff_max_seconds)

    def _serve(self) -> None:
        while True:
            stopping = self._stopping
            if not stopping:
                if not self._pending():
                    self._idle = True
                    if not self._pending():  # re-checked: a record() may have missed the flag
                        self._wake.wait(self.idle_seconds())
                    self._idle = False
                    self._wake.clear()
                if not self._urgent and len(self._buffer) < self._wake_at:
                    # Wait, so a batch accumulates: one round trip per interval (none while
                    # half a batch waits already: a backlog drains pass after pass).
                    self._wake.wait(self._settings.flush_interval_seconds)
                    self._wake.clear()
                self._urgent = False
            self.passes += 1
            done = self._pass.run()
            if done is Pass.STOPPED or (
                stopping and (done in (Pass.IDLE, Pass.REFUSED) or not self._waiting())
            ):
                # stopping: what Redis refused for good it would refuse again, and a pass with
                # nothing new would only send again what Redis has not taken (a declaration)
                return
            self._refused_in_a_row = self._refused_in_a_row + 1 if done is Pass.REFUSED else 0
            if self._refused_in_a_row:
                # Refused for good (an ACL, a renamed command): the counts of what was dropped
                # wait for the next batch, which Redis would refuse at once; back off as from
                # an unreachable Redis, so that is no loop (flush() and close() cut it short)
                self._backoff.pause(self._backoff.delay(self._refused_in_a_row))

    def _pending(self) -> bool:
        """Whether a pass is due: something waits to be written, or flush() or stop() asks."""
        return self._waiting() or self._urgent or self._stopping

    def _waiting(self) -> bool:
        """Whether anything waits to be written: events, counted notes, metric values."""
        return (
            len(self._buffer) > 0
            or self._ledger.has_notes()
            or self._instruments.version != self._pass.drained_version
        )

    def idle_seconds(self) -> float:
        """How long an idle flusher may sleep: until the gauge values are due for a rewrite, and
        at most ``IDLE_CHECK_SECONDS`` (the log sender's drop count is polled, not pushed)."""
        due = [IDLE_CHECK_SECONDS]
        if self._instruments.has_gauges:
            due.append(self._gauges.seconds_until_due())
        return max(0.0, min(due))

    def flush_once(self) -> Pass:
        """One pass, on the caller's thread (tests; the thread runs its own)."""
        return self._pass.run()
