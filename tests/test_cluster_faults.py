"""A real local Redis Cluster under faults, while a worker records flat out: slots resharded
(``redis-cli --cluster reshard``), a master killed (SIGKILL) or stalled (SIGSTOP) with its
replica promoted, a master restarted from an old snapshot. No error reaches the worker, nothing
is counted twice, and what a master acknowledged and then lost is sent again."""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_cluster import CLUSTER_NODE_ARGS, LocalCluster, cluster_ports, start_cluster
from devtools.redis_server import local_connection, start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.load import Load, counted
from tests.support.processes import HEAVY, need_redis_tools, wait_for

# Not beside the torture runs: a cluster node starved of the cores for its node timeout (1 s) is
# failed over while it still acknowledges writes, which loses more than a master killed does.
pytestmark = HEAVY
NAMESPACE = "faults"


def providers_in(cluster: LocalCluster, port: int, count: int, within: int) -> list[str]:
    """``count`` provider names whose slots are among the lowest ``within`` slots of the node
    on ``port`` (the ones a reshard of ``within`` slots moves)."""
    start = min(low for low, _ in cluster.slots_of(port))
    keys = Keys(NAMESPACE)
    names = []
    for i in range(100_000):
        name = f"p{i}"
        if start <= key_slot(keys.totals(name).encode()) < start + within:
            names.append(name)
            if len(names) == count:
                return names
    raise AssertionError("no such provider names")


def _worker(cluster: LocalCluster) -> MetricsClient:
    """A worker whose buffer holds everything a fault test records meanwhile."""
    settings = ClientSettings(redis_url=cluster.url, namespace=NAMESPACE, max_buffer=500_000)
    return MetricsClient(settings=settings)


def _drained(metrics: MetricsClient, load: Load) -> dict[str, Any]:
    """Everything the worker recorded delivered, then closed: no error reached the recording
    thread and nothing was dropped. The worker's stats."""
    assert metrics.flush(timeout=30)
    stats = metrics.stats()
    metrics.close(timeout=5)
    assert load.errors == [] and stats["dropped"] == 0
    return stats


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    need_redis_tools()
    cluster = start_cluster(masters=3, replicas=1)
    yield cluster
    cluster.stop()


def test_resharding_under_load_loses_nothing_and_counts_nothing_twice(
    own_cluster: LocalCluster,
) -> None:
    source, target = own_cluster.nodes[0].port, own_cluster.nodes[1].port
    moving = providers_in(own_cluster, source, 3, within=200)
    staying = ["steady"]
    metrics = _worker(own_cluster)
    load = Load(metrics, moving + staying)
    try:
        time.sleep(0.5)
        own_cluster.reshard(source, target, 200)  # the moving providers' slots, keys and all
        time.sleep(0.5)
    finally:
        recorded = load.stop()
    stats = _drained(metrics, load)
    assert stats["rejected"] == {} and stats["write_errors"] == 0
    for provider in moving:
        slot = key_slot(Keys(NAMESPACE).totals(provider).encode())
        assert own_cluster.master_of_slot(slot).port == target  # it did move
    for provider in moving + staying:
        assert counted(own_cluster.url, NAMESPACE, provider) == (
            recorded[provider],
            recorded[provider],
        )


def test_a_master_killed_under_load_is_followed_to_its_replica(
    own_cluster: LocalCluster,
) -> None:
    keys = Keys(NAMESPACE)
    slot = key_slot(keys.totals("openrouter").encode())
    victim = own_cluster.master_of_slot(slot)
    metrics = _worker(own_cluster)
    settings = AggregatorSettings(redis_url=own_cluster.url, namespace=NAMESPACE)
    aggregator = Aggregator(settings, connect(settings.redis_url, socket_timeout=2.0))
    load = Load(metrics, ["openrouter", "anthropic", "groq"])
    try:
        time.sleep(0.5)
        assert metrics.flush(timeout=10)
        before = sum(counted(own_cluster.url, NAMESPACE, "openrouter"))
        assert before > 0
        assert aggregator.run_cycle() is not None and aggregator.ready()[0]
        victim.kill()  # SIGKILL: what it had not replicated is gone
        aggregator.run_cycle()  # meets the dead master before its replica is promoted
        ready, reason = aggregator.ready()
        assert not ready and reason.startswith("redis unreachable"), reason  # /readyz: 503
        wait_for(lambda: own_cluster.master_of_slot(slot).port != victim.port, timeout=30)
        own_cluster.wait_healthy(timeout=30)  # its replica took over
        time.sleep(0.5)
    finally:
        recorded = load.stop()
    _drained(metrics, load)  # the client found the new master by itself
    for provider in ("openrouter", "anthropic", "groq"):
        window, calls = counted(own_cluster.url, NAMESPACE, provider)
        # What the dead master had acknowledged and not replicated (asynchronous replication)
        # the worker sends again once the new master's marker shows it lacks it: nothing lost.
        assert (window, calls) == (recorded[provider], recorded[provider])
    # The aggregator recovers by itself too: a cycle that meets the dead node fails (and is
    # counted), the next one asks the cluster for its new layout.
    wait_for(lambda: aggregator.run_cycle() is not None and aggregator.ready()[0], timeout=15)
    snapshot = aggregator.snapshot
    assert snapshot is not None
    by_name = {p.provider: p for p in snapshot.providers}
    for provider in ("openrouter", "anthropic", "groq"):
        assert by_name[provider].window_requests == counted(own_cluster.url, NAMESPACE, provider)[0]


@pytest.mark.parametrize("stall", ["until promoted", 1.6])
def test_a_master_stalled_past_its_node_timeout_is_replaced_and_loses_nothing(
    own_cluster: LocalCluster, stall: str | float
) -> None:
    """SIGSTOP, not SIGKILL: a master that stops answering for longer than the node timeout (a
    stall, a paused VM, a partition) has its replica promoted, then comes back still taking
    writes until it learns it was replaced, and drops them with its data set to follow the new
    master. Stalled 1.6 s (node timeout 1 s), it may come back during the election, win it or
    not. Either way nothing reaches the worker as an error, nothing is counted twice (window and
    totals agree), and the old master is a master only if it still serves the slot. What the old
    master took after it was replaced the worker finds missing by its markers on the new master,
    and sends again: nothing is lost."""
    slot = key_slot(Keys(NAMESPACE).totals("openrouter").encode())
    victim = own_cluster.master_of_slot(slot)
    providers = ["openrouter", "anthropic", "groq"]
    elsewhere = {
        p
        for p in providers
        if own_cluster.master_of_slot(key_slot(Keys(NAMESPACE).totals(p).encode())) != victim
    }
    assert elsewhere  # anthropic's slot is on another master
    metrics = _worker(own_cluster)
    load = Load(metrics, providers)
    try:
        time.sleep(0.5)
        victim.process.send_signal(signal.SIGSTOP)
        try:  # "until promoted": resumed as soon as the others see its replica serve the slot
            if isinstance(stall, float):
                time.sleep(stall)
            else:
                wait_for(lambda: own_cluster.master_of_slot(slot) != victim, 30)
        finally:
            victim.process.send_signal(signal.SIGCONT)
        own_cluster.wait_healthy(timeout=30)
        time.sleep(0.5)
    finally:
        recorded = load.stop()
    _drained(metrics, load)
    for provider in providers:  # what the old master took after it was replaced: sent again
        assert counted(own_cluster.url, NAMESPACE, provider) == (
            recorded[provider],
            recorded[provider],
        )
    with local_connection(victim.port) as connection:
        role = connection.role()[0]
    replaced = own_cluster.master_of_slot(slot) != victim
    assert (role, replaced) in ((b"slave", True), (b"master", False))
    assert replaced or stall != "until promoted"


def test_writes_a_master_acknowledged_and_lost_in_a_restart_are_sent_again_to_its_slots_only() -> (
    None
):
    """A master killed and restarted from a snapshot older than its last writes comes back
    behind them, as a replica promoted before it had them does. The worker reads its markers on
    the slots it had written, and sends again what each slot lacks: nothing is lost, nothing
    counted twice (the other masters' slots had lost nothing, and get nothing twice)."""
    need_redis_tools()
    cluster = start_cluster(masters=3)
    providers = ["openrouter", "anthropic", "groq"]
    victim = cluster.master_of_slot(key_slot(Keys(NAMESPACE).totals("openrouter").encode()))
    elsewhere = [
        p
        for p in providers
        if cluster.master_of_slot(key_slot(Keys(NAMESPACE).totals(p).encode())) != victim
    ]
    assert elsewhere
    metrics = _worker(cluster)
    recorded = Counter[str]()

    def record(calls: int) -> None:
        for provider in providers:
            for i in range(calls):
                metrics.record(provider, 0.05, status_code=503 if i % 5 == 0 else 200)
            recorded[provider] += calls
        assert metrics.flush(timeout=30)

    try:
        record(300)
        with local_connection(victim.port) as connection:
            connection.save()  # into its directory, beside its nodes.conf
        for _ in range(4):
            record(50)  # acknowledged, then lost with the crash
        victim.kill()
        restarted = start_redis(
            victim.port, extra_args=(*CLUSTER_NODE_ARGS, "--dir", victim.workdir)
        )
        cluster.nodes[cluster.nodes.index(victim)] = restarted
        cluster.wait_healthy(timeout=30)
        assert counted(cluster.url, NAMESPACE, "openrouter") == (300, 300)
        record(10)  # meets the restart
        stats = metrics.stats()
        found = {p: counted(cluster.url, NAMESPACE, p) for p in providers}
    finally:
        metrics.close(timeout=5)
        cluster.stop()
        shutil.rmtree(victim.workdir, ignore_errors=True)
    assert stats["dropped"] == 0 and recorded["openrouter"] == 510
    assert found == {p: (510, 510) for p in providers}


def test_a_client_started_before_the_cluster_answers_catches_up() -> None:
    need_redis_tools()
    ports = cluster_ports(3)
    url = f"redis+cluster://127.0.0.1:{ports[0]}"
    with pytest.raises(redis.ConnectionError):  # an outage like any other, not a crash
        connect(url, socket_timeout=0.5).ping()
    metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace=NAMESPACE))
    for _ in range(5):
        metrics.record("openrouter", 0.1, status_code=200)  # no error: kept for later
    assert metrics.flush(timeout=0.3) is False
    cluster = start_cluster(masters=3, ports=ports)
    try:
        assert metrics.flush(timeout=15)
        assert counted(cluster.url, NAMESPACE, "openrouter") == (5, 5)
    finally:
        metrics.close(timeout=2)
        cluster.stop()
