"""The one partition rule (gatewayz_protocol.partitions): which window key and which histogram
bucket an event goes to. Pure, no Redis."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import (
    BUCKET_OF_PARTITION,
    CALLER_ERROR,
    CANCELLED,
    EXTRA_BAND_OF_PARTITION,
    EXTRA_HISTOGRAM_BOUNDS,
    FAILURE,
    HISTOGRAM_BOUNDS,
    LATENCY_PARTITIONS,
    OUTCOME_CODES,
    OUTCOMES,
    RATE_LIMITED,
    SUCCESS,
    UNWINDOWED,
    USAGE,
    WINDOW_BOUNDS,
    WINDOW_PARTITIONS,
    latency_partition,
    window_partition,
)
from tests.support.strategies import property_settings


# WINDOW_BOUNDS: 0.05 0.1 0.25 0.5 0.75 1 1.5 2 2.5 3 4 5 6 7 8 9 10 15 30 60 (indices 0..19)
@pytest.mark.parametrize(
    ("latency", "partition"),
    [
        (0.0, 0),
        (0.05, 0),  # on the bound -> that bound's partition (le)
        (0.0501, 1),  # just above -> next
        (0.1, 1),
        (0.25, 2),
        (1.0, 5),
        (1.0001, 6),
        (2.0, 7),
        (2.0001, 8),
        (10.0, 16),
        (60.0, 19),  # last finite bound
        (60.0001, 20),  # +Inf
        (1e9, 20),
    ],
)
def test_window_partition_success(latency: float, partition: int) -> None:
    assert latency_partition(latency) == partition
    assert window_partition(SUCCESS, latency_partition(latency)) == partition


@pytest.mark.parametrize(
    ("outcome", "partition"),
    [(FAILURE, 21), (RATE_LIMITED, 22), (CALLER_ERROR, 23)],  # after the 21 ok partitions
)
def test_window_partition_non_success(outcome: int, partition: int) -> None:
    # latency does not matter for non-success outcomes
    assert window_partition(outcome, latency_partition(0.01)) == partition
    assert window_partition(outcome, latency_partition(100.0)) == partition


@pytest.mark.parametrize(
    ("outcome", "suffix"),
    [(FAILURE, ":w:fail"), (RATE_LIMITED, ":w:rl"), (CALLER_ERROR, ":w:ce")],
)
def test_window_partition_indexes_window_keys(outcome: int, suffix: str) -> None:
    keys = Keys("ns").window_keys("p")
    assert keys[window_partition(outcome, latency_partition(1.0))] == "ns:{p}" + suffix
    # 1.0 is bound index 5
    assert keys[window_partition(SUCCESS, latency_partition(1.0))] == "ns:{p}:w:ok:5"


# HISTOGRAM_BOUNDS: 0.1 0.5 1 2 5 10 (indices 0..5), +Inf = 6
@pytest.mark.parametrize(
    ("latency", "bucket"),
    [
        (0.0, 0),
        (0.1, 0),  # on the bound (le)
        (0.1001, 1),
        (0.5, 1),
        (0.5001, 2),
        (1.0, 2),
        (2.0, 3),
        (5.0, 4),
        (10.0, 5),  # last finite bound
        (10.0001, 6),  # +Inf
        (1e9, 6),
    ],
)
def test_histogram_bucket_follows_from_the_latency_partition(latency: float, bucket: int) -> None:
    assert BUCKET_OF_PARTITION[latency_partition(latency)] == bucket


def test_the_partition_counts_and_outcome_codes() -> None:
    assert OUTCOMES == ("success", "failure", "rate_limited", "caller_error")
    assert OUTCOME_CODES == {"success": 0, "failure": 1, "rate_limited": 2, "caller_error": 3}
    assert (SUCCESS, FAILURE, RATE_LIMITED, CALLER_ERROR) == (0, 1, 2, 3)
    assert LATENCY_PARTITIONS == 21  # 20 window bounds, then above them all
    assert WINDOW_PARTITIONS == 24  # the 21 success partitions, then fail, rl, ce
    assert len(Keys("ns").window_keys("p")) == WINDOW_PARTITIONS


def test_the_event_codes_of_calls_no_window_holds_follow_the_outcome_codes() -> None:
    # Codes 0..3 are OUTCOMES'; anything at or above len(OUTCOMES) == 4 is a counter only.
    assert (CANCELLED, USAGE) == (4, 5)
    assert UNWINDOWED == {"cancelled": 4}


def test_the_bounds_are_the_documented_ones() -> None:
    # docs/guides/semantics.md (latency partitions) and docs/guides/metrics.md (buckets)
    assert WINDOW_BOUNDS == (
        0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
        15.0, 30.0, 60.0,
    )  # fmt: skip
    assert HISTOGRAM_BOUNDS == (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
    assert EXTRA_HISTOGRAM_BOUNDS == (15.0, 30.0, 60.0)


def test_only_partitions_above_10s_have_an_extra_band() -> None:
    # partitions 0..16 end at or below 10 s: no band; 15, 30, 60 and +Inf: bands 0, 1, 2, 3
    assert EXTRA_BAND_OF_PARTITION == (None,) * 17 + (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("latency", "band"),
    [
        (0.0, None),
        (10.0, None),  # the seed's last bound: not above it
        (10.0001, 0),  # (10, 15]
        (15.0, 0),
        (15.0001, 1),  # (15, 30]
        (30.0, 1),
        (60.0, 2),  # (30, 60]
        (60.0001, 3),  # above every extra bound
        (1e9, 3),
    ],
)
def test_the_extra_band_of_a_latency(latency: float, band: int | None) -> None:
    assert EXTRA_BAND_OF_PARTITION[latency_partition(latency)] == band


def test_the_histogram_bucket_of_each_latency_partition() -> None:
    # window bounds 0.05 0.1 | 0.25 0.5 | 0.75 1 | 1.5 2 | 2.5 3 4 5 | 6 7 8 9 10 | 15 30 60 +Inf
    assert BUCKET_OF_PARTITION == (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 6, 6, 6, 6)


def _partition_by_hand(seconds: float) -> int:
    """The first window bound at or above the latency, by a linear scan."""
    for index, bound in enumerate(WINDOW_BOUNDS):
        if seconds <= bound:
            return index
    return len(WINDOW_BOUNDS)


@property_settings(300)
@given(
    seconds=st.one_of(
        st.floats(0, 120, allow_nan=False),
        st.sampled_from(WINDOW_BOUNDS),
        st.sampled_from(WINDOW_BOUNDS).map(lambda b: math.nextafter(b, math.inf)),
    ),
    outcome=st.integers(0, 3),
)
def test_the_partition_rule_agrees_with_its_definition(seconds: float, outcome: int) -> None:
    part = latency_partition(seconds)
    assert part == _partition_by_hand(seconds)
    expected = part if outcome == SUCCESS else LATENCY_PARTITIONS - 1 + outcome
    assert window_partition(outcome, part) == expected
