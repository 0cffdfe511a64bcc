"""Scope (client/_timing.py): a block timed or watched as a context manager and as a decorator,
each decorated call with a scope of its own, the exception passed on. Injected clock."""

from __future__ import annotations

import pytest

from client._timing import Scope


class Clock:
    def __init__(self) -> None:
        self.now = 5.0

    def __call__(self) -> float:
        return self.now


def test_a_block_is_entered_timed_and_left_with_its_exception() -> None:
    clock = Clock()
    seen: list[object] = []
    scope = Scope(
        clock, lambda seconds, exc: seen.append((seconds, exc)), lambda: seen.append("in")
    )
    with scope as entered:
        assert entered is scope
        clock.now += 1.25
    error = ValueError("x")
    with pytest.raises(ValueError), scope:
        clock.now += 0.5
        raise error
    assert seen == ["in", (1.25, None), "in", (0.5, error)]


def test_a_decorated_function_gets_a_scope_per_call() -> None:
    clock = Clock()
    seen: list[float] = []

    @Scope(clock, lambda seconds, _: seen.append(seconds))
    def outer(depth: int) -> int:
        clock.now += 1.0
        if depth:
            inner = outer(depth - 1)  # the same decorated function, nested: its own start
            clock.now += 1.0
            return inner + 1
        return 0

    assert outer(1) == 1
    assert outer.__name__ == "outer"
    assert seen == [1.0, 3.0]


def test_a_clock_going_back_times_zero() -> None:
    clock = Clock()
    seen: list[float] = []
    with Scope(clock, lambda seconds, _: seen.append(seconds)):
        clock.now -= 3.0
    assert seen == [0.0]
