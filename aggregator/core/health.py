"""Health math: pure functions over window counts (no I/O, no clock).

Formulas (the original request's, README "Semantics"):
- error_rate = failures / (successes + failures); 0.0 with no such calls. Rate-limited calls and
  caller errors are in neither term.
- latency_score from the window p95 of successful calls: 1.0 at or below ``target``, 0.0 at or
  above ``ceiling``, linear between; 1.0 with no successful calls.
- health_score = 0.4 * availability + 0.3 * (1 - error_rate) + 0.3 * latency_score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gatewayz_protocol.partitions import LATENCY_PARTITIONS


@dataclass(frozen=True)
class WindowCounts:
    """Calls in a window, by outcome; successes split by latency partition (``partitions``)."""

    success_partitions: tuple[int, ...]
    failures: int
    rate_limited: int
    caller_errors: int

    @property
    def successes(self) -> int:
        return sum(self.success_partitions)

    @property
    def total(self) -> int:
        return self.successes + self.failures + self.rate_limited + self.caller_errors

    @classmethod
    def empty(cls) -> WindowCounts:
        return cls((0,) * LATENCY_PARTITIONS, 0, 0, 0)


def error_rate(successes: int, failures: int) -> float:
    """Share of provider failures among successes + failures; 0.0 when both are 0."""
    calls = successes + failures
    return failures / calls if calls else 0.0


def bucket_quantile(q: float, counts: Sequence[int], bounds: Sequence[float]) -> float | None:
    """The q-quantile of values counted per bucket, interpolated linearly inside the bucket
    that holds rank q*total (as Prometheus's histogram_quantile; the first bucket starts at 0).

    ``counts`` has one entry per bound plus a last one for +Inf; a quantile falling in +Inf
    returns the highest finite bound. None when there are no values.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q!r} outside [0, 1]")
    if len(counts) != len(bounds) + 1:
        raise ValueError("counts needs one entry per bound plus +Inf")
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    lower = 0.0
    for count, upper in zip(counts, bounds, strict=False):
        if count and cumulative + count >= rank:
            # min(): lower + (upper - lower) can round one ulp above upper, past the next
            # bucket's first values (the quantile must never decrease as q grows)
            return min(upper, lower + (upper - lower) * (rank - cumulative) / count)
        cumulative += count
        lower = upper
    return bounds[-1]


def latency_score(p95_s: float | None, target_s: float, ceiling_s: float) -> float:
    """1.0 at or below target, 0.0 at or above ceiling, linear between; 1.0 without data."""
    if p95_s is None or p95_s <= target_s:
        return 1.0
    if p95_s >= ceiling_s:
        return 0.0
    return (ceiling_s - p95_s) / (ceiling_s - target_s)


def health_score(availability: float, err_rate: float, lat_score: float) -> float:
    """Seed formula, clamped to [0, 1] against rounding."""
    score = 0.4 * availability + 0.3 * (1.0 - err_rate) + 0.3 * lat_score
    return min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0
