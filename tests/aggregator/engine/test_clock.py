"""The aggregator's "now" (aggregator/engine/clock.py): Redis's clock through a measured offset,
or an injected clock as it is. Pure: scripted clocks, no Redis."""

from __future__ import annotations

from collections.abc import Iterator

from aggregator.engine.clock import CycleClock


def _ticks(*times: float) -> Iterator[float]:
    yield from times


def test_now_is_the_local_clock_plus_the_offset_measured_at_the_midpoint() -> None:

    local = _ticks(100.0, 100.2, 100.2, 105.0)
    redis_calls: list[int] = []

    def redis_time() -> tuple[int, int]:
        redis_calls.append(1)
        return 130, 600_000  # 130.6: made at the local midpoint, 100.1

    clock = CycleClock(redis_time, local=lambda: next(local))
    assert clock.offset == 0.0
    assert clock.measure() == 100.2 + 30.5
    assert clock.offset == 30.5
    assert clock.now() == 105.0 + 30.5  # no round trip
    assert len(redis_calls) == 1


def test_an_injected_clock_is_taken_as_it_is() -> None:

    def no_redis() -> tuple[int, int]:
        raise AssertionError("an injected clock measures nothing")

    clock = CycleClock(no_redis, injected=lambda: 42.0)
    assert clock.measure() == 42.0
    assert clock.now() == 42.0
    assert clock.offset is None
