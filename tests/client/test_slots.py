"""A flush on a real Redis Cluster (``client/_slots.py``): one transaction per slot, and a slot's
part never applied twice when a node fails, its reply is lost, or the batch is split."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import client._slots as slots
from client import ClientSettings, MetricsClient
from client._applied import MARKER_LIFETIME_SECONDS, PRUNE_EVERY_SECONDS
from client._batch import Batch, build_batch
from client._events import Event
from client._ledger import NO_NOTES
from client._transaction import Outcome as SlotOutcome
from client._writer import RedisWriter
from devtools.redis_cluster import LocalCluster
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import FAILURE, SUCCESS
from gatewayz_transport.connection import connect
from tests.support.backends import local_cluster, open_redis
from tests.support.slot_migration import SlotMigration, add_empty_master, keys_on

PROVIDERS = ("alpha", "beta", "gamma", "delta")
NOW = 1_800_000_000.0


@pytest.fixture
def cluster_keys(redis_cluster: LocalCluster) -> Iterator[Keys]:
    keys = Keys("slots-test")
    yield keys
    connection = open_redis(redis_cluster.url)
    for key in list(connection.scan_iter(match=keys.pattern(), count=1000)):
        connection.delete(key)
    connection.close()


@pytest.fixture
def writer(redis_cluster: LocalCluster, cluster_keys: Keys) -> RedisWriter:
    connection = connect(redis_cluster.url, socket_timeout=2.0)
    return RedisWriter(connection, cluster_keys, 360, 3600, writer_id="w1")


def events(per_provider: int) -> list[Event]:
    """``per_provider`` calls of each provider, every third a failure."""
    return [
        (provider, NOW + i, 0.2, FAILURE if i % 3 == 0 else SUCCESS, 10, 0, None)
        for i in range(per_provider)
        for provider in PROVIDERS
    ]


def slot_of(keys: Keys, provider: str) -> int:
    return key_slot(keys.totals(provider).encode())


def totals(r: redis.Redis, keys: Keys, provider: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.totals(provider)).items()}


def window_events(r: redis.Redis, keys: Keys, provider: str) -> int:
    return sum(int(r.zcard(key)) for key in keys.window_keys(provider))


Runner = Callable[[Any, dict[int, list[Any]]], dict[int, SlotOutcome]]


def faulty(real: Runner, fault: Callable[[int, SlotOutcome], SlotOutcome | None]) -> Runner:
    """The real transactions, then ``fault`` may rewrite a slot's outcome (None: keep it)."""

    def run(cluster: Any, groups: dict[int, list[Any]]) -> dict[int, SlotOutcome]:
        outcomes = real(cluster, groups)
        return {slot: fault(slot, outcome) or outcome for slot, outcome in outcomes.items()}

    return run


def losing_the_reply(lost: int) -> Callable[[int, SlotOutcome], SlotOutcome | None]:
    """A ``faulty`` fault: slot ``lost``'s transaction applied by Redis, but the connection
    died before its reply came."""

    def lose(slot: int, outcome: SlotOutcome) -> SlotOutcome | None:
        if slot == lost:
            assert outcome.applied
            return SlotOutcome(False, error=redis.ConnectionError("reply lost"), unknown=True)
        return None

    return lose


def recording(real: Runner, sent: list[set[int]]) -> Runner:
    """The real transactions, noting the slots each call sends."""

    def run(cluster: Any, groups: dict[int, list[Any]]) -> dict[int, SlotOutcome]:
        sent.append(set(groups))
        return real(cluster, groups)

    return run


def expected(per_provider: int) -> dict[str, int]:
    failures = len(range(0, per_provider, 3))
    return {"n:success": per_provider - failures, "n:failure": failures}


def test_each_provider_lands_in_its_own_slot_once(
    writer: RedisWriter, redis_cluster: LocalCluster, cluster_keys: Keys
) -> None:
    batch = build_batch(events(30), 1000, NO_NOTES)
    report = writer.write(batch)
    assert report.errors == () and report.refused_events == 0
    r = open_redis(redis_cluster.url)
    assert len({slot_of(cluster_keys, p) for p in PROVIDERS}) == len(PROVIDERS)
    for provider in PROVIDERS:
        assert window_events(r, cluster_keys, provider) == 30
        found = totals(r, cluster_keys, provider)
        assert {k: found[k] for k in ("n:success", "n:failure")} == expected(30)
        assert found["tokens"] == 300
    assert r.zrange(cluster_keys.providers, 0, -1) == sorted(p.encode() for p in PROVIDERS)


def test_a_slot_whose_reply_was_lost_is_asked_not_sent_again(
    writer: RedisWriter,
    redis_cluster: LocalCluster,
    cluster_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lost = slot_of(cluster_keys, "beta")
    real = slots.run_slot_transactions
    monkeypatch.setattr(slots, "run_slot_transactions", faulty(real, losing_the_reply(lost)))
    batch = build_batch(events(30), 5000, NO_NOTES)
    with pytest.raises(redis.ConnectionError):
        writer.write(batch)
    sent: list[set[int]] = []
    monkeypatch.setattr(slots, "run_slot_transactions", recording(real, sent))
    report = writer.write(batch)  # the flusher's retry: the same batch
    assert report.errors == ()
    assert sent == [set()]  # every slot known applied: beta's marker said so
    r = open_redis(redis_cluster.url)
    for provider in PROVIDERS:
        found = totals(r, cluster_keys, provider)
        assert {k: found[k] for k in ("n:success", "n:failure")} == expected(30)
        assert window_events(r, cluster_keys, provider) == 30


def _rolled_back(node: redis.Redis, slot: int) -> Callable[[], None]:
    """What ``slot`` holds on ``node`` now; the returned call puts it back as it is now (as a
    replica promoted with only this would hold it)."""
    saved = {
        key: node.dump(key) for key in node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    }

    def restore() -> None:
        for key in node.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):
            node.delete(key)
        for key, value in saved.items():
            node.restore(key, 0, value, replace=True)

    return restore


def test_a_slot_found_run_after_its_reply_was_lost_is_kept_for_a_failover(
    writer: RedisWriter,
    redis_cluster: LocalCluster,
    cluster_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """beta's transaction ran, its reply lost; the retry finds its marker and sends nothing.
    Then beta's master goes back to before it (a failover to a replica that lacked it): the
    next transaction finds the earlier marker, and the one that ran is sent again, as it ran."""
    lost = slot_of(cluster_keys, "beta")
    writer.write(build_batch(events(30), 1000, NO_NOTES))
    node = _node(open_redis(redis_cluster.url), cluster_keys.totals("beta"))
    restore = _rolled_back(node, lost)
    real = slots.run_slot_transactions
    monkeypatch.setattr(slots, "run_slot_transactions", faulty(real, losing_the_reply(lost)))
    second = [(p, t + 100, *rest) for p, t, *rest in events(30)]
    batch = build_batch(second, 2000, NO_NOTES)  # type: ignore[arg-type]
    with pytest.raises(redis.ConnectionError):
        writer.write(batch)
    monkeypatch.setattr(slots, "run_slot_transactions", real)
    assert writer.write(batch).errors == ()
    restore()  # beta's master lost the transaction that ran
    third = [(p, t + 200, *rest) for p, t, *rest in events(30)]
    assert writer.write(build_batch(third, 3000, NO_NOTES)).errors == ()  # type: ignore[arg-type]
    r = open_redis(redis_cluster.url)
    for provider in PROVIDERS:
        found = totals(r, cluster_keys, provider)
        assert {k: found[k] for k in ("n:success", "n:failure")} == expected(90), provider
        assert window_events(r, cluster_keys, provider) == 90, provider


def test_a_refused_slot_alone_is_sent_again(
    writer: RedisWriter,
    redis_cluster: LocalCluster,
    cluster_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = slot_of(cluster_keys, "gamma")
    real = slots.run_slot_transactions

    def refuse_gamma(cluster: Any, groups: dict[int, list[Any]]) -> dict[int, SlotOutcome]:
        # its node refused the transaction (MOVED during a reshard): nothing of it ran
        outcomes = real(cluster, {s: g for s, g in groups.items() if s != refused})
        outcomes[refused] = SlotOutcome(False, error=redis.exceptions.MovedError("1 x:1"))
        return outcomes

    monkeypatch.setattr(slots, "run_slot_transactions", refuse_gamma)
    batch = build_batch(events(12), 9000, NO_NOTES)
    with pytest.raises(redis.exceptions.MovedError):
        writer.write(batch)
    r = open_redis(redis_cluster.url)
    assert r.exists(cluster_keys.totals("gamma")) == 0
    sent: list[set[int]] = []
    monkeypatch.setattr(slots, "run_slot_transactions", recording(real, sent))
    writer.write(batch)
    assert sent == [{refused}]
    for provider in PROVIDERS:
        found = totals(r, cluster_keys, provider)
        assert {k: found[k] for k in ("n:success", "n:failure")} == expected(12)


def test_the_halves_of_a_split_batch_skip_the_slots_the_whole_batch_reached(
    writer: RedisWriter,
    redis_cluster: LocalCluster,
    cluster_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis out of memory on delta's node: the flusher splits the batch; the halves must not
    # apply again what the whole batch already applied on the other nodes.
    full = slot_of(cluster_keys, "delta")
    real = slots.run_slot_transactions
    oom = redis.exceptions.OutOfMemoryError("OOM command not allowed")

    def out_of_memory(cluster: Any, groups: dict[int, list[Any]]) -> dict[int, SlotOutcome]:
        outcomes = real(cluster, {s: g for s, g in groups.items() if s != full})
        if full in groups:
            outcomes[full] = SlotOutcome(False, error=oom)
        return outcomes

    monkeypatch.setattr(slots, "run_slot_transactions", out_of_memory)
    all_events = events(30)
    whole = build_batch(all_events, 20_000, NO_NOTES)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        writer.write(whole)
    monkeypatch.setattr(slots, "run_slot_transactions", real)
    half = len(all_events) // 2
    whole_ids = (20_000, 20_000 + len(all_events))
    halves: list[Batch] = [
        build_batch(all_events[:half], 20_000, NO_NOTES, split_from=whole_ids),
        build_batch(all_events[half:], 20_000 + half, NO_NOTES, split_from=whole_ids),
    ]
    for part in halves:
        assert writer.write(part).errors == ()
    r = open_redis(redis_cluster.url)
    for provider in PROVIDERS:
        found = totals(r, cluster_keys, provider)
        assert {k: found[k] for k in ("n:success", "n:failure")} == expected(30)
        assert window_events(r, cluster_keys, provider) == 30
    # the next batch (new ids) is written everywhere again
    writer.write(build_batch(events(3), 20_000 + len(all_events), NO_NOTES))
    for provider in PROVIDERS:
        assert window_events(r, cluster_keys, provider) == 33


def _node(cluster: redis.Redis, key: str) -> redis.Redis:
    """A plain client of the node serving ``key``'s slot."""
    node = cluster.get_node_from_key(key)  # type: ignore[attr-defined]
    return redis.Redis(host=node.host, port=node.port)


def _patient_client(redis_cluster: LocalCluster, cluster_keys: Keys) -> MetricsClient:
    """A client that flushes only when asked, and retries within 50 ms."""
    settings = ClientSettings(
        redis_url=redis_cluster.url,
        namespace=cluster_keys.namespace,
        flush_interval_seconds=30.0,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.05,
    )
    return MetricsClient(settings=settings)


def test_a_split_batch_keeps_the_increments_a_forgetful_node_did_not_apply(
    redis_cluster: LocalCluster, cluster_keys: Keys
) -> None:
    # The {metrics} node forgot its scripts (a failover) while a provider's node is at
    # maxmemory: the {metrics} slot's transaction ran with its increments' call answered
    # NOSCRIPT, the provider's was refused, and the batch was split. Before: the halves skipped
    # the slot already applied and dropped the NOSCRIPT reply with it: the counter lost them,
    # flush() True, no log line.
    cluster = open_redis(redis_cluster.url)
    shared = cluster.get_node_from_key(cluster_keys.event_ids).name  # type: ignore[attr-defined]
    metrics_node = cluster.get_node_from_key(cluster_keys.metric_schema).name  # type: ignore[attr-defined]
    provider = next(
        name
        for name in (f"p{i}" for i in range(1000))
        if cluster.get_node_from_key(cluster_keys.totals(name)).name  # type: ignore[attr-defined]
        not in (shared, metrics_node)
    )
    full, forgetful = (
        _node(cluster, cluster_keys.totals(provider)),
        _node(cluster, cluster_keys.metric_schema),
    )
    client = _patient_client(redis_cluster, cluster_keys)
    calls = client.counter("calls_total", "Calls")
    try:
        calls.inc()
        client.record(provider, 0.2, status_code=200)
        assert client.flush(timeout=5)
        forgetful.script_flush()
        full.config_set("maxmemory", 1)
        for _ in range(200):  # enough to be split
            calls.inc()
            client.record(provider, 0.2, status_code=200)
        assert client.flush(timeout=1.5) is False
        full.config_set("maxmemory", 0)
        assert client.flush(timeout=10) is True
        assert cluster.hget(cluster_keys.metric_data("calls"), "i:[]") == b"201"
        assert window_events(cluster, cluster_keys, provider) == 201
        assert client.stats()["dropped"] == 0
    finally:
        full.config_set("maxmemory", 0)
        client.close(timeout=2)
        for node in (full, forgetful):
            node.close()


def test_a_lost_reply_whose_increments_did_nothing_sends_them_again(
    redis_cluster: LocalCluster, cluster_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The {metrics} node forgot its scripts, and the reply of its slot's transaction was lost:
    # its marker says the slot ran, the increments' own marker says their call did nothing.
    # Before, the slot was taken as applied whole and the increments were lost.
    cluster = open_redis(redis_cluster.url)
    metrics_slot = key_slot(cluster_keys.metric_schema.encode())
    client = _patient_client(redis_cluster, cluster_keys)
    calls = client.counter("calls_total", "Calls")
    forgetful = _node(cluster, cluster_keys.metric_schema)
    real = slots.run_slot_transactions
    lost = [False]

    def lose_the_metrics_reply(slot: int, outcome: SlotOutcome) -> SlotOutcome | None:
        if slot == metrics_slot and outcome.applied and not lost[0]:
            lost[0] = True
            return SlotOutcome(False, error=redis.ConnectionError("reply lost"), unknown=True)
        return None

    try:
        calls.inc()
        assert client.flush(timeout=5)
        forgetful.script_flush()
        monkeypatch.setattr(slots, "run_slot_transactions", faulty(real, lose_the_metrics_reply))
        calls.inc(3)
        assert client.flush(timeout=10)
        assert lost[0]
        assert cluster.hget(cluster_keys.metric_data("calls"), "i:[]") == b"4"
        assert client.stats()["dropped"] == 0
    finally:
        client.close(timeout=2)
        forgetful.close()


def test_markers_carry_their_time_and_dead_writers_markers_are_forgotten(
    writer: RedisWriter, redis_cluster: LocalCluster, cluster_keys: Keys
) -> None:
    # Before: every writer that ever wrote a slot kept a field in its applied hash, whose TTL
    # each live writer refreshed: with recycled workers it grew without bound.
    r = open_redis(redis_cluster.url)
    marker = cluster_keys.applied(cluster_keys.totals("alpha"))
    now = time.time()
    r.hset(
        marker,
        mapping={
            "recycled": f"r100:5:{int(now - MARKER_LIFETIME_SECONDS - 60)}",
            "older-client": "r200:5",  # a marker without its time: forgotten too
            "live": f"r300:5:{int(now - 60)}",
            "~ids": "8c1f" * 10,  # not a marker (the id counter's master): kept
        },
    )
    writer.write(build_batch(events(3), 1000, NO_NOTES))
    fields = {k.decode(): v.decode() for k, v in r.hgetall(marker).items()}
    assert set(fields) == {"live", "~ids", "w1"}
    first, count, written_at = fields["w1"][1:].split(":")
    assert (int(first), int(count)) == (1000, 12)
    assert now - 5 <= int(written_at) <= time.time() + 1
    assert slots.decode_marker(fields["w1"]) == (1000, 1012)
    assert slots.decode_marker("r200:5") == (200, 205)  # an older client's, still understood

    # pruned with a transaction sent there anyway, at most every PRUNE_EVERY_SECONDS per slot
    r.hset(marker, "recycled", f"r100:5:{int(now - MARKER_LIFETIME_SECONDS - 60)}")
    writer.write(build_batch(events(3), 2000, NO_NOTES))
    assert r.hexists(marker, "recycled")
    cluster_writes = writer._cluster  # its clock: the next pruning is due
    assert cluster_writes is not None
    monotonic = time.monotonic() + PRUNE_EVERY_SECONDS
    cluster_writes.pruning.monotonic = lambda: monotonic
    writer.write(build_batch(events(3), 3000, NO_NOTES))
    assert not r.hexists(marker, "recycled")
    assert {k.decode() for k in r.hkeys(marker)} == {"live", "~ids", "w1"}


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """Its own cluster: the test adds a node and moves a slot to it."""
    yield from local_cluster()


def test_a_lost_reply_is_asked_where_a_migration_moved_the_marker(
    own_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scaling out: beta's slot moving to a new node (not in the layout yet), its marker already
    # there when the retry asks it. Before: redis-py followed the ASK to a node it did not know
    # (AttributeError), and the flusher gave the batch up, its events counted as dropped.
    keys = Keys("slots-test")
    writer = RedisWriter(connect(own_cluster.url, 2.0), keys, 360, 3600, writer_id="w1")
    lost = slot_of(keys, "beta")
    real = slots.run_slot_transactions
    monkeypatch.setattr(slots, "run_slot_transactions", faulty(real, losing_the_reply(lost)))
    batch = build_batch(events(30), 5000, NO_NOTES)
    with pytest.raises(redis.ConnectionError):
        writer.write(batch)
    migration = SlotMigration(own_cluster, lost, target=add_empty_master(own_cluster)).begin()
    migration.move(sorted(keys_on(migration.source, lost)))  # the marker with the rest
    sent: list[set[int]] = []
    monkeypatch.setattr(slots, "run_slot_transactions", recording(real, sent))
    assert writer.write(batch).errors == ()  # the flusher's retry: the same batch
    assert sent == [set()]  # beta's marker, read through the ASK, said it ran
    migration.finish()
    r = open_redis(own_cluster.url)
    found = totals(r, keys, "beta")
    assert {k: found[k] for k in ("n:success", "n:failure")} == expected(30)
    assert window_events(r, keys, "beta") == 30
