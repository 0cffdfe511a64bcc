"""Window member ids reserved ahead (``client/_event_ids.py``): a batch's transaction reserves
the ids of the batches after it, so a flush pass makes one round trip; ids stay unique across
writers; a writer whose round trip failed never uses the ids it held, and its next reservation
asks whether the master changed."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from client._batch import build_batch
from client._event_ids import AHEAD_MAX, AHEAD_MIN, ID_GAP_PER_MASTER, EventIds
from client._events import Event
from client._ledger import NO_NOTES
from client._transaction import Transactions
from client._writer import RedisWriter
from devtools.redis_server import start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import SUCCESS
from gatewayz_transport.connection import connect
from tests.support.processes import need_tool

NOW = 1_800_000_000.0


def _events(count: int, provider: str = "openrouter") -> list[Event]:
    return [(provider, NOW + i / 1000, 0.2, SUCCESS, 0, 0, None) for i in range(count)]


def _pass(writer: RedisWriter, count: int) -> tuple[int, int]:
    """One flush pass's work for ``count`` events: named, then written. Returns their ids."""
    first = writer.reserve_event_ids(count)
    report = writer.write(build_batch(_events(count), first, NO_NOTES))
    assert report.errors == ()
    return first, first + count


class RoundTrips:
    """Counts the writer's round trips: transactions, and reservations of their own."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.transactions = self.reservations = 0
        run, reserve = Transactions.run, EventIds._reserve

        def counted_run(this: Transactions, packed: bytes, queued: int) -> list[Any]:
            self.transactions += 1
            return run(this, packed, queued)

        def counted_reserve(this: EventIds, connection: redis.Redis, count: int) -> int:
            self.reservations += 1
            return reserve(this, connection, count)

        monkeypatch.setattr(Transactions, "run", counted_run)
        monkeypatch.setattr(EventIds, "_reserve", counted_reserve)


@pytest.fixture
def connection(single_redis_url: str) -> Iterator[redis.Redis]:
    client = connect(single_redis_url, socket_timeout=2.0)
    assert isinstance(client, redis.Redis)
    yield client
    client.close()


def test_after_the_first_reservation_a_pass_makes_one_round_trip(
    connection: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = RoundTrips(monkeypatch)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    named = [_pass(writer, 3) for _ in range(40)]
    # Before: 80 round trips, a reservation and a transaction per pass.
    assert (trips.reservations, trips.transactions) == (1, 40)
    ids = [i for first, end in named for i in range(first, end)]
    assert len(set(ids)) == 120
    assert sum(int(connection.zcard(key)) for key in keys.window_keys("openrouter")) == 120


def test_a_burst_larger_than_the_ids_held_reserves_once_then_they_follow_it(
    connection: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = RoundTrips(monkeypatch)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    _pass(writer, 3)  # the first reservation; the transaction holds 32 more
    _pass(writer, 500)  # more than held: a reservation of its own
    assert trips.reservations == 2
    for _ in range(3):
        _pass(writer, 500)  # its transaction reserved 4 x 500 ahead
    assert (trips.reservations, trips.transactions) == (2, 5)


def test_writers_reserving_ahead_side_by_side_never_share_an_id(
    connection: redis.Redis, keys: Keys
) -> None:
    writers = [RedisWriter(connection, keys, 360, 3600, writer_id=f"w{i}") for i in range(3)]
    named: list[tuple[int, int]] = []
    for size in [1, 7, 3, 40, 2, 1, 200, 5, 1, 1, 90, 3]:
        for writer in writers:
            named.append(_pass(writer, size))
    ranges = sorted(named)
    assert all(a_end <= b_first for (_, a_end), (b_first, _) in itertools.pairwise(ranges))


def test_a_block_is_about_four_batches_like_the_last_one_within_bounds(
    connection: redis.Redis, keys: Keys
) -> None:
    ids = EventIds(connection, keys, 3600, None, None, Counter())
    assert ids.ahead() == 0  # nothing reserved yet: the first asks whether the master changed
    base = ids.reserve(3) + 3  # the counter after it
    assert ids.ahead() == AHEAD_MIN
    ids.took(base + AHEAD_MIN, AHEAD_MIN)
    assert ids.held == AHEAD_MIN and ids.ahead() == 0  # enough held for a batch like the last
    ids.reserve(AHEAD_MIN - 2)  # from what is held
    assert ids.held == 2 and ids.ahead() == 4 * (AHEAD_MIN - 2)
    ids.took(base + AHEAD_MIN + 120, 120)  # follows on: the 2 left are kept
    assert ids.held == 122
    assert ids.reserve(122) == base + AHEAD_MIN - 2
    ids.took(base + 50_000, 10)  # does not follow on: starts the held ids afresh
    assert ids.held == 10
    ids.reserve(5_000)  # a batch this large: the block ahead is capped
    assert ids.ahead() == AHEAD_MAX


@pytest.fixture
def debuggable_redis() -> Iterator[redis.Redis]:
    """A redis-server of the test's own that takes DEBUG (a promotion's new replication id)."""
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis(extra_args=["--enable-debug-command", "local"])
    connection = redis.Redis.from_url(server.url)
    yield connection
    connection.close()
    server.stop()


@pytest.mark.parametrize(
    "spoiled",
    [b"x", b"1e3", b"9" * 30, str(2**63 - 10).encode(), None],  # None: a list in its place
    ids=["text", "float", "beyond-64-bits", "about-to-overflow", "another-type"],
)
def test_an_id_counter_another_writer_spoiled_starts_again_after_one_failed_reservation(
    connection: redis.Redis, spoiled: bytes | None
) -> None:
    # Before: INCRBY refused the counter at every reservation, RESERVE_IDS's too, and every
    # flush failed for as long as the value stayed (its events dropped once the buffer filled).
    keys = Keys(f"spoiled-ids-{uuid.uuid4().hex[:8]}")
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    _pass(writer, 3)
    connection.delete(keys.event_ids)
    if spoiled is None:
        connection.rpush(keys.event_ids, "x")
    else:
        connection.set(keys.event_ids, spoiled)
    try:
        with pytest.raises(redis.ResponseError):
            writer.reserve_event_ids(AHEAD_MAX * 2)  # beyond the ids held: a reservation
        first = writer.reserve_event_ids(AHEAD_MAX * 2)  # RESERVE_IDS, after the failure
        assert 0 <= first < 2**40
        _pass(writer, 3)
        assert 0 < int(connection.get(keys.event_ids) or 0) < 2**40
    finally:
        connection.delete(*connection.keys(keys.pattern()))


def test_a_failed_transaction_forgets_the_ids_held_and_the_next_asks_about_the_master(
    debuggable_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ids held ahead were reserved on the master of their time: after a failed round trip
    # (a failover among the causes) none of them names an event, and the next reservation
    # asks whether the master changed, so ids a lost master handed out are not handed out again.
    port = debuggable_redis.connection_pool.connection_kwargs["port"]
    keys = Keys("held")
    connection = connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    _pass(writer, 3)
    _pass(writer, 3)
    held_from = writer.reserve_event_ids(1)  # from what the transactions reserved ahead
    held_to = int(debuggable_redis.get(keys.event_ids) or 0)
    assert held_from < held_to
    run = Transactions.run

    def lost(this: Transactions, packed: bytes, queued: int) -> list[Any]:
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(Transactions, "run", lost)
    with pytest.raises(redis.ConnectionError):
        writer.write(build_batch(_events(1), held_from, NO_NOTES))
    monkeypatch.setattr(Transactions, "run", run)
    debuggable_redis.execute_command("DEBUG", "CHANGE-REPL-ID")  # a replica promoted meanwhile
    first = writer.reserve_event_ids(3)
    assert first >= held_to + ID_GAP_PER_MASTER  # the counter jumped: nothing held is reused
    connection.close()


def test_a_failed_write_on_the_same_master_moves_no_ids(debuggable_redis: redis.Redis) -> None:
    port = debuggable_redis.connection_pool.connection_kwargs["port"]
    keys = Keys("same")
    connection = connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0)
    writer = RedisWriter(connection, keys, 360, 3600, writer_id="w1")
    _pass(writer, 3)
    before = int(debuggable_redis.get(keys.event_ids) or 0)
    debuggable_redis.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            writer.write(build_batch(_events(1), writer.reserve_event_ids(1), NO_NOTES))
    finally:
        debuggable_redis.config_set("maxmemory", 0)
    first = writer.reserve_event_ids(3)
    assert first == before  # asked about the master: the same one, so no jump
    connection.close()


def test_a_counter_that_went_back_is_never_used_and_asked_again(
    debuggable_redis: redis.Redis,
) -> None:
    """A master restarted from a snapshot (or a replica promoted) met without a failed round
    trip (a connection opened again without a word): a block below the highest this writer was
    given may hold ids it named already."""
    keys = Keys("went-back")
    ids = EventIds(debuggable_redis, keys, 3600, None, None, Counter())
    first = ids.reserve(100)
    ids.took(int(debuggable_redis.incrby(keys.event_ids, 100)), 100)  # as a transaction does
    assert ids.held == 100
    ids.took(first + 150, 10)  # a block below the last: not held, and the held ones forgotten
    assert ids.held == 0 and ids.ahead() == 0  # the next reservation asks about the master
    assert ids.reserve(10) >= first + 200  # (the same master: no jump, none reused)
    ids.reserve(10)
    debuggable_redis.set(keys.event_ids, first + 50)  # restarted from a snapshot...
    debuggable_redis.execute_command("DEBUG", "CHANGE-REPL-ID")  # ...as a new master
    again = ids.reserve(10)  # a plain reservation finds the counter went back: asks again
    assert again == first + 60 + ID_GAP_PER_MASTER  # (after the plain block it did not use)
