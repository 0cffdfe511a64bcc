"""aggregator/core/backend.py as pure functions: hand-built schema/series/data/gauge hashes in,
BackendFamily out. No Redis."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from aggregator.core.backend import BackendFamily, build_families
from gatewayz_protocol.fields import join_amount as exact
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS


def _spec(name: str, kind: str, labelnames: list[str], **extra: Any) -> str:
    """A spec as the client stores it in the schema hash (written by hand, not by MetricSpec)."""
    fields = {"labelnames": labelnames, "buckets": [], "combine": "", **extra}
    return json.dumps({"name": name, "kind": kind, "help": f"{name} help", **fields})


def _only(families: tuple[BackendFamily, ...]) -> BackendFamily:
    (family,) = families
    return family


def test_exact_carries_nanos_into_whole_units() -> None:
    # 1 + 2.5e9 nano-units = 1 + 2 + 0.5
    assert exact(1, 2_500_000_000) == 3.5
    # 100,000 increments of 0.1 are 100,000 * 100,000,000 nano-units = 1e13 = 10,000 units
    assert exact(0, 100_000 * 100_000_000) == 10000.0
    # 7 whole units + 1.1e9 nanos = 8 + 0.1
    assert exact(7, 1_100_000_000) == 8.1
    assert exact(0, 3_000_000_000) == 3.0
    assert exact(0, 0) == 0.0
    assert isinstance(exact(2, 0), float)


def test_counter_family_from_hand_built_hashes() -> None:
    schema = {"jobs": _spec("jobs", "counter", ["kind"])}
    series = {"jobs": ['["a"]', '["b"]']}
    data = {
        "jobs": {
            'i:["a"]': 3,
            'n:["a"]': 1_500_000_000,  # 3 + 1.5 = 4.5
            'n:["b"]': 250_000_000,  # no integer part written: 0.25
            "!dropped": 4,
            "!rejected": 2,
        }
    }
    family = _only(build_families(schema, series, data, []))
    assert family.name == "jobs"
    assert family.kind == "counter"
    assert family.help == "jobs help"
    assert family.labelnames == ("kind",)
    assert family.samples == ((("a",), 4.5), (("b",), 0.25))
    assert family.histograms == ()
    assert family.dropped == 4
    assert family.rejected == 2


def test_counter_without_data_reads_zero_dropped_and_rejected() -> None:
    schema = {"jobs": _spec("jobs", "counter", [])}
    family = _only(build_families(schema, {"jobs": ["[]"]}, {}, []))
    assert family.samples == (((), 0.0),)
    assert (family.dropped, family.rejected) == (0, 0)


def test_series_ids_with_the_wrong_label_count_are_skipped() -> None:
    schema = {"jobs": _spec("jobs", "counter", ["kind", "region"])}
    ok = '["a","eu"]'
    bad = ["[]", '["a"]', '["a","eu","x"]', "not json", '"a"', '{"kind":"a"}']
    data = {"jobs": {f"i:{sid}": 5 for sid in [ok, *bad]}}
    family = _only(build_families(schema, {"jobs": [ok, *bad]}, data, []))
    assert family.samples == ((("a", "eu"), 5.0),)


def test_histogram_family_is_cumulative_ending_in_count_with_exact_sum() -> None:
    schema = {"lat": _spec("lat", "histogram", ["route"], buckets=[0.5, 1.0, 5.0])}
    series = {"lat": ['["/a"]', '["/b"]']}
    data = {
        "lat": {
            # /a: 2 in le 0.5, 1 in le 1, none in le 5 (no field), 4 in +Inf (index 3)
            'b0:["/a"]': 2,
            'b1:["/a"]': 1,
            'b3:["/a"]': 4,
            'i:["/a"]': 30,
            'n:["/a"]': 700_000_000,  # sum 30.7
            # /b: one observation in le 5, sum 3
            'b2:["/b"]': 1,
            'i:["/b"]': 3,
            "!dropped": 1,
        }
    }
    family = _only(build_families(schema, series, data, []))
    assert family.kind == "histogram"
    assert family.buckets == (0.5, 1.0, 5.0)
    assert family.samples == ()
    # /a cumulative: 2, 2+1, 3+0, 3+4 = count 7
    assert family.histograms == ((("/a",), (2, 3, 3, 7), 30.7), (("/b",), (0, 0, 1, 1), 3.0))
    assert family.dropped == 1


def _gauge_writers() -> list[dict[str, str]]:
    # room k: 5 @ t100, 1.5 @ t300, -2 @ t200; room l: only the first writer, 1 @ t100
    return [
        {
            'temp|["k"]': "5.0|100.0",
            'temp|["l"]': "1.0|100.0",
            'temp_c|["k"]': "99.0|900.0",  # another metric whose name starts with "temp"
            "temp|[]": "77.0|900.0",  # wrong label count
        },
        {'temp|["k"]': "1.5|300.0"},
        {'temp|["k"]': "-2.0|200.0"},
    ]


@pytest.mark.parametrize(
    ("mode", "room_k"),
    [
        ("sum", 4.5),  # 5 + 1.5 - 2
        ("max", 5.0),
        ("min", -2.0),
        ("latest", 1.5),  # written at t300, neither the last writer nor the max
    ],
)
def test_gauge_combine_over_writers(mode: str, room_k: float) -> None:
    schema = {"temp": _spec("temp", "gauge", ["room"], combine=mode)}
    data = {"temp": {"!rejected": 3, "!dropped": 1}}
    family = _only(build_families(schema, {}, data, _gauge_writers()))
    assert family.kind == "gauge"
    assert family.samples == ((("k",), room_k), (("l",), 1.0))
    assert (family.dropped, family.rejected) == (1, 3)


def test_gauge_without_live_writers_has_no_samples() -> None:
    schema = {"temp": _spec("temp", "gauge", [], combine="sum")}
    family = _only(build_families(schema, {}, {}, []))
    assert family.samples == ()


def _users(writer: int, count: int, cap: str | None) -> dict[str, str]:
    """A writer's gauge hash: ``count`` series of ``users`` (labels w<writer>-<i>), its cap."""
    values = {f'users|["w{writer}-{i:02}"]': "1.0|100.0" for i in range(count)}
    return values | ({} if cap is None else {"~max_series": cap})


@pytest.mark.parametrize(
    ("caps", "served"),
    [
        (["5", "5", "5"], 5),  # the clients' cap across writers, not 5 per writer
        (["3", "8", "5"], 8),  # a rolling change of the setting: the largest
        (["5", None, "5"], 12),  # a client from before caps: the aggregator's own (12 here)
        (["50", "50", "50"], 12),  # never above the aggregator's own
        (["5", "0", "5"], 12),  # not a positive integer: another writer's data, not trusted
        (["5", "x9", "5"], 12),
        (["5", "²", "5"], 12),  # a digit to str.isdigit(), not to int()
        (["5", "1" * 30, "5"], 12),
    ],
)
def test_gauges_are_capped_across_writers_at_the_writers_cap(
    caps: list[str | None], served: int
) -> None:
    schema = {"users": _spec("users", "gauge", ["user"], combine="sum")}
    writers = [_users(w, 6, cap) for w, cap in enumerate(caps)]  # 18 distinct series
    family = _only(build_families(schema, {}, {"users": {"!dropped": 2}}, writers, 12))
    expected = sorted(f"w{w}-{i:02}" for w in range(3) for i in range(6))[:served]
    assert [labels for labels, _ in family.samples] == [(user,) for user in expected]
    assert family.dropped == 2 + 18 - served


def test_a_writer_without_the_gauge_does_not_set_its_cap() -> None:
    schema = {"users": _spec("users", "gauge", ["user"], combine="sum")}
    writers = [_users(0, 6, "2"), {"~max_series": "9", 'other|["x"]': "1.0|100.0"}]
    family = _only(build_families(schema, {}, {}, writers))
    assert len(family.samples) == 2 and family.dropped == 4


def test_info_sets_are_capped_across_writers_at_the_writers_cap() -> None:
    schema = {"build": _spec("build", "info", ["host"])}
    writers = [
        {f'build|["h{w}"]': "1.0|100.0", "~max_series": "1"} for w in range(3)
    ]  # one set each, a cap of 1
    family = _only(build_families(schema, {}, {}, writers))
    assert [labels for labels, _ in family.infos] == [("h0",)]
    assert family.dropped == 2


def test_unreadable_specs_are_skipped() -> None:
    schema = {
        "a_not_json": "{not json",
        "b_missing_fields": json.dumps({"name": "b_missing_fields"}),
        "c_unknown_kind": _spec("c_unknown_kind", "timer", []),
        "d_gauge_without_combine": _spec("d_gauge_without_combine", "gauge", []),
        "e_not_an_object": "[1, 2]",
        "jobs": _spec("jobs", "counter", []),
        "lat": _spec("lat", "histogram", [], buckets=[1.0]),
        "z_histogram_without_buckets": _spec("z_histogram_without_buckets", "histogram", []),
    }
    data = {"jobs": {"i:[]": 2}, "lat": {"b0:[]": 1, "i:[]": 1}}
    families = build_families(schema, {"jobs": ["[]"], "lat": ["[]"]}, data, [])
    assert [f.name for f in families] == ["jobs", "lat"]  # sorted by name
    assert families[0].samples == (((), 2.0),)
    assert families[1].histograms == (((), (1, 1), 1.0),)


def test_summary_family_is_its_count_and_exact_sum() -> None:
    schema = {"db_seconds": _spec("db_seconds", "summary", ["table"])}
    series = {"db_seconds": ['["users"]', '["keys"]']}
    data = {
        "db_seconds": {
            'b0:["users"]': 3,  # the count
            'i:["users"]': 0,
            'n:["users"]': 600_000_000,  # 0.1 + 0.2 + 0.3, exactly
            'b0:["keys"]': 1,
            'i:["keys"]': -1,  # -0.75 = -1 + 0.25
            'n:["keys"]': 250_000_000,
        }
    }
    family = _only(build_families(schema, series, data, []))
    assert (family.kind, family.buckets, family.samples) == ("summary", (), ())
    assert family.histograms == ((("keys",), (1,), -0.75), (("users",), (3,), 0.6))


def test_info_family_is_each_distinct_label_set_of_the_live_writers() -> None:
    schema = {"build": _spec("build", "info", ["host"])}
    writers = [
        {
            'build|["h1","version","1.2"]': "1.0|1800000000.0",
            'build|["h2","version","1.3"]': "1.0|1800000000.0",
            'build|["h1","version"]': "1.0|1800000000.0",  # odd: skipped
            'other|["h1","version","1.2"]': "1.0|1800000000.0",
        },
        {'build|["h1","version","1.2"]': "1.0|1800000001.0"},  # the same set: served once
        {'build|["h3","host","x"]': "1.0|1800000001.0"},  # an info label named like a label
    ]
    family = _only(build_families(schema, {}, {"build": {"!rejected": 2}}, writers))
    assert family.infos == (
        (("h1",), (("version", "1.2"),)),
        (("h2",), (("version", "1.3"),)),
    )
    assert (family.samples, family.rejected) == ((), 2)
    capped = _only(build_families(schema, {}, {}, writers, max_series=1))
    assert (len(capped.infos), capped.dropped) == (1, 1)


def test_counter_exemplars_and_every_count_of_a_metric() -> None:
    schema = {
        "calls": _spec("calls", "counter", ["p"]),
        "sent_bytes": _spec("sent_bytes", "gauge", [], combine="sum", unit="bytes"),
    }
    exemplar = '{"l":{"trace_id":"ab"},"v":2.0,"t":1800000000.5}'
    data = {"calls": {'i:["x"]': 5, "!conflicts": 7, "!truncated": 3, "!dropped": 1}}
    exemplars = {"calls": {'0:["x"]': exemplar, '1:["x"]': exemplar, '0:["y"]': "bad"}}
    calls, sent = build_families(schema, {"calls": ['["x"]']}, data, [], exemplars=exemplars)
    assert calls.exemplars == ((("x",), 0, ({"trace_id": "ab"}, 2.0, 1_800_000_000.5)),)
    assert (calls.conflicts, calls.truncated, calls.dropped) == (7, 3, 1)
    assert (sent.unit, sent.conflicts, sent.truncated) == ("bytes", 0, 0)


def _cut(value: str, max_bytes: int) -> str:
    """A value cut to ``max_bytes`` as the README says: its start, ``~``, 16 hex digits of the
    BLAKE2b (8 bytes) of the whole (computed here, not by the code under test)."""
    digest = hashlib.blake2b(value.encode(), digest_size=8).hexdigest()
    return value.encode()[: max_bytes - 17].decode("utf-8", "ignore") + "~" + digest


def test_a_raw_written_label_value_is_bounded_on_read_and_counted() -> None:
    long_model = "m" * 16_384  # written into Redis by hand: no client bounded it
    schema = {
        "calls": _spec("calls", "counter", ["model"]),
        "depth": _spec("depth", "gauge", ["model"], combine="sum"),
        "build": _spec("build", "info", ["host"]),
    }
    sid = json.dumps([long_model])
    series = {"calls": [sid, '["short"]']}
    data = {"calls": {f"i:{sid}": 7, 'i:["short"]': 1, "!truncated": 2}}
    writers = [
        {
            f"depth|{sid}": "3.0|100.0",
            f'build|["h1","version","{long_model}"]': "1.0|100.0",
        }
    ]
    build, calls, depth = build_families(schema, series, data, writers, max_label_bytes=64)
    assert calls.samples == (((_cut(long_model, 64),), 7.0), (("short",), 1.0))
    assert len(calls.samples[0][0][0].encode()) == 64
    assert calls.truncated == 2 + 1  # the clients' own count, then the one cut on read
    assert depth.samples == (((_cut(long_model, 64),), 3.0),)
    assert depth.truncated == 1
    assert build.infos == ((("h1",), (("version", _cut(long_model, 64)),)),)
    assert build.truncated == 1
    # the default bound is the clients' (256 bytes)
    (default,) = build_families({"calls": schema["calls"]}, series, data, [])
    assert default.samples[0][0] == (_cut(long_model, 256),)


def test_two_series_ids_of_one_label_set_are_served_once() -> None:
    # '["1"]', '[1]' and '[ "1" ]' all decode to the label value "1": Prometheus refuses a
    # scrape that repeats a series, so the first id in sorted order is served, the rest dropped
    schema = {"jobs": _spec("jobs", "counter", ["kind"])}
    ids = ['["1"]', "[1]", '[ "1" ]']
    data = {"jobs": {'i:["1"]': 5, "i:[1]": 6, 'i:[ "1" ]': 7, "!dropped": 1}}
    family = _only(build_families(schema, {"jobs": ids}, data, []))
    assert sorted(ids)[0] == '[ "1" ]'
    assert family.samples == ((("1",), 7.0),)
    assert (family.dropped, family.truncated) == (1 + 2, 0)
