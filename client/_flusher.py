"""The flusher: the background thread that drains the event buffer into Redis.

One batch per round trip (MULTI/EXEC), at most one in flight, waiting ``flush_interval`` first so
events accumulate. While Redis is unreachable it backs off exponentially and keeps the batch it
has taken, so a retry re-sends the same members (never applied twice: a transaction either ran
or did not). Whatever happens to a batch it took, its events are settled in the ledger: written,
or given up on and counted as dropped.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

import redis

from client._admission import ProviderAdmission
from client._batch import Batch, build_batch
from client._buffer import EventBuffer
from client._events import Event
from client._instruments import Drained, InstrumentStore
from client._ledger import ERROR, NO_NOTES, REFUSED, SHUTDOWN, Ledger, Notes
from client._settings import ClientSettings
from client._writer import WriteReport
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.hooks import NewLogDrops
from gatewayz_transport.errors import is_out_of_memory, is_transient

log = logging.getLogger("gatewayz.metrics.client")

_T = TypeVar("_T")

IDLE_CHECK_SECONDS = 5.0
"""The longest an idle flusher sleeps without being woken."""


MIN_SPLIT_EVENTS = 64
"""A batch Redis refuses for lack of memory is split in halves down to this size."""


class Sink(Protocol):
    """Where batches go (``RedisWriter``; a test passes a fake)."""

    def reserve_event_ids(self, count: int) -> int: ...

    def write(self, batch: Batch) -> WriteReport: ...


class Pass(enum.Enum):
    """What one pass of the flusher did."""

    IDLE = "nothing was waiting"
    WRITTEN = "a batch was delivered (or given up on, and counted)"
    STOPPED = "stop() ended the retries while Redis was unreachable"


class Flusher:
    """Drains ``buffer``, the ledger's notes and the instrument store into ``sink``."""

    def __init__(
        self,
        buffer: EventBuffer,
        ledger: Ledger,
        instruments: InstrumentStore,
        sink: Sink,
        admission: ProviderAdmission,
        settings: ClientSettings,
        before_flush: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: SharedClock | None = None,
        next_refresh: Callable[[], float] = lambda: math.inf,
    ) -> None:
        """``clock``: event times are moved onto it (its offset, as the sink last measured it)
        when a batch is built; None: they are on the shared clock already. ``next_refresh``:
        seconds until ``before_flush`` has work (the breaker cache's next refresh): an idle
        flusher sleeps until then, or until something is recorded."""
        self._buffer = buffer
        self._ledger = ledger
        self._instruments = instruments
        self._sink = sink
        self._admission = admission
        self._settings = settings
        self._before_flush = before_flush
        self._next_refresh = next_refresh
        self._monotonic = monotonic
        self._clock = clock
        self._wake = threading.Event()  # a batch is ready, work after idleness, or flush()
        self._idle = False  # asleep with nothing to send: the next record() wakes it
        self._urgent = False  # flush()/close() asked: no time for a batch to accumulate
        self.passes = 0
        """Flush passes so far (an idle flusher makes none between its deadlines)."""
        self._retry_now = threading.Event()  # cut a retry backoff short: flush()/close()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_at = max(1, settings.max_batch // 2)
        self._gauges_refreshed_at = float("-inf")
        self._drained_version = 0
        self._logged: set[str] = set()
        self._log_drops = NewLogDrops()  # a forked child: only its own from here
        self.redis_ok = True

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

    def poke(self) -> None:
        """Something besides an event waits to be written (a backend metric value, a counted
        rejection): start the thread, wake it when it sleeps idle."""
        if self._thread is None:
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
        self._retry_now.set()

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
                self._retry_now.wait(self._settings.backoff_max_seconds)
                self._retry_now.clear()

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
                if not self._urgent:
                    # Wait, so a batch accumulates: one round trip per interval.
                    self._wake.wait(self._settings.flush_interval_seconds)
                    self._wake.clear()
                self._urgent = False
            self._before_flush()
            self.passes += 1
            done = self.flush_once()
            if done is Pass.STOPPED or (stopping and done is Pass.IDLE):
                return

    def _pending(self) -> bool:
        """Whether anything waits to be written: events, counted notes, metric values."""
        return (
            len(self._buffer) > 0
            or self._ledger.has_notes()
            or self._instruments.version != self._drained_version
            or self._urgent
            or self._stopping
        )

    def idle_seconds(self) -> float:
        """How long an idle flusher may sleep: until the breaker cache or the gauge values are
        due for a refresh, and at most ``IDLE_CHECK_SECONDS`` (the log sender's drop count is
        polled, not pushed)."""
        due = [IDLE_CHECK_SECONDS, self._next_refresh()]
        if self._instruments.has_gauges:
            since = self._monotonic() - self._gauges_refreshed_at
            due.append(self._settings.gauge_ttl_seconds / 3 - since)
        return max(0.0, min(due))

    # -- one pass ------------------------------------------------------------------------------

    def flush_once(self) -> Pass:
        """Take what is waiting (up to ``max_batch`` events) and deliver it as one batch."""
        count = min(len(self._buffer), self._settings.max_batch)
        first_id = 0
        if count:
            # Reserve the ids before taking the events: while no ids can be had, the events
            # wait in the (bounded) buffer. Only this thread shortens the buffer, so the
            # ``count`` events are still there afterwards.
            reserved = self._retrying(
                lambda: self._sink.reserve_event_ids(count),
                lambda exc: isinstance(exc, redis.RedisError | OSError),
            )
            if reserved is Pass.STOPPED:
                return Pass.STOPPED
            first_id = reserved
        events = self._buffer.take(count)
        notes: Notes | None = None
        try:
            events = self._admitted_only(events)
            self._note_log_drops()
            notes = self._ledger.take_notes()
            offset = self._clock.offset if self._clock is not None else 0.0
            batch = build_batch(events, first_id, notes, self._drain(), offset)
        except Exception:
            # Not even a batch: whatever went wrong, the events taken are settled as dropped.
            self._ledger.settle(
                len(events),
                notes or NO_NOTES,
                0,
                lost=len(events),
                cause=ERROR,
                notes_lost=notes is not None,
                write_error=True,
            )
            raise
        if batch.empty:
            self._settle(batch)
            return Pass.IDLE
        return self._deliver(batch, events, first_id)

    def _note_log_drops(self) -> None:
        """Log records the process's Loki sender (``gatewayz_telemetry``, when it is in use)
        gave up on since the last batch: shipped with the batch, like every client counter."""
        new = self._log_drops.take()
        if new:
            self._ledger.note_log_drops(new)

    def _admitted_only(self, events: list[Event]) -> list[Event]:
        """Drop (and count) the events of providers the registry refused."""
        refused = self._admission.refused({event[0] for event in events})
        if not refused:
            return events
        kept = [event for event in events if event[0] not in refused]
        dropped = len(events) - len(kept)
        if self._ledger.reject("too_many_providers", dropped, settles=dropped):
            log.warning(
                "provider registry is full (%d providers): events of new providers such as %r "
                "are dropped and counted",
                self._settings.max_providers,
                sorted(refused)[0],
            )
        return kept

    def _drain(self) -> Drained:
        """The instrument store's pending values; every gauge value when their TTL needs a
        refresh."""
        now = self._monotonic()
        refresh = now - self._gauges_refreshed_at >= self._settings.gauge_ttl_seconds / 3
        if refresh:
            self._gauges_refreshed_at = now
        drained = self._instruments.drain(include_all_gauges=refresh)
        self._drained_version = drained.version
        return drained

    def _deliver(self, batch: Batch, events: list[Event], first_id: int) -> Pass:
        """Write the batch (of ``events``, named from ``first_id``), retrying while Redis is
        unreachable or refuses for now; settle it in the ledger whatever happens."""
        splittable = len(events) >= 2 * MIN_SPLIT_EVENTS
        try:
            report = self._retrying(
                lambda: self._sink.write(batch),
                lambda exc: is_transient(exc) and not (splittable and is_out_of_memory(exc)),
            )
        except Exception as exc:
            if splittable and is_out_of_memory(exc):
                return self._split(batch, events, first_id, exc)
            return self._give_up(batch, exc)
        if report is Pass.STOPPED:
            self._settle(batch, lost=batch.events, cause=SHUTDOWN, notes_lost=True)
            return Pass.STOPPED
        if report.errors:
            log.error(
                "Redis refused part of a metrics batch (%d events counted as dropped): %s",
                report.refused_events,
                report.errors[0],
            )
        for name in report.conflicts:
            if name not in self._logged:
                self._logged.add(name)
                log.error(
                    "metric %r is declared differently in Redis (another deployment?); "
                    "the aggregator exports the first declaration",
                    name,
                )
        self._settle(batch, lost=report.refused_events, write_error=bool(report.errors))
        return Pass.WRITTEN

    def _split(self, batch: Batch, events: list[Event], first_id: int, exc: BaseException) -> Pass:
        """Redis is at maxmemory, and a batch's own payload counts against it: deliver the
        batch in two halves (each split again while it does not fit), the same events under
        the same ids."""
        if self.redis_ok:
            self.redis_ok = False
            log.error("Redis is out of memory: metrics batches split and retried: %s", exc)
        half = len(events) // 2
        try:
            lineage = batch.lineage
            first = build_batch(
                events[:half], first_id, batch.notes, batch.instruments, batch.offset, lineage
            )
            second = build_batch(
                events[half:], first_id + half, NO_NOTES, None, batch.offset, lineage
            )
        except Exception as error:
            return self._give_up(batch, error)
        if self._deliver(first, events[:half], first_id) is Pass.STOPPED:
            self._settle(second, lost=second.events, cause=SHUTDOWN)
            return Pass.STOPPED
        return self._deliver(second, events[half:], first_id + half)

    def _give_up(self, batch: Batch, exc: BaseException) -> Pass:
        """Redis refused the whole transaction for good, or the batch holds something that
        cannot be sent: nothing was applied, and retrying would fail again."""
        if isinstance(exc, redis.RedisError):
            log.error("metrics batch refused, its events counted as dropped: %s", exc)
            cause = REFUSED
        else:
            log.error(
                "metrics batch could not be written; its events counted as dropped",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            cause = ERROR
        self._settle(batch, lost=batch.events, cause=cause, notes_lost=True, write_error=True)
        return Pass.WRITTEN

    def _settle(
        self,
        batch: Batch,
        lost: int = 0,
        cause: str = REFUSED,
        notes_lost: bool = False,
        write_error: bool = False,
    ) -> None:
        instruments = batch.instruments.version if batch.instruments is not None else 0
        self._ledger.settle(
            batch.events,
            batch.notes,
            instruments,
            lost=lost,
            cause=cause,
            notes_lost=notes_lost,
            write_error=write_error,
        )

    def _retrying(
        self, attempt: Callable[[], _T], retry_if: Callable[[Exception], bool]
    ) -> _T | Literal[Pass.STOPPED]:
        """``attempt()``, retried with exponential backoff while it fails with an error
        ``retry_if`` accepts, until it succeeds or stop() is called (then Pass.STOPPED); any
        other error is raised."""
        backoff = self._settings.backoff_initial_seconds
        while True:
            try:
                result = attempt()
            except Exception as exc:
                if not retry_if(exc):
                    raise
                if not self._wait_to_retry(exc, backoff):
                    return Pass.STOPPED
                backoff = min(backoff * 2, self._settings.backoff_max_seconds)
                continue
            if not self.redis_ok:
                self.redis_ok = True
                log.warning("metrics flush to Redis recovered")
            return result

    def _wait_to_retry(self, exc: BaseException, backoff: float) -> bool:
        """After a failed round trip: wait ``backoff`` seconds, or until flush() or close()
        asks. record() filling the buffer does not cut it short: with Redis down, that would
        turn the backoff into a busy loop of reconnects. False once stop() was called."""
        if self.redis_ok:
            self.redis_ok = False
            log.error("metrics flush to Redis failed, retrying with backoff: %s", exc)
        if self._stopping:
            return False
        self._retry_now.wait(backoff)
        self._retry_now.clear()
        return True
