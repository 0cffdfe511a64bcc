"""The writer's own commands in a batch's transaction, after the batch's: commands a flush pass
sends along (``Batch.extra``), this writer's clock skew, the reservation of the event ids of
the batches after it (one Redis, ``_event_ids``), and once a second its report (a ``TIME``
measuring the shared clock, the Redis operations it counted since the last).

All of them used to cost a flush pass more than its batch: a round trip of their own (the ids
and the clock), or a HINCRBY per operation in every transaction. Now a pass with a few events
is one round trip of about 11 commands instead of two of about 22.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from client._batch import Batch
from client._event_ids import EventIds
from client._slots import CommandList
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.fields import clock_offset_value
from gatewayz_protocol.keys import Keys

REPORT_EVERY_SECONDS = 1.0
"""How often a batch's transaction carries the writer's report: the Redis operations it counted
since the last one (``stats:redis_ops``) and, on one Redis, a measurement of the shared clock
(``TIME``). Once a second keeps the clock within microseconds of a measurement per batch (a
monotonic clock's offset to Redis's moves by parts per million; a reservation's round trip
measures it too). A process that ends loses the operation counts of its last second, no
event."""
CLOCK_MAX_EVENTS = 1000
"""A transaction with more events than this measures the clock only when no measurement was
taken for ten reports: the error of a measurement is up to half its round trip, and Redis
writing thousands of members lengthens it."""


class Placed:
    """Where the writer's own commands sit in one transaction. Their replies are not the
    batch's: an error among them is no refusal of its events."""

    def __init__(self, extra_at: int, extra: int) -> None:
        self.extra_at = extra_at
        self.extra = extra
        self.ahead: tuple[int, int] | None = None
        """(index of the INCRBY reserving ids ahead, how many)"""
        self.time_at: int | None = None
        self.reported_at: float | None = None
        """When it carries the writer's report: the local clock's time it was queued at."""
        self.marker: range = range(0)
        """Where the writer's applied marker sits (one Redis: ``_applied.LostReplies``)."""

    def extra_replies(self, replies: list[Any]) -> tuple[Any, ...]:
        return tuple(replies[self.extra_at : self.extra_at + self.extra])

    def errors_but_own(self, replies: list[Any]) -> tuple[str, ...]:
        """The error replies of the batch's commands (and of the report's)."""
        errors = [i for i, reply in enumerate(replies) if isinstance(reply, Exception)]
        if not errors:
            return ()
        own = set(range(self.extra_at, self.extra_at + self.extra))
        if self.ahead is not None:
            own.update(range(self.ahead[0] - 1, self.ahead[0] + 2))
        if self.time_at is not None:
            own.add(self.time_at)
        own.update(self.marker)
        return tuple(str(replies[i]) for i in errors if i not in own)


class OwnCommands:
    """A writer's own commands, queued after each batch's and taken from its replies."""

    def __init__(
        self,
        keys: Keys,
        ids: EventIds,
        clock: SharedClock | None,
        writer_label: str,
        single: bool,
        unreported: Counter[str],
    ) -> None:
        """``single``: one Redis (a cluster reserves ids and measures the clock with a round
        trip of their own); ``unreported``: the writer's count of Redis operations not
        reported yet (the id reservations' round trips add to it too)."""
        self._keys = keys
        self._ids = ids
        self._clock = clock
        self._writer_label = writer_label
        self._single = single
        self._unreported = unreported
        self._local = clock.local if clock is not None else time.monotonic
        self._clock_at = -math.inf  # (local clock) when a transaction last measured it
        self._reported_at = -math.inf  # (local clock) when a transaction last reported
        self._batch: Batch | None = None  # the last batch queued, and whether it reports
        self._due = False
        self.round_trip = (0.0, 0.0)
        """(local clock) when the last transaction was sent, when its reply came: set by the
        writer's send, read with a ``TIME`` reply."""

    def queue(self, plan: CommandList, batch: Batch, ops: Counter[str]) -> Placed:
        """After the batch's commands (``ops`` counts them): its ``extra``; this writer's clock
        skew; the reservation of ids ahead when the ids held run short; when due, the report:
        ``TIME`` (in a transaction of more than ``CLOCK_MAX_EVENTS`` events only once ten
        reports went by without one) and the operations counted since the last. A batch sent
        again carries the report if its first attempt did, and only then: a Redis Cluster
        skips the slots an attempt applied, so the commands must stay where they were."""
        extra, events = batch.extra, batch.events
        placed = Placed(len(plan), len(extra))
        add = plan.execute_command
        for command in extra:
            add(*command)
        clock = self._clock
        if clock is not None and clock.measured:
            # Redis's clock minus the host's, as of now: a step of the host's clock is exported
            # with the next batch, measured or not (the offset to a monotonic clock holds)
            shared = clock.now()
            add("HSET", self._keys.clock_offsets, self._writer_label, clock_offset_value(
                shared - time.time(), shared))  # fmt: skip
            ops["hset"] += 1
        ahead = self._ids.ahead()
        if ahead:
            placed.ahead = (len(plan) + 1, ahead)  # the INCRBY's reply: the counter after it
            for command in self._ids.queue(ahead):
                add(*command)
            ops.update({"set": 1, "incrby": 1, "expire": 1})
        now = self._local()
        if batch is not self._batch:
            self._batch, self._due = batch, now - self._reported_at >= REPORT_EVERY_SECONDS
        if not self._due:
            return placed
        placed.reported_at = now
        long_unmeasured = now - self._clock_at >= 10 * REPORT_EVERY_SECONDS
        if clock is not None and self._single and (events <= CLOCK_MAX_EVENTS or long_unmeasured):
            placed.time_at = len(plan)
            add("TIME")
            ops["time"] += 1
        for operation, count in (self._unreported + ops).items():
            add("HINCRBY", self._keys.redis_ops, operation, count)
        return placed

    def failed(self) -> None:
        """The transaction did not run, or its reply was lost: a failover may have lost the
        reservation of the ids held (``EventIds.forget``)."""
        self._ids.forget()

    def applied(self, replies: list[Any], placed: Placed, ops: Counter[str]) -> None:
        """The transaction ran: the ids it reserved ahead are held, the clock it measured
        taken, the operations it reported forgotten (else kept for the next report)."""
        if placed.reported_at is not None:
            self._unreported.clear()
            self._reported_at = placed.reported_at
        else:
            self._unreported.update(ops)
        if placed.ahead is not None:
            index, count = placed.ahead
            last = replies[index]
            if isinstance(last, int):
                self._ids.took(last, count)
            else:  # the counter is not a number: the next reservation's round trip says why
                self._ids.forget()
        clock = self._clock
        if placed.time_at is not None and clock is not None:
            found = replies[placed.time_at]
            if isinstance(found, list) and len(found) == 2:
                sent_at, received_at = self.round_trip
                clock.observe((int(found[0]), int(found[1])), sent_at, received_at)
                self._clock_at = received_at
