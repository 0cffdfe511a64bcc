"""A Redis Cluster slot in migration (MIGRATING on its node, IMPORTING on the next, a provider's
keys partly moved: what ``redis-cli --cluster reshard`` does to every slot it moves, here held
half-way) under a real aggregator and a real worker. Every aggregator cycle succeeds and counts
exactly during the migration and after it; the worker's flushes lose nothing and apply nothing
twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from aggregator.engine.cycle import Aggregator
from client import ClientSettings, MetricsClient
from devtools.redis_cluster import LocalCluster
from gatewayz_protocol.keys import Keys
from gatewayz_transport.routing import slot_of
from tests.support.backends import local_cluster
from tests.support.clock import FakeClock
from tests.support.load import counted
from tests.support.slot_migration import SlotMigration, keys_on

MIGRATING, STEADY = "openrouter", "anthropic"
MakeAggregator = Callable[..., Aggregator]


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """Its own cluster: the test moves a slot."""
    yield from local_cluster()


def _record(metrics: MetricsClient, provider: str, calls: int) -> None:
    """Calls of every outcome class and of several latencies: many window keys."""
    for i in range(calls):
        status = (200, 200, 200, 503, 429)[i % 5]
        metrics.record(provider, 0.05 + (i % 7) * 0.4, status_code=status, tokens=10)


def _start_migration(cluster: LocalCluster, keys: Keys) -> SlotMigration:
    """The migrating provider's slot marked MIGRATING/IMPORTING, every other key moved."""
    migration = SlotMigration(cluster, slot_of(keys.totals(MIGRATING))).begin()
    present = sorted(keys_on(migration.source, migration.slot))
    migration.move(present[::2])
    assert keys_on(migration.source, migration.slot) and keys_on(migration.target, migration.slot)
    return migration


def test_aggregator_cycles_count_exactly_while_a_slot_migrates(
    own_cluster: LocalCluster, namespace: str, clock: FakeClock, make_aggregator: MakeAggregator
) -> None:
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=own_cluster.url, namespace=namespace), clock=clock
    )
    _record(metrics, MIGRATING, 300)
    _record(metrics, STEADY, 100)
    assert metrics.flush(timeout=10)
    metrics.close(timeout=2)
    aggregator = make_aggregator(url=own_cluster.url)
    before = aggregator.run_cycle()
    assert before is not None
    by_name = {p.provider: p for p in before.providers}
    assert by_name[MIGRATING].window_requests == 300 and by_name[STEADY].window_requests == 100
    assert sum(by_name[MIGRATING].requests_total.values()) == 300

    migration = _start_migration(own_cluster, Keys(namespace))
    for _ in range(3):  # before: each cycle failed with AskError for as long as this lasted
        during = aggregator.run_cycle()
        assert during is not None and during.cycle > before.cycle
        assert during.providers == before.providers  # every figure exact, none partial
    ready, reason = aggregator.ready()
    assert ready, reason

    migration.finish()
    after = aggregator.run_cycle()
    assert after is not None and after.providers == before.providers


def test_a_worker_writing_through_a_migration_loses_nothing_and_applies_nothing_twice(
    own_cluster: LocalCluster, namespace: str, clock: FakeClock, make_aggregator: MakeAggregator
) -> None:
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=own_cluster.url, namespace=namespace), clock=clock
    )
    keys = Keys(namespace)
    _record(metrics, MIGRATING, 200)
    _record(metrics, STEADY, 50)
    assert metrics.flush(timeout=10)

    aggregator = make_aggregator(url=own_cluster.url)
    migration = _start_migration(own_cluster, keys)
    _record(metrics, MIGRATING, 200)
    _record(metrics, STEADY, 50)
    started = time.monotonic()
    flushed_split = metrics.flush(timeout=2)
    # one transaction per slot: the migrating provider's part applied whole or not at all
    window, calls = counted(own_cluster.url, namespace, MIGRATING)
    assert (window, calls) in ((200, 200), (400, 400))
    assert counted(own_cluster.url, namespace, STEADY) == (100, 100)
    snapshot = aggregator.run_cycle()  # and read exactly meanwhile
    assert snapshot is not None
    by_name = {p.provider: p for p in snapshot.providers}
    assert by_name[MIGRATING].window_requests == window and by_name[STEADY].window_requests == 100

    migration.move(sorted(keys_on(migration.source, migration.slot)))  # all moved, not handed over
    _record(metrics, MIGRATING, 200)
    flushed_moved = metrics.flush(timeout=2)
    assert counted(own_cluster.url, namespace, MIGRATING) in ((200, 200), (400, 400), (600, 600))

    migration.finish()
    assert metrics.flush(timeout=15)
    waited = time.monotonic() - started
    stats = metrics.stats()
    metrics.close(timeout=2)
    print(f"flushed while split: {flushed_split}, while all moved: {flushed_moved}; {waited:.1f} s")
    assert stats["dropped"] == 0 and stats["write_errors"] == 0
    assert counted(own_cluster.url, namespace, MIGRATING) == (600, 600)
    assert counted(own_cluster.url, namespace, STEADY) == (100, 100)
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    by_name = {p.provider: p for p in snapshot.providers}
    assert by_name[MIGRATING].window_requests == 600
    assert sum(by_name[MIGRATING].requests_total.values()) == 600
