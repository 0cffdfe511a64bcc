"""A read plan: commands and their decoders in one round trip, and operation counts taken from
the commands themselves, which the server's own statistics must confirm."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis

from aggregator.engine.plan import Plan
from aggregator.engine.reader import WindowReader
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from gatewayz_transport.raw import as_dict
from tests.support.backends import BOTH_BACKENDS


@BOTH_BACKENDS
def test_each_group_gets_its_own_replies_as_redis_sent_them(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    r.hset(keys.totals("a"), mapping={"n:success": 3})
    r.zadd(keys.window_keys("b")[0], {"x": 1.0, "y": 2.0, "z": 3.0})
    got: dict[str, list[Any]] = {}
    plan = Plan()
    plan.add([("HGETALL", keys.totals("a"))], lambda replies: got.setdefault("a", replies))
    plan.add(
        [("ZCOUNT", keys.window_keys("b")[0], "(1.0", "3.0"), ("EXISTS", keys.totals("b"))],
        lambda replies: got.setdefault("b", replies),
    )
    assert plan.run(connect(redis_url, 5.0)) == Counter({"hgetall": 1, "zcount": 1, "exists": 1})
    assert [as_dict(reply) for reply in got["a"]] == [{b"n:success": b"3"}]  # RESP2 or RESP3
    assert got["b"] == [2, 0]


def test_an_error_reply_raises_before_any_group_is_decoded() -> None:
    decoded: list[str] = []
    plan = Plan()
    plan.add([("GET", "a")], lambda replies: decoded.append("first"))
    plan.add([("GET", "b")], lambda replies: decoded.append("second"))
    with pytest.raises(redis.ResponseError, match="LOADING"):
        plan.decode([b"1", redis.ResponseError("LOADING Redis is loading the dataset")])
    assert decoded == []
    with pytest.raises(ValueError, match="1 replies to 2 commands"):
        plan.decode([b"1"])


def test_a_key_of_another_type_reads_as_absent_and_is_named() -> None:
    got: list[Any] = []
    plan = Plan()
    wrong = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    commands = [
        ("HGETALL", "h"),
        ("ZCOUNT", "z", "-inf", "+inf"),
        ("GET", "s"),
        ("HMGET", "m", "state", "forced"),
        ("ZRANGE", "r", 0, -1),
        ("ZSCORE", "y", "member"),
    ]
    plan.add(commands, got.extend)
    plan.decode([wrong] * len(commands))
    assert got == [[], 0, None, [None, None], [], None]
    assert plan.wrong_type == ["h", "z", "s", "m", "r", "y"]


def test_an_empty_plan_decodes_empty_groups_without_a_round_trip() -> None:
    decoded: list[list[Any]] = []
    plan = Plan()
    plan.add([], decoded.append)

    class NoServer:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"no I/O expected, got {name}")

    assert plan.run(NoServer()) == Counter()  # type: ignore[arg-type]
    assert decoded == [[]]


def _server_counts(connection: redis.Redis) -> Counter[str]:
    stats = connection.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()})


def test_the_operations_counted_are_the_commands_the_server_ran(
    private_redis: redis.Redis,
) -> None:
    keys = Keys("ops")
    for name in ("a", "b", "c"):
        private_redis.zadd(keys.window_keys(name)[0], {f"{name}1": 990.0})
        private_redis.zadd(keys.window_keys(name)[5], {f"{name}2": 995.0})
    private_redis.hset(keys.breaker("b"), mapping={"state": "open", "since": "950.0", "epoch": 1})
    url = private_redis.connection_pool.connection_kwargs
    reader = WindowReader(connect(f"redis://127.0.0.1:{url['port']}/0", 5.0), keys, 300.0)
    private_redis.config_resetstat()
    for now in (1000.0, 1005.0, 1040.0):  # a trim at the first, again at the last
        reader.read(now, ["a", "b", "c"], lambda _, state: state.since)
    reader.backend(1040.0, 3600.0)
    reader.history(["a", "b"])
    ran = _server_counts(private_redis)
    for handshake in ("config|resetstat", "config", "hello", "client|setinfo", "client"):
        ran.pop(handshake, None)  # this test's own command, and a new connection's greeting
    assert +reader.ops == +ran
