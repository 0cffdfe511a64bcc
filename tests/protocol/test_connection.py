"""Connections (protocol.connection): pipelines packed by hiredis into one buffer, byte for byte
what redis-py would send."""

from __future__ import annotations

import pytest
import redis

from protocol.connection import connect

COMMANDS = [
    ("MULTI",),
    ("ZADD", "ns:{openrouter}:w:ok:3", "1800000000.250", "AAAAAA", "1800000000.251", "AAAAAB"),
    ("EXPIRE", "ns:{openrouter}:w:ok:3", 360),
    ("HINCRBY", "ns:{openrouter}:totals", "n:success", -5),
    ("SET", "ns:event_ids", b"\x00\xff binary", "NX"),
    ("INCRBYFLOAT", "k", 0.5),
    ("SCRIPT LOAD", "return 1"),  # two words: redis-py splits them
    ("EXEC",),
]


def test_a_pipeline_is_one_buffer_of_what_redis_py_would_send(redis_url: str) -> None:
    ours = connect(redis_url, socket_timeout=1.0).connection_pool.make_connection()
    plain = redis.Connection()
    packed = ours.pack_commands(COMMANDS)
    assert packed == [b"".join(plain.pack_commands(COMMANDS))]
    assert packed[0].startswith(b"*1\r\n$5\r\nMULTI\r\n*6\r\n$4\r\nZADD\r\n")
    members = [x for i in range(5_000) for x in ("1.000", f"{i:06d}")]
    big = [("MULTI",), *[("ZADD", f"k{i}", *members) for i in range(3)], ("EXEC",)]
    assert len(plain.pack_commands(big)) == 5  # redis-py alone: one sendall per big command
    assert len(ours.pack_commands(big)) == 1


def test_an_argument_redis_cannot_encode_is_a_data_error(redis_url: str) -> None:
    ours = connect(redis_url, socket_timeout=1.0).connection_pool.make_connection()
    with pytest.raises(redis.DataError):
        ours.pack_commands([("SET", "k", object())])
