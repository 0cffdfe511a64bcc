"""A flush on a real Redis Cluster (``client/_slots.py``): one transaction per slot, and a slot's
part never applied twice when a node fails, its reply is lost, or the batch is split."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

import client._slots as slots
from client._batch import Batch, build_batch
from client._events import Event
from client._ledger import NO_NOTES
from client._slots import SlotOutcome
from client._writer import RedisWriter
from devtools.redis_cluster import LocalCluster
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import FAILURE, SUCCESS
from gatewayz_transport.connection import connect
from tests.support.backends import open_redis

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

    def lose_the_reply(slot: int, outcome: SlotOutcome) -> SlotOutcome | None:
        if slot == lost:  # applied by Redis, but the connection died before the reply came
            assert outcome.applied
            return SlotOutcome(False, error=redis.ConnectionError("reply lost"), unknown=True)
        return None

    monkeypatch.setattr(slots, "run_slot_transactions", faulty(real, lose_the_reply))
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
