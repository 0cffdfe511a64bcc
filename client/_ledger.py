"""One process's accounting: what was noted (rejections, drops, breaker rejections), what the
flusher settled (written, or given up on and counted as dropped), and ``flush()``'s wait for it.
One condition variable guards it all."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

_WAIT_SLICE_SECONDS = 0.2


@dataclass(frozen=True)
class Mark:
    """How far accounting got: events settled (of those ever buffered), the version of the notes
    written to Redis, and the version of the instrument values written."""

    events: int
    notes: int
    instruments: int

    def covers(self, target: Mark) -> bool:
        return (
            self.events >= target.events
            and self.notes >= target.notes
            and self.instruments >= target.instruments
        )


BUFFER_FULL: Final = "buffer_full"
"""Drop cause: evicted from the full buffer (Redis unreachable, refusing or too slow)."""
REFUSED: Final = "refused"
"""Drop cause: Redis refused the write for good (not a transient refusal)."""
ERROR: Final = "error"
"""Drop cause: an unexpected error in the flusher (a bug: it is logged with its traceback)."""
SHUTDOWN: Final = "shutdown"
"""Drop cause: the client closed while Redis was unreachable."""
CLOSED: Final = "closed"
"""Drop cause: recorded after ``close()``. Counted in this process only (``stats()``): nothing
writes to Redis after close."""


@dataclass(frozen=True)
class Notes:
    """Counts noted since the last batch took them, to be written with the next one."""

    rejected: dict[str, int]
    dropped: dict[str, int]
    """events given up on, by cause"""
    breaker_rejected: dict[str, int]
    version: int
    """The ledger's note version when they were taken: written, it is what flush() waits for."""

    log_records_dropped: int = 0
    """log records this process's Loki sender gave up on (telemetry), since the last batch"""

    @property
    def empty(self) -> bool:
        return not (
            self.rejected or self.dropped or self.breaker_rejected or self.log_records_dropped
        )


NO_NOTES: Final = Notes({}, {}, {}, 0)


class Ledger:
    """Every count of one process's client. Thread-safe; a forked child gets a new one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0  # bumped by every note
        self._done = Mark(0, 0, 0)
        self._rejected: Counter[str] = Counter()  # pending, written with the next batch
        self._dropped: Counter[str] = Counter()
        self._breaker_rejected: Counter[str] = Counter()
        self._log_records_dropped = 0
        self._rejected_total: Counter[str] = Counter()
        self._dropped_total: Counter[str] = Counter()
        self._updates_dropped: Counter[str] = Counter()  # backend metric updates given up on
        self._write_errors = 0
        self._losses = 0  # anything given up on: what flush() fails on
        self._causes_seen: set[str] = set()

    # -- notes ---------------------------------------------------------------------------------

    def reject(self, cause: str, count: int = 1, settles: int = 0) -> bool:
        """Count ``count`` calls rejected for ``cause`` (``settles`` of them were buffered
        events, now settled). True the first time this cause is seen (log it once)."""
        with self._cond:
            self._rejected[cause] += count
            self._rejected_total[cause] += count
            self._version += 1
            first = self._first_seen(cause)
            if settles:
                self._settle_events(settles)
            return first

    def evicted(self) -> None:
        """The full buffer evicted its oldest event to take a new one: dropped, settled."""
        with self._cond:
            self._drop(1, BUFFER_FULL)
            self._settle_events(1)

    def dropped_after_close(self) -> bool:
        """A call recorded after ``close()``: dropped for ``CLOSED``, never buffered, so nothing
        settles, and no note waits for a batch (none will be written). Nor is it a loss that
        fails flush(): record() refused it, as it does an invalid call. True the first time
        (log it once)."""
        with self._cond:
            self._dropped_total[CLOSED] += 1
            return self._first_seen(CLOSED)

    def first_time(self, what: str) -> bool:
        """True the first time ``what`` is noted (log it once)."""
        with self._cond:
            return self._first_seen(what)

    def _first_seen(self, what: str) -> bool:
        """Under the lock: whether ``what`` is noted for the first time (noted now)."""
        first = what not in self._causes_seen
        self._causes_seen.add(what)
        return first

    def reject_call(self, provider: str) -> None:
        """``allow()`` turned a call to ``provider`` away."""
        with self._cond:
            self._breaker_rejected[provider] += 1
            self._version += 1

    def note_log_drops(self, records: int) -> None:
        """The process's Loki sender gave up on ``records`` more log records."""
        with self._cond:
            self._log_records_dropped += records
            self._version += 1

    def has_notes(self) -> bool:
        """Whether counts wait to be written with the next batch."""
        with self._cond:
            return bool(
                self._rejected or self._dropped or self._breaker_rejected
                or self._log_records_dropped
            )  # fmt: skip

    def take_notes(self) -> Notes:
        with self._cond:
            notes = Notes(
                dict(self._rejected),
                dict(self._dropped),
                dict(self._breaker_rejected),
                self._version,
                self._log_records_dropped,
            )
            self._log_records_dropped = 0
            self._rejected.clear()
            self._dropped.clear()
            self._breaker_rejected.clear()
            return notes

    # -- settling ------------------------------------------------------------------------------

    def settle(
        self,
        events: int,
        notes: Notes,
        instruments_version: int,
        *,
        lost: int = 0,
        cause: str = REFUSED,
        notes_lost: bool = False,
        write_error: bool = False,
        updates_lost: int = 0,
    ) -> None:
        """A batch of ``events`` is done with: written, except ``lost`` of them given up on
        (counted as dropped for ``cause``, to be written with a later batch). ``notes_lost``:
        its notes did not reach Redis and are noted again for a later batch. ``write_error``:
        Redis refused part of it; ``updates_lost``: backend metric updates of it given up on
        (counted for ``cause``). Either makes a waiting flush() fail, as a drop does."""
        with self._cond:
            if lost:
                self._drop(lost, cause)
            if updates_lost:
                self._updates_dropped[cause] += updates_lost
            self._losses += bool(updates_lost) + write_error
            if notes_lost:
                self._rejected.update(notes.rejected)
                self._breaker_rejected.update(notes.breaker_rejected)
                self._dropped.update(notes.dropped)
                self._log_records_dropped += notes.log_records_dropped
                self._version += 1
            notes_done = self._done.notes if notes_lost else max(self._done.notes, notes.version)
            self._done = Mark(
                self._done.events + events,
                notes_done,
                max(self._done.instruments, instruments_version),
            )
            self._write_errors += write_error
            self._cond.notify_all()

    def _drop(self, events: int, cause: str) -> None:
        self._dropped[cause] += events
        self._dropped_total[cause] += events
        self._losses += 1
        self._version += 1

    def _settle_events(self, events: int) -> None:
        self._done = Mark(self._done.events + events, self._done.notes, self._done.instruments)
        self._cond.notify_all()

    # -- waiting -------------------------------------------------------------------------------

    def target(self, buffered: int, instruments_version: int) -> tuple[Mark, int]:
        """What flush() waits for: every event ever buffered settled, every note noted so far
        and the instrument values of ``instruments_version`` written; and how many times
        something was given up on so far (flush() fails if it grows meanwhile)."""
        with self._cond:
            return Mark(buffered, self._version, instruments_version), self._losses

    def wait(self, target: Mark, losses_before: int, timeout: float) -> bool:
        """Until ``target`` is reached (True) or ``timeout`` seconds pass (False). Also False
        when anything was given up on meanwhile (events dropped, a write Redis refused, backend
        metric updates lost): not everything got there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._done.covers(target):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                # In slices: a signal that arrives just before the wait begins is handled
                # (SIGTERM flushes) within a slice, not only when the whole wait is over.
                self._cond.wait(min(remaining, _WAIT_SLICE_SECONDS))
            return self._losses == losses_before

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "settled": self._done.events,
                "dropped": self._dropped_total.total(),
                "dropped_by_cause": dict(self._dropped_total),
                "metric_updates_dropped": dict(self._updates_dropped),
                "rejected": dict(self._rejected_total),
                "write_errors": self._write_errors,
            }
