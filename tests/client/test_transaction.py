"""A transaction sent raw on one Redis (``client/_transaction.py``): what ran, what Redis
refused (as exceptions, the rest applied), a discarded transaction applied nothing, a broken
connection is dropped and connected again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from client._transaction import Transactions, pack_transaction
from gatewayz_transport.connection import connect


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
