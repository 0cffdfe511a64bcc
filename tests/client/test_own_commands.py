"""The writer's own commands in a batch's transaction (``client/_own_commands.py``): commands a
flush pass sends along get their replies and refuse nothing of the batch; the writer's report
(operation counts, a clock measurement) rides with a batch once a second."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

import pytest
import redis

from client._batch import Batch, build_batch
from client._events import Event
from client._ledger import NO_NOTES
from client._slots import CommandList
from client._writer import RedisWriter, WriteReport
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import SUCCESS
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS, open_redis

pytestmark = BOTH_BACKENDS


def _window_events(r: redis.Redis, keys: Keys, provider: str) -> int:
    return sum(int(r.zcard(key)) for key in keys.window_keys(provider) if r.type(key) == b"zset")


class _CountingClock(SharedClock):
    """A shared clock on a settable local clock that counts its measurements."""

    def __init__(self) -> None:
        self.at = 1_000.0
        super().__init__(local=lambda: self.at, wall=time.time)
        self.observed = 0

    def observe(self, redis_time: tuple[int, int], sent_at: float, received_at: float) -> bool:
        self.observed += 1
        return super().observe(redis_time, sent_at, received_at)


def _write(writer: RedisWriter, count: int) -> WriteReport:
    first = writer.reserve_event_ids(count)
    events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * count
    return writer.write(build_batch(events, first, NO_NOTES))


def test_the_writers_report_and_a_clock_measurement_ride_with_a_batch_once_a_second(
    single_redis_url: str,
) -> None:
    # Before: every batch carried the writer's operation counts (a HINCRBY per operation) and
    # every pass measured the clock with its id reservation. Now once a second, with a batch.
    keys = Keys(f"test-report-{uuid.uuid4().hex[:12]}")
    connection = connect(single_redis_url, socket_timeout=2.0)
    clock = _CountingClock()
    writer = RedisWriter(connection, keys, 360, 3600, clock=clock, writer_label="h:1")
    r = open_redis(single_redis_url)

    def zadds() -> int:  # each batch: its window's ZADD and the registry's
        return int(r.hget(keys.redis_ops, "zadd") or 0)

    try:
        _write(writer, 3)  # the first reservation measures; the report's TIME too
        assert (zadds(), clock.observed) == (2, 2)
        clock.at += 0.5
        _write(writer, 3)  # its ids were held: no round trip but the batch's, no report
        assert (zadds(), clock.observed) == (2, 2)
        assert r.hget(keys.clock_offsets, "h:1") is not None  # the skew: with every batch
        clock.at += 0.5
        _write(writer, 3)
        assert (zadds(), clock.observed) == (6, 3)
    finally:
        r.delete(*r.keys(keys.pattern()))
        r.close()
        connection.close()


def test_commands_riding_with_a_batch_get_their_replies_and_refuse_none_of_it(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    # The flush pass's own commands (a breaker evaluation request, say) share the batch's
    # round trip; an error among their replies is theirs, not a refusal of the batch.
    connection = connect(redis_url, socket_timeout=2.0)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    counter, text = keys.totals("rider"), keys.totals("rider-text")
    r.set(text, "not a hash")
    try:
        first = writer.reserve_event_ids(2)
        events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * 2
        batch = build_batch(events, first, NO_NOTES)
        riders = (("HINCRBY", counter, "asks", 5), ("HGET", text, "field"))
        report = writer.write(dataclasses.replace(batch, extra=riders))
        assert report.extra_replies[0] == 5
        assert isinstance(report.extra_replies[1], redis.ResponseError)
        assert (report.errors, report.refused_events) == ((), 0)
        assert _window_events(r, keys, "openrouter") == 2
    finally:
        r.delete(counter, text)
        connection.close()


def test_a_batch_sent_again_carries_the_same_commands_though_the_report_fell_due(
    redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis Cluster skips the slots an attempt applied, by command index: a retry whose
    # report appeared (it fell due meanwhile) would have its counts skipped, then forgotten.
    connection = connect(redis_url, socket_timeout=2.0)
    clock = _CountingClock()
    writer = RedisWriter(connection, keys, 360, 3600, clock=clock, writer_label="h:1")
    sent: list[list[Any]] = []
    send = RedisWriter._send
    failing = [False]

    def recorded(this: RedisWriter, batch: Batch, plan: CommandList) -> list[Any]:
        sent.append(list(plan.commands))
        if failing[0]:
            failing[0] = False
            raise redis.ConnectionError("reply lost")
        return send(this, batch, plan)

    monkeypatch.setattr(RedisWriter, "_send", recorded)
    try:
        _write(writer, 3)  # reports: the first
        clock.at += 0.5
        first = writer.reserve_event_ids(3)
        events: list[Event] = [("openrouter", 1_800_000_000.0, 0.2, SUCCESS, 0, 0, None)] * 3
        batch = build_batch(events, first, NO_NOTES)
        failing[0] = True
        with pytest.raises(redis.ConnectionError):
            writer.write(batch)
        clock.at += 0.6  # the report is due now, but the batch is the one sent before
        writer.write(batch)
        assert [c[0] for c in sent[2]] == [c[0] for c in sent[1]]
        assert not any(c[0] == "HINCRBY" and c[1] == keys.redis_ops for c in sent[2])
        _write(writer, 3)  # the next batch reports
        assert any(c[0] == "HINCRBY" and c[1] == keys.redis_ops for c in sent[3])
    finally:
        connection.close()
