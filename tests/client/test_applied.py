"""A batch whose reply was lost is never applied twice on one Redis (``client/_applied.py``):
each transaction carries the writer's marker, read before the batch is sent again. (On a Redis
Cluster, per slot: ``test_slots.py``.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from client import ClientSettings, MetricsClient
from client._applied import MARKER_LIFETIME_SECONDS, PRUNE_EVERY_SECONDS, BatchIds, decode_marker
from client._batch import build_batch
from client._events import Event
from client._ledger import NO_NOTES
from client._transaction import Transactions
from client._writer import RedisWriter
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import SUCCESS
from gatewayz_transport.connection import connect
from tests.support.backends import open_redis


class _LoseReplies:
    """``Transactions.run`` whose next replies are lost: after the transaction ran (``ran``)
    or before it reached Redis (``unsent``), as a connection cut at that moment would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.plan: list[str] = []
        self.sent = 0
        real = Transactions.run

        def run(this: Transactions, packed: bytes, queued: int) -> list[Any]:
            fate = self.plan.pop(0) if self.plan else "answered"
            if fate == "unsent":
                raise redis.ConnectionError("connection cut before the transaction went out")
            self.sent += 1
            replies = real(this, packed, queued)
            if fate == "ran":
                raise redis.ConnectionError("connection cut after EXEC, its reply lost")
            return replies

        monkeypatch.setattr(Transactions, "run", run)


@pytest.fixture
def metrics(single_redis_url: str, keys: Keys) -> Iterator[MetricsClient]:
    client = MetricsClient(
        settings=ClientSettings(redis_url=single_redis_url, namespace=keys.namespace)
    )
    yield client
    client.close(timeout=2)


def _counted(r: redis.Redis, keys: Keys, metric: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(keys.metric_data(metric)).items()}


def _window_events(r: redis.Redis, keys: Keys, provider: str) -> int:
    return sum(int(r.zcard(key)) for key in keys.window_keys(provider) if r.type(key) == b"zset")


@pytest.mark.parametrize("fate", ["ran", "unsent"])
def test_a_batch_whose_reply_was_lost_is_applied_exactly_once(
    metrics: MetricsClient,
    single_redis_url: str,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    fate: str,
) -> None:
    # Before: the batch was sent again whole after a lost reply, and a transaction that had run
    # counted its calls and counter increments twice (10 calls, 6 requests here).
    r = open_redis(single_redis_url)
    requests = metrics.counter("requests_total", "Requests", ["route"])
    assert metrics.flush(timeout=5)  # the declaration, and the ids held: one round trip below
    lose = _LoseReplies(monkeypatch)
    lose.plan = [fate]
    for _ in range(5):
        metrics.record("openrouter", 0.2, status_code=200)
    requests.labels("/a").inc(3)
    assert metrics.flush(timeout=10)
    totals = r.hgetall(keys.totals("openrouter"))
    assert totals[b"n:success"] == b"5"
    assert _window_events(r, keys, "openrouter") == 5
    assert _counted(r, keys, "requests") == {'i:["/a"]': 3}
    assert lose.plan == []  # a reply was lost, in a transaction that carried some of them
    assert metrics.stats()["dropped"] == 0
    r.close()


def test_a_batch_without_events_is_applied_exactly_once(
    metrics: MetricsClient, single_redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch of backend metric values only: its marker names a number of its own.
    r = open_redis(single_redis_url)
    requests = metrics.counter("requests_total", "Requests", ["route"])
    assert metrics.flush(timeout=5)
    lose = _LoseReplies(monkeypatch)
    for round_ in range(3):
        lose.plan = ["ran"]
        requests.labels("/b").inc(2)
        assert metrics.flush(timeout=10)
        assert _counted(r, keys, "requests") == {'i:["/b"]': 2 * (round_ + 1)}
    r.close()


def test_the_marker_is_written_by_the_transaction_itself(single_redis_url: str, keys: Keys) -> None:
    # What a retry reads: this writer's last batch, in {shared}'s applied hash (beside the id
    # counter's master, which it leaves alone).
    connection = connect(single_redis_url, socket_timeout=2.0)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    r = open_redis(single_redis_url)
    applied = keys.applied(keys.metric_schema)
    try:
        first = writer.reserve_event_ids(4)
        events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * 4
        writer.write(build_batch(events, first, NO_NOTES))
        assert decode_marker(r.hget(applied, "w1")) == (first, first + 4)
        assert 0 < r.ttl(applied) <= 3600
    finally:
        r.delete(*r.keys(keys.pattern()))
        r.close()
        connection.close()


def test_markers_of_writers_gone_for_good_are_forgotten_on_one_redis(
    private_redis: redis.Redis,
) -> None:
    # Every process that ever wrote leaves a field; workers are recycled: without pruning the
    # hash would grow without bound.
    port = private_redis.connection_pool.connection_kwargs["port"]
    keys = Keys(f"applied-{uuid.uuid4().hex[:8]}")
    applied = keys.applied(keys.metric_schema)
    now = time.time()
    private_redis.hset(
        applied,
        mapping={
            "recycled": f"r100:5:{int(now - MARKER_LIFETIME_SECONDS - 60)}",
            "older-client": "r200:5",
            "live": f"r300:5:{int(now - 60)}",
            "~ids": "8c1f" * 10,
        },
    )
    connection = connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * 2
    expired = f"r100:5:{int(now - MARKER_LIFETIME_SECONDS - 60)}"
    assert writer._lost is not None
    pruning = writer._lost.pruning
    try:
        writer.write(build_batch(events, writer.reserve_event_ids(2), NO_NOTES))
        assert {k.decode() for k in private_redis.hkeys(applied)} == {"live", "~ids", "w1"}

        # not again before PRUNE_EVERY_SECONDS
        private_redis.hset(applied, "recycled", expired)
        writer.write(build_batch(events, writer.reserve_event_ids(2), NO_NOTES))
        assert private_redis.hexists(applied, "recycled")

        # due, and Redis forgot the script (a restart): nothing of the batch is refused, and
        # the next transaction loads it and prunes, without waiting PRUNE_EVERY_SECONDS again
        later = time.monotonic() + PRUNE_EVERY_SECONDS
        pruning.monotonic = lambda: later
        private_redis.script_flush()
        report = writer.write(build_batch(events, writer.reserve_event_ids(2), NO_NOTES))
        assert (report.errors, report.refused_events) == ((), 0)
        assert private_redis.hexists(applied, "recycled")
        writer.write(build_batch(events, writer.reserve_event_ids(2), NO_NOTES))
        assert {k.decode() for k in private_redis.hkeys(applied)} == {"live", "~ids", "w1"}
    finally:
        connection.close()


def test_a_pruning_script_that_cannot_be_loaded_fails_the_write_like_a_lost_connection(
    single_redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first transaction loads the pruning script first: when that round trip fails, the
    # write raises (the flusher keeps the batch), the ids held are given up as after any failed
    # round trip, and the next write loads it and applies the batch once.
    connection = connect(single_redis_url, socket_timeout=2.0)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    assert writer._lost is not None
    script = writer._lost.pruning._script
    real_load = script.load

    def down() -> None:
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(script, "load", down)
    r = open_redis(single_redis_url)
    try:
        events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * 2
        batch = build_batch(events, writer.reserve_event_ids(2), NO_NOTES)
        with pytest.raises(redis.ConnectionError):
            writer.write(batch)
        assert writer._ids._check_master  # the ids held given up: the next reservation asks
        assert not r.exists(keys.totals("openrouter"))
        monkeypatch.setattr(script, "load", real_load)
        assert writer.write(batch).errors == ()
        assert r.hget(keys.totals("openrouter"), "n:success") == b"2"
    finally:
        connection.close()
        r.close()


def test_a_batch_without_events_keeps_its_number_while_retried() -> None:
    ids = BatchIds()
    leftover = build_batch([], 0, NO_NOTES)
    assert ids.of(leftover) == ids.of(leftover) == (-2, -1)
    assert ids.of(build_batch([], 0, NO_NOTES)) == (-3, -2)
    events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * 3
    assert ids.of(build_batch(events, 500, NO_NOTES)) == (500, 503)


def test_increments_a_forgetful_redis_did_not_apply_are_sent_again_after_a_lost_reply(
    private_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis restarted (it forgot the scripts): the next transaction ran but its increments'
    # script call did nothing, and its reply was lost. Its marker says it ran; before the
    # increments' own marker, the retry took the whole batch as applied and the increments were
    # lost (torture seed 171003: 7 calls missing from a backend counter).
    port = private_redis.connection_pool.connection_kwargs["port"]
    settings = ClientSettings(redis_url=f"redis://127.0.0.1:{port}/0", namespace="forgetful")
    metrics = MetricsClient(settings=settings)
    keys = Keys("forgetful")
    calls = metrics.counter("calls_total", "Calls")
    try:
        calls.inc()
        metrics.record("openrouter", 0.2, status_code=200)
        assert metrics.flush(timeout=5)
        private_redis.script_flush()
        lose = _LoseReplies(monkeypatch)
        lose.plan = ["ran"]
        calls.inc(3)
        metrics.record("openrouter", 0.2, status_code=200)
        assert metrics.flush(timeout=10)
        assert lose.plan == []
        assert private_redis.hget(keys.metric_data("calls"), "i:[]") == b"4"
        assert private_redis.hget(keys.totals("openrouter"), "n:success") == b"2"
        assert metrics.stats()["dropped"] == 0
    finally:
        metrics.close(timeout=2)
