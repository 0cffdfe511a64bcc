"""Pure unit tests for the breaker state machine (aggregator/breaker.py): injected times only."""

from __future__ import annotations

import pytest

from aggregator.breaker import (
    BreakerCalls,
    BreakerConfig,
    evaluate,
    open_duration,
)
from protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState

CONFIG = BreakerConfig()  # min_calls 20, rate 0.5, open 30 s (cap 300), 5 trials, 60 s timeout
T0 = 1_000.0


def _step(state: BreakerState, calls: BreakerCalls, now: float) -> BreakerState:
    transition = evaluate(state, calls, now, CONFIG)
    assert transition is not None
    assert transition.old == state
    return transition.new


@pytest.mark.parametrize(
    ("opens", "expected"),
    [
        (0, 30.0),  # treated as the first opening
        (1, 30.0),
        (2, 60.0),
        (3, 120.0),
        (4, 240.0),
        (5, 300.0),  # 480 capped
        (6, 300.0),
        (63, 300.0),
        (64, 300.0),  # huge exponent: still the cap
        (10_000, 300.0),
    ],
)
def test_open_duration_default(opens: int, expected: float) -> None:
    assert open_duration(opens, CONFIG) == expected


@pytest.mark.parametrize(("opens", "expected"), [(1, 10.0), (4, 80.0), (7, 640.0), (8, 1000.0)])
def test_open_duration_custom(opens: int, expected: float) -> None:
    config = BreakerConfig(open_seconds=10.0, max_open_seconds=1000.0)
    # 10 * 2^(n-1): 10, 80, 640, 1280 -> capped at 1000
    assert open_duration(opens, config) == expected


def test_closed_to_open() -> None:
    transition = evaluate(BreakerState(), BreakerCalls(10, 10), T0, CONFIG)
    assert transition is not None
    assert transition.new == BreakerState(OPEN, T0, 1, T0 + 30.0, 1)
    assert transition.calls == BreakerCalls(10, 10)


@pytest.mark.parametrize(
    ("successes", "failures", "opens"),
    [
        (9, 10, False),  # 19 calls (rate 10/19 > 0.5) but below min_calls
        (0, 19, False),  # 19 calls, all failing: still below min_calls
        (10, 10, True),  # 20 calls, rate exactly 0.5
        (0, 20, True),
        (11, 9, False),  # 20 calls, rate 0.45
        (20, 20, True),  # 40 calls, rate 0.5
        (21, 19, False),  # 40 calls, rate 19/40 = 0.475
        (0, 0, False),  # no traffic
    ],
)
def test_closed_thresholds(successes: int, failures: int, opens: bool) -> None:
    transition = evaluate(BreakerState(), BreakerCalls(successes, failures), T0, CONFIG)
    assert (transition is not None) is opens
    if transition is not None:
        assert transition.new.state == OPEN


def test_open_to_half_open_at_deadline() -> None:
    state = BreakerState(OPEN, T0, 1, T0 + 30.0, 1)
    assert evaluate(state, BreakerCalls(0, 0), T0 + 29.999, CONFIG) is None
    transition = evaluate(state, BreakerCalls(0, 0), T0 + 30.0, CONFIG)
    assert transition is not None
    assert transition.new == BreakerState(HALF_OPEN, T0 + 30.0, 2, T0 + 30.0, 1)


def test_open_ignores_calls_before_deadline() -> None:
    state = BreakerState(OPEN, T0, 1, T0 + 30.0, 1)
    assert evaluate(state, BreakerCalls(100, 0), T0 + 10.0, CONFIG) is None


HALF = BreakerState(HALF_OPEN, T0 + 30.0, 2, T0 + 30.0, 1)


@pytest.mark.parametrize(("successes", "failures"), [(5, 0), (3, 2), (10, 4)])
def test_half_open_to_closed(successes: int, failures: int) -> None:
    # failure rates 0, 0.4, 4/14 ~ 0.29: all below 0.5
    now = T0 + 40.0
    transition = evaluate(HALF, BreakerCalls(successes, failures), now, CONFIG)
    assert transition is not None
    assert transition.new.state == CLOSED
    assert transition.new.since == now
    assert transition.new.epoch == 3
    assert transition.new.consecutive_opens == 0


@pytest.mark.parametrize(("successes", "failures"), [(2, 3), (0, 5), (5, 5)])
def test_half_open_to_open(successes: int, failures: int) -> None:
    # failure rates 0.6, 1.0, 0.5 (exactly the threshold reopens)
    now = T0 + 40.0
    transition = evaluate(HALF, BreakerCalls(successes, failures), now, CONFIG)
    assert transition is not None
    # second consecutive opening: 60 s
    assert transition.new == BreakerState(OPEN, now, 3, now + 60.0, 2)


def test_half_open_waits_for_trial_calls() -> None:
    # 4 of 5 trial calls, 59 s after the transition: nothing yet
    assert evaluate(HALF, BreakerCalls(4, 0), T0 + 30.0 + 59.0, CONFIG) is None


def test_half_open_timeout_reopens() -> None:
    now = T0 + 30.0 + 60.0  # half_open_timeout_seconds after the transition
    transition = evaluate(HALF, BreakerCalls(4, 0), now, CONFIG)
    assert transition is not None
    assert transition.new == BreakerState(OPEN, now, 3, now + 60.0, 2)


def test_open_time_doubles_caps_and_resets_after_close() -> None:
    state = _step(BreakerState(), BreakerCalls(0, 20), T0)
    durations = [state.open_until - state.since]
    epochs = [state.epoch]
    for _ in range(5):
        state = _step(state, BreakerCalls(0, 0), state.open_until)  # -> half_open
        epochs.append(state.epoch)
        state = _step(state, BreakerCalls(0, 5), state.since + 1.0)  # trials fail -> open
        epochs.append(state.epoch)
        durations.append(state.open_until - state.since)
    assert durations == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]
    assert state.consecutive_opens == 6
    assert epochs == list(range(1, 12))  # exactly +1 per transition
    state = _step(state, BreakerCalls(0, 0), state.open_until)  # -> half_open
    state = _step(state, BreakerCalls(5, 0), state.since + 1.0)  # -> closed
    assert (state.state, state.consecutive_opens, state.epoch) == (CLOSED, 0, 13)
    state = _step(state, BreakerCalls(0, 20), state.since + 10.0)  # -> open again
    assert state.open_until - state.since == 30.0  # back to the base time
    assert state.epoch == 14


def test_open_with_far_deadline_stays_open() -> None:
    far = T0 + 1_000_000.0
    state = BreakerState(OPEN, T0, 7, far, 1)
    assert evaluate(state, BreakerCalls(0, 0), T0 + 300.0, CONFIG) is None


def test_reopen_never_shortens_a_far_deadline() -> None:
    far = T0 + 1_000_000.0
    state = BreakerState(HALF_OPEN, T0, 7, far, 1)
    transition = evaluate(state, BreakerCalls(0, 5), T0 + 10.0, CONFIG)
    assert transition is not None
    # now + 60 = T0 + 10 + 60 would be earlier than far: far is kept
    assert transition.new == BreakerState(OPEN, T0 + 10.0, 8, far, 2)


def test_reopen_extends_a_past_deadline() -> None:
    state = BreakerState(HALF_OPEN, T0, 7, T0 - 5.0, 1)
    transition = evaluate(state, BreakerCalls(0, 5), T0 + 10.0, CONFIG)
    assert transition is not None
    assert transition.new.open_until == T0 + 10.0 + 60.0


@pytest.mark.parametrize(
    ("state", "calls", "now", "new_state"),
    [
        (BreakerState(CLOSED, T0, 3), BreakerCalls(0, 20), T0 + 1.0, OPEN),
        (BreakerState(OPEN, T0, 3, T0 + 30.0, 1), BreakerCalls(0, 0), T0 + 30.0, HALF_OPEN),
        (BreakerState(HALF_OPEN, T0, 3, T0, 1), BreakerCalls(5, 0), T0 + 1.0, CLOSED),
        (BreakerState(HALF_OPEN, T0, 3, T0, 1), BreakerCalls(0, 5), T0 + 1.0, OPEN),
        (BreakerState(HALF_OPEN, T0, 3, T0, 1), BreakerCalls(0, 0), T0 + 60.0, OPEN),  # timeout
    ],
)
def test_epoch_increments_by_exactly_one(
    state: BreakerState, calls: BreakerCalls, now: float, new_state: str
) -> None:
    transition = evaluate(state, calls, now, CONFIG)
    assert transition is not None
    assert transition.new.state == new_state
    assert transition.new.epoch == 4  # 3 + 1


@pytest.mark.parametrize(
    "state",
    [
        BreakerState(OPEN, T0, 1, T0 + 30.0, 1, forced=True),
        BreakerState(CLOSED, T0, 1, forced=True),
        BreakerState(HALF_OPEN, T0, 1, T0, 1, forced=True),
    ],
)
def test_forced_state_never_changes(state: BreakerState) -> None:
    assert evaluate(state, BreakerCalls(0, 100), T0 + 10_000.0, CONFIG) is None


def test_unknown_state_raises() -> None:
    with pytest.raises(ValueError):
        evaluate(BreakerState("bogus"), BreakerCalls(0, 0), T0, CONFIG)


def test_no_reopen_after_recovery() -> None:
    # t=T0: 30 failures in the window -> open until T0+30
    old_failures = 30
    state = _step(BreakerState(), BreakerCalls(0, old_failures), T0)
    assert state.state == OPEN
    # t=T0+30: half_open; 5 successful trials since that transition -> closed at T0+40
    state = _step(state, BreakerCalls(0, 0), T0 + 30.0)
    assert state.state == HALF_OPEN
    state = _step(state, BreakerCalls(5, 0), T0 + 40.0)
    assert state.state == CLOSED
    recovered = state
    # Next cycles, every 30 s, all well inside 5 minutes of the old failures. Calls since the
    # close: 10 more successes per cycle. The full window also holds the 30 old failures and the
    # 5 trial successes: failure rate 30/(30+5+10) = 0.67, 30/(30+5+20) = 0.55 (>= 0.5, >= 20 calls
    # -> would re-open), then 30/(30+5+30) = 0.46 (would not).
    cycles = [
        (T0 + 70.0, BreakerCalls(10, 0), BreakerCalls(15, 30), True),
        (T0 + 100.0, BreakerCalls(20, 0), BreakerCalls(25, 30), True),
        (T0 + 130.0, BreakerCalls(30, 0), BreakerCalls(35, 30), False),
    ]
    for now, since_close, full_window, full_window_reopens in cycles:
        assert evaluate(recovered, since_close, now, CONFIG) is None
        reopened = evaluate(recovered, full_window, now, CONFIG)
        assert (reopened is not None) is full_window_reopens


def test_counting_start_is_the_breaker_window_when_closed_and_the_transition_otherwise() -> None:
    from aggregator.breaker import counting_start

    config = BreakerConfig(window_seconds=10.0)
    assert counting_start(BreakerState(CLOSED, since=0.0), 1_000.0, config) == 990.0
    assert counting_start(BreakerState(CLOSED, since=995.0), 1_000.0, config) == 995.0
    assert counting_start(BreakerState(HALF_OPEN, since=900.0), 1_000.0, config) == 900.0
    assert counting_start(BreakerState(OPEN, since=800.0), 1_000.0, config) == 800.0
