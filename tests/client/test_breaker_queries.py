"""breaker(), admit() and their async twins against a real Redis: a query that takes nothing (no
half-open permit, no rejection counted), and a denial that says when to retry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from aggregator.engine.writer import PlannedWrite, StateWriter
from client import BreakerStatus, CircuitOpenError, GatewayMetrics, MetricsClient
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.listeners import BrokenServer

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
CHAIN = ("p1", "p2", "p3", "p4", "p5")


def set_breaker(
    r: redis.Redis,
    keys: Keys,
    provider: str,
    state: str,
    *,
    open_until: float = 0.0,
    forced: bool = False,
    permits: int = 5,
) -> None:
    """What the aggregator's (or an operator's) transition writes."""
    writer = StateWriter(r, keys, 3600, permits=permits, permit_seconds=60)
    epoch = int(r.hget(keys.breaker(provider), "epoch") or 0)
    new = BreakerState(state, 1.0, epoch + 1, open_until, 1, forced=forced)
    write = PlannedWrite(provider, epoch, new, f"test>{state}")
    assert writer.begin(None).transitions([write]).send().results == [1]


def _rejected(r: redis.Redis, keys: Keys, provider: str) -> int:
    return int(r.hget(keys.totals(provider), "breaker_rejected") or 0)


def test_filtering_a_half_open_failover_chain_takes_no_permit(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    for provider in CHAIN:
        set_breaker(r, keys, provider, "half_open")
    metrics = make_client()
    for _ in range(20):  # one filter per request
        chain = [p for p in CHAIN if metrics.breaker(p)]
        assert chain == list(CHAIN)  # half-open: each may be admitted
    assert all(metrics.breaker(p).state == "half_open" for p in CHAIN)
    assert [r.zcard(keys.permits(p)) for p in CHAIN] == [0] * 5
    assert metrics.admit("p1")  # the provider actually called: one permit
    assert [r.zcard(keys.permits(p)) for p in CHAIN] == [1, 0, 0, 0, 0]
    assert metrics.flush(timeout=5)
    assert [_rejected(r, keys, p) for p in CHAIN] == [0] * 5


def test_an_open_breaker_says_until_when_and_admit_when_to_retry(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "down", "open", open_until=clock.now + 30.5)
    set_breaker(r, keys, "held", "open", forced=True)
    metrics = make_client(clock=clock)  # deadlines are on the shared clock
    assert metrics.breaker("down") == BreakerStatus(
        "down", "open", False, retry_after_s=30.5, open_until=clock.now + 30.5
    )
    clock.advance(10.25)
    denied = metrics.admit("down")
    assert not denied
    assert (denied.state, denied.retry_after_s) == ("open", 20.25)
    held = metrics.admit("held")
    assert (held.allowed, held.retry_after_s, held.open_until, held.forced) == (
        False, None, None, True,
    )  # fmt: skip
    up = metrics.admit("up")
    assert up == BreakerStatus("up", "closed", True)
    assert metrics.allow("down") is False  # allow() answers as it did
    assert metrics.flush(timeout=5)
    # admit() and allow() count their rejections; breaker() above counted nothing
    assert (_rejected(r, keys, "down"), _rejected(r, keys, "held")) == (2, 1)


def test_a_half_open_denial_says_retry_after_the_refresh(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    set_breaker(r, keys, "trial", "half_open", permits=1)
    metrics = make_client(breaker_refresh_seconds=2.0)
    assert metrics.admit("trial")
    denied = metrics.admit("trial")
    assert (denied.allowed, denied.state) == (False, "half_open")
    assert denied.retry_after_s is not None and 0.0 < denied.retry_after_s <= 2.0
    assert metrics.breaker("trial").allowed is False  # the denial remembered: no permit asked
    assert r.zcard(keys.permits("trial")) == 1


def test_guarded_blocks_raise_with_the_time_to_retry(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "down", "open", open_until=clock.now + 45.0)
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    ran = False
    with pytest.raises(CircuitOpenError) as raised, metrics.track("down", guard=True):
        ran = True
    assert (raised.value.state, raised.value.retry_after_s) == ("open", 45.0)
    with pytest.raises(CircuitOpenError) as raised, gateway.inference("down", "m", guard=True):
        ran = True
    assert (raised.value.provider, raised.value.retry_after_s) == ("down", 45.0)
    assert not ran
    with gateway.inference("up", "m", guard=True) as call:
        call.status_code = 200
    assert call.booked_as == "success"
    assert metrics.flush(timeout=5)
    assert _rejected(r, keys, "down") == 2
    assert r.hget(keys.totals("up"), "n:success") == b"1"


def test_the_async_twins_answer_as_the_sync_ones(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "down", "open", open_until=clock.now + 5.0)
    set_breaker(r, keys, "trial", "half_open")
    metrics = make_client(clock=clock)

    async def ask() -> tuple[BreakerStatus, ...]:
        first = await metrics.breaker_async("down")  # never asked: read in a worker thread
        again = await metrics.breaker_async("down")  # cached: at once
        admitted = await metrics.admit_async("trial")  # a permit: in a worker thread
        denied = await metrics.admit_async("down")
        return first, again, admitted, denied

    first, again, admitted, denied = asyncio.run(ask())
    assert first == again == BreakerStatus("down", "open", False, 5.0, clock.now + 5.0)
    assert (admitted.allowed, denied.allowed, denied.retry_after_s) == (True, False, 5.0)
    assert r.zcard(keys.permits("trial")) == 1
    assert metrics.flush(timeout=5)
    assert _rejected(r, keys, "down") == 1


def test_the_async_twins_never_make_the_event_loop_wait_for_redis() -> None:
    hanging = BrokenServer(hang=True)
    metrics = MetricsClient(redis_url=hanging.redis_url, namespace="silent")

    async def while_ticking(
        ask: Callable[[str], Awaitable[BreakerStatus]], provider: str
    ) -> tuple[Any, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = ticks
        answer = await ask(provider)
        during = ticks - started
        done.set()
        await task
        return answer, during

    try:
        # Reading the state waits for Redis (up to allow_timeout_seconds): in another thread,
        # while the loop goes on; the answer fails open, the state unknown.
        for ask, provider in ((metrics.breaker_async, "p1"), (metrics.admit_async, "p2")):
            status, ticks = asyncio.run(while_ticking(ask, provider))
            assert status == BreakerStatus(provider, None, True)
            assert ticks > 0, f"the event loop did not run while {ask.__name__}() waited"
    finally:
        metrics.close(timeout=0.1)
        hanging.close()
