"""The breaker refresher: its schedule on an injected clock (no sleeps), and, on a real
redis-server, allow() following a breaker that opened while the flusher's write is held."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import pytest
import redis

from client import MetricsClient
from client._breaker_gate import BreakerGate
from client._breaker_refresh import BreakerRefresher
from client._settings import ClientSettings
from gatewayz_protocol.keys import Keys
from tests.client.test_breaker_gate import Clock, FakeRedisSide


def refresher_over(side: FakeRedisSide, clock: Clock) -> tuple[BreakerRefresher, BreakerGate]:
    refresher = BreakerRefresher(monotonic=clock)
    gate = BreakerGate(side, "w1", refresh_seconds=1.0, monotonic=clock, on_schedule=lambda: None)
    refresher.watch(gate)
    return refresher, gate


def test_it_sleeps_until_the_first_cached_state_falls_due() -> None:
    side, clock = FakeRedisSide(), Clock()
    refresher, gate = refresher_over(side, clock)
    assert refresher.seconds_until_due() == math.inf  # nothing cached: nothing to refresh
    gate.allow("p")
    clock.now += 0.3
    assert refresher.seconds_until_due() == pytest.approx(0.7)
    side.known["p"] = "open"
    clock.now += 0.7
    assert refresher.seconds_until_due() == 0.0
    refresher.refresh_once()
    assert side.fetches == [["p"], ["p"]]  # learned, then refreshed once
    assert gate.allow("p") is False
    assert refresher.seconds_until_due() == pytest.approx(1.0)


def test_a_refresh_redis_did_not_answer_is_tried_again_an_interval_later_not_at_once() -> None:
    side, clock = FakeRedisSide(), Clock()
    refresher, gate = refresher_over(side, clock)
    gate.allow("p")
    clock.now += 1.0
    side.down = True
    refresher.refresh_once()
    assert gate.seconds_until_refresh() == 0.0  # the state is still due...
    assert refresher.seconds_until_due() == pytest.approx(1.0)  # ...but no busy loop
    clock.now += 1.0
    side.down = False
    side.known["p"] = "open"
    refresher.refresh_once()
    assert gate.allow("p") is False
    assert refresher.seconds_until_due() == pytest.approx(1.0)


def test_the_gate_says_when_its_schedule_changes() -> None:
    side, clock = FakeRedisSide(), Clock()
    calls: list[str] = []
    gate = BreakerGate(side, "w1", monotonic=clock, on_schedule=lambda: calls.append("x"))
    gate.hurry(["p"], until=clock.now + 5)  # not cached: nothing to hurry, nothing said
    assert calls == []
    gate.allow("p")
    gate.allow("p")  # cached already: the schedule did not change
    assert calls == ["x"]
    gate.hurry(["p"], until=clock.now + 5)
    assert calls == ["x", "x"]
    assert gate.seconds_until_refresh() == pytest.approx(0.1)


def test_the_thread_starts_with_the_first_state_and_stops_with_the_client(
    make_client: Callable[..., MetricsClient],
) -> None:
    client = make_client()
    threads = {t.name for t in threading.enumerate()}
    assert "gatewayz-metrics-breakers" not in threads  # constructing starts no thread
    client.allow("openrouter")
    names = [t.name for t in threading.enumerate()]
    assert names.count("gatewayz-metrics-breakers") >= 1
    refresher = client._refresher
    assert refresher._thread is not None
    client.close(timeout=1.0)
    assert not refresher._thread.is_alive()


def _first_refusal(client: MetricsClient, provider: str, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        if not client.allow(provider):
            return time.monotonic()
        time.sleep(0.01)  # polled, as a gateway's requests would ask
    return None


def test_allow_follows_a_breaker_opened_while_the_flushers_write_is_held(
    private_redis: redis.Redis,
) -> None:
    """Found by the torture harness (cluster seed 230015): a CLIENT PAUSE WRITE held the
    flusher's MULTI/EXEC, and the breaker cache, refreshed on that thread, kept answering
    True for the whole pause. Reads are not paused: the refresher's are answered."""
    url = "redis://{host}:{port}/0".format(**private_redis.connection_pool.connection_kwargs)
    settings = ClientSettings(
        redis_url=url, namespace="refresh", socket_timeout_seconds=6.0, handle_sigterm=False
    )
    client = MetricsClient(settings=settings)
    try:
        assert client.allow("openrouter")  # cached: closed
        client.record("openrouter", 0.01, 200)
        assert client.flush(timeout=5.0)
        private_redis.hset(Keys("refresh").breaker("openrouter"), "state", "open")
        opened = time.monotonic()
        private_redis.execute_command("CLIENT", "PAUSE", "4000", "WRITE")
        try:
            client.record("openrouter", 0.01, 200)  # the flusher's next write is held
            refused = _first_refusal(client, "openrouter", opened + 4.0)
        finally:
            private_redis.execute_command("CLIENT", "UNPAUSE")
        assert refused is not None, "allow() answered True for the whole pause"
        assert refused - opened <= 1.5  # the refresh interval (1 s) and the read
    finally:
        client.close(timeout=5.0)
