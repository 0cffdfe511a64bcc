"""How Redis's replies decode into a reading (aggregator/core/readings.py): hand-built hashes,
what no client wrote skipped. Pure."""

from __future__ import annotations

from aggregator.core.health import WindowCounts
from aggregator.core.readings import (
    ProviderInspection,
    RedisMemory,
    decode_exemplars,
    newest_exemplars,
    redis_memory,
    shard_counts,
    window_counts,
)
from gatewayz_protocol.partitions import LATENCY_PARTITIONS, WINDOW_PARTITIONS


def test_window_counts_follow_the_key_order() -> None:
    values = list(range(1, WINDOW_PARTITIONS + 1))
    counts = window_counts(values)
    assert counts == WindowCounts(
        tuple(range(1, LATENCY_PARTITIONS + 1)),
        failures=LATENCY_PARTITIONS + 1,
        rate_limited=LATENCY_PARTITIONS + 2,
        caller_errors=LATENCY_PARTITIONS + 3,
    )


def test_memory_as_info_tells_it() -> None:
    memory = redis_memory(
        {"used_memory": 1_000, "mem_not_counted_for_evict": 200, "maxmemory": 5_000,
         "maxmemory_policy": "volatile-lru"},
        {"evicted_keys": 7},
    )  # fmt: skip
    assert memory == RedisMemory(800, 5_000, "volatile-lru", 7)
    assert memory.can_evict  # volatile policies evict our keys too: they carry TTLs
    assert not RedisMemory(800, 5_000, "noeviction", 0).can_evict
    assert redis_memory({}, {}) == RedisMemory(0, 0, "", 0)
    errorstats = {"errorstat_OOM": {"count": 12}, "errorstat_NOPERM": {"count": 5}}
    assert redis_memory({}, {}, errorstats) == RedisMemory(0, 0, "", 0, 12, 5)
    as_text = {"errorstat_OOM": "count=12", "errorstat_NOPERM": "count=5"}  # redis-py 5.0
    assert redis_memory({}, {}, as_text) == RedisMemory(0, 0, "", 0, 12, 5)


def test_exemplars_no_client_wrote_are_skipped() -> None:
    raw = {
        b"3": b'{"l":{"trace_id":"ab"},"v":0.5,"t":100.0}',
        b"x": b'{"l":{},"v":1,"t":1}',  # not a bucket index
        b"4": b"not json",
        b"5": b'{"v":1}',
    }
    assert decode_exemplars(raw) == {3: ({"trace_id": "ab"}, 0.5, 100.0)}


def test_the_newest_exemplar_of_two_shards_wins_per_bucket() -> None:
    a = {1: ({"t": "a"}, 1.0, 10.0), 2: ({"t": "a"}, 1.0, 30.0)}
    b = {1: ({"t": "b"}, 2.0, 20.0), 2: ({"t": "b"}, 2.0, 25.0), 3: ({"t": "b"}, 3.0, 1.0)}
    assert newest_exemplars(a, b) == {
        1: ({"t": "b"}, 2.0, 20.0),
        2: ({"t": "a"}, 1.0, 30.0),
        3: ({"t": "b"}, 3.0, 1.0),
    }


def test_shard_counts_keep_what_a_client_could_have_written() -> None:
    raw = [(b"hot", 4.0), (b"one", 1.0), (b"huge", 65.0), (b"bad name!", 3.0), (b"max", 64.0)]
    assert shard_counts(raw) == {"hot": 4, "max": 64}


def test_a_provider_exists_while_any_of_its_keys_does() -> None:
    empty = WindowCounts.empty()
    found = ProviderInspection("p", [empty], {}, {}, {}, [], {"k1": -2, "k2": -2})
    assert not found.exists
    assert ProviderInspection("p", [empty], {}, {}, {}, [], {"k1": -2, "k2": -1}).exists
