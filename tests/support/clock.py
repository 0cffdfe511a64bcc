"""A settable clock for clients and the aggregator: tests drive time, never sleep."""

from __future__ import annotations


class FakeClock:
    """A settable clock for clients and the aggregator."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
