"""The evaluate step (aggregator/engine/evaluate.py): decisions as writes, and what a commit's
results make of the states, with the lines an operator reads in the log. Pure: no Redis."""

from __future__ import annotations

import logging

import pytest

from aggregator.core.breaker import BreakerCalls, BreakerConfig, Transition
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.decisions import Decisions
from aggregator.core.health import WindowCounts
from aggregator.core.model_breakers import ModelReading
from aggregator.core.readings import ProviderReading, Reading
from aggregator.engine.evaluate import BreakerStep, ModelBreakerStep, counted
from aggregator.engine.writer import FENCED, Committed, PlannedWrite
from gatewayz_protocol.breaker_state import CLOSED, OPEN, BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import LATENCY_PARTITIONS

CLOSED_STATE = BreakerState(CLOSED, 10.0, 2, 0.0, 0)
OPENED = BreakerState(OPEN, 100.0, 3, 130.0, 1)
RESTORED = BreakerState(OPEN, 50.0, 7, 140.0, 2)


def _decisions() -> Decisions:
    opening = Transition(CLOSED_STATE, OPENED, "failure rate 0.900 >= 0.5", BreakerCalls(2, 18))
    other = Transition(CLOSED_STATE, OPENED, "failure rate 1.000 >= 0.5", BreakerCalls(0, 20))
    return Decisions((("a", opening), ("b", other)), (), {"c": RESTORED})


def test_decisions_are_written_compare_and_set_then_the_restores() -> None:
    assert BreakerStep.writes(_decisions()) == [
        PlannedWrite("a", 2, OPENED, "closed>open"),
        PlannedWrite("b", 2, OPENED, "closed>open"),
        PlannedWrite("c", 0, RESTORED, ""),  # epoch 0: only where it is still missing
    ]


def test_only_what_the_commit_applied_changes_the_states(caplog: pytest.LogCaptureFixture) -> None:
    states = {"a": CLOSED_STATE, "b": CLOSED_STATE, "c": BreakerState()}
    step = BreakerStep(BreakerConfig())
    with caplog.at_level(logging.INFO, logger="gatewayz.aggregator"):
        applied = step.settle(_decisions(), Committed([1, 0, 1]), states)
    assert [t.new for t in applied] == [OPENED]
    assert states == {"a": OPENED, "b": CLOSED_STATE, "c": RESTORED}
    assert [r.getMessage() for r in caplog.records] == [
        "breaker c: its state vanished from Redis (evicted?); restored open from the last snapshot",
        "breaker a: closed -> open (failure rate 0.900 >= 0.5); epoch 3, calls counted 20, "
        "next deadline half_open at 1970-01-01T00:02:10Z (in 30 s)",
        "breaker b: epoch moved on before our write; re-read next cycle",
    ]


def test_a_fenced_write_changes_nothing_and_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    states = {"a": CLOSED_STATE, "b": CLOSED_STATE, "c": BreakerState()}
    with caplog.at_level(logging.INFO, logger="gatewayz.aggregator"):
        applied = BreakerStep(BreakerConfig()).settle(
            _decisions(), Committed([FENCED, FENCED, FENCED]), states
        )
    assert applied == []
    assert states == {"a": CLOSED_STATE, "b": CLOSED_STATE, "c": BreakerState()}
    assert caplog.records == []


def test_the_transitions_the_commit_applied_are_counted_in_the_reading_taken_before_it() -> None:
    # The snapshot of the cycle shows them with the state they led to (they were one cycle late).
    window = WindowCounts((0,) * LATENCY_PARTITIONS, 20, 0, 0)
    providers = [
        ProviderReading(name, window, window, {}, CLOSED_STATE, {"open>half_open": 1})
        for name in ("a", "b", "c")
    ]
    reading = Reading(tuple(providers), {}, {})
    after = counted(reading, _decisions(), Committed([1, 0, 1]))  # b: the epoch moved on
    assert [p.transitions for p in after.providers] == [
        {"open>half_open": 1, "closed>open": 1},
        {"open>half_open": 1},
        {"open>half_open": 1},  # c: a restore, counted nowhere
    ]
    assert all(x is y for x, y in zip(after.providers[1:], reading.providers[1:], strict=True))
    assert reading.providers[0].transitions == {"open>half_open": 1}  # read, not changed
    assert counted(reading, _decisions(), Committed([FENCED, FENCED, FENCED])) is reading


def test_suppressed_openings_are_remembered_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    failing = WindowCounts((0,) * LATENCY_PARTITIONS, 20, 0, 0)
    healthy = WindowCounts((20,) + (0,) * (LATENCY_PARTITIONS - 1), 0, 0, 0)
    reading = Reading(
        (
            ProviderReading("held", failing, failing, {}, CLOSED_STATE, {}),
            ProviderReading("fine", healthy, healthy, {}, CLOSED_STATE, {}),
        ),
        {},
        {},
    )
    step = BreakerStep(BreakerConfig(max_open_share=0.25))  # 1 of 2 providers: none may open
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        decisions = step.decide(reading, None, 200.0)
    assert decisions.transitions == ()
    assert step.suppressed == frozenset({"held"})
    assert [r.getMessage() for r in caplog.records] == [
        "breaker held: would open (failure rate 1.000 >= 0.5 over 20 calls) but 25% of "
        "providers are already open"
    ]
    step.decide(Reading(reading.providers[1:], {}, {}), None, 201.0)
    assert step.suppressed == frozenset()  # remembered per cycle, not forever


class _FakeModelReader:
    """Stands in for ``ModelBreakerReader``: the readings given, no Redis."""

    def __init__(self, readings: list[ModelReading]) -> None:
        self.readings = readings

    def read(self, now: float, policy: BreakerPolicy) -> list[ModelReading]:
        return self.readings


def test_model_breakers_exported_as_the_commit_left_them_and_a_wake_changes_nothing() -> None:
    failing = ModelReading("p", "a", BreakerState(), successes=0, failures=25)
    reader = _FakeModelReader([failing, ModelReading("p", "b", BreakerState())])
    step = ModelBreakerStep(reader, Keys("ns"))  # type: ignore[arg-type]
    policy = BreakerPolicy(BreakerConfig())
    due = step.decide(1_000.0, policy)
    assert [m.model for m, _ in due] == ["a"]
    assert step.breakers() == ["ns:{p}:m:a:breaker", "ns:{p}:m:b:breaker"]
    step.settle(due, [1])
    assert [(m.model, m.breaker.state) for m in step.exported] == [("a", "open"), ("b", "closed")]
    step.settle((), [])  # a woken provider's commit: no model decided with it
    assert [m.breaker.state for m in step.exported] == ["open", "closed"]
    refused = step.decide(1_001.0, policy)
    step.settle(refused, [0])  # the epoch moved on: what was read is shown
    assert [m.breaker.state for m in step.exported] == ["closed", "closed"]
