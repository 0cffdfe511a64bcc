"""When a worker asks for a breaker evaluation now (a wake, ``gatewayz_protocol.wakes``): pure
decision logic on the calls its flushes carry, with an injected clock.

The aggregator's leader evaluates breakers every breaker interval (5 s); a worker whose own
calls to a provider start failing asks for an evaluation at once, so an outage opens the breaker
within about a second instead of up to an interval later. The rule, per provider, over this
worker's calls flushed in the last ``window_seconds``: at least ``min_failures`` failures (rate
limited calls count as failures, as the breaker counts them by default) making at least
``min_share`` of its calls (caller errors and cancelled calls are not counted). A provider is
woken at most once per ``every_seconds`` by one worker; while it is, this worker also refreshes
its breaker state every flush (``hurry``) for ``hurry_seconds``, so it learns the verdict at once.
Nothing here runs while calls succeed: a healthy provider never costs a wake.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from client._batch import Batch, ProviderBatch
from gatewayz_protocol.partitions import FAILURE, LATENCY_PARTITIONS, RATE_LIMITED, window_partition
from gatewayz_protocol.wakes import wake_commands

FAILURE_PARTITIONS = frozenset(window_partition(outcome, 0) for outcome in (FAILURE, RATE_LIMITED))
"""The window partitions of the calls a breaker counts as failures."""


@dataclass(frozen=True)
class WakeRule:
    min_failures: int = 5
    """Failures in the window before a wake (0: never wake)."""
    min_share: float = 0.5
    """...making at least this share of the worker's calls in the window."""
    window_seconds: float = 1.0
    every_seconds: float = 1.0
    """At most one wake per provider in this time, per worker."""
    hurry_seconds: float = 5.0
    """How long after a wake the worker refreshes that provider's breaker every flush."""
    max_providers: int = 1000
    """Providers followed at once (the oldest forgotten first): the state stays bounded."""


def batch_calls(providers: Mapping[str, ProviderBatch]) -> dict[str, tuple[int, int]]:
    """Per provider of a batch: (calls the breaker counts, failures among them)."""
    counted: dict[str, tuple[int, int]] = {}
    for name, pbatch in providers.items():
        calls = failures = 0
        for partition, flat in pbatch.partitions.items():
            if partition < LATENCY_PARTITIONS or partition in FAILURE_PARTITIONS:
                events = len(flat) // 2
                calls += events
                if partition in FAILURE_PARTITIONS:
                    failures += events
        if calls:
            counted[name] = (calls, failures)
    return counted


class _Recent:
    """One provider's calls of the last window, as (time, calls, failures) per flush."""

    __slots__ = ("calls", "failures", "flushes", "woken_at")

    def __init__(self) -> None:
        self.flushes: deque[tuple[float, int, int]] = deque()
        self.calls = 0
        self.failures = 0
        self.woken_at = float("-inf")

    def add(self, now: float, calls: int, failures: int, window: float) -> None:
        self.flushes.append((now, calls, failures))
        self.calls += calls
        self.failures += failures
        while self.flushes and self.flushes[0][0] <= now - window:
            _, old_calls, old_failures = self.flushes.popleft()
            self.calls -= old_calls
            self.failures -= old_failures


class WakeDetector:
    """Which providers a worker wakes, flush by flush (pure but for its own memory)."""

    def __init__(self, rule: WakeRule) -> None:
        self.rule = rule
        self._recent: dict[str, _Recent] = {}

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, calls: Mapping[str, tuple[int, int]], now: float) -> list[str]:
        """Take one flush's (calls, failures) per provider at ``now``; the providers to wake.
        Only providers with failures are followed, and forgotten once their window is empty."""
        rule = self.rule
        if rule.min_failures <= 0:
            return []
        woken = []
        for name, (count, failures) in calls.items():
            recent = self._recent.get(name)
            if recent is None:
                if not failures:
                    continue  # a provider that never failed lately costs nothing
                recent = self._follow(name)
            recent.add(now, count, failures, rule.window_seconds)
            if (
                recent.failures >= rule.min_failures
                and recent.failures >= rule.min_share * recent.calls
                and now - recent.woken_at >= rule.every_seconds
            ):
                recent.woken_at = now
                woken.append(name)
        self._forget_quiet(now)
        return woken

    def _follow(self, name: str) -> _Recent:
        if len(self._recent) >= self.rule.max_providers:
            oldest = min(self._recent, key=lambda n: self._last_seen(self._recent[n]))
            del self._recent[oldest]
        recent = self._recent[name] = _Recent()
        return recent

    @staticmethod
    def _last_seen(recent: _Recent) -> float:
        return max(recent.flushes[-1][0] if recent.flushes else float("-inf"), recent.woken_at)

    def _forget_quiet(self, now: float) -> None:
        """Providers whose window emptied and that are no longer hurried."""
        rule = self.rule
        quiet = [
            name
            for name, recent in self._recent.items()
            if recent.flushes
            and recent.flushes[-1][0] <= now - rule.window_seconds
            and recent.woken_at <= now - max(rule.hurry_seconds, rule.every_seconds)
        ]
        for name in quiet:
            del self._recent[name]


class BreakerWakes:
    """The flush pass's hook: adds the wakes of a batch's failing providers to the batch's own
    round trip (``Batch.extra``: an ``XADD`` each to ``stream``, the wake stream) and tells
    ``hurry`` (the breaker cache) which providers to refresh every flush."""

    def __init__(
        self,
        rule: WakeRule,
        stream: str,
        monotonic: Callable[[], float],
        hurry: Callable[[Iterable[str], float], None] = lambda providers, until: None,
    ) -> None:
        self._stream = stream
        self._detector = WakeDetector(rule)
        self._monotonic = monotonic
        self._hurry = hurry

    def mark(self, batch: Batch) -> Batch:
        """``batch`` with its wakes among its ``extra`` commands (itself when there are none)."""
        if self._detector.rule.min_failures <= 0 or not batch.providers:
            return batch
        now = self._monotonic()
        woken = self._detector.observe(batch_calls(batch.providers), now)
        if not woken:
            return batch
        self._hurry(woken, now + self._detector.rule.hurry_seconds)
        return replace(batch, extra=(*batch.extra, *wake_commands(self._stream, woken)))
