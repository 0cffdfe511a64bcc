"""The bounded queue between ``logging`` calls and the sender, with its exact accounting.

Every record offered ends up in exactly one of: delivered, dropped (queue full, push failed,
left at exit). ``offered == delivered + dropped + waiting + in flight`` holds under one lock, so
the drop count is exact and a flush knows when everything offered before it has settled.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """One record, already formatted (in the logging call: the span and the message's arguments
    are those of that moment, not of when the sender gets to it)."""

    timestamp_ns: int
    level: str
    line: str


@dataclass(frozen=True, slots=True)
class Counts:
    offered: int
    delivered: int
    dropped: int
    waiting: int
    in_flight: int


class Outbox:
    """``offer`` never blocks beyond a short lock and never grows past ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._changed = threading.Condition(threading.Lock())
        self._entries: deque[Entry] = deque()
        self._offered = 0
        self._delivered = 0
        self._dropped = 0
        self._in_flight = 0
        # Queued entries so far, and how many of them have since settled: entries leave in
        # order, so once `_finished` reaches a flush's snapshot of `_queued`, all before it are.
        self._queued = 0
        self._finished = 0
        self._closed = False
        self._abandoned = False

    def offer(self, entry: Entry) -> bool:
        """Queue ``entry``; False (and one drop counted) when the queue is full or closed."""
        with self._changed:
            self._offered += 1
            if self._closed or len(self._entries) >= self._capacity:
                self._dropped += 1
                return False
            self._entries.append(entry)
            self._queued += 1
            if len(self._entries) == 1:
                self._changed.notify_all()  # the sender waits only on an empty queue
            return True

    def count_dropped(self) -> None:
        """A record that could not even be queued (formatting failed): offered and dropped."""
        with self._changed:
            self._offered += 1
            self._dropped += 1

    def take(self, limit: int, timeout: float) -> list[Entry]:
        """Up to ``limit`` entries, waiting at most ``timeout`` for the first; they are in
        flight until :meth:`settle`."""
        with self._changed:
            if not self._entries and not self._closed:
                self._changed.wait(timeout)
            batch = [self._entries.popleft() for _ in range(min(limit, len(self._entries)))]
            self._in_flight += len(batch)
            return batch

    def settle(self, delivered: int, dropped: int) -> None:
        with self._changed:
            if self._abandoned:
                return  # counted dropped at exit already
            self._in_flight -= delivered + dropped
            self._finished += delivered + dropped
            self._delivered += delivered
            self._dropped += dropped
            self._changed.notify_all()

    def drop_waiting(self) -> int:
        """Drop (and count) everything still queued; the number dropped."""
        with self._changed:
            count = len(self._entries)
            self._entries.clear()
            self._dropped += count
            self._finished += count
            self._changed.notify_all()
            return count

    def close(self) -> None:
        """Refuse (and count) new records from now on; wake the sender."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def abandon_in_flight(self) -> None:
        """Exit with a push still in flight: count it dropped now; its late settle is void."""
        with self._changed:
            self._dropped += self._in_flight
            self._finished += self._in_flight
            self._in_flight = 0
            self._abandoned = True
            self._changed.notify_all()

    def wait_settled(self, timeout: float) -> bool:
        """Wait until every record offered before the call is delivered or dropped."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._queued
            while self._finished < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._closed

    def counts(self) -> Counts:
        with self._changed:
            return Counts(
                offered=self._offered,
                delivered=self._delivered,
                dropped=self._dropped,
                waiting=len(self._entries),
                in_flight=self._in_flight,
            )
