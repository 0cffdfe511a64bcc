"""The leader's schedule of woken breakers (aggregator/core/wake_schedule.py), pure: evaluated at
once, again every recheck interval while wakes keep coming, never more often however many
workers wake it, dropped after the watch time or once the breaker left closed."""

from __future__ import annotations

import math

from aggregator.core.wake_schedule import WakePolicy, WakeSchedule

POLICY = WakePolicy(recheck_seconds=0.25, watch_seconds=3.0, max_watched=3)


def test_nothing_watched_nothing_due() -> None:
    schedule = WakeSchedule(POLICY)
    assert schedule.due(0.0) == []
    assert schedule.seconds_until_due(0.0) == math.inf


def test_a_wake_is_due_at_once_then_every_recheck() -> None:
    schedule = WakeSchedule(POLICY)
    schedule.wake(["p"], 10.0)
    assert schedule.due(10.0) == ["p"]
    assert schedule.seconds_until_due(10.0) == 0.25
    assert schedule.due(10.1) == []
    schedule.wake(["p"] * 100, 10.1)  # a hundred workers: still one evaluation per recheck
    assert schedule.due(10.2) == []
    assert schedule.due(10.25) == ["p"]


def test_watched_until_watch_seconds_after_the_last_wake() -> None:
    schedule = WakeSchedule(POLICY)
    schedule.wake(["p"], 0.0)
    schedule.wake(["p"], 2.0)  # extends to 5.0
    times = [t / 4 for t in range(0, 40) if schedule.due(t / 4)]
    assert times[0] == 0.0 and times[-1] == 4.75
    assert len(schedule) == 0


def test_settled_providers_leave() -> None:
    schedule = WakeSchedule(POLICY)
    schedule.wake(["p", "q"], 0.0)
    assert schedule.due(0.0) == ["p", "q"]
    schedule.settle(["p"])
    assert schedule.due(1.0) == ["q"]


def test_bounded_and_refusals_counted() -> None:
    schedule = WakeSchedule(POLICY)
    schedule.wake(["a", "b", "c", "d", "e"], 0.0)
    assert len(schedule) == 3 and schedule.refused == 2
    schedule.wake(["a"], 0.1)  # one watched already: not a refusal
    assert schedule.refused == 2
