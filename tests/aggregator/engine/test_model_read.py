"""The model breakers' read on a real Redis and a Cluster: a registry member no writer could
have written and a window key of another type are skipped (counted), never stop the read; a
breaker counts from its own start; only listed providers are read. Injected times."""

from __future__ import annotations

from collections import Counter

import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.readings import Skip
from aggregator.engine.model_read import ModelBreakerReader
from gatewayz_protocol.breaker_state import BreakerState, encode_breaker
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

NOW = 1_800_000_000.0
POLICY = BreakerPolicy(BreakerConfig())


class _Sink:
    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.skipped: list[Skip] = []


def _reader(
    redis_url: str, keys: Keys, sink: _Sink, providers: tuple[str, ...]
) -> ModelBreakerReader:
    connection = connect(redis_url, socket_timeout=2.0)
    return ModelBreakerReader(connection, keys, providers, 50, 64, 10.0, 3600.0, 86400.0, sink)


def test_counts_from_each_breakers_start_and_skips_what_no_writer_wrote(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    registry = keys.models("p")
    r.zadd(registry, {"a": NOW, "b": NOW, "x" * 65: NOW, "old": NOW - 7200})
    ok_a, fail_a, _ = keys.model_window_keys("p", "a")
    r.zadd(ok_a, {"1": NOW - 5, "2": NOW - 2, "3": NOW - 100})  # the last: past the horizon
    r.zadd(fail_a, {"4": NOW - 1})
    opened_at = NOW - 3  # a half-open breaker counts its trial calls since its transition
    state = BreakerState("half_open", opened_at, 2, NOW - 3, 1)
    fields = encode_breaker(state, 5, 30)
    r.hset(keys.model_breaker("p", "a"), mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
    r.set(keys.model_window_keys("p", "b")[2], "not a set")
    r.zadd(keys.model_window_keys("q", "a")[0], {"9": NOW})  # q is not listed
    sink = _Sink()
    readings = _reader(redis_url, keys, sink, ("p",)).read(NOW, POLICY)
    by_model = {m.model: m for m in readings}
    assert set(by_model) == {"a", "b"}
    a = by_model["a"]
    assert a.breaker == state
    assert (a.successes, a.failures, a.rate_limited) == (1, 1, 0)  # NOW - 5 is before its start
    assert r.zcard(ok_a) == 2  # trimmed past the 60 s horizon
    assert (by_model["b"].successes, by_model["b"].rate_limited) == (0, 0)
    kinds = sorted(skip.kind for skip in sink.skipped)
    assert kinds == ["model registry", "window", "window"]  # its trim and its count
    assert sink.ops["hgetall"] == 2 and sink.ops["zrevrangebyscore"] == 1
    assert sink.ops["zcount"] == 2 * 3 + 3  # a's again from its own start


def test_nothing_listed_nothing_read(redis_url: str, keys: Keys) -> None:
    sink = _Sink()
    assert _reader(redis_url, keys, sink, ()).read(NOW, POLICY) == []
    assert sink.ops == Counter()
