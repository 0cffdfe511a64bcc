"""The worker's wake rule (client/_wake.py), pure with an injected clock: when a provider's
failures make a worker ask for a breaker evaluation, how often, what it never does while calls
succeed, and how a batch is marked."""

from __future__ import annotations

from client._batch import build_batch
from client._ledger import NO_NOTES
from client._wake import BreakerWakes, WakeDetector, WakeRule, batch_calls
from gatewayz_protocol.partitions import CALLER_ERROR, FAILURE, RATE_LIMITED, SUCCESS
from gatewayz_protocol.wakes import wake_commands

RULE = WakeRule()  # 5 failures, half the calls, in 1 s; once a second; hurry 5 s


def _flush(
    detector: WakeDetector, now: float, ok: int = 0, failed: int = 0, name: str = "p"
) -> list[str]:
    return detector.observe({name: (ok + failed, failed)}, now)


def test_wakes_once_five_failures_are_half_the_calls_of_the_last_second() -> None:
    detector = WakeDetector(RULE)
    assert _flush(detector, 0.0, ok=10, failed=2) == []  # 2 of 12
    assert _flush(detector, 0.1, failed=2) == []  # 4 of 14
    assert _flush(detector, 0.2, failed=1) == []  # 5 failures, but of 15 calls
    # the flush of 0.0 leaves the window (1 s): 2 + 1 + 3 = 6 failures of 6 calls
    assert _flush(detector, 1.0, failed=3) == ["p"]


def test_rule_counts_exactly() -> None:
    detector = WakeDetector(RULE)
    # calls in the window: 4 ok + 4 failed: 4 failures (< 5)
    assert _flush(detector, 0.0, ok=4, failed=4) == []
    # 5 failures of 10 calls: exactly half -> wake
    assert _flush(detector, 0.5, ok=1, failed=1) == ["p"]


def test_share_below_half_never_wakes() -> None:
    detector = WakeDetector(RULE)
    for step in range(50):  # 6 failures and 7 successes every 0.1 s: 46%
        assert _flush(detector, step * 0.1, ok=7, failed=6) == []


def test_at_most_once_per_second_then_again() -> None:
    detector = WakeDetector(RULE)
    woken = [t / 10 for t in range(40) if _flush(detector, t / 10, failed=5)]
    assert woken == [0.0, 1.0, 2.0, 3.0]


def test_successes_alone_cost_nothing() -> None:
    detector = WakeDetector(RULE)
    for step in range(100):
        assert detector.observe({f"p{step % 7}": (50, 0)}, step * 0.05) == []
    assert len(detector) == 0  # no provider without failures is followed


def test_disabled_rule_never_wakes() -> None:
    detector = WakeDetector(WakeRule(min_failures=0))
    assert _flush(detector, 0.0, failed=1000) == []


def test_quiet_providers_are_forgotten_and_the_state_is_bounded() -> None:
    detector = WakeDetector(WakeRule(max_providers=3))
    for index in range(10):
        detector.observe({f"p{index}": (1, 1)}, float(index) / 100)
    assert len(detector) == 3
    _flush(detector, 100.0, ok=1, name="other")  # all windows emptied long ago
    assert len(detector) == 0


def _event(provider: str, outcome: int, at: float) -> tuple[str, float, float, int, int, int, None]:
    return (provider, at, 0.2, outcome, 0, 0, None)


def test_batch_calls_counts_what_the_breaker_counts() -> None:
    events = [
        _event("a", SUCCESS, 1.0),
        _event("a", FAILURE, 1.0),
        _event("a", RATE_LIMITED, 1.0),
        _event("a", CALLER_ERROR, 1.0),  # never a breaker call
        _event("b", CALLER_ERROR, 1.0),
    ]
    batch = build_batch(events, 1, NO_NOTES)
    assert batch_calls(batch.providers) == {"a": (3, 2)}


def test_mark_names_the_woken_providers_and_hurries_them() -> None:
    now = [10.0]
    hurried: list[tuple[list[str], float]] = []
    wakes = BreakerWakes(
        RULE, "s", lambda: now[0], lambda names, until: hurried.append((list(names), until))
    )
    healthy = build_batch([_event("a", SUCCESS, 1.0)] * 5, 1, NO_NOTES)
    assert wakes.mark(healthy) is healthy  # nothing to wake: the very batch
    events = [_event("a", FAILURE, 1.0)] * 5 + [_event("b", SUCCESS, 1.0)]
    failing = build_batch(events, 9, NO_NOTES)
    marked = wakes.mark(failing)
    assert marked.extra == tuple(wake_commands("s", ["a"]))
    assert marked.providers == failing.providers and marked.first_id == failing.first_id
    assert hurried == [(["a"], 15.0)]
