"""One pass of the flusher: take what is waiting, build one batch, deliver it, settle it.

The events are named first (ids reserved in Redis), then taken from the buffer and built into a
batch once (``build_batch``), so a retry re-sends the very same members (never applied twice: a
transaction either ran or did not). Whatever happens to a batch it took, its events are settled
in the ledger: written, or given up on and counted as dropped.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import redis

from client._admission import ProviderAdmission
from client._batch import Batch, build_batch
from client._buffer import EventBuffer
from client._events import Event
from client._instruments import Drained, InstrumentStore
from client._ledger import ERROR, NO_NOTES, REFUSED, SHUTDOWN, Ledger, Notes
from client._retry import STOPPED, Backoff
from client._throttle import Throttle
from client._writer import WriteReport
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.hooks import NewLogDrops
from gatewayz_transport.errors import explained, is_out_of_memory, is_transient

log = logging.getLogger("gatewayz.metrics.client")

MIN_SPLIT_EVENTS = 64
"""A batch Redis refuses for lack of memory is split in halves down to this size."""
MAX_RESENDS = 3
"""How many times increments whose script Redis did not know are sent again (the script loaded
before each): more means Redis forgets it as fast as it is loaded."""


class Sink(Protocol):
    """Where batches go (``RedisWriter``; a test passes a fake)."""

    def reserve_event_ids(self, count: int) -> int: ...

    def write(self, batch: Batch) -> WriteReport: ...


DECLARED_DIFFERENTLY = (
    "metric %r is declared differently in Redis (another deployment?); the aggregator exports "
    "the first declaration"
)
WAKES_REFUSED = (
    "Redis refused a metrics batch carrying breaker wakes (%s): batches are sent again without "
    "them (their events are never lost for a wake), breakers wait for their next evaluation"
)


def _log_once(logged: set[str], what: str, message: str, *args: object) -> None:
    if what not in logged:
        logged.add(what)
        log.error(message, *args)


class Pass(enum.Enum):
    """What one pass of the flusher did."""

    IDLE = "nothing was waiting"
    WRITTEN = "a batch was delivered (or given up on, and counted)"
    REFUSED = "Redis refused a batch for good: given up on, its events counted as dropped"
    STOPPED = "stop() ended the retries while Redis was unreachable"


class GaugeRefresh:
    """When every gauge value is written again, changed or not: a process's gauge values
    expire in Redis ``ttl_seconds`` after they were last written (so a dead process's vanish),
    and a living one rewrites them each third of that."""

    def __init__(self, ttl_seconds: float, monotonic: Callable[[], float]) -> None:
        self._every = ttl_seconds / 3
        self._monotonic = monotonic
        self._last = -math.inf

    def due(self) -> bool:
        """Whether this pass writes every gauge value (if so, the next third starts now)."""
        now = self._monotonic()
        if now - self._last < self._every:
            return False
        self._last = now
        return True

    def seconds_until_due(self) -> float:
        return self._every - (self._monotonic() - self._last)


class FlushPass:
    """Drains ``buffer``, the ledger's notes and the instrument store into ``sink``, one batch
    per call (``run()``), on the flusher's thread only."""

    def __init__(
        self,
        buffer: EventBuffer,
        ledger: Ledger,
        instruments: InstrumentStore,
        sink: Sink,
        admission: ProviderAdmission,
        backoff: Backoff,
        gauges: GaugeRefresh,
        *,
        max_batch: int,
        max_providers: int,
        clock: SharedClock | None = None,
        wakes: Callable[[Batch], Batch] = lambda batch: batch,
        models: Callable[[list[Event]], list[Event]] | None = None,
    ) -> None:
        """``clock``: event times are moved onto it (its offset, as the sink last measured it)
        when a batch is built; None: they are on the shared clock already. ``max_providers``:
        the registry's cap, as the log says it. ``models``: the model admission
        (``client._model_scopes``), before the batch is built. ``wakes``: marks a batch with
        the breakers to wake (``client._wake.BreakerWakes.mark``)."""
        self._buffer = buffer
        self._ledger = ledger
        self._instruments = instruments
        self._sink = sink
        self._admission = admission
        self._backoff = backoff
        self._gauges = gauges
        self._max_batch = max_batch
        self._max_providers = max_providers
        self._clock = clock
        self._wakes = wakes
        self._models = models
        self.drained_version = 0
        """The instrument store's version the last batch took: values changed since wait."""
        self._logged: set[str] = set()
        self._refusals_said = Throttle()  # what Redis refused, batch after batch
        self._give_ups_said = Throttle()
        self._log_drops = NewLogDrops()  # a forked child: only its own from here

    def run(self) -> Pass:
        """Take what is waiting (up to ``max_batch`` events) and deliver it as one batch."""
        count = min(len(self._buffer), self._max_batch)
        first_id = 0
        if count:
            # Reserve the ids before taking the events: while no ids can be had, the events
            # wait in the (bounded) buffer. Only this thread shortens the buffer, so the
            # ``count`` events are still there afterwards.
            reserved = self._backoff.run(
                lambda: self._sink.reserve_event_ids(count),
                lambda exc: isinstance(exc, redis.RedisError | OSError),
            )
            if reserved is STOPPED:
                return Pass.STOPPED
            first_id = reserved
        events = self._buffer.take(count)
        notes: Notes | None = None
        try:
            events = self._admitted_only(events)
            if self._models is not None:  # model breakers: the models their registries admit
                events = self._models(events)
            self._note_log_drops()
            notes = self._ledger.take_notes()
            offset = self._clock.offset if self._clock is not None else 0.0
            batch = self._wakes(build_batch(events, first_id, notes, self._drain(), offset))
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
        done = self._deliver(batch, events, first_id)
        if done is Pass.WRITTEN and self._instruments.take_unblocked():
            # values held for a declaration Redis just agreed with: written now, not a flush
            # interval later (a flush() may be waiting for them)
            again = self.run()
            return done if again is Pass.IDLE else again
        return done

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
                self._max_providers,
                sorted(refused)[0],
            )
        return kept

    def _drain(self) -> Drained:
        """The instrument store's pending values; every gauge value when their TTL needs a
        refresh."""
        drained = self._instruments.drain(include_all_gauges=self._gauges.due())
        self.drained_version = drained.version
        return drained

    def _deliver(self, batch: Batch, events: list[Event], first_id: int, rounds: int = 0) -> Pass:
        """Write the batch (of ``events``, named from ``first_id``), retrying while Redis is
        unreachable or refuses for now; settle it in the ledger whatever happens. ``rounds``:
        how many times its increments were sent again already (``_resend``)."""
        splittable = len(events) >= 2 * MIN_SPLIT_EVENTS
        try:
            report = self._backoff.run(
                lambda: self._sink.write(batch),
                lambda exc: is_transient(exc) and not (splittable and is_out_of_memory(exc)),
            )
        except Exception as exc:
            if splittable and is_out_of_memory(exc):
                return self._split(batch, events, first_id, exc)
            if batch.refused_extra(exc):  # sent again without the wakes
                _log_once(self._logged, "extra", WAKES_REFUSED, exc)
                return self._deliver(replace(batch, extra=()), events, first_id, rounds)
            return self._give_up(batch, exc)
        if report is STOPPED:
            self._settle(batch, lost=batch.events, cause=SHUTDOWN, notes_lost=True, failed=True)
            return Pass.STOPPED
        if report.errors or report.conflicts:
            self._log_refusals(report)
        if report.declared:  # a metric's values are written once Redis agreed with its spec
            self._instruments.answered(report.declared)
        lost, error = report.refused_events, bool(report.errors)
        if report.leftover is None:
            self._settle(batch, lost=lost, write_error=error, failed=report.increments_refused)
            return Pass.WRITTEN
        # The transaction ran, but its increments' script call did nothing (Redis forgot the
        # script): the batch is done but for them, and they are sent again, on their own.
        self._settle(batch, lost=lost, write_error=error, pending=True)
        return self._resend(Batch({}, NO_NOTES, report.leftover, batch.offset), rounds + 1)

    def _resend(self, leftover: Batch, rounds: int) -> Pass:
        """Deliver what a transaction left undone (with the same retries as a batch), unless
        Redis forgot the script again each time it was loaded: then it is given up on."""
        if rounds > MAX_RESENDS:
            self._give_up(leftover, redis.ResponseError("NOSCRIPT after every reload"))
            return Pass.WRITTEN  # the batch was: only its increments were given up on
        return self._deliver(leftover, [], 0, rounds)

    def _log_refusals(self, report: WriteReport) -> None:
        """What Redis refused of a batch it ran: every time; a conflicting metric declaration:
        once per metric."""
        again = self._refusals_said.due() if report.errors else None
        if again is not None:
            log.error(
                "Redis refused part of a metrics batch (%d events counted as dropped): %s%s",
                report.refused_events,
                explained(redis.ResponseError(report.errors[0])),
                again,
            )
        for name in report.conflicts:
            _log_once(self._logged, name, DECLARED_DIFFERENTLY, name)

    def _split(self, batch: Batch, events: list[Event], first_id: int, exc: BaseException) -> Pass:
        """Redis is at maxmemory, and a batch's own payload counts against it: deliver the
        batch in two halves (each split again while it does not fit), the same events under
        the same ids."""
        self._backoff.failed("Redis is out of memory: metrics batches split and retried: %s", exc)
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
            again = self._give_ups_said.due()
            if again is not None:
                log.error(
                    "metrics batch refused, its events counted as dropped: %s%s",
                    explained(exc),
                    again,
                )
            cause = REFUSED
        else:
            log.error(
                "metrics batch could not be written; its events counted as dropped",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            cause = ERROR
        self._settle(
            batch, lost=batch.events, cause=cause, notes_lost=True, write_error=True, failed=True
        )
        return Pass.REFUSED

    def _settle(
        self,
        batch: Batch,
        lost: int = 0,
        cause: str = REFUSED,
        notes_lost: bool = False,
        write_error: bool = False,
        failed: bool = False,
        pending: bool = False,
    ) -> None:
        """``failed``: its backend metric increments did not get there (counted as lost for
        ``cause``); ``pending``: they are still to be written (a leftover of their own)."""
        drained = batch.instruments
        self._ledger.settle(
            batch.events,
            batch.notes,
            drained.version if drained is not None and not pending else 0,
            lost=lost,
            cause=cause,
            notes_lost=notes_lost,
            write_error=write_error,
            updates_lost=drained.updates if drained is not None and failed else 0,
        )
