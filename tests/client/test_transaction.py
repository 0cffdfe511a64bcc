"""A transaction sent raw on one Redis (``client/_transaction.py``): what ran, what Redis
refused (as exceptions, the rest applied), a discarded transaction applied nothing, a broken
connection is dropped and connected again."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from client import _transaction as transaction
from client._transaction import Transactions, pack_transaction
from gatewayz_transport.connection import connect
from tests.support.acl import user_without
from tests.support.processes import wait_for


@pytest.fixture
def key(r: redis.Redis) -> Iterator[str]:
    name = f"test-transaction-{uuid.uuid4().hex[:12]}"
    yield name
    r.delete(name, f"{name}:h")


def test_replies_in_order_with_refusals_as_exceptions_and_the_rest_applied(
    r: redis.Redis, redis_url: str, key: str
) -> None:
    transactions = Transactions(connect(redis_url, socket_timeout=2.0))  # type: ignore[arg-type]
    commands = [
        ("SET", key, "x"),
        ("INCRBY", key, 1),  # not an integer: refused when run, the others still run
        ("HSET", f"{key}:h", "f", "v"),
        ("TIME",),
        ("HGET", f"{key}:h", "missing"),
    ]
    replies = transactions.run(pack_transaction(commands), len(commands))
    assert replies[0] == b"OK"
    assert isinstance(replies[1], redis.ResponseError)
    assert replies[2] == 1
    assert abs(int(replies[3][0]) - r.time()[0]) <= 1  # (seconds, microseconds)
    assert replies[4] is None
    assert r.get(key) == b"x" and r.hget(f"{key}:h", "f") == b"v"


def test_a_transaction_redis_discards_applies_nothing_and_raises_the_refusal(
    private_redis: redis.Redis,
) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    transactions = Transactions(connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0))  # type: ignore[arg-type]
    private_redis.config_set("maxmemory", 1)
    try:
        commands = [("SET", "a", "1"), ("SET", "b", "2")]
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            transactions.run(pack_transaction(commands), len(commands))
    finally:
        private_redis.config_set("maxmemory", 0)
    assert private_redis.exists("a", "b") == 0
    # the connection stays usable: the refusal was read to its end
    assert transactions.run(pack_transaction(commands), 2) == [b"OK", b"OK"]


def test_a_broken_connection_raises_and_the_next_transaction_connects_again(
    private_redis: redis.Redis,
) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    transactions = Transactions(connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0))  # type: ignore[arg-type]
    assert transactions.run(pack_transaction([("INCR", "n")]), 1) == [1]
    private_redis.client_kill_filter(_type="normal", skipme=True)  # the kept connection dies
    with pytest.raises(redis.ConnectionError):
        transactions.run(pack_transaction([("INCR", "n")]), 1)
    assert transactions.run(pack_transaction([("INCR", "n")]), 1) in ([2], [3])
    # (2: the failed one never reached Redis; 3: it ran and its reply was lost)


def test_an_argument_redis_cannot_encode_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(redis.DataError):
        pack_transaction([("SET", "k", object())])


def test_a_refused_multi_means_the_commands_ran_one_by_one(private_redis: redis.Redis) -> None:
    # an ACL without MULTI (or a proxy without transactions): Redis runs each command as it
    # comes and refuses EXEC; what they did is done, reported as applied, never sent again
    port = private_redis.connection_pool.connection_kwargs["port"]
    with user_without(f"redis://127.0.0.1:{port}/0", "multi") as url:
        transactions = Transactions(connect(url, socket_timeout=2.0))  # type: ignore[arg-type]
        commands = [("INCRBY", "n", 2), ("HSET", "n", "f", "v"), ("INCRBY", "n", 3)]
        replies = transactions.run(pack_transaction(commands), len(commands))
        assert replies[0] == 2 and isinstance(replies[1], redis.ResponseError)
        assert replies[2] == 5
        assert private_redis.get("n") == b"5"
        assert transactions.run(pack_transaction(commands[:1]), 1) == [7]  # the connection is fine


def _spin(connection: redis.Redis) -> None:
    """A script that never ends (until SCRIPT KILL)."""
    with contextlib.suppress(redis.RedisError):
        connection.eval("while true do end", 0)


def _busy(connection: redis.Redis) -> bool:
    try:
        connection.ping()
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def test_a_busy_redis_discards_the_transaction_and_applies_nothing(
    private_redis: redis.Redis,
) -> None:
    # BUSY (a script running past its time limit): Redis takes MULTI (it runs even then) and
    # refuses each command, so EXEC discards the transaction: nothing ran, the refusal is
    # raised (the flusher retries), unlike a MULTI refused for good
    port = private_redis.connection_pool.connection_kwargs["port"]
    private_redis.config_set("busy-reply-threshold", 50)
    url = f"redis://127.0.0.1:{port}/0"
    transactions = Transactions(connect(url, socket_timeout=2.0))  # type: ignore[arg-type]
    assert transactions.run(pack_transaction([("PING",)]), 1) == [b"PONG"]  # connected before
    blocker = redis.Redis(port=port, socket_timeout=10)
    spinning = threading.Thread(target=_spin, args=(blocker,), daemon=True)
    spinning.start()
    try:
        wait_for(lambda: _busy(private_redis), timeout=5)
        commands = [("SET", "a", "1"), ("SET", "b", "2")]
        with pytest.raises(redis.ResponseError, match="BUSY"):
            transactions.run(pack_transaction(commands), len(commands))
    finally:
        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=port).script_kill()
        spinning.join(timeout=10)
        blocker.close()
    assert private_redis.exists("a", "b") == 0


def test_a_connection_redis_closed_while_idle_is_replaced_before_sending(
    private_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis's `timeout` closes idle connections: the next transaction failed (an error logged,
    # a retry) after every quiet spell. Killed here, as the timeout would, after any idleness.
    monkeypatch.setattr(transaction, "IDLE_SECONDS", 0.0)
    port = private_redis.connection_pool.connection_kwargs["port"]
    transactions = Transactions(connect(f"redis://127.0.0.1:{port}/0", socket_timeout=2.0))  # type: ignore[arg-type]
    assert transactions.run(pack_transaction([("INCRBY", "n", 1)]), 1) == [1]
    assert private_redis.client_kill_filter(_type="normal", skipme=True) == 1
    assert transactions.run(pack_transaction([("INCRBY", "n", 1)]), 1) == [2]  # no error


def test_reads_answer_in_order_and_a_refusal_before_the_last_drops_the_connection(
    r: redis.Redis, redis_url: str, key: str
) -> None:
    """A refusal mid-way leaves the later replies unread on the connection: it is dropped, so
    the next transaction cannot read them as its own. A refusal last leaves nothing unread.
    (Which connection: Redis's CLIENT ID, read on it.)"""
    r.set(key, "x")
    transactions = Transactions(connect(redis_url, socket_timeout=2.0))  # type: ignore[arg-type]
    first, got, missing = transactions.reads(
        [("CLIENT", "ID"), ("GET", key), ("HGET", key + "h", "f")]
    )
    assert (got, missing) == (b"x", None)
    with pytest.raises(redis.ResponseError):
        transactions.reads([("GET", key), ("HGET", key, "f")])  # WRONGTYPE, last
    assert transactions.read("CLIENT", "ID") == first  # the same connection goes on
    with pytest.raises(redis.ResponseError):
        transactions.reads([("HGET", key, "f"), ("GET", key)])  # WRONGTYPE, then one unread
    second = transactions.read("CLIENT", "ID")
    assert isinstance(second, int) and second != first  # another connection: not a stale reply
    assert transactions.read("GET", key) == b"x"
