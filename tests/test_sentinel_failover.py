"""A Sentinel-managed Redis (a master, a replica, three sentinels, all real processes): the
master killed (SIGKILL) or stalled (SIGSTOP) while a worker records; the sentinels promote the
replica and the client and the aggregator follow it by themselves, from a
``redis+sentinel://`` URL."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_sentinel import LocalSentinel, start_sentinel
from devtools.redis_server import local_connection
from gatewayz_transport.connection import connect
from tests.support.load import Load, counted
from tests.support.processes import need_tool, wait_for

NAMESPACE = "sentinel"
PROVIDERS = ["openrouter", "anthropic"]


def _role(port: int) -> bytes:
    """The server's role; nothing while it cannot answer (the sentinels reconfiguring it close
    its connections)."""
    try:
        with local_connection(port) as connection:
            role: bytes = connection.role()[0]
            return role
    except redis.RedisError:
        return b""


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    need_tool("redis-server", "apt-get install redis-server")
    started = start_sentinel(replicas=1)
    yield started
    started.stop()


@pytest.mark.parametrize("fault", ["killed", "stalled"])
def test_the_client_follows_the_master_the_sentinels_promote(
    sentinel: LocalSentinel, fault: str
) -> None:
    """Killed (SIGKILL), or stalled (SIGSTOP) until the sentinels promote its replica and then
    resumed: the old master takes writes until the sentinels turn it into a replica, which
    drops them. The worker finds them missing by its marker on the new master and sends them
    again: nothing is counted twice, and nothing is lost after a kill."""
    old = sentinel.master()
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=sentinel.url, namespace=NAMESPACE, max_buffer=500_000)
    )
    settings = AggregatorSettings(redis_url=sentinel.url, namespace=NAMESPACE)
    aggregator = Aggregator(settings, connect(settings.redis_url, socket_timeout=2.0))
    assert aggregator.run_cycle() is not None
    # Stalled, the old master takes the backlog of the stall when it resumes: at 10,000 calls
    # a second, what it acknowledged fits what a worker keeps (100,000 events); flat out (30,000)
    # it overflows it in a slow run, and what overflows is lost (docs: Reliability).
    load = Load(metrics, PROVIDERS, per_second=30_000 if fault == "killed" else 10_000)
    try:
        time.sleep(0.5)
        assert metrics.flush(timeout=10)
        if fault == "killed":
            old.kill()
            wait_for(lambda: sentinel.master().port != old.port, timeout=30)
        else:
            old.process.send_signal(signal.SIGSTOP)
            try:
                wait_for(lambda: sentinel.master().port != old.port, timeout=30)
            finally:
                old.process.send_signal(signal.SIGCONT)
            wait_for(lambda: _role(old.port) == b"slave", timeout=30)
        time.sleep(0.5)
    finally:
        recorded = load.stop()
    assert metrics.flush(timeout=30)  # found the new master through the sentinels
    stats = metrics.stats()
    metrics.close(timeout=5)
    assert load.errors == [] and stats["dropped"] == 0
    new_master = f"redis://127.0.0.1:{sentinel.master().port}/0"
    for provider in PROVIDERS:
        window, calls = counted(new_master, NAMESPACE, provider)
        # what the old master acknowledged and the new one lacks is sent again: none lost
        assert (window, calls) == (recorded[provider], recorded[provider])
    wait_for(lambda: aggregator.run_cycle() is not None and aggregator.ready()[0], timeout=15)
    snapshot = aggregator.snapshot
    assert snapshot is not None
    by_name = {p.provider: p for p in snapshot.providers}
    for provider in PROVIDERS:
        assert by_name[provider].window_requests == counted(new_master, NAMESPACE, provider)[0]
