"""The dashboard's history: points encoded and decoded (pure), and the writer keeping one point
per minute and provider, the newest 60, on a real Redis."""

from __future__ import annotations

import redis

from aggregator.core.history import (
    HISTORY_POINTS,
    HistoryPoint,
    decode_points,
    minute_start,
    read_points,
)
from aggregator.engine.writer import StateWriter
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


def test_points_round_trip_and_strangers_are_skipped() -> None:
    point = HistoryPoint(1_800_000_060, 0.715, 0.1 + 0.2)
    assert HistoryPoint.decode(point.encode()) == point
    assert HistoryPoint.decode(point.encode().encode()) == point
    assert HistoryPoint.decode("not|a point") is None
    assert HistoryPoint.decode("1|x|0.5") is None
    for foreign in (
        b"\xff\xfe",
        "60|nan|0",
        "60|0.5|inf",
        "60|1.5|0",
        "60|0.5|-1",
        "61|1|0",
        "-60|1|0",
    ):
        assert HistoryPoint.decode(foreign) is None, foreign
    later = HistoryPoint(1_800_000_120, 1.0, 0.0)
    assert decode_points([later.encode(), b"junk", point.encode()]) == [point, later]
    assert read_points([b"\xff", later.encode(), "1|2"]) == ([later], ["\ufffd", "1|2"])


def test_a_minute_starts_on_the_minute() -> None:
    assert minute_start(1_800_000_059.999) == 1_800_000_000
    assert minute_start(1_800_000_060.0) == 1_800_000_060


def test_the_writer_keeps_one_point_per_minute_and_the_newest_sixty(
    r: redis.Redis, keys: Keys
) -> None:
    writer = StateWriter(r, keys, retention_seconds=3600)
    start = 1_800_000_000
    for minute in range(HISTORY_POINTS + 5):
        point = HistoryPoint(start + 60 * minute, 1.0, 0.0)
        writer.begin(None).history({"openrouter": point}).send()
    rewritten = HistoryPoint(start + 60 * (HISTORY_POINTS + 4), 0.5, 0.25)  # same minute again
    writer.begin(None).history({"openrouter": rewritten}).send()
    points = decode_points(r.zrange(keys.history("openrouter"), 0, -1))
    assert len(points) == HISTORY_POINTS
    assert points[0].minute_start == start + 60 * 5  # the 5 oldest trimmed
    assert points[-1] == rewritten  # replaced, not added twice
    assert 0 < r.ttl(keys.history("openrouter")) <= 2 * 3600
