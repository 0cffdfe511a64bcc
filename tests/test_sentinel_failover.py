"""A Sentinel-managed Redis (a master, a replica, three sentinels, all real processes): the
master killed (SIGKILL) while a worker records; the sentinels promote the replica and the
client and the aggregator follow it by themselves, from a ``redis+sentinel://`` URL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_sentinel import LocalSentinel, start_sentinel
from gatewayz_transport.connection import connect
from tests.support.load import Load, counted
from tests.support.processes import need_tool, wait_for

NAMESPACE = "sentinel"
PROVIDERS = ["openrouter", "anthropic"]


@pytest.fixture
def sentinel() -> Iterator[LocalSentinel]:
    need_tool("redis-server", "apt-get install redis-server")
    started = start_sentinel(replicas=1)
    yield started
    started.stop()


def test_the_client_follows_the_master_the_sentinels_promote(sentinel: LocalSentinel) -> None:
    old = sentinel.master()
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=sentinel.url, namespace=NAMESPACE, max_buffer=500_000)
    )
    settings = AggregatorSettings(redis_url=sentinel.url, namespace=NAMESPACE)
    aggregator = Aggregator(settings, connect(settings.redis_url, socket_timeout=2.0))
    assert aggregator.run_cycle() is not None
    load = Load(metrics, PROVIDERS)
    try:
        time.sleep(0.5)
        assert metrics.flush(timeout=10)
        old.kill()  # SIGKILL
        wait_for(lambda: sentinel.master().port != old.port, timeout=30)
        time.sleep(0.5)
    finally:
        recorded = load.stop()
    assert metrics.flush(timeout=30)  # found the new master through the sentinels
    stats = metrics.stats()
    metrics.close(timeout=5)
    assert load.errors == [] and stats["dropped"] == 0
    new_master = f"redis://127.0.0.1:{sentinel.master().port}/0"
    for provider in PROVIDERS:
        # what the old master acknowledged and had not replicated is sent again: none lost
        assert counted(new_master, NAMESPACE, provider) == (recorded[provider], recorded[provider])
    wait_for(lambda: aggregator.run_cycle() is not None and aggregator.ready()[0], timeout=15)
    snapshot = aggregator.snapshot
    assert snapshot is not None
    by_name = {p.provider: p for p in snapshot.providers}
    for provider in PROVIDERS:
        assert by_name[provider].window_requests == counted(new_master, NAMESPACE, provider)[0]
