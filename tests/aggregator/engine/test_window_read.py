"""The window read as a plan, without Redis: the commands each round sends, and the reading
hand-made replies make (the functional core of the read: ``engine/window_read.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from aggregator.core.health import WindowCounts
from aggregator.engine.window_read import WindowRead
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import LATENCY_PARTITIONS, WINDOW_PARTITIONS

KEYS = Keys("wr")
NOW, WINDOW, TOLERANCE = 1000.0, 300.0, 10.0
LOW, HIGH = "(700.0", "1010.0"  # now - window excluded, now + tolerance included
FAIL = LATENCY_PARTITIONS  # index of the failures' partition (then rate-limited, caller errors)


def _read(
    names: list[str],
    empty: dict[tuple[str, int], tuple[int, ...]] | None = None,
    trimming: frozenset[str] = frozenset(),
    counters: bool = True,
    shards: dict[str, int] | None = None,
) -> WindowRead:
    return WindowRead(
        KEYS, names, NOW, WINDOW, TOLERANCE, shards or {}, empty or {}, trimming, counters
    )


def _flat(**fields: int | str) -> list[bytes]:
    """A raw HGETALL reply under RESP2."""
    return [part for name, value in fields.items() for part in (name.encode(), str(value).encode())]


def test_round_one_counts_every_partition_of_a_provider_seen_first() -> None:
    window_keys = KEYS.window_keys("p")
    commands = _read(["p"]).first_round().commands
    assert commands == [
        ("HGETALL", KEYS.client_stats),
        ("HGETALL", KEYS.redis_ops),
        ("HGETALL", KEYS.clock_offsets),
        ("HGETALL", KEYS.breaker("p")),
        ("HGETALL", KEYS.transitions("p")),
        ("HGETALL", KEYS.totals("p")),
        ("HGETALL", KEYS.exemplars("p")),
        *(("ZCOUNT", key, LOW, HIGH) for key in window_keys),
    ]


def test_replies_become_the_reading() -> None:
    read = _read(["p"])
    plan = read.first_round()
    counts = [0] * WINDOW_PARTITIONS
    counts[0], counts[3], counts[FAIL], counts[FAIL + 2] = 4, 1, 2, 7
    plan.decode(
        [
            _flat(**{"rejected:invalid_latency": 3}),
            _flat(zcount=10),
            _flat(**{"host:1": "0.5|990.0"}),
            _flat(state="open", since="900.0", epoch=3, open_until="930.0", consecutive_opens=1),
            _flat(**{"closed>open": 2}),
            _flat(**{"n:success": 5}),
            [],
            *counts,
        ]
    )
    assert read.second_round(lambda _, state: state.since) is not None  # since 900: inside
    (item,) = read.reading().providers
    assert item.window == WindowCounts(
        tuple(counts[:LATENCY_PARTITIONS]), failures=2, rate_limited=0, caller_errors=7
    )
    assert item.breaker == BreakerState("open", 900.0, 3, 930.0, 1)
    assert item.transitions == {"closed>open": 2}
    assert item.totals == {"n:success": 5}
    reading = read.reading()
    assert reading.client_stats == {"rejected:invalid_latency": 3}
    assert reading.redis_ops == {"zcount": 10}
    assert reading.clock_offsets == {"host:1": (0.5, 990.0)}


def _decode_round_one(read: WindowRead, counts: list[int], exists: int | None = None) -> None:
    plan = read.first_round()
    replies: list[Any] = [[], [], [], [], [], [], [], *counts]
    if exists is not None:
        replies.append(exists)
    plan.decode(replies)


def test_partitions_empty_last_time_are_only_checked_for_existence() -> None:
    counts = [0] * WINDOW_PARTITIONS
    counts[2], counts[FAIL] = 6, 1
    first = _read(["p"])
    _decode_round_one(first, counts)
    empty = first.empty_partitions()
    others = tuple(i for i in range(WINDOW_PARTITIONS) if i not in (2, FAIL))
    assert empty == {("p", 0): others}

    second = _read(["p"], empty=empty)
    window_keys = KEYS.window_keys("p")
    assert second.first_round().commands[7:] == [
        ("ZCOUNT", window_keys[2], LOW, HIGH),
        ("ZCOUNT", window_keys[FAIL], LOW, HIGH),
        ("EXISTS", *(window_keys[i] for i in others)),
    ]
    # None of them exists yet: one round trip, the same counts
    second.first_round().decode([[], [], [], [], [], [], [], 6, 1, 0])
    assert second.second_round(lambda _, state: state.since) is None
    assert second.reading().providers[0].window.total == 7


def test_a_partition_filled_since_the_last_read_is_counted_in_round_two() -> None:
    window_keys = KEYS.window_keys("p")
    empty = {("p", 0): (0, 1)}
    read = _read(["p"], empty=empty)
    plan = read.first_round()
    plan.decode([[], [], [], [], [], [], [], *([0] * (WINDOW_PARTITIONS - 2)), 1])  # EXISTS: 1
    again = read.second_round(lambda _, state: state.since)
    assert again is not None
    assert again.commands == [
        ("ZCOUNT", window_keys[0], LOW, HIGH),
        ("ZCOUNT", window_keys[1], LOW, HIGH),
    ]
    again.decode([3, 0])
    assert read.reading().providers[0].window.successes == 3
    assert read.empty_partitions() == {("p", 0): tuple(range(1, WINDOW_PARTITIONS))}


def test_a_breaker_counting_inside_the_window_counts_only_partitions_with_calls() -> None:
    window_keys = KEYS.window_keys("p")
    counts = [0] * WINDOW_PARTITIONS
    counts[5], counts[FAIL] = 10, 10
    read = _read(["p"])
    _decode_round_one(read, counts)
    since = 950.0
    judged = read.second_round(lambda _, state: since)
    assert judged is not None
    assert judged.commands == [
        ("ZCOUNT", window_keys[5], "(950.0", HIGH),
        ("ZCOUNT", window_keys[FAIL], "(950.0", HIGH),
    ]
    judged.decode([4, 9])
    (item,) = read.reading().providers
    assert item.window.successes == 10 and item.window.failures == 10
    assert item.breaker_counts.successes == 4 and item.breaker_counts.failures == 9


def test_a_trim_due_removes_what_left_the_window_before_counting() -> None:
    window_keys = KEYS.window_keys("p")
    commands = _read(["p"], trimming=frozenset({"p"})).first_round().commands
    trims = [c for c in commands if c[0] == "ZREMRANGEBYSCORE"]
    assert trims == [("ZREMRANGEBYSCORE", key, "-inf", "700.0") for key in window_keys]
    assert commands.index(trims[-1]) < commands.index(("ZCOUNT", window_keys[0], LOW, HIGH))


def test_a_breaker_read_leaves_out_totals_exemplars_and_transitions() -> None:
    read = _read(["p"], counters=False)
    commands = read.first_round().commands
    assert commands[3] == ("HGETALL", KEYS.breaker("p"))
    assert commands[4][0] == "ZCOUNT"
    read.first_round().decode([[], [], [], [], *([0] * WINDOW_PARTITIONS)])
    (item,) = read.reading().providers
    assert (item.totals, item.transitions, item.exemplars) == ({}, {}, {})


def test_a_sharded_provider_is_the_sum_of_its_shards() -> None:
    read = _read(["hot"], shards={"hot": 2})
    commands = read.first_round().commands
    assert ("HGETALL", KEYS.totals("hot", 1)) in commands
    shard = [0] * WINDOW_PARTITIONS
    shard[0] = 2
    other = [3 if i == 0 else 0 for i in range(WINDOW_PARTITIONS)]
    first_shard = [_flat(**{"n:success": 2}), [], *shard]
    second_shard = [_flat(**{"n:success": 3}), [], *other]
    read.first_round().decode([[], [], [], [], [], *first_shard, *second_shard])
    (item,) = read.reading().providers
    assert item.window.successes == 5
    assert item.totals == {"n:success": 5}


def test_an_error_reply_fails_the_read_before_anything_is_decoded() -> None:
    read = _read(["p"])
    plan = read.first_round()
    replies: list[Any] = [[], [], [], [], [], [], [], *([0] * WINDOW_PARTITIONS)]
    replies[5] = ValueError("WRONGTYPE")
    with pytest.raises(ValueError, match="WRONGTYPE"):
        plan.decode(replies)
    assert read.empty_partitions() == {}
