"""EventBuffer: bounded, first in first out, evictions reported. Pure, no Redis."""

from __future__ import annotations

from client._buffer import EventBuffer
from client._events import Event


def _event(i: int) -> Event:
    return ("p", float(i), 0.1, 0, 0, 0, None)


def test_appends_report_the_size_and_take_returns_the_oldest_first() -> None:
    evictions: list[int] = []
    buffer = EventBuffer(10, lambda: evictions.append(1))
    assert [buffer.append(_event(i)) for i in range(4)] == [1, 2, 3, 4]
    assert buffer.take(3) == [_event(0), _event(1), _event(2)]
    assert len(buffer) == 1
    assert buffer.take(100) == [_event(3)]
    assert buffer.take(100) == []
    assert buffer.appended == 4
    assert evictions == []


def test_a_full_buffer_evicts_the_oldest_and_says_so() -> None:
    evictions: list[int] = []
    buffer = EventBuffer(3, lambda: evictions.append(1))
    sizes = [buffer.append(_event(i)) for i in range(5)]
    assert sizes == [1, 2, 3, 3, 3]
    assert len(evictions) == 2
    assert buffer.appended == 5
    assert buffer.take(10) == [_event(2), _event(3), _event(4)]
