"""A recurring complaint, said once a period with how often it came up meanwhile."""

from __future__ import annotations

from client._throttle import Throttle
from tests.support.clock import FakeClock


def test_said_the_first_time_then_once_a_period_with_the_count_unsaid() -> None:
    clock = FakeClock()
    throttle = Throttle(60.0, monotonic=clock)
    assert throttle.due() == ""
    clock.advance(59.9)
    assert [throttle.due() for _ in range(3)] == [None, None, None]
    clock.advance(0.1)
    assert throttle.due() == " (3 more times since it was last said)"
    clock.advance(60.0)
    assert throttle.due() == ""  # nothing came up unsaid this period
