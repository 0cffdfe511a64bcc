"""The event buffer between recording threads and the flusher: bounded, first in first out."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from client._events import Event


class EventBuffer:
    """Events waiting to be written. Full, it evicts the oldest event to take a new one (the
    newest traffic matters most) and reports the eviction through ``on_evict``."""

    def __init__(self, capacity: int, on_evict: Callable[[], None]) -> None:
        self._events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._capacity = capacity
        self._on_evict = on_evict
        self.appended = 0
        """Events ever appended: what ``flush()`` waits to see settled."""

    def append(self, event: Event) -> int:
        """Buffer one event (the hot path: one lock); returns how many are buffered now."""
        with self._lock:
            events = self._events
            evicting = len(events) >= self._capacity
            if evicting:
                events.popleft()
            events.append(event)
            self.appended += 1
            size = len(events)
        if evicting:
            self._on_evict()
        return size

    def take(self, limit: int) -> list[Event]:
        """Remove and return up to ``limit`` of the oldest events."""
        with self._lock:
            events = self._events
            if len(events) <= limit:
                taken = list(events)
                events.clear()
                return taken
            return [events.popleft() for _ in range(limit)]

    def __len__(self) -> int:
        return len(self._events)
