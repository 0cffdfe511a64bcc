"""The snapshot (aggregator/core/snapshot.py): built from a reading by hand, its JSON round trip,
what an older or newer leader's JSON decodes to, and the published (compressed) form. Pure."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.core.health import WindowCounts
from aggregator.core.readings import ProviderReading, Reading
from aggregator.core.snapshot import (
    CLOCK_OFFSET_HORIZON_SECONDS,
    HealthTargets,
    Snapshot,
    build_snapshot,
    decode_published,
    encode_published,
    provider_health,
    silent_clocks,
)
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.partitions import HISTOGRAM_BOUNDS, LATENCY_PARTITIONS
from tests.support.strategies import BREAKER_STATES, WINDOW_COUNTS, property_settings

TARGETS = HealthTargets(300.0, 2.0, 10.0)
NOW = 10_000.0


def _reading() -> Reading:
    successes = [0] * LATENCY_PARTITIONS
    successes[0] = 30
    window = WindowCounts(tuple(successes), failures=10, rate_limited=5, caller_errors=2)
    item = ProviderReading(
        "openrouter",
        window,
        window,
        {"n:success": 100, "n:failure": 12, "tokens": 7},
        BreakerState(),
        {"closed>open": 1},
    )
    return Reading(
        (item,),
        client_stats={
            "rejected:invalid_latency": 4,
            "dropped:buffer_full": 3,
            "dropped": 2,  # a client before drop causes: buffer evictions
            "log_records_dropped": 9,
        },
        redis_ops={"zadd": 50},
        clock_offsets={"a:1": (0.25, NOW - 5), "b:2": (-1.0, NOW - 601)},
    )


def test_a_snapshot_is_built_from_the_reading_and_the_states_after_the_cycle() -> None:
    opened = BreakerState("open", NOW, 1, NOW + 30, 1)
    snapshot = build_snapshot(_reading(), {"openrouter": opened}, NOW, 7, TARGETS)
    assert (snapshot.taken_at, snapshot.cycle, snapshot.window_seconds) == (NOW, 7, 300.0)
    (health,) = snapshot.providers
    assert health.breaker == opened
    assert health.availability == 0.0  # the state after the cycle, not the one read
    assert health.error_rate == 10 / 40  # rate-limited calls and caller errors excluded
    assert health.window_requests == 47
    assert health.requests_total["success"] == 100 and health.tokens_total == 7
    assert health.transitions == {"closed>open": 1}
    assert health.open_suppressed is False
    assert snapshot.client_rejected == {"invalid_latency": 4}
    assert snapshot.client_dropped_by_cause == {"buffer_full": 5}
    assert snapshot.client_dropped == 5
    assert snapshot.log_records_dropped == 9
    assert snapshot.redis_ops == {"zadd": 50}
    assert snapshot.client_clock_offsets == {"a:1": 0.25}  # b:2 measured over 10 min ago


def test_an_opening_held_back_by_the_guard_is_marked() -> None:
    snapshot = build_snapshot(
        _reading(), {"openrouter": BreakerState()}, NOW, 1, TARGETS, frozenset({"openrouter"})
    )
    assert snapshot.providers[0].open_suppressed is True


EVERY_BOUND = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0)


def test_extra_bounds_count_the_calls_above_10_s_from_their_bands() -> None:
    reading = _reading()
    totals = {"b:0.1": 4, "b:10": 1, "b:+Inf": 9, "b:15": 1, "b:30": 2, "b:60": 3}
    reading = replace(reading, providers=(replace(reading.providers[0], totals=totals),))
    targets = HealthTargets(300.0, 2.0, 10.0, EVERY_BOUND)
    snapshot = build_snapshot(reading, {"openrouter": BreakerState()}, NOW, 1, targets)
    assert snapshot.histogram_bounds == EVERY_BOUND
    # 10: 4 + 1; 15: + 1; 30: + 2; 60: + 3; +Inf: 4 + 1 + 9 (3 above 60 s)
    assert snapshot.providers[0].histogram_cumulative == (4, 4, 4, 4, 4, 5, 6, 8, 11, 14)
    seed = build_snapshot(reading, {"openrouter": BreakerState()}, NOW, 1, TARGETS)
    assert seed.histogram_bounds == HISTOGRAM_BOUNDS
    assert seed.providers[0].histogram_cumulative == (4, 4, 4, 4, 4, 5, 14)


def test_exemplars_land_in_the_bucket_their_value_belongs_to() -> None:
    stored = {
        6: ({"trace_id": "a"}, 25.0, NOW - 3),  # a client's +Inf bucket: above 10 s
        0: ({"trace_id": "b"}, 3.0, NOW - 2),  # stored under another bucket: placed by value
        4: ({"trace_id": "c"}, 4.0, NOW - 1),  # (2, 5] as well, and later: kept
        2: ({"trace_id": "d"}, 1.0, NOW - 9),  # on a bound: "le", bucket (0.5, 1]
    }
    health = provider_health(
        "p", WindowCounts.empty(), BreakerState(), {}, {}, 2.0, 10.0, False, stored, EVERY_BOUND
    )
    assert health.exemplars == {
        "7": ({"trace_id": "a"}, 25.0, NOW - 3),  # (15, 30]
        "4": ({"trace_id": "c"}, 4.0, NOW - 1),
        "2": ({"trace_id": "d"}, 1.0, NOW - 9),
    }
    seed = provider_health(
        "p", WindowCounts.empty(), BreakerState(), {}, {}, 2.0, 10.0, False, stored
    )
    assert seed.exemplars["6"] == ({"trace_id": "a"}, 25.0, NOW - 3)  # +Inf


def test_a_snapshot_without_histogram_bounds_has_the_seeds() -> None:
    data = json.loads(
        build_snapshot(_reading(), {"openrouter": BreakerState()}, NOW, 1, TARGETS).to_json()
    )
    del data["histogram_bounds"]  # an older leader's
    assert Snapshot.from_json(json.dumps(data)).histogram_bounds == HISTOGRAM_BOUNDS


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ([0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0], "p: 7 histogram buckets for 7 bounds"),
        ([0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0], "are not ones this replica knows"),
        ([0.1, 0.5, 1.0, 2.0, 5.0, "nan"], "are not ones this replica knows"),
    ],
)
def test_a_snapshot_whose_histogram_does_not_fit_its_bounds_is_refused_by_name(
    bounds: list[float | str], message: str
) -> None:
    data = {
        "taken_at": NOW,
        "cycle": 1,
        "histogram_bounds": bounds,
        "providers": [{"provider": "p"}],
    }
    with pytest.raises(ValueError, match=message):
        Snapshot.from_json(json.dumps(data))


def test_writers_silent_past_the_horizon_are_to_forget() -> None:
    assert CLOCK_OFFSET_HORIZON_SECONDS == 600.0
    assert silent_clocks(_reading(), NOW) == ["b:2"]
    assert silent_clocks(_reading(), NOW - 2) == []


@property_settings(200)
@given(
    windows=st.lists(WINDOW_COUNTS, min_size=0, max_size=4),
    states=st.lists(BREAKER_STATES, min_size=4, max_size=4),
    taken_at=st.floats(0, 4e9),
    cycle=st.integers(0, 2**53),
)
def test_any_snapshot_round_trips_through_its_json_exactly(
    windows: list[WindowCounts], states: list[BreakerState], taken_at: float, cycle: int
) -> None:
    providers = tuple(
        provider_health(
            f"p{i}",
            window,
            states[i],
            {"n:success": i, "b:0.1": i, "lat_us": 1_234_567},
            {"closed>open": i},
            2.0,
            10.0,
            exemplars={1: ({"trace_id": f"{i:032x}"}, 0.5 + i, taken_at)},
        )
        for i, window in enumerate(windows)
    )
    snapshot = Snapshot(taken_at, cycle, 300.0, providers, {"zcount": 3}, {"x": 1}, 2)
    assert Snapshot.from_json(snapshot.to_json()) == snapshot


def test_what_a_newer_leader_adds_is_ignored() -> None:
    snapshot = build_snapshot(_reading(), {"openrouter": BreakerState()}, NOW, 3, TARGETS)
    data = json.loads(snapshot.to_json())
    data["added_by_a_newer_version"] = {"x": 1}
    data["providers"][0]["another"] = [1, 2]
    data["providers"][0]["breaker"]["yet_another"] = True
    assert Snapshot.from_json(json.dumps(data)) == snapshot


@pytest.mark.parametrize("text", ["", "[]", '{"taken_at": "soon"}', "{not json"])
def test_what_is_not_a_snapshot_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Snapshot.from_json(text)


def test_the_published_form_is_compressed_json_and_plain_json_still_reads() -> None:
    text = '{"cycle": 1}'
    published = encode_published(text)
    assert published.startswith(b"z1:")
    assert zlib.decompress(published[3:]) == text.encode()
    assert decode_published(published) == text
    assert decode_published(text.encode()) == text  # an older leader's
    with pytest.raises(ValueError, match="published snapshot"):
        decode_published(b"z1:not zlib")


def test_a_published_snapshot_inflates_no_further_than_the_bound_it_is_read_with() -> None:
    text = json.dumps({"cycle": 1, "padding": "a" * 10_000})
    published = encode_published(text)
    assert decode_published(published, len(text)) == text  # at the bound: read
    for bound in (len(text) - 1, 100):
        with pytest.raises(ValueError, match=f"over {bound} bytes of JSON"):
            decode_published(published, bound)
    with pytest.raises(ValueError, match=f"over {len(text) - 1} bytes"):
        decode_published(text.encode(), len(text) - 1)  # an older leader's plain JSON too
    with pytest.raises(ValueError, match="truncated stream"):
        decode_published(published[:-4])
    bomb = b"z1:" + zlib.compress(b"a" * (100 << 20), 9)  # 100 MB from 100 KB
    with pytest.raises(ValueError, match="over 65536 bytes"):
        decode_published(bomb, 65_536)
