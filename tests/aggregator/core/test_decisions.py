"""What a reading decides for all breakers (aggregator/core/decisions.py): the calls judged,
breakers to restore after their state vanished, the max-open-share guard. Pure."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from aggregator.core.breaker import BreakerCalls, BreakerConfig
from aggregator.core.decisions import acting, acting_in, breaker_calls, decide, vanished
from aggregator.core.health import WindowCounts
from aggregator.core.readings import ProviderReading
from aggregator.core.snapshot import Snapshot, provider_health
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState
from gatewayz_protocol.partitions import LATENCY_PARTITIONS

NOW = 1_000.0
COUNTS = WindowCounts((3,) + (0,) * (LATENCY_PARTITIONS - 1), 5, 4, 9)


def test_caller_errors_never_count_and_rate_limits_count_as_configured() -> None:
    assert breaker_calls(COUNTS, BreakerConfig()) == BreakerCalls(3, 9)
    assert breaker_calls(COUNTS, BreakerConfig(rate_limited_is_failure=False)) == BreakerCalls(3, 5)


def _reading(name: str, state: BreakerState, successes: int, failures: int) -> ProviderReading:
    counts = WindowCounts((successes,) + (0,) * (LATENCY_PARTITIONS - 1), failures, 0, 0)
    return ProviderReading(name, counts, counts, {}, state, {})


def _last(*states: tuple[str, BreakerState]) -> Snapshot:
    health = tuple(
        provider_health(name, WindowCounts.empty(), state, {}, {}, 2.0, 10.0)
        for name, state in states
    )
    return Snapshot(NOW - 5, 1, 300.0, health, {}, {}, 0)


def test_a_breaker_acting_in_the_last_snapshot_and_missing_now_is_restored() -> None:
    opened = BreakerState(OPEN, 900.0, 4, 1_030.0, 2)
    forced_closed = BreakerState(CLOSED, 900.0, 2, 0.0, 0, forced=True)
    closed = BreakerState(CLOSED, 900.0, 6, 0.0, 0)
    never = BreakerState(OPEN, 0.0, 0, 0.0, 0)  # epoch 0: never written, nothing to restore
    last = _last(("a", opened), ("b", forced_closed), ("c", closed), ("d", never), ("e", opened))
    now_in_redis = {
        "a": BreakerState(),  # gone (epoch 0)
        "b": BreakerState(),
        "c": BreakerState(),
        "d": BreakerState(),
        "e": BreakerState(OPEN, 950.0, 5, 1_100.0, 3),  # moved on: not gone
    }
    assert vanished(now_in_redis, last) == {"a": opened, "b": forced_closed}
    assert vanished(now_in_redis, None) == {}


def test_decisions_evaluate_each_breaker_on_its_calls() -> None:
    config = BreakerConfig(min_calls=10, failure_rate=0.5)
    half = BreakerState(HALF_OPEN, 990.0, 3, 995.0, 1)
    readings = [
        _reading("failing", BreakerState(), successes=4, failures=6),
        _reading("healthy", BreakerState(), successes=10, failures=0),
        _reading("trial", half, successes=5, failures=0),
    ]
    decisions = decide(readings, None, NOW, config)
    moves = {name: (t.old.state, t.new.state) for name, t in decisions.transitions}
    assert moves == {"failing": (CLOSED, OPEN), "trial": (HALF_OPEN, CLOSED)}
    assert decisions.suppressed == () and dict(decisions.restores) == {}


def test_a_breaker_to_restore_is_not_evaluated_this_cycle() -> None:
    opened = BreakerState(OPEN, 900.0, 4, 950.0, 1)  # due to half-open, had it not vanished
    decisions = decide(
        [_reading("a", BreakerState(), 0, 50)], _last(("a", opened)), NOW, BreakerConfig()
    )
    assert decisions.transitions == ()
    assert dict(decisions.restores) == {"a": opened}


def test_the_guard_holds_back_openings_beyond_the_share() -> None:
    config = BreakerConfig(min_calls=10, max_open_share=0.5)
    readings = [
        _reading("worst", BreakerState(), 0, 20),
        _reading("bad", BreakerState(), 5, 15),
        _reading("fine-1", BreakerState(), 20, 0),
        _reading("fine-2", BreakerState(), 20, 0),
        _reading("fine-3", BreakerState(), 20, 0),
    ]
    decisions = decide(readings, None, NOW, config)
    assert [name for name, _ in decisions.transitions] == ["worst", "bad"]
    already_open = _reading("x", BreakerState(OPEN, 1.0, 1, 9e9, 1), 0, 0)
    decisions = decide([*readings[:3], already_open], None, NOW, config)
    assert [name for name, _ in decisions.transitions] == ["worst"]  # 2 of 4 at most
    assert [name for name, _ in decisions.suppressed] == ["bad"]


def test_acting_breakers_are_forced_or_not_closed() -> None:
    states = {
        "closed": BreakerState(),
        "open": BreakerState(OPEN, 1.0, 1, 2.0, 1),
        "half": BreakerState(HALF_OPEN, 1.0, 2, 2.0, 1),
        "forced": BreakerState(CLOSED, 1.0, 3, 0.0, 0, forced=True),
    }
    assert acting(states) == ["open", "half", "forced"]


def test_the_breakers_acting_in_the_last_snapshot_are_read_again() -> None:
    last = _last(
        ("closed", BreakerState(CLOSED, 900.0, 2, 0.0, 0)),
        ("open", BreakerState(OPEN, 900.0, 1, 930.0, 1)),
        ("half", BreakerState(HALF_OPEN, 930.0, 2, 930.0, 1)),
        ("forced", BreakerState(CLOSED, 900.0, 3, 0.0, 0, forced=True)),
    )
    assert acting_in(last) == ["open", "half", "forced"]
    assert acting_in(None) == []  # no snapshot yet: none known


def test_decisions_are_immutable() -> None:
    decisions = decide([_reading("a", BreakerState(), 10, 0)], None, NOW, BreakerConfig())
    assert decisions.transitions == ()
    with pytest.raises(FrozenInstanceError):
        decisions.transitions = ()  # type: ignore[misc]
