"""BreakerGate with fake I/O and an injected clock: when allow() costs a round trip and what it
answers when Redis is gone."""

from __future__ import annotations

import pytest

from client.breaker_gate import BreakerGate


class FakeRedisSide:
    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.permits_left = 2
        self.fetches: list[list[str]] = []
        self.permit_calls = 0
        self.down = False

    def fetch(self, providers: list[str]) -> dict[str, str]:
        if self.down:
            raise ConnectionError("redis down")
        self.fetches.append(list(providers))
        return {p: self.states.get(p, "closed") for p in providers}

    def take(self, provider: str, holder: str) -> tuple[str, bool]:
        if self.down:
            raise ConnectionError("redis down")
        self.permit_calls += 1
        state = self.states.get(provider, "closed")
        if state != "half_open" or self.permits_left == 0:
            return state, False
        self.permits_left -= 1
        return state, True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def side() -> FakeRedisSide:
    return FakeRedisSide()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(side: FakeRedisSide, clock: Clock) -> BreakerGate:
    return BreakerGate(side.fetch, side.take, "w1", refresh_seconds=1.0, monotonic=clock)


def test_closed_costs_one_lookup_then_none(gate: BreakerGate, side: FakeRedisSide) -> None:
    assert all(gate.allow("openrouter") for _ in range(1000))
    assert side.fetches == [["openrouter"]]
    assert side.permit_calls == 0


def test_open_rejects_without_io(gate: BreakerGate, side: FakeRedisSide) -> None:
    side.states["openrouter"] = "open"
    assert not any(gate.allow("openrouter") for _ in range(100))
    assert len(side.fetches) == 1
    assert side.permit_calls == 0


def test_refresh_picks_up_a_new_state_only_when_due(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    assert gate.allow("openrouter")
    side.states["openrouter"] = "open"
    clock.now += 0.9
    gate.refresh_if_due()
    assert gate.allow("openrouter")  # not due yet: still the cached closed
    clock.now += 0.1
    gate.refresh_if_due()
    assert not gate.allow("openrouter")
    assert side.fetches == [["openrouter"], ["openrouter"]]


def test_half_open_grants_permits_then_remembers_the_denial(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    side.states["p"] = "half_open"
    answers = [gate.allow("p") for _ in range(10)]
    assert answers == [True, True] + [False] * 8
    assert side.permit_calls == 3  # two grants, one denial, then the cached denial
    clock.now += 1.0  # the denial is remembered until the next refresh interval
    assert gate.allow("p") is False
    assert side.permit_calls == 4


def test_half_open_answer_follows_a_state_change_seen_by_the_permit_script(
    gate: BreakerGate, side: FakeRedisSide
) -> None:
    side.states["p"] = "half_open"
    assert gate.allow("p")
    side.states["p"] = "closed"
    assert gate.allow("p")  # permit script said closed: no permit needed any more
    assert gate.state("p") == "closed"
    calls = side.permit_calls
    assert gate.allow("p")
    assert side.permit_calls == calls


def test_fails_open_with_no_known_state(gate: BreakerGate, side: FakeRedisSide) -> None:
    side.down = True
    assert gate.allow("openrouter")
    assert gate.state("openrouter") is None


def test_keeps_the_last_known_state_while_redis_is_down(
    gate: BreakerGate, side: FakeRedisSide, clock: Clock
) -> None:
    side.states["p"] = "open"
    assert not gate.allow("p")
    side.down = True
    clock.now += 5
    gate.refresh_if_due()
    assert not gate.allow("p")
    side.states["q"] = "half_open"
    side.down = False
    assert gate.allow("q")  # learned half_open while up, and got one of the two permits
    side.down = True
    clock.now += 5
    assert gate.allow("q") is False  # half-open without Redis: no permit can be had


def test_invalid_provider_names_are_let_through_without_io(
    gate: BreakerGate, side: FakeRedisSide
) -> None:
    assert gate.allow("bad name}")
    assert side.fetches == []
