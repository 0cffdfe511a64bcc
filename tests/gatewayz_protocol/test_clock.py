"""The shared clock (gatewayz_protocol.clock): local time plus the offset measured against
Redis's TIME; a client's local clock is the monotonic one, so a step of the host's wall clock moves
nothing. Pure: the local and wall clocks are injected, no Redis, no sleep."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayz_protocol.clock import MAX_ROUND_TRIP_SECONDS, SharedClock
from tests.support.clock import FakeClock
from tests.support.strategies import property_settings


def test_before_any_measurement_the_shared_time_is_the_local_time() -> None:
    local = FakeClock(1000.0)
    clock = SharedClock(local)
    assert (clock.offset, clock.measured) == (0.0, False)
    assert (clock.local(), clock.now()) == (1000.0, 1000.0)


def test_the_offset_is_redis_time_minus_the_round_trip_midpoint() -> None:
    local = FakeClock(1000.0)
    clock = SharedClock(local)
    # Redis said 1012.5 s; asked at 1000.0, answered at 1000.25: midpoint 1000.125
    clock.observe((1012, 500_000), sent_at=1000.0, received_at=1000.25)
    assert (clock.offset, clock.measured) == (12.375, True)
    assert clock.now() == 1012.375
    local.advance(10.0)
    assert (clock.local(), clock.now()) == (1010.0, 1022.375)


def test_a_redis_clock_behind_the_local_one_gives_a_negative_offset() -> None:
    clock = SharedClock(FakeClock(2000.0))
    clock.observe((1990, 250_000), sent_at=2000.0, received_at=2000.5)
    assert clock.offset == -10.0
    assert clock.now() == 1990.0


def test_a_slow_round_trip_is_ignored_once_there_is_a_measurement() -> None:
    assert MAX_ROUND_TRIP_SECONDS == 0.5
    clock = SharedClock(FakeClock(1000.0))
    clock.observe((1005, 0), sent_at=1000.0, received_at=1000.0)
    assert clock.offset == 5.0
    clock.observe((1100, 0), sent_at=1000.0, received_at=1000.75)  # slower than 0.5 s
    assert clock.offset == 5.0
    clock.observe((1100, 0), sent_at=1000.0, received_at=1000.5)  # exactly 0.5 s: taken
    assert clock.offset == 99.75


def test_the_first_measurement_is_taken_however_slow() -> None:
    clock = SharedClock(FakeClock(1000.0))
    clock.observe((1003, 0), sent_at=1000.0, received_at=1002.0)
    assert (clock.offset, clock.measured) == (2.0, True)


def test_a_negative_round_trip_is_ignored_even_as_the_first_measurement() -> None:
    # a wall clock stepped back 600 s during the round trip: before, the offset moved 5 -> 305
    local = FakeClock(1000.0)
    clock = SharedClock(local)
    assert clock.observe((1005, 0), sent_at=1000.0, received_at=1000.0)
    assert clock.observe((1005, 0), sent_at=1000.0, received_at=400.0) is False
    assert clock.offset == 5.0
    fresh = SharedClock(local)
    assert fresh.observe((1005, 0), sent_at=1000.0, received_at=400.0) is False
    assert (fresh.offset, fresh.measured) == (0.0, False)


def test_on_a_monotonic_clock_a_wall_clock_step_moves_nothing() -> None:
    monotonic, wall = FakeClock(50.0), FakeClock(1000.0)
    clock = SharedClock(monotonic, wall=wall)
    assert clock.now() == 1000.0  # before any measurement: the host's clock
    # Redis says 1005.0 at the midpoint of a 0.2 s round trip, monotonic 50.0 -> 50.2
    monotonic.now, wall.now = 50.2, 1000.2
    assert clock.observe((1005, 100_000), sent_at=50.0, received_at=50.2)
    assert clock.offset == pytest.approx(955.0)  # Redis minus the monotonic clock
    assert clock.skew == pytest.approx(5.0)  # Redis minus the host's clock, exported
    recorded = monotonic.now  # an event stamped now
    wall.advance(600.0)  # the host's clock stepped: nothing the shared clock says moves
    monotonic.advance(1.0)
    assert clock.now() == pytest.approx(1006.2)
    assert recorded + clock.offset == pytest.approx(1005.2)
    sent_at = monotonic.now
    monotonic.advance(0.2)
    wall.advance(0.2)
    assert clock.observe((1006, 300_000), sent_at=sent_at, received_at=monotonic.now)
    assert clock.offset == pytest.approx(955.0)  # measured again: the same offset
    assert clock.skew == pytest.approx(-594.0)  # the host's clock, 5 s behind, stepped 600 s


def test_the_default_local_clock_is_the_system_clock() -> None:
    before = time.time()
    reading = SharedClock().local()
    after = time.time()
    assert before <= reading <= after


@property_settings(300)
@given(
    seconds=st.integers(0, 4_000_000_000),
    micros=st.integers(0, 999_999),
    sent_at=st.floats(0, 4e9),
    round_trip=st.floats(0, MAX_ROUND_TRIP_SECONDS),
)
def test_at_the_midpoint_the_shared_time_is_redis_time(
    seconds: int, micros: int, sent_at: float, round_trip: float
) -> None:
    local = FakeClock(sent_at)
    clock = SharedClock(local)
    clock.observe((seconds, micros), sent_at=sent_at, received_at=sent_at + round_trip)
    local.now = sent_at + round_trip / 2
    assert clock.now() == pytest.approx(seconds + micros / 1e6, abs=1e-5)
