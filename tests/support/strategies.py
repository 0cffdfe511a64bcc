"""Hypothesis settings and strategies shared by the property tests of several modules: window
counts and histogram bounds (health math, rendering), breaker states and clocks (breaker,
rendering), and the rejection causes record() documents (client, rendering).

Tests that touch Redis run few examples (deadline=None); the pure ones run many. No example
database is written (database=None): the suite leaves no files behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from aggregator.core.health import WindowCounts
from gatewayz_protocol.breaker_state import STATES, BreakerState
from gatewayz_protocol.partitions import WINDOW_BOUNDS


def property_settings(examples: int) -> Callable[[Any], Any]:
    """The settings of every property test: ``examples`` examples, no deadline, no database."""
    return settings(
        max_examples=examples,
        deadline=None,  # Redis round trips and big inputs vary in time: no per-example deadline
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


COUNTS = st.integers(0, 10**12)
WINDOW_COUNTS = st.builds(
    WindowCounts,
    st.lists(COUNTS, min_size=len(WINDOW_BOUNDS) + 1, max_size=len(WINDOW_BOUNDS) + 1).map(tuple),
    COUNTS,
    COUNTS,
    COUNTS,
)


def increasing_bounds() -> st.SearchStrategy[tuple[float, ...]]:
    """Histogram bucket bounds: 1-25 distinct positive floats, increasing."""
    return st.lists(
        st.floats(1e-9, 1e9, allow_subnormal=False), min_size=1, max_size=25, unique=True
    ).map(lambda values: tuple(sorted(values)))


CLOCKS = st.floats(-1e12, 1e12)
BREAKER_STATES = st.builds(
    BreakerState,
    state=st.sampled_from(STATES),
    since=CLOCKS,
    epoch=st.integers(0, 2**62),
    open_until=CLOCKS,
    consecutive_opens=st.integers(0, 10**6),
    forced=st.booleans(),
)

DOCUMENTED_CAUSES = frozenset(
    {
        "invalid_provider",
        "invalid_latency",
        "invalid_status_code",
        "invalid_outcome",
        "status_and_outcome",
        "invalid_tokens",
        "invalid_cost",
        "invalid_argument",
    }
)
"""The causes README lists for record() itself (too_many_providers is counted later, by the
flusher, for events record() had accepted)."""
