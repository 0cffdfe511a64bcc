"""Which woken breakers the leader evaluates when: pure, on an injected time.

A worker's wake (``gatewayz_protocol.wakes``) says its calls to a provider fail. The leader
evaluates that breaker at once, then again every ``recheck_seconds`` while wakes keep coming
(for ``watch_seconds`` after the last), so an outage opens the breaker as soon as the recent
calls cross the threshold, without waiting for the next wake or cycle. Many workers waking the
same provider cost one evaluation per ``recheck_seconds``, however many they are. A breaker that
is no longer closed after an evaluation is left to the cycles (``settle``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class WakePolicy:
    recheck_seconds: float = 0.25
    """A watched provider is evaluated at most this often."""
    watch_seconds: float = 3.0
    """...for this long after its last wake."""
    max_watched: int = 1000
    """Providers watched at once; wakes for more wait until some leave (a flood of names)."""


@dataclass
class _Watch:
    until: float
    evaluated_at: float = -math.inf


class WakeSchedule:
    def __init__(self, policy: WakePolicy = WakePolicy()) -> None:
        self.policy = policy
        self._watched: dict[str, _Watch] = {}
        self.refused = 0
        """Wakes not followed because ``max_watched`` providers were watched already."""

    def __len__(self) -> int:
        return len(self._watched)

    def wake(self, providers: Iterable[str], now: float) -> None:
        """Workers woke ``providers`` at ``now``: watch them (due now unless evaluated within
        ``recheck_seconds``)."""
        until = now + self.policy.watch_seconds
        for name in providers:
            watch = self._watched.get(name)
            if watch is not None:
                watch.until = max(watch.until, until)
            elif len(self._watched) < self.policy.max_watched:
                self._watched[name] = _Watch(until)
            else:
                self.refused += 1

    def due(self, now: float) -> list[str]:
        """The providers to evaluate now (each then not again for ``recheck_seconds``); those
        watched past their last wake's ``watch_seconds`` are dropped."""
        for name in [n for n, w in self._watched.items() if now >= w.until]:
            del self._watched[name]
        due = []
        for name, watch in self._watched.items():
            if now - watch.evaluated_at >= self.policy.recheck_seconds:
                watch.evaluated_at = now
                due.append(name)
        return due

    def settle(self, providers: Iterable[str]) -> None:
        """Stop watching ``providers`` (their breaker is no longer closed: the cycles decide)."""
        for name in providers:
            self._watched.pop(name, None)

    def seconds_until_due(self, now: float) -> float:
        """Until the next evaluation or drop (infinity: nothing watched)."""
        recheck = self.policy.recheck_seconds
        times = [min(w.evaluated_at + recheck, w.until) for w in self._watched.values()]
        return max(0.0, min(times) - now) if times else math.inf
