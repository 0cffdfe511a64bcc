"""Process-wide hooks: counts an optional package of this distribution reports, registered
explicitly and taken by whichever side runs in the process.

``gatewayz_telemetry``'s Loki sender counts the log records it gave up on. That count joins the
clients' counters in the shared stats hash (``fields.LOG_RECORDS_DROPPED_FIELD``): a worker's
flusher ships it with its batches, the aggregator with its commits. Telemetry registers its count
here when it is set up (``register_log_drops``); each side takes what is new since its last
report with a ``NewLogDrops``. Neither side imports telemetry, telemetry imports neither side, and
a process that ships no logs registers nothing and pays nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

Count = Callable[[], int]
"""A process's running total of something given up on (it only grows, but for a restart)."""

_lock = threading.Lock()
_log_drop_counts: list[Count] = []


def _new_lock_in_child() -> None:
    # A thread of the parent may have held the lock when it forked: the child's copy would stay
    # held, and a client built again in the child (it reads these counts) would wait forever.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def register_log_drops(count: Count) -> Callable[[], None]:
    """Add ``count`` to this process's log records given up on; returns what removes it again.
    Registering the same callable twice counts it once."""
    with _lock:
        if count not in _log_drop_counts:
            _log_drop_counts.append(count)

    def unregister() -> None:
        with _lock:
            if count in _log_drop_counts:
                _log_drop_counts.remove(count)

    return unregister


def log_records_dropped() -> int:
    """The registered counts, summed (0 with none). A count that fails counts 0: a reporter
    never fails for it."""
    with _lock:
        counts = tuple(_log_drop_counts)
    total = 0
    for count in counts:
        try:
            total += int(count())
        except Exception:
            continue
    return total


class NewLogDrops:
    """What one reporter has not reported yet: the growth of ``total`` since its last ``take``.
    A total that went down was restarted (a new sender): all of it is new. Created in the
    process that reports (after a fork: the parent's drops are the parent's to report)."""

    def __init__(self, total: Count = log_records_dropped) -> None:
        self._total = total
        self._seen = total()

    def take(self) -> int:
        total = self._total()
        new = total - self._seen if total >= self._seen else total
        self._seen = total
        return new
