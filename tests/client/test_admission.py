"""ProviderAdmission over a registry in memory, with an injected clock: what it asks, what it
remembers, and what it answers while Redis is down."""

from __future__ import annotations

import pytest
import redis

from client._admission import ASK_AGAIN_SECONDS, REMEMBER_ADMITTED_SECONDS, ProviderAdmission


class FakeRegistry:
    """The registry script's rule (admit while fewer than the cap), counting its calls."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.asked: list[list[str]] = []
        self.down = False

    def admit(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        if self.down:
            raise redis.ConnectionError("redis down")
        self.asked.append(list(providers))
        answers = {}
        for name in providers:
            if name not in self.names and len(self.names) < cap:
                self.names.add(name)
            answers[name] = name in self.names
        return answers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def admission(registry: FakeRegistry, clock: Clock, cap: int = 2) -> ProviderAdmission:
    return ProviderAdmission(registry, cap, clock, monotonic=clock)


def test_each_provider_is_asked_once_then_remembered(registry: FakeRegistry, clock: Clock) -> None:
    gate = admission(registry, clock)
    assert gate.refused({"a", "b", "c"}) == {"c"}
    assert registry.asked == [["a", "b", "c"]]
    for _ in range(100):
        assert gate.refused({"a", "b", "c"}) == {"c"}
    assert len(registry.asked) == 1


def test_a_refusal_is_asked_again_after_a_while(registry: FakeRegistry, clock: Clock) -> None:
    gate = admission(registry, clock)
    assert gate.refused({"a", "b", "c"}) == {"c"}
    registry.names.discard("a")  # the registry pruned an idle provider: a slot is free
    clock.now += ASK_AGAIN_SECONDS - 1
    assert gate.refused({"c"}) == {"c"}  # still the recent answer
    clock.now += 1
    assert gate.refused({"c"}) == set()
    assert registry.asked[-1] == ["c"]


def test_nobody_is_refused_while_redis_cannot_answer(registry: FakeRegistry, clock: Clock) -> None:
    gate = admission(registry, clock)
    assert gate.refused({"a", "b", "c"}) == {"c"}
    registry.down = True
    assert gate.refused({"c", "d"}) == {"c"}  # "c" was refused a moment ago
    clock.now += ASK_AGAIN_SECONDS
    # The refusal is old and Redis cannot confirm it: "c" is let through, like "d".
    assert gate.refused({"c", "d"}) == set()
    assert gate.refused({"c"}) == set()


def test_an_admission_is_asked_again_after_a_while(registry: FakeRegistry, clock: Clock) -> None:
    gate = admission(registry, clock)
    assert gate.refused({"a"}) == set()
    clock.now += REMEMBER_ADMITTED_SECONDS - 1
    assert gate.refused({"a"}) == set()
    assert len(registry.asked) == 1
    clock.now += 1
    assert gate.refused({"a"}) == set()
    assert registry.asked[-1] == ["a"]


def test_memory_stays_bounded_and_every_refused_name_is_refused(
    registry: FakeRegistry, clock: Clock
) -> None:
    cap = 100
    gate = admission(registry, clock, cap)
    for start in range(0, 10_000, 2_500):  # batches holding more new names than the bound
        names = {f"flood-{i}" for i in range(start, start + 2_500)}
        refused = gate.refused(names)
        assert refused == names - registry.names
        assert len(gate) <= 4 * cap
        clock.now += 1
    assert len(registry.names) == cap
