"""Outcome classes and window partitions: which sorted set an event goes to, and which histogram
bucket of ``provider_response_time_seconds`` it counts in.

A provider's window is split into partitions so the aggregator can count (ZCOUNT) instead of
transferring members: successful calls by latency partition (so the p95 can be interpolated),
then failures, rate-limited calls and caller errors. ``latency_partition`` is the one rule that
places a latency ("le" semantics: the first bound at or above it); everything else follows from
its result.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import partial
from typing import Final

OUTCOMES: Final = ("success", "failure", "rate_limited", "caller_error")
"""Outcome classes, in the order of their numeric codes (0..3)."""

SUCCESS: Final = 0
FAILURE: Final = 1
RATE_LIMITED: Final = 2
CALLER_ERROR: Final = 3
OUTCOME_CODES: Final = {name: code for code, name in enumerate(OUTCOMES)}

CANCELLED: Final = 4
"""Event code of a call the caller abandoned before the provider's answer was seen (the task
cancelled, a closed stream, the client gone): counted in the provider's totals (``cancelled``),
never in a window partition, the latency histogram, the error rate or the breaker. Its event
carries no latency (0), and the tokens and cost it consumed."""
USAGE: Final = 5
"""Event code of tokens and cost added to a call booked earlier (``add_usage()``): the
provider's totals only, never a count, a window partition or the histogram."""
UNWINDOWED: Final = {"cancelled": CANCELLED}
"""Outcomes a client may record beside ``OUTCOMES`` that no window partition holds."""

HISTOGRAM_BOUNDS: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Upper bounds of ``provider_response_time_seconds`` (seed contract); +Inf is implicit."""

EXTRA_HISTOGRAM_BOUNDS: Final = (15.0, 30.0, 60.0)
"""Bounds an operator may add to ``provider_response_time_seconds`` (LLM calls of 20-60 s are
common): the window bounds above the seed's last. Clients count every call above 10 s in these
bands too, so adding one needs no client change and applies to past calls."""

WINDOW_BOUNDS: Final = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
    15.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds of the latency partitions of successful calls (+Inf is implicit).

The window p95 is interpolated inside one partition, so its error is at most that partition's
width: 0.5 s between the 2 s target and the 10 s ceiling of the default latency score.
"""

LATENCY_PARTITIONS: Final = len(WINDOW_BOUNDS) + 1
"""Latency partitions, the last one above every bound: also the number of success partitions,
which come first in a provider's window keys."""

WINDOW_PARTITIONS: Final = LATENCY_PARTITIONS + len(OUTCOMES) - 1
"""Window keys per provider: the success partitions, then failure, rate_limited, caller_error."""

latency_partition: Final = partial(bisect_left, WINDOW_BOUNDS)
"""``latency_partition(seconds)``: index of the first window bound at or above the latency
(``LATENCY_PARTITIONS - 1`` above them all). A C-level call: the flusher makes one per event."""


def window_partition(outcome: int, latency_part: int) -> int:
    """Index into ``Keys.window_keys`` of an event: its latency partition for a success, else
    the key of its outcome class (after the success partitions). Only for ``OUTCOMES``' codes:
    ``CANCELLED`` and ``USAGE`` events have no window partition."""
    return latency_part if outcome == SUCCESS else LATENCY_PARTITIONS - 1 + outcome


# Every histogram bound is a window bound, so the latency partition names the histogram bucket.
assert set(HISTOGRAM_BOUNDS) | set(EXTRA_HISTOGRAM_BOUNDS) <= set(WINDOW_BOUNDS)
assert min(EXTRA_HISTOGRAM_BOUNDS) > max(HISTOGRAM_BOUNDS)

BUCKET_OF_PARTITION: Final = tuple(
    bisect_left(HISTOGRAM_BOUNDS, bound) for bound in (*WINDOW_BOUNDS, float("inf"))
)
"""Histogram bucket (index into HISTOGRAM_BOUNDS, ``len`` = +Inf) of each latency partition."""

EXTRA_BAND_OF_PARTITION: Final = tuple(
    bisect_left(EXTRA_HISTOGRAM_BOUNDS, bound) if bound > HISTOGRAM_BOUNDS[-1] else None
    for bound in (*WINDOW_BOUNDS, float("inf"))
)
"""Band (index into EXTRA_HISTOGRAM_BOUNDS) of each latency partition above the seed's last bound,
``len`` above them all, None at or below it."""
