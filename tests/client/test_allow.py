"""allow() and track(guard=True) against a real Redis, with several OS processes racing."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier

import pytest
import redis

from aggregator.engine.writer import PlannedWrite, StateWriter
from client import CircuitOpenError, MetricsClient
from devtools.redis_server import free_port, start_redis
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.listeners import BrokenServer

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]


def set_state(
    r: redis.Redis, keys: Keys, provider: str, state: str, permits: int = 5, permit_s: float = 60
) -> None:
    """What the aggregator's transition writes, for a test that does not run one."""
    writer = StateWriter(r, keys, 3600, permits=permits, permit_seconds=permit_s)
    epoch = int(r.hget(keys.breaker(provider), "epoch") or 0)
    new = BreakerState(state, time.time(), epoch + 1)
    write = PlannedWrite(provider, epoch, new, f"test>{state}")
    assert writer.begin(None).transitions([write]).send().results == [1]


def _race(redis_url: str, namespace: str, barrier: Barrier, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    barrier.wait(timeout=30)
    granted = sum(metrics.allow("flaky") for _ in range(50))
    results.put(granted)
    metrics.close(timeout=5)


def test_exactly_n_permits_across_racing_processes(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    set_state(r, keys, "flaky", "half_open", permits=5)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    workers = [
        context.Process(target=_race, args=(redis_url, namespace, barrier, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    granted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sum(granted) == 5
    assert r.zcard(keys.permits("flaky")) == 5
    rejected = int(r.hget(keys.totals("flaky"), "breaker_rejected") or 0)
    assert rejected == 4 * 50 - 5


def test_expired_permits_return(make_client: MakeClient, r: redis.Redis, keys: Keys) -> None:
    set_state(r, keys, "flaky", "half_open", permits=2, permit_s=0.3)
    first = make_client()
    assert [first.allow("flaky") for _ in range(3)] == [True, True, False]
    taken_at = time.monotonic()
    deadline = taken_at + 10
    while not make_client().allow("flaky"):  # a fresh worker, no cached denial
        assert time.monotonic() < deadline, "permit never came back"
        time.sleep(0.05)
    assert time.monotonic() - taken_at >= 0.25  # not before the permit's lifetime
    assert r.zcard(keys.permits("flaky")) <= 2


def test_a_new_half_open_period_starts_with_fresh_permits(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    set_state(r, keys, "flaky", "half_open", permits=1)
    assert make_client().allow("flaky")
    assert not make_client().allow("flaky")
    set_state(r, keys, "flaky", "open")
    set_state(r, keys, "flaky", "half_open", permits=1)
    assert make_client().allow("flaky")


def test_guarded_track_raises_without_running_the_block_and_counts_it(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    set_state(r, keys, "down", "open")
    metrics = make_client()
    ran = False
    with pytest.raises(CircuitOpenError, match="'down' is open"), metrics.track("down", guard=True):
        ran = True
    assert not ran
    assert metrics.allow("down") is False
    with metrics.track("up", guard=True) as call:
        call.tokens = 1
    assert metrics.flush(timeout=5)
    assert r.hget(keys.totals("down"), "breaker_rejected") == b"2"
    assert r.hget(keys.totals("up"), "n:success") == b"1"


def test_fails_open_without_redis_and_keeps_the_last_known_state(namespace: str) -> None:
    nowhere = MetricsClient(redis_url=f"redis://127.0.0.1:{free_port()}/0", namespace=namespace)
    assert nowhere.allow("openrouter")  # no state ever known: fail open
    nowhere.close(timeout=0.1)

    server = start_redis(allow_fake=True)
    try:
        connection = redis.Redis.from_url(server.url)
        set_state(connection, Keys(namespace), "flaky", "open")
        connection.close()
        metrics = MetricsClient(redis_url=server.url, namespace=namespace)
        assert metrics.allow("flaky") is False
        assert metrics.allow("healthy") is True
        server.kill()
        assert metrics.allow("flaky") is False  # last known state
        assert metrics.allow("healthy") is True
        assert metrics.allow("never-seen") is True  # nothing known: fail open
        metrics.close(timeout=0.1)
    finally:
        server.stop()


def test_allow_async_never_makes_the_event_loop_wait_for_redis(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    hanging = BrokenServer(hang=True)
    metrics = MetricsClient(redis_url=hanging.redis_url, namespace="silent")

    async def allow_while_ticking(provider: str) -> tuple[bool, int]:
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
        allowed = await metrics.allow_async(provider)
        during = ticks - started
        done.set()
        await task
        return allowed, during

    try:
        # Learning the state waits for Redis (up to allow_timeout_seconds): in another thread,
        # while the loop goes on; the answer fails open.
        allowed, ticks = asyncio.run(allow_while_ticking("openrouter"))
        assert allowed is True
        assert ticks > 0, "the event loop did not run while allow_async() waited"
    finally:
        metrics.close(timeout=0.1)
        hanging.close()

    live = make_client()
    set_state(r, keys, "down", "open")
    assert asyncio.run(live.allow_async("down")) is False
    assert asyncio.run(live.allow_async("up")) is True
    assert live.flush(timeout=5)
    assert r.hget(keys.totals("down"), "breaker_rejected") == b"1"
