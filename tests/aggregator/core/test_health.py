"""Pure unit tests for the health math (aggregator/core/health.py): no Redis, no clock. Worked
examples first, then property tests (hypothesis) with arbitrary counts and values, including the
figures provider_health (aggregator/core/snapshot.py) derives from them."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from aggregator.core.health import (
    WindowCounts,
    bucket_quantile,
    error_rate,
    health_score,
    latency_score,
)
from aggregator.core.snapshot import provider_health
from gatewayz_protocol.breaker_state import CLOSED, STATES, BreakerState
from gatewayz_protocol.partitions import WINDOW_BOUNDS
from tests.support.strategies import COUNTS, WINDOW_COUNTS, increasing_bounds, property_settings

# Small bounds for hand-computed quantiles: buckets (0,1], (1,2], (2,4], (4,+Inf).
BOUNDS = (1.0, 2.0, 4.0)


@pytest.mark.parametrize(
    ("successes", "failures", "expected"),
    [
        (0, 0, 0.0),  # no traffic -> 0.0 (seed)
        (10, 0, 0.0),
        (0, 5, 1.0),
        (3, 1, 0.25),  # 1 / (3 + 1)
        (1, 2, 2 / 3),
        (99, 1, 0.01),  # 1 / 100
    ],
)
def test_error_rate(successes: int, failures: int, expected: float) -> None:
    assert error_rate(successes, failures) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        # rank = 0.5*10 = 5 in bucket (0,1]: 0 + (1-0)*(5-0)/10
        (0.5, (10, 0, 0, 0), 0.5),
        # rank = 0.95*10 = 9.5 in bucket (1,2]: 1 + (2-1)*(9.5-0)/10
        (0.95, (0, 10, 0, 0), 1.95),
        # rank = 9.5; cumulative 2, 6, 10 -> bucket (2,4]: 2 + (4-2)*(9.5-6)/4
        (0.95, (2, 4, 4, 0), 3.75),
        # rank = 5; cumulative 2, 6 -> bucket (1,2]: 1 + (2-1)*(5-2)/4
        (0.5, (2, 4, 4, 0), 1.75),
        # rank = 10 = total -> top of bucket (2,4]: 2 + 2*(10-6)/4
        (1.0, (2, 4, 4, 0), 4.0),
        # rank = 0.5*20 = 10 lands exactly on the top of (0,1]: 0 + 1*(10-0)/10
        (0.5, (10, 10, 0, 0), 1.0),
        # rank = 0 -> first non-empty bucket (1,2], at its lower edge: 1 + 1*0/3
        (0.0, (0, 3, 0, 0), 1.0),
        # rank = 0.5*5 = 2.5, every value in +Inf -> highest finite bound
        (0.5, (0, 0, 0, 5), 4.0),
        # rank = 0.95*10 = 9.5 > 5 finite values -> +Inf bucket -> highest finite bound
        (0.95, (5, 0, 0, 5), 4.0),
        # rank = 0.25*8 = 2 in (0,1] (count 4): 0 + 1*(2-0)/4
        (0.25, (4, 0, 0, 4), 0.5),
        # rank = 0.5*20 = 10 = cumulative 10 of (0,1], the first bucket reaching it (as
        # histogram_quantile), not the next non-empty one (2,4]: 0 + 1*(10-0)/10
        (0.5, (10, 0, 10, 0), 1.0),
        # rank = 1.0*6 = 6; cumulative 2, 6 -> top of (1,2], empty buckets above: 1 + 1*(6-2)/4
        (1.0, (2, 4, 0, 0), 2.0),
    ],
)
def test_bucket_quantile(q: float, counts: tuple[int, ...], expected: float) -> None:
    assert bucket_quantile(q, counts, BOUNDS) == pytest.approx(expected)


def test_bucket_quantile_no_values_is_none() -> None:
    assert bucket_quantile(0.95, (0, 0, 0, 0), BOUNDS) is None


def test_bucket_quantile_with_window_bounds() -> None:
    # 100 successes, all in partition 8 = (2.0, 2.5] (bounds 0.05 0.1 0.25 0.5 0.75 1 1.5 2 2.5).
    counts = (0,) * 8 + (100,) + (0,) * 12
    assert len(counts) == 21  # 20 finite bounds + +Inf
    # rank = 0.95*100 = 95: 2.0 + (2.5-2.0)*(95-0)/100
    assert bucket_quantile(0.95, counts, WINDOW_BOUNDS) == pytest.approx(2.475)


@pytest.mark.parametrize("q", [-0.01, 1.01, math.nan])
def test_bucket_quantile_rejects_q_outside_unit_interval(q: float) -> None:
    with pytest.raises(ValueError):
        bucket_quantile(q, (1, 0, 0, 0), BOUNDS)


@pytest.mark.parametrize("counts", [(1, 0, 0), (1, 0, 0, 0, 0), ()])
def test_bucket_quantile_rejects_wrong_count_length(counts: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        bucket_quantile(0.5, counts, BOUNDS)


@pytest.mark.parametrize(
    ("p95", "expected"),
    [
        (None, 1.0),  # no successful calls
        (0.0, 1.0),
        (1.5, 1.0),
        (2.0, 1.0),  # at target
        (4.0, 0.75),  # (10-4)/(10-2) = 6/8
        (6.0, 0.5),  # (10-6)/8
        (9.0, 0.125),  # (10-9)/8
        (10.0, 0.0),  # at ceiling
        (12.0, 0.0),
    ],
)
def test_latency_score_default_target_and_ceiling(p95: float | None, expected: float) -> None:
    assert latency_score(p95, 2.0, 10.0) == pytest.approx(expected)


def test_latency_score_other_target_and_ceiling() -> None:
    # (5 - 2) / (5 - 1) = 0.75
    assert latency_score(2.0, 1.0, 5.0) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("availability", "err_rate", "lat_score", "expected"),
    [
        (1.0, 0.0, 1.0, 1.0),  # 0.4 + 0.3 + 0.3
        (0.0, 1.0, 0.0, 0.0),
        (0.0, 0.0, 1.0, 0.6),  # 0 + 0.3 + 0.3
        (1.0, 1.0, 0.0, 0.4),  # 0.4 + 0 + 0
        (1.0, 0.0, 0.0, 0.7),  # 0.4 + 0.3 + 0
        (1.0, 0.25, 0.75, 0.85),  # 0.4 + 0.3*0.75 + 0.3*0.75 = 0.4 + 0.225 + 0.225
        (0.0, 0.5, 0.5, 0.3),  # 0 + 0.15 + 0.15
        (2.0, 0.0, 1.0, 1.0),  # 1.4 clamped to 1
        (0.0, 2.0, 0.0, 0.0),  # -0.3 clamped to 0
    ],
)
def test_health_score(
    availability: float, err_rate: float, lat_score: float, expected: float
) -> None:
    assert health_score(availability, err_rate, lat_score) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("availability", "err_rate", "lat_score"),
    [(1.0, math.nan, 1.0), (math.inf, 0.0, 1.0), (1.0, 0.0, -math.inf)],
)
def test_health_score_non_finite_is_zero(
    availability: float, err_rate: float, lat_score: float
) -> None:
    assert health_score(availability, err_rate, lat_score) == 0.0


def test_window_counts_successes_and_total() -> None:
    counts = WindowCounts(
        success_partitions=(3, 0, 4, 1), failures=2, rate_limited=5, caller_errors=7
    )
    assert counts.successes == 8  # 3 + 0 + 4 + 1
    assert counts.total == 22  # 8 + 2 + 5 + 7


def test_window_counts_empty() -> None:
    empty = WindowCounts.empty()
    assert empty.success_partitions == (0,) * 21  # 20 finite bounds + +Inf
    assert (empty.failures, empty.rate_limited, empty.caller_errors) == (0, 0, 0)
    assert empty.successes == 0
    assert empty.total == 0


def test_window_counts_is_frozen() -> None:
    counts = WindowCounts.empty()
    with pytest.raises(AttributeError):
        counts.failures = 1  # type: ignore[misc]


# -- properties --------------------------------------------------------------------------------

SPARSE_PARTITIONS = st.lists(
    st.one_of(st.just(0), st.just(0), st.integers(0, 5), COUNTS),
    min_size=len(WINDOW_BOUNDS) + 1,
    max_size=len(WINDOW_BOUNDS) + 1,
)


@property_settings(400)
@given(window=WINDOW_COUNTS)
def test_error_rate_is_a_share(window: WindowCounts) -> None:
    rate = error_rate(window.successes, window.failures)
    assert 0.0 <= rate <= 1.0
    if window.failures == 0:
        assert rate == 0.0
    if window.successes == 0 and window.failures:
        assert rate == 1.0


@property_settings(400)
@given(
    p95=st.one_of(st.none(), st.floats(0.0, allow_infinity=True, allow_nan=False)),
    target=st.floats(1e-6, 1e6),
    span=st.floats(1e-6, 1e6),
)
def test_latency_score_is_in_unit_interval_and_monotone(
    p95: float | None, target: float, span: float
) -> None:
    ceiling = target + span
    assume(ceiling > target)
    score = latency_score(p95, target, ceiling)
    assert 0.0 <= score <= 1.0
    if p95 is not None:
        worse = latency_score(p95 * 2 + 1e-9, target, ceiling)
        assert worse <= score


@property_settings(400)
@given(
    availability=st.floats(allow_nan=True, allow_infinity=True),
    err=st.floats(allow_nan=True, allow_infinity=True),
    lat=st.floats(allow_nan=True, allow_infinity=True),
)
def test_health_score_is_always_in_unit_interval(
    availability: float, err: float, lat: float
) -> None:
    assert 0.0 <= health_score(availability, err, lat) <= 1.0


@property_settings(300)
@given(window=WINDOW_COUNTS, state=st.sampled_from(STATES))
def test_provider_health_figures_are_in_range(window: WindowCounts, state: str) -> None:
    health = provider_health(
        "p", window, BreakerState(state=state), {}, {}, latency_target_s=2.0, latency_ceiling_s=10.0
    )
    assert health.availability == (1.0 if state == CLOSED else 0.0)
    for value in (health.error_rate, health.latency_score, health.health_score):
        assert 0.0 <= value <= 1.0
    assert health.window_requests == window.total


@property_settings(800)
@given(
    counts_and_bounds=st.one_of(
        SPARSE_PARTITIONS.map(lambda counts: (counts, WINDOW_BOUNDS)),
        increasing_bounds().flatmap(
            lambda bounds: st.tuples(
                st.lists(COUNTS, min_size=len(bounds) + 1, max_size=len(bounds) + 1),
                st.just(bounds),
            )
        ),
    ),
    qs=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6),
)
def test_bucket_quantile_is_monotone_and_bounded(
    counts_and_bounds: tuple[list[int], tuple[float, ...]], qs: list[float]
) -> None:
    counts, bounds = counts_and_bounds
    values = [bucket_quantile(q, counts, bounds) for q in sorted(qs)]
    if sum(counts) == 0:
        assert values == [None] * len(qs)
        return
    numbers = [v for v in values if v is not None]
    assert len(numbers) == len(values)
    for value in numbers:
        assert 0.0 <= value <= bounds[-1]
    for lower, higher in itertools.pairwise(numbers):
        assert lower <= higher, (counts, bounds, sorted(qs), numbers)


@property_settings(200)
@given(q=st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1.000001), st.just(math.nan)))
def test_bucket_quantile_refuses_quantiles_outside_unit_interval(q: float) -> None:
    with pytest.raises(ValueError):
        bucket_quantile(q, [1] * (len(WINDOW_BOUNDS) + 1), WINDOW_BOUNDS)


def test_the_top_of_a_bucket_never_rounds_past_its_bound() -> None:
    # (1.66... + (2.87e8 - 1.66...)) rounds one ulp above 2.87e8: found by the property above
    bounds = (1.0, 1.6631082594394684, 287261575.6569196)
    assert bucket_quantile(1.0, [0, 0, 61241, 0], bounds) == 287261575.6569196
