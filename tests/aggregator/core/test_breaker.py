"""Pure unit tests for the breaker state machine (aggregator/core/breaker.py): injected times only.
Worked transitions first, then property tests (hypothesis) with arbitrary states, counts, clocks
and configurations, and of the guard on the share of open breakers (limit_open_share)."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.core.breaker import (
    BreakerCalls,
    BreakerConfig,
    Transition,
    evaluate,
    limit_open_share,
    open_duration,
)
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, STATES, BreakerState
from gatewayz_protocol.names import PROVIDER_NAME_RE
from tests.support.strategies import BREAKER_STATES, CLOCKS, property_settings

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


def test_the_default_configuration_is_the_documented_one() -> None:
    # docs/guides/circuit-breaker.md: >= 20 calls at a failure rate >= 0.5 in the last 8 s (1 s
    # on a wake), open 30 s doubling up to 300 s, 5 trial calls within 60 s, every provider may
    # open (max-open share 1.0); docs/guides/semantics.md: a 429 is a failure for the breaker.
    assert BreakerConfig() == BreakerConfig(
        min_calls=20,
        failure_rate=0.5,
        open_seconds=30.0,
        max_open_seconds=300.0,
        half_open_calls=5,
        half_open_timeout_seconds=60.0,
        rate_limited_is_failure=True,
        max_open_share=1.0,
        window_seconds=8.0,
        recent_window_seconds=1.0,
    )


def test_configs_calls_and_transitions_are_immutable() -> None:
    transition = evaluate(BreakerState(), BreakerCalls(0, 20), T0, CONFIG)
    assert transition is not None
    with pytest.raises(FrozenInstanceError):
        CONFIG.min_calls = 1  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        transition.calls.failures = 0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        transition.reason = ""  # type: ignore[misc]


@pytest.mark.parametrize(
    ("calls", "total", "rate"),
    [(BreakerCalls(0, 0), 0, 0.0), (BreakerCalls(3, 1), 4, 0.25), (BreakerCalls(0, 7), 7, 1.0)],
)
def test_the_failure_rate_of_breaker_calls(calls: BreakerCalls, total: int, rate: float) -> None:
    assert (calls.total, calls.failure_rate) == (total, rate)  # no calls: no failure rate, 0


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
    assert transition.calls == BreakerCalls(0, 0)  # judged on time, not on calls


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
    from aggregator.core.breaker import counting_start

    config = BreakerConfig(window_seconds=10.0)
    assert counting_start(BreakerState(CLOSED, since=0.0), 1_000.0, config) == 990.0
    assert counting_start(BreakerState(CLOSED, since=995.0), 1_000.0, config) == 995.0
    assert counting_start(BreakerState(HALF_OPEN, since=900.0), 1_000.0, config) == 900.0
    assert counting_start(BreakerState(OPEN, since=800.0), 1_000.0, config) == 800.0


# -- properties --------------------------------------------------------------------------------

BREAKER_CALLS = st.builds(BreakerCalls, st.integers(0, 10**9), st.integers(0, 10**9))


@st.composite
def breaker_configs(draw: st.DrawFn) -> BreakerConfig:
    """Any configuration AggregatorSettings would accept."""
    open_seconds = draw(st.floats(1e-3, 1e6))
    return BreakerConfig(
        min_calls=draw(st.integers(1, 1000)),
        failure_rate=draw(st.floats(1e-6, 1.0)),
        open_seconds=open_seconds,
        max_open_seconds=open_seconds + draw(st.floats(0.0, 1e7)),
        half_open_calls=draw(st.integers(1, 100)),
        half_open_timeout_seconds=draw(st.floats(1e-3, 1e6)),
        rate_limited_is_failure=draw(st.booleans()),
        max_open_share=draw(st.floats(0.0, 1.0)),
        window_seconds=draw(st.floats(1e-3, 1e6)),
    )


@property_settings(1000)
@given(state=BREAKER_STATES, calls=BREAKER_CALLS, now=CLOCKS, config=breaker_configs())
def test_breaker_transitions_are_single_epoch_steps(
    state: BreakerState, calls: BreakerCalls, now: float, config: BreakerConfig
) -> None:
    transition = evaluate(state, calls, now, config)
    if state.forced:
        assert transition is None
        return
    if transition is None:
        return
    assert transition.old == state
    assert transition.new.epoch == state.epoch + 1
    assert transition.new.open_until >= state.open_until
    assert transition.new.state in STATES and transition.new.state != state.state
    assert not transition.new.forced
    assert (state.state, transition.new.state) in {
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (HALF_OPEN, OPEN),
    }
    if transition.new.state == OPEN:
        assert transition.new.consecutive_opens == state.consecutive_opens + 1
        assert transition.new.open_until >= now + open_duration(
            transition.new.consecutive_opens, config
        ) or math.isinf(transition.new.open_until)
    if transition.new.state == CLOSED:
        assert transition.new.consecutive_opens == 0


@property_settings(300)
@given(
    start=BREAKER_STATES.map(lambda s: replace(s, forced=False)),
    steps=st.lists(st.tuples(BREAKER_CALLS, st.floats(-1e3, 1e6)), min_size=1, max_size=30),
    now=CLOCKS,
    config=breaker_configs(),
)
def test_breaker_runs_keep_epochs_and_deadlines_monotone(
    start: BreakerState,
    steps: list[tuple[BreakerCalls, float]],
    now: float,
    config: BreakerConfig,
) -> None:
    """Applying evaluate() step after step, with a clock that may also jump backwards."""
    state = start
    for calls, dt in steps:
        now += dt
        transition = evaluate(state, calls, now, config)
        if transition is None:
            continue
        assert transition.new.epoch == state.epoch + 1
        assert transition.new.open_until >= state.open_until
        state = transition.new
    assert state.epoch >= start.epoch
    assert state.open_until >= start.open_until


@property_settings(300)
@given(state=BREAKER_STATES.map(lambda s: replace(s, forced=True)), data=st.data())
def test_forced_breakers_never_transition(state: BreakerState, data: st.DataObject) -> None:
    config = data.draw(breaker_configs())
    for _ in range(5):
        calls, now = data.draw(BREAKER_CALLS), data.draw(CLOCKS)
        assert evaluate(state, calls, now, config) is None


@property_settings(300)
@given(
    current=st.dictionaries(
        st.from_regex(PROVIDER_NAME_RE, fullmatch=True), BREAKER_STATES, max_size=12
    ),
    data=st.data(),
)
def test_open_share_guard_only_ever_suppresses_openings(
    current: dict[str, BreakerState], data: st.DataObject
) -> None:
    config = data.draw(breaker_configs())
    planned = []
    for name, state in sorted(current.items()):
        transition = evaluate(state, data.draw(BREAKER_CALLS), data.draw(CLOCKS), config)
        if transition is not None:
            planned.append((name, transition))
    kept, suppressed = limit_open_share(planned, current, config.max_open_share)
    assert sorted(kept + suppressed, key=lambda item: item[0]) == planned
    assert all(t.old.state == CLOSED and t.new.state == OPEN for _, t in suppressed)
    limit = math.floor(config.max_open_share * len(current) + 1e-9)
    not_admitting = sum(1 for s in current.values() if s.state != CLOSED)
    after = not_admitting + sum((t.new.state != CLOSED) - (t.old.state != CLOSED) for _, t in kept)
    assert after <= max(limit, not_admitting)
    if config.max_open_share == 1.0:
        assert suppressed == []


def _opening(name: str, successes: int, failures: int) -> tuple[str, Transition]:
    transition = evaluate(BreakerState(), BreakerCalls(successes, failures), T0, CONFIG)
    assert transition is not None and transition.new.state == OPEN
    return name, transition


def test_the_guard_opens_exactly_the_share_of_providers_the_worst_first() -> None:
    # 50 closed providers, all failing: 58% of 50 is 29 (exactly; in floating point 0.58 * 50
    # is 28.999999999999996). Failure rates 100/100, 100/101, ... 100/149: p00 is the worst.
    names = [f"p{i:02d}" for i in range(50)]
    planned = [_opening(name, i, 100) for i, name in enumerate(names)]
    kept, suppressed = limit_open_share(planned, dict.fromkeys(names, BreakerState()), 0.58)
    assert [name for name, _ in kept] == names[:29]
    assert [name for name, _ in suppressed] == names[29:]


def test_the_guard_counts_breakers_not_admitting_traffic_and_those_closing_now() -> None:
    half = BreakerState(HALF_OPEN, T0 - 10.0, 2, T0 - 10.0, 1)
    current = {"h": half, "x": BreakerState(), "y": BreakerState(), "z": BreakerState()}
    opening_x, opening_y = _opening("x", 0, 20), _opening("y", 4, 16)  # rates 1.0 and 0.8
    # a half-open breaker reopening still admits nothing: 1 of 4 + x = 2, the limit (0.5 * 4)
    reopening = evaluate(half, BreakerCalls(0, 5), T0, CONFIG)
    assert reopening is not None and reopening.new.state == OPEN
    planned = [("h", reopening), opening_x, opening_y]
    kept, suppressed = limit_open_share(planned, current, 0.5)
    assert (kept, suppressed) == ([("h", reopening), opening_x], [opening_y])
    # h closing in the same cycle frees its one place: h and o of 4, - h + x = 2, y held back
    current["o"] = BreakerState(OPEN, T0 - 5.0, 1, T0 + 25.0, 1)
    del current["z"]
    closing = evaluate(half, BreakerCalls(5, 0), T0, CONFIG)
    assert closing is not None and closing.new.state == CLOSED
    planned = [("h", closing), opening_x, opening_y]
    assert limit_open_share(planned, current, 0.5) == ([("h", closing), opening_x], [opening_y])


# -- woken breakers (evaluate_woken, recent_start) ----------------------------------------------


def test_recent_start_is_the_recent_window_since_the_last_transition_at_most() -> None:
    from aggregator.core.breaker import counting_start, recent_start

    closed = BreakerState(CLOSED, since=T0 - 100)
    assert recent_start(closed, T0, CONFIG) == T0 - 1.0  # the default recent window, 1 s
    assert counting_start(closed, T0, CONFIG) == T0 - 8.0  # the default breaker window, 8 s
    fresh = BreakerState(CLOSED, since=T0 - 0.25)
    assert recent_start(fresh, T0, CONFIG) == T0 - 0.25
    half = BreakerState(HALF_OPEN, since=T0 - 100, epoch=2)
    assert recent_start(half, T0, CONFIG) == T0 - 100


def test_woken_closed_breaker_opens_on_its_recent_calls() -> None:
    """8 s of 50 calls/s, the last 0.6 s failing: 30 of 400 calls in the breaker window (7.5%),
    30 of 50 in the last second (60%): a cycle keeps it closed, a wake opens it."""
    from aggregator.core.breaker import evaluate_woken

    closed = BreakerState(CLOSED, since=0.0, epoch=3)
    calls, recent = BreakerCalls(370, 30), BreakerCalls(20, 30)
    assert evaluate(closed, calls, T0, CONFIG) is None
    transition = evaluate_woken(closed, calls, recent, T0, CONFIG)
    assert transition is not None
    assert transition.new == BreakerState(OPEN, T0, 4, T0 + 30.0, 1)
    assert transition.calls == recent
    assert transition.reason == "failure rate 0.600 >= 0.5 over 50 calls in the last 1s (woken)"


def test_woken_breaker_needs_min_calls_and_the_rate_too() -> None:
    from aggregator.core.breaker import evaluate_woken

    closed = BreakerState(CLOSED)
    assert evaluate_woken(closed, BreakerCalls(0, 19), BreakerCalls(0, 19), T0, CONFIG) is None
    assert evaluate_woken(closed, BreakerCalls(300, 30), BreakerCalls(21, 19), T0, CONFIG) is None
    off = replace(CONFIG, recent_window_seconds=0.0)
    assert evaluate_woken(closed, BreakerCalls(300, 30), BreakerCalls(0, 50), T0, off) is None


@property_settings(500)
@given(BREAKER_STATES, st.integers(0, 100), st.integers(0, 100), st.integers(0, 100),
       st.integers(0, 100), CLOCKS)  # fmt: skip
def test_woken_evaluation_is_the_cycles_except_a_closed_breaker_may_open_sooner(
    state: BreakerState, ok: int, failed: int, recent_ok: int, recent_failed: int, now: float
) -> None:
    """Whatever the state: an open, half-open or forced breaker is decided exactly as a cycle
    decides it (recovery keeps its semantics); a closed one as a cycle would, or opened on its
    recent calls, never anything else."""
    from aggregator.core.breaker import evaluate_woken

    calls, recent = BreakerCalls(ok, failed), BreakerCalls(recent_ok, recent_failed)
    cycle = evaluate(state, calls, now, CONFIG)
    woken = evaluate_woken(state, calls, recent, now, CONFIG)
    if state.forced or state.state != CLOSED or cycle is not None:
        assert woken == cycle
    elif woken is not None:
        assert woken.new.state == OPEN
        assert recent.total >= CONFIG.min_calls and recent.failure_rate >= CONFIG.failure_rate
    else:
        assert recent.total < CONFIG.min_calls or recent.failure_rate < CONFIG.failure_rate
