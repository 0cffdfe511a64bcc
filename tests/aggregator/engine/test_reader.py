"""The window reader on a real Redis: trims spread over the reads (each provider's keys once per
trim interval, never all of them in one read but the first), and the breaker's counts, read
only from the partitions the window read found events in, equal to counts made by hand; and
Redis's refusal counts as INFO tells them (read_memory)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from aggregator.engine.reader import TRIM_SHARE, WindowReader, read_memory, read_registry
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import LATENCY_PARTITIONS, WINDOW_PARTITIONS
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

NOW = 1_800_000_000.0
WINDOW = 300.0
READ_EVERY = 5.0  # the breaker cycle's default interval
TRIM_INTERVAL = WINDOW * TRIM_SHARE  # 30 s


def _trims(reader: WindowReader, now: float, providers: list[str]) -> int:
    """Window keys the read at ``now`` trimmed."""
    reader.ops.clear()
    reader.read(now, providers)
    return reader.ops["zremrangebyscore"]


def test_each_provider_is_trimmed_once_per_interval_spread_over_the_reads(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    providers = [f"provider-{i}" for i in range(60)]
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW)
    assert _trims(reader, NOW, providers) == 60 * WINDOW_PARTITIONS  # the first read: all

    reads = int(TRIM_INTERVAL / READ_EVERY)
    trimmed = [_trims(reader, NOW + READ_EVERY * (i + 1), providers) for i in range(reads)]
    # Over one interval every provider is trimmed exactly once, a share of them per read.
    assert sum(trimmed) == 60 * WINDOW_PARTITIONS
    assert max(trimmed) <= 60 * WINDOW_PARTITIONS // 2
    assert _trims(reader, NOW + READ_EVERY * reads, providers) == 0  # read again: none due


def test_what_left_the_window_is_trimmed_within_the_interval(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    failures = keys.window_keys("openrouter")[LATENCY_PARTITIONS]
    r.zadd(failures, {"old": NOW - 1, "new": NOW + 100})
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW)
    reader.read(NOW, ["openrouter"])  # both in the window
    assert r.zcard(failures) == 2

    for step in range(int(TRIM_INTERVAL / READ_EVERY) + 1):
        reading = reader.read(NOW + WINDOW + step * READ_EVERY, ["openrouter"])
        assert reading.providers[0].window.failures == 1  # counted right, trimmed or not
    assert r.zrange(failures, 0, -1) == [b"new"]


def test_breaker_counts_equal_a_count_by_hand(redis_url: str, r: redis.Redis, keys: Keys) -> None:
    """Calls at known times in three success partitions and the failure partition; the
    breaker counts those after ``since``, the window all of them."""
    window_keys = keys.window_keys("openrouter")
    since = NOW - 60
    # partition -> call times (seconds before NOW)
    calls = {
        0: [250, 59, 10],
        4: [120, 30],
        LATENCY_PARTITIONS - 1: [5],
        LATENCY_PARTITIONS: [61, 1],
    }
    for partition, ages in calls.items():
        r.zadd(window_keys[partition], {f"e{a}": NOW - a for a in ages})
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW)
    reading = reader.read(NOW, ["openrouter"], counting_start=lambda _, state: since)
    (provider,) = reading.providers
    assert provider.window.successes == 6
    assert provider.window.failures == 2
    assert provider.breaker_counts.successes == 4  # 59, 10, 30, 5
    assert provider.breaker_counts.failures == 1  # 1 (61 is before since)
    # The first read counts every partition and the breaker's calls in the four with calls;
    # the next one counts those four again (window and breaker) and asks whether any of the
    # twenty empty ones exists now.
    reader.ops.clear()
    again = reader.read(NOW, ["openrouter"], counting_start=lambda _, state: since)
    assert again.providers == reading.providers
    assert reader.ops["zcount"] == 4 + 4
    assert reader.ops["exists"] == 1


def test_a_counting_start_before_the_window_reads_once(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    r.zadd(keys.window_keys("openrouter")[0], {"e": NOW - 10})
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW)
    reader.ops.clear()
    reading = reader.read(NOW, ["openrouter"], counting_start=lambda _, s: NOW - 2 * WINDOW)
    assert reader.ops["zcount"] == WINDOW_PARTITIONS
    assert reading.providers[0].breaker_counts == reading.providers[0].window


def test_a_partition_empty_at_the_last_read_is_counted_when_calls_arrive(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    window_keys = keys.window_keys("openrouter")
    r.zadd(window_keys[2], {"a": NOW - 100})
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW)
    since = NOW - 60
    first = reader.read(NOW, ["openrouter"], counting_start=lambda _, state: since)
    assert first.providers[0].window.success_partitions[2] == 1
    assert first.providers[0].breaker_counts.successes == 0  # before since

    r.zadd(window_keys[7], {"b": NOW - 50, "c": NOW - 70})  # empty before
    r.zadd(window_keys[LATENCY_PARTITIONS + 1], {"d": NOW - 1})  # rate limited, empty before
    (provider,) = reader.read(NOW, ["openrouter"], counting_start=lambda _, state: since).providers
    assert provider.window.success_partitions[2] == 1
    assert provider.window.success_partitions[7] == 2
    assert provider.window.rate_limited == 1
    assert provider.window.total == 4
    assert provider.breaker_counts.success_partitions[7] == 1  # b only
    assert provider.breaker_counts.rate_limited == 1
    assert provider.breaker_counts.total == 2

    r.delete(*window_keys)  # gone (e.g. trimmed empty): nothing is counted from memory
    (provider,) = reader.read(NOW, ["openrouter"]).providers
    assert provider.window.total == 0


def test_a_breaker_read_leaves_the_counters_out(redis_url: str, r: redis.Redis, keys: Keys) -> None:
    r.zadd(keys.window_keys("openrouter")[LATENCY_PARTITIONS], {"f": NOW - 10})
    r.hset(keys.totals("openrouter"), "n:failure", 1)
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW)
    full = reader.read(NOW, ["openrouter", "anthropic"], counting_start=lambda _, s: NOW - 60)
    reader.ops.clear()
    light = reader.read(
        NOW, ["openrouter", "anthropic"], counting_start=lambda _, s: NOW - 60, counters=False
    )
    assert reader.ops["hgetall"] == 3 + 2  # the shared hashes and each provider's breaker
    assert full.providers[0].totals == {"n:failure": 1}
    for with_counters, without in zip(full.providers, light.providers, strict=True):
        assert without.breaker == with_counters.breaker
        assert without.window == with_counters.window
        assert without.breaker_counts == with_counters.breaker_counts
        assert (without.totals, without.transitions, without.exemplars) == ({}, {}, {})


def test_the_aggregator_holds_its_own_cap_on_names_written_around_the_clients(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    r.zadd(keys.providers, {f"raw-{i}": NOW - 1_000 + i * 0.1 for i in range(2_500)})
    r.zadd(keys.providers, {"bad name!": NOW, b"\xff\xfe": NOW})  # the newest: read first
    reader = WindowReader(connect(redis_url, 5.0), keys, WINDOW, max_providers=1_000)
    names = reader.known_providers(NOW, 7 * 86_400.0, 3_600.0)
    assert len(names) == 998  # the 1,000 most recently seen, two of them no provider's name
    assert names[0] == "raw-2499" and "raw-1502" in names and "raw-1501" not in names
    assert reader.over_cap == 2_502 - 1_000
    (skip,) = reader.take_skipped()
    assert (skip.kind, skip.key) == ("registry", keys.providers)
    assert sorted(skip.fields) == sorted(["'bad name!'", repr("\ufffd\ufffd")])
    found, count = reader.registered(2_502)  # inspect's view: the newest, up to its cap
    assert (set(found), count) == ({f"raw-{i}" for i in range(2_500)}, 2_502)


def test_an_operators_read_of_the_registry_is_bounded_whatever_it_holds(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    r.zadd(keys.providers, {f"raw-{i}": NOW - 1_000 + i for i in range(500)})
    r.zadd(keys.providers, {"bad name!": NOW})  # the newest: counted, not a name
    connection = connect(redis_url, 5.0)
    newest, count = read_registry(connection, keys, 3)
    assert (newest, count) == ({"raw-498": NOW - 502, "raw-499": NOW - 501}, 501)
    named = read_registry(connection, keys, 0, ["raw-0", "nobody", "bad name!"])
    assert named == ({"raw-0": NOW - 1_000}, 501)
    assert read_registry(connection, Keys(f"empty-{uuid.uuid4().hex[:8]}"), 3) == ({}, 0)


def test_a_registry_of_another_type_reads_as_empty(
    redis_url: str, r: redis.Redis, keys: Keys
) -> None:
    # Found by a fuzz of foreign data: ZSCORE on a key of another type read back as [] (what
    # a missing list answers) and float([]) raised: every breaker command over HTTP answered
    # 500 while the registry held another type.
    r.set(keys.providers, "x")
    connection = connect(redis_url, 5.0)
    assert read_registry(connection, keys, 3, ["steady", "modeled"]) == ({}, 0)


def test_every_command_an_acl_refuses_is_counted_on_every_master(redis_url: str) -> None:
    """Redis's own count of NOPERM refusals (any client's, summed over a cluster's masters) is
    what the aggregator exports (gatewayz_redis_permission_refusals_total)."""
    connection = connect(redis_url, socket_timeout=2.0)
    user = f"gatewayz-test-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    if isinstance(connection, RedisCluster):
        nodes = [(n.host, n.port) for n in connection.get_primaries()]
    else:
        kwargs = connection.connection_pool.connection_kwargs
        nodes = [(kwargs.get("host", "127.0.0.1"), kwargs.get("port", 6379))]
    setup = [redis.Redis(host=h, port=p) for h, p in nodes]
    try:
        for node in setup:
            node.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["nothing:*"])
            node.execute_command("ACL", "SETUSER", user, "+get", "+@connection")
        before = read_memory(connection, Counter())
        assert before is not None
        for host, port in nodes:  # one refusal on each master
            limited = redis.Redis(host=host, port=port, username=user, password=password)
            with pytest.raises(redis.exceptions.NoPermissionError):
                limited.set("refused", 1)
            limited.close()
        after = read_memory(connection, Counter())
        assert after is not None
        assert after.permission_refusals - before.permission_refusals == len(nodes)
    finally:
        for node in setup:
            node.acl_deluser(user)
            node.close()
        connection.close()


class _Masters(RedisCluster):
    """A cluster's INFO, two masters apart (no network): what read_memory makes of it."""

    def __init__(self, sections: dict[str, dict[str, dict[str, object]]]) -> None:
        self.sections = sections  # section -> node -> fields; RedisCluster's __init__ not run

    def info(self, section: object = None, *args: object, **kwargs: object) -> Any:
        return self.sections[str(section)]


def test_on_a_cluster_the_fullest_master_is_reported_with_every_masters_evictions() -> None:
    # scaling-out.md: "INFO comes from every master: memory headroom is the fullest master's,
    # evictions the sum" (and an evicting policy on any master is reported)
    cluster = _Masters(
        {
            "memory": {
                "a:1": {"used_memory": 10, "maxmemory": 100, "maxmemory_policy": "noeviction"},
                "b:2": {"used_memory": 90, "maxmemory": 100, "maxmemory_policy": "noeviction"},
                "c:3": {"used_memory": 5, "maxmemory": 100, "maxmemory_policy": "allkeys-lru"},
            },
            "stats": {"a:1": {"evicted_keys": 3}, "b:2": {"evicted_keys": 4}, "c:3": {}},
            "errorstats": {
                "a:1": {"errorstat_OOM": {"count": 2}},
                "b:2": {"errorstat_NOPERM": {"count": 5}},
                "c:3": {"errorstat_OOM": {"count": 1}},
            },
        }
    )
    ops: Counter[str] = Counter()
    memory = read_memory(cluster, ops)
    assert memory is not None
    assert (memory.used_bytes, memory.max_bytes) == (90, 100)  # b: 90% full
    assert memory.policy == "allkeys-lru"  # c's: a master that can evict is said
    assert (memory.evicted_keys, memory.oom_refusals, memory.permission_refusals) == (7, 3, 5)
    assert ops == {"info": 9}  # three sections of three masters
