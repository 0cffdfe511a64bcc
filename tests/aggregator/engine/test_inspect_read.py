"""``inspect``'s read as a plan (aggregator/engine/inspect_read.py): reads only, one count per
partition and interval, and the inspection hand-made replies make. Pure: no Redis."""

from __future__ import annotations

from aggregator.core.health import WindowCounts
from aggregator.engine.inspect_read import InspectRead
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import LATENCY_PARTITIONS, WINDOW_PARTITIONS

KEYS = Keys("ir")
READS_ONLY = {"ZCOUNT", "HGETALL", "ZRANGEBYSCORE", "PTTL"}


def test_intervals_exclude_the_window_start_and_include_its_end() -> None:
    read = InspectRead(KEYS, 1_000.0, [700.0, 720.0, 780.0, 1_010.0], {})
    commands = read.plan(["p"]).commands
    assert {c[0] for c in commands} == READS_ONLY
    first_key = KEYS.window_keys("p")[0]
    assert commands[:3] == [
        ("ZCOUNT", first_key, "(700.0", "(720.0"),
        ("ZCOUNT", first_key, "720.0", "(780.0"),
        ("ZCOUNT", first_key, "780.0", "1010.0"),
    ]
    assert ("ZRANGEBYSCORE", KEYS.permits("p"), "(1000000.0", "+inf", "WITHSCORES") in commands
    assert [c[1] for c in commands if c[0] == "PTTL"] == list(KEYS.provider_keys("p"))


def test_replies_become_the_inspection() -> None:
    read = InspectRead(KEYS, 1_000.0, [700.0, 800.0, 1_010.0], {})
    plan = read.plan(["p"])
    zcounts = [0] * (WINDOW_PARTITIONS * 2)
    zcounts[0], zcounts[1] = 2, 5  # partition 0: 2 in the first interval, 5 in the second
    zcounts[2 * LATENCY_PARTITIONS + 1] = 4  # failures, second interval
    ttls = [-2] * len(KEYS.provider_keys("p"))
    ttls[0] = 305_000
    plan.decode(
        [
            *zcounts,
            [b"n:success", b"7"],
            [b"state", b"half_open", b"permits", b"5"],
            [b"closed>open", b"1"],
            [b"worker-1", b"1030000"],
            *ttls,
        ]
    )
    (found,) = read.found
    first = WindowCounts((2,) + (0,) * (LATENCY_PARTITIONS - 1), 0, 0, 0)
    second = WindowCounts((5,) + (0,) * (LATENCY_PARTITIONS - 1), 4, 0, 0)
    assert found.spans == [first, second]
    assert found.totals == {"n:success": 7}
    assert found.breaker == {"state": "half_open", "permits": "5"}
    assert found.transitions == {"closed>open": 1}
    assert found.permits == [("worker-1", 1030.0)]
    assert found.ttl_ms[KEYS.window_keys("p")[0]] == 305_000
    assert found.exists


def test_fields_no_writer_writes_are_left_out_and_named_with_their_values() -> None:
    read = InspectRead(KEYS, 1_000.0, [700.0, 1_010.0], {"p": 2})
    plan = read.plan(["p"])
    per_shard = [0] * WINDOW_PARTITIONS
    ttls = [-2] * len(KEYS.provider_keys("p", 2))
    plan.decode(
        [
            *per_shard,
            [b"n:success", b"7", b"n:failure", b"1.5", b"lat_us", b"9" * 40],
            *per_shard,
            [b"n:success", b"2", b"\xff", b"1", b"tokens", b"x" * 500],
            [b"state", b"bogus", b"since", b"nan", b"open_until", b"5.5", b"permits", b"x"],
            [b"closed>open", b"", b"open>closed", b"3"],
            [],
            *ttls,
        ]
    )
    (found,) = read.found
    assert found.totals == {"n:success": 9}
    assert found.breaker == {"open_until": "5.5"}
    assert found.transitions == {"open>closed": 3}
    assert found.bad == {
        KEYS.totals("p"): {"n:failure": "1.5", "lat_us": "9" * 40},
        KEYS.totals("p", 1): {"\ufffd": "1", "tokens": "x" * 120 + "... (500 bytes)"},
        KEYS.breaker("p"): {"state": "bogus", "since": "nan", "permits": "x"},
        KEYS.transitions("p"): {"closed>open": ""},
    }
