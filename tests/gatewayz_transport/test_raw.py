"""Raw replies (gatewayz_transport.raw): commands sent as they are, replies as Redis sent them, in
order, under RESP2 and RESP3 (``protocol=`` in the URL), on one Redis and on a Redis Cluster;
and the decoders of those replies."""

from __future__ import annotations

import math

import pytest
import redis

from gatewayz_transport.connection import connect
from gatewayz_transport.raw import as_dict, as_scored, as_text, execute_raw
from tests.support.backends import BOTH_BACKENDS


def _with_protocol(url: str, protocol: int) -> str:
    return f"{url}{'&' if '?' in url else '?'}protocol={protocol}"


@pytest.fixture
def filled(r: redis.Redis, namespace: str) -> dict[str, str]:
    """A hash, a sorted set and a string under two hash tags (two cluster slots, most likely
    two nodes)."""
    names = {
        "hash": f"{namespace}:{{a}}:h",
        "zset": f"{namespace}:{{b}}:z",
        "text": f"{namespace}:{{a}}:s",
        "missing": f"{namespace}:{{b}}:none",
    }
    r.hset(names["hash"], mapping={"n:success": "12", "lat_us": "3500000"})
    r.zadd(names["zset"], {"low": float("-inf"), "m1": 1.5, "m2": 2, "high": float("inf")})
    r.set(names["text"], b"caf\xc3\xa9")
    return names


@BOTH_BACKENDS
@pytest.mark.parametrize("protocol", [2, 3])
def test_replies_come_back_as_redis_sent_them_in_order(
    redis_url: str, filled: dict[str, str], protocol: int
) -> None:
    connection = connect(_with_protocol(redis_url, protocol), socket_timeout=2.0)
    replies = execute_raw(
        connection,
        [
            ("HGETALL", filled["hash"]),
            ("ZRANGE", filled["zset"], 0, -1, "WITHSCORES"),
            ("LPUSH", filled["text"], "x"),  # an error: its reply, not raised
            ("GET", filled["text"]),
            ("ZCOUNT", filled["zset"], "(1", "+inf"),
            ("GET", filled["missing"]),
            ("HGETALL", filled["missing"]),
        ],
    )
    connection.close()
    hash_reply, scored, error, text, count, missing, empty = replies
    if protocol == 2:
        assert hash_reply == [b"n:success", b"12", b"lat_us", b"3500000"]
        assert scored == [b"low", b"-inf", b"m1", b"1.5", b"m2", b"2", b"high", b"inf"]
        assert empty == []
    else:
        assert hash_reply == {b"n:success": b"12", b"lat_us": b"3500000"}
        assert scored == [
            [b"low", -math.inf],
            [b"m1", 1.5],
            [b"m2", 2.0],
            [b"high", math.inf],
        ]
        assert empty == {}
    assert isinstance(error, redis.ResponseError) and str(error).startswith("WRONGTYPE")
    assert (text, count, missing) == (b"caf\xc3\xa9", 3, None)
    assert as_dict(hash_reply) == {b"n:success": b"12", b"lat_us": b"3500000"}
    assert as_scored(scored) == [
        (b"low", -math.inf),
        (b"m1", 1.5),
        (b"m2", 2.0),
        (b"high", math.inf),
    ]
    assert as_dict(empty) == {}
    assert as_text(text) == "café"


def test_as_dict_of_both_protocols() -> None:
    assert as_dict([b"a", b"1", b"b", b"2"]) == {b"a": b"1", b"b": b"2"}
    assert as_dict({b"a": b"1"}) == {b"a": b"1"}
    assert as_dict([]) == {}


def test_as_scored_of_both_protocols() -> None:
    assert as_scored([b"m", b"1.25", b"n", b"-3"]) == [(b"m", 1.25), (b"n", -3.0)]
    assert as_scored([[b"m", 1.25], [b"n", -3.0]]) == [(b"m", 1.25), (b"n", -3.0)]
    assert as_scored([]) == []


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"caf\xc3\xa9", "café"),
        (b"\xff\xfeok", "\ufffd\ufffdok"),  # not UTF-8: replaced, never an error
        (b"", ""),
        ("already text", "already text"),
        (42, "42"),
        (None, "None"),
    ],
)
def test_as_text(raw: object, text: str) -> None:
    assert as_text(raw) == text
