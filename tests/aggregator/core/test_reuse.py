"""Reuse between reads (aggregator/core/reuse.py): an equal reply decodes to the object decoded
last time, a changed one is decoded again, what a decoding skipped is noted each time, nothing is
kept beyond the last read; the workers' families rebuilt only for the metrics that changed.
Pure."""

from __future__ import annotations

from functools import partial

from aggregator.core.backend import build_families
from aggregator.core.readings import Skips
from aggregator.core.reuse import Reuse
from gatewayz_protocol.fields import gauge_field, gauge_value, int_field
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.specs import MetricSpec, series_id

NOW = 10_000.0
KEYS = Keys("reuse")


def test_an_equal_reply_decodes_to_the_same_object_and_a_changed_one_again() -> None:
    reuse, skips = Reuse(), Skips(KEYS)
    key = KEYS.totals("a")
    first = reuse.decode(key, {b"n:success": b"3"}, skips, lambda raw: skips.ints(key, raw))
    reuse.finish()
    same = reuse.decode(key, {b"n:success": b"3"}, skips, lambda raw: skips.ints(key, raw))
    reuse.finish()
    assert same is first and reuse.reused == 1
    changed = reuse.decode(key, {b"n:success": b"4"}, skips, lambda raw: skips.ints(key, raw))
    reuse.finish()
    assert changed == {"n:success": 4} and first == {"n:success": 3}
    assert reuse.reused == 0


def test_what_a_decoding_skipped_is_noted_again_each_time_it_is_reused() -> None:
    reuse, key = Reuse(), KEYS.totals("a")
    raw = {b"n:success": b"2", b"n:failure": b"lots"}
    for _ in range(3):
        skips = Skips(KEYS)
        found = reuse.decode(key, raw, skips, partial(skips.ints, key))
        reuse.finish()
        assert found == {"n:success": 2}
        assert [(s.key, s.fields) for s in skips.found] == [(key, ("n:failure",))]


def test_a_key_the_last_read_did_not_ask_for_is_forgotten() -> None:
    reuse, skips = Reuse(), Skips(KEYS)
    calls: list[str] = []

    def decode(raw: object) -> list[str]:
        calls.append("decoded")
        return ["x"]

    reuse.decode("a", b"1", skips, decode)
    reuse.finish()
    reuse.decode("b", b"1", skips, decode)  # a read without "a"
    reuse.finish()
    assert len(reuse) == 1
    reuse.decode("a", b"1", skips, decode)
    assert calls == ["decoded"] * 3


def test_a_backend_family_is_rebuilt_only_when_its_metric_changed() -> None:
    sid = series_id(["q1"])
    jobs = MetricSpec("jobs_total", "counter", "Jobs", ("queue",)).to_json()
    depth = MetricSpec("depth", "gauge", "Depth", ("queue",), combine="sum").to_json()
    schema = {"jobs_total": jobs, "other_total": jobs.replace("jobs", "other"), "depth": depth}
    series = {"jobs_total": [sid], "other_total": [sid]}
    data = {"jobs_total": {int_field(sid): 4}, "other_total": {int_field(sid): 7}}
    writers = [{gauge_field("depth", sid): gauge_value(3.0, NOW)}]
    reuse = Reuse()
    first = build_families(schema, series, data, writers, reuse=reuse)
    reuse.finish()
    changed_data = {**data, "jobs_total": {int_field(sid): 5}}
    changed_writers = [{gauge_field("depth", sid): gauge_value(8.0, NOW + 1)}]
    second = build_families(schema, series, changed_data, changed_writers, reuse=reuse)
    reuse.finish()
    fresh = build_families(schema, series, changed_data, changed_writers)
    assert second == fresh
    assert [f.samples for f in second] == [
        (((("q1",), 8.0),)),
        ((("q1",), 5.0),),
        ((("q1",), 7.0),),
    ]
    by_name = {f.name: f for f in first}
    assert {f.name: f is by_name[f.name] for f in second} == {
        "depth": False,
        "jobs_total": False,
        "other_total": True,
    }
