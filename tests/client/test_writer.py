"""The writer's connection: pipelines packed by hiredis into one buffer, byte for byte what
redis-py would send; scores to the millisecond."""

from __future__ import annotations

import pytest
import redis

from client.writer import build_batch, connect

COMMANDS = [
    ("MULTI",),
    ("ZADD", "ns:{openrouter}:w:ok:3", "1800000000.250", "AAAAAA", "1800000000.251", "AAAAAB"),
    ("EXPIRE", "ns:{openrouter}:w:ok:3", 360),
    ("HINCRBY", "ns:{openrouter}:totals", "n:success", -5),
    ("SET", "ns:event_ids", b"\x00\xff binary", "NX"),
    ("INCRBYFLOAT", "k", 0.5),
    ("SCRIPT EXISTS", "abc"),  # two words: redis-py splits them
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


def test_scores_are_event_times_to_the_millisecond() -> None:
    events = [
        ("openrouter", 1_800_000_000.0, 0.2, 0, 0, 0),
        ("openrouter", 1_800_000_000.1234, 0.2, 0, 0, 0),
        ("openrouter", 1_800_000_000.9996, 0.2, 0, 0, 0),
    ]
    batch = build_batch(events, 64, {}, 0)
    (flat,) = batch.providers["openrouter"].partitions.values()  # one partition: (0.1, 0.25]
    assert flat == ["1800000000.000", "AAAABA", "1800000000.123", "AAAABB",
                    "1800000001.000", "AAAABC"]  # fmt: skip


def test_histogram_buckets_and_outcome_counts_of_a_batch() -> None:
    bounds = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # the seed contract's buckets, "le" semantics
    latencies = [0.0, 0.05, 0.1, 0.1000001, 0.5, 0.75, 1.0, 2.0, 4.99, 5.0, 10.0, 10.01, 61.0]
    events = [
        ("openrouter", 1_800_000_000.0, latency, outcome, 0, 0)
        for outcome in (0, 1, 2, 3)
        for latency in latencies
    ]
    totals = build_batch(events, 0, {}, 0).providers["openrouter"].totals
    expected: dict[str, int] = {}
    for latency in latencies:
        le = next((f"b:{b:g}" for b in bounds if latency <= b), "b:+Inf")
        expected[le] = expected.get(le, 0) + 4  # once per outcome
    assert {k: v for k, v in totals.items() if k.startswith("b:")} == expected
    counts = {k: v for k, v in totals.items() if k.startswith("n:")}
    assert counts == dict.fromkeys(
        ("n:success", "n:failure", "n:rate_limited", "n:caller_error"), len(latencies)
    )
    assert totals["lat_us"] == round(4 * sum(latencies) * 1_000_000)
