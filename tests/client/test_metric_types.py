"""Counter, Gauge, Histogram, Summary and Info handles over an instrument store (no Redis): what
``labels()`` accepts, the label values series are named by (bounded), prometheus_client's methods
(exemplars on ``inc``, ``count_exceptions``, ``set_to_current_time``, ``track_inprogress``,
``time``, ``remove``, ``clear``, ``info``), and that an invalid update, one past the series cap or
one of a refused declaration is counted, never raised. Declarations: test_metric_registry.py;
end to end through Redis and the aggregator: test_instruments.py."""

from __future__ import annotations

import math
from typing import Any

import pytest

from client._instruments import InstrumentStore
from client._metric_registry import MetricRegistry
from gatewayz_protocol.labels import bounded_label_value
from gatewayz_protocol.specs import info_series_id


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def registry(
    max_series: int = 100, max_label_value_bytes: int = 64, clock: Clock | None = None
) -> tuple[MetricRegistry, InstrumentStore]:
    store = InstrumentStore(
        max_series,
        clock=clock or Clock(),
        max_label_value_bytes=max_label_value_bytes,
        wall=lambda: 1_800_000_000.5,
    )
    return MetricRegistry(store), store


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_label_values_are_strings_redis_can_store() -> None:
    metrics, _ = registry()
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    named = [jobs.series(value) for value in (7, "a\ud800b", Unprintable(), None)]
    assert [s.labelvalues for s in named if s is not None] == [
        ("7",),
        ("a?b",),  # a lone surrogate replaced
        ("<unprintable Unprintable>",),
        ("None",),
    ]
    assert jobs.labels("7") is jobs.labels(7)  # the same series, the same child


def test_a_long_label_value_is_truncated_distinct_and_counted_per_call() -> None:
    metrics, store = registry(max_label_value_bytes=64)
    calls = metrics.counter("calls", "Calls", ["model", "route"])
    first, second = "m" * 16_384, "m" * 16_383 + "n"  # the same first 47 bytes
    calls.labels(first, "/a").inc()
    calls.labels(first, "/a").inc()  # the same series again: truncated (and counted) again
    calls.labels(second, "/a").inc()
    calls.labels("short", "/a").inc()
    kept = sorted(table for table in store.series["calls"])
    assert kept == sorted(
        [
            (bounded_label_value(first, 64), "/a"),
            (bounded_label_value(second, 64), "/a"),
            ("short", "/a"),
        ]
    )
    one, two = bounded_label_value(first, 64), bounded_label_value(second, 64)
    assert len(one.encode()) == len(two.encode()) == 64 and one != two
    drained = store.drain(include_all_gauges=False)
    assert drained.truncated == {"calls": 3}
    assert sorted(updates for _, _, updates, _ in drained.deltas) == [1, 1, 2]


def test_invalid_updates_are_counted_per_metric_and_valid_ones_kept() -> None:
    metrics, store = registry()
    jobs = metrics.counter("jobs", "Jobs", [])
    level = metrics.gauge("level", "Level", [], combine="max")
    latency = metrics.histogram("lat", "Latency", [], buckets=[1.0])
    delta = metrics.histogram("delta", "Estimated - actual", [], buckets=[-10, 0, 10])
    db = metrics.summary("db_seconds", "DB time")
    bad: list[Any] = [math.nan, math.inf, "two", None, 1e15 * 2]
    for value in [-1, *bad]:  # negative: a counter, a summary, a histogram of positive buckets
        jobs.inc(value)
        latency.observe(value)
        db.observe(value)
    for value in bad:
        delta.observe(value)
        level.set(value)
    jobs.inc(2)
    latency.observe(0.5)
    delta.observe(-0.5)  # valid: its first bucket is negative (no _sum is served)
    db.observe(2)
    level.set(-3)
    drained = store.drain(include_all_gauges=True)
    assert drained.rejected == {"jobs": 6, "lat": 6, "db_seconds": 6, "delta": 5, "level": 5}
    assert [(spec.name, fields) for spec, _, _, fields in drained.deltas] == [
        ("jobs", [("i:[]", 2)]),
        ("lat", [("n:[]", 500_000_000), ("b0:[]", 1)]),
        ("delta", [("i:[]", -1), ("n:[]", 500_000_000), ("b1:[]", 1)]),  # -0.5 = -1 + 0.5
        ("db_seconds", [("i:[]", 2), ("b0:[]", 1)]),  # a summary: its sum and count
    ]
    assert [(name, value) for name, _, value, _ in drained.gauges] == [("level", -3.0)]


def test_updates_past_the_series_cap_are_dropped_and_counted() -> None:
    metrics, store = registry(max_series=1)
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    level = metrics.gauge("level", "Level", ["kind"])
    latency = metrics.histogram("lat", "Latency", ["kind"], buckets=[1.0])
    jobs.labels("a").inc()
    level.labels("a").set(1)
    latency.labels("a").observe(0.5)
    jobs.labels("b").inc()  # a second series of each: past the cap of one
    level.labels("b").set(1)
    level.labels("b").dec()
    with latency.labels("b").time():
        pass
    with level.labels("b").track_inprogress():  # up and down: two updates dropped
        pass
    with pytest.raises(KeyError), jobs.labels("b").count_exceptions():
        raise KeyError("x")
    assert jobs.series("b") is None
    jobs.count_drop()  # what record_inference() does for a series it cannot update
    assert store.drain(include_all_gauges=False).dropped == {"jobs": 3, "level": 4, "lat": 1}


def test_a_counter_increment_keeps_its_exemplar_on_the_series() -> None:
    clock = Clock(50.0)
    metrics, store = registry(clock=clock)
    calls = metrics.counter("calls", "Calls", ["provider"])
    calls.labels("p").inc(2, exemplar={"trace_id": "abc"})
    clock.now = 51.0
    calls.labels("p").inc(3, exemplar={"trace_id": "def"})  # the latest is kept
    calls.labels("p").inc(1, exemplar={"trace id": "bad"})  # OpenMetrics would refuse: left out
    calls.labels("q").inc(exemplar={})  # none
    drained = store.drain(include_all_gauges=False)
    assert drained.exemplars == [("calls", '["p"]', 0, ({"trace_id": "def"}, 3.0, 51.0))]
    assert [fields for _, _, _, fields in drained.deltas] == [[('i:["p"]', 6)], [('i:["q"]', 1)]]


def test_count_exceptions_counts_those_of_its_type_and_reraises() -> None:
    metrics, store = registry()
    failures = metrics.counter("failures", "Failures")
    with pytest.raises(ValueError), failures.count_exceptions(ValueError):
        raise ValueError("counted")
    with pytest.raises(KeyError), failures.count_exceptions((ValueError, TypeError)):
        raise KeyError("not counted")
    with failures.count_exceptions():
        pass  # no exception: nothing counted

    @failures.count_exceptions()
    def fails(flag: bool) -> str:
        if flag:
            raise RuntimeError("counted")
        return "fine"

    assert fails(False) == "fine"
    with pytest.raises(RuntimeError):
        fails(True)
    (delta,) = store.drain(include_all_gauges=False).deltas
    assert delta[3] == [("i:[]", 2)]


def test_gauge_methods_of_prometheus_client() -> None:
    clock = Clock(10.0)
    metrics, store = registry(clock=clock)
    started = metrics.gauge("started", "Start time")
    inflight = metrics.gauge("inflight", "In flight")
    last = metrics.gauge("last_seconds", "Last duration", combine="latest")
    started.set_to_current_time()
    seen: list[float] = []

    @inflight.track_inprogress()
    def work() -> None:
        series = inflight.labels()._series
        seen.append(series.value)

    work()
    with inflight.track_inprogress(), inflight.track_inprogress():
        seen.append(inflight.labels()._series.value)
    with last.time():
        clock.now += 2.25
    values = {name: value for name, _, value, _ in store.drain(include_all_gauges=True).gauges}
    assert seen == [1.0, 2.0]
    assert values == {"started": 1_800_000_000.5, "inflight": 0.0, "last_seconds": 2.25}


def test_a_timed_block_or_function_is_observed_with_its_duration() -> None:
    clock = Clock(10.0)
    metrics, _ = registry(clock=clock)
    latency = metrics.histogram("lat", "Latency", [], buckets=[1.0, 2.0])
    db = metrics.summary("db", "DB")
    with latency.time():
        clock.now += 1.5

    @db.time()
    def query() -> None:
        clock.now += 0.25

    query()
    query()
    series = latency.series()
    assert series is not None
    assert (series.buckets, series.ints, series.nanos) == ([0, 1, 0], 1, 500_000_000)
    summary = db.series()
    assert summary is not None
    assert (summary.buckets, summary.ints, summary.nanos) == ([2], 0, 500_000_000)


def test_an_info_holds_one_label_set_per_child_the_latest() -> None:
    metrics, store = registry(max_label_value_bytes=64)
    app = metrics.info("fastapi_app", "App")
    app.info({"app_name": "gatewayz", "version": "1.2"})
    app.info({"version": "1.3", "app_name": "gatewayz"})  # replaces the first
    build = metrics.info("build", "Build", ["host"])
    build.labels("h1").info({"commit": "c" * 100})  # a value beyond the bound: truncated
    for bad in ({}, {"host": "x"}, {"bad-name": "x"}, {"n" * 65: "x"}, None):
        build.labels("h2").info(bad)  # type: ignore[arg-type]
    drained = store.drain(include_all_gauges=True)
    assert [(name, sid, value) for name, sid, value, _ in drained.gauges] == [
        ("fastapi_app", info_series_id((), [("app_name", "gatewayz"), ("version", "1.3")]), 1.0),
        ("build", info_series_id(("h1",), [("commit", bounded_label_value("c" * 100, 64))]), 1.0),
    ]
    assert drained.rejected == {"build": 5}
    assert drained.truncated == {"build": 1}


def test_remove_and_clear_withdraw_a_processs_gauge_values() -> None:
    metrics, store = registry()
    depth = metrics.gauge("depth", "Depth", ["queue"])
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    for queue in ("a", "b", "c"):
        depth.labels(queue).set(1)
    jobs.labels("x").inc(4)
    store.drain(include_all_gauges=True)
    depth.remove("b")
    jobs.remove("x")  # its total stays in Redis; nothing more to write here
    drained = store.drain(include_all_gauges=False)
    assert [sid for _, sid, _, _ in drained.gauges] == ['["a"]', '["c"]']
    assert drained.deltas == []
    depth.clear()
    assert store.drain(include_all_gauges=False).gauges == []
    depth.labels("a").set(2)  # a removed series starts again
    assert [v for _, _, v, _ in store.drain(include_all_gauges=False).gauges] == [2.0]
    with pytest.raises(ValueError, match="expected 1 label values"):
        depth.remove("a", "b")
    with pytest.raises(ValueError, match="has no labels"):
        metrics.counter("plain", "Plain").remove()


def test_an_unlabelled_handle_of_a_labelled_metric_is_refused() -> None:
    metrics, _ = registry()
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    for update in (jobs.inc, metrics.gauge("g", "G", ["kind"]).set):
        with pytest.raises(ValueError, match=r"has labels: use \.labels"):
            update(1)


def test_labels_must_match_the_declaration() -> None:
    metrics, _ = registry()
    jobs = metrics.counter("jobs", "Jobs", ["kind", "region"])
    for wrong in (("x",), ("x", "eu", "y")):
        with pytest.raises(ValueError):
            jobs.labels(*wrong)
    for named in ({"kind": "x"}, {"kind": "x", "zone": "eu"}):
        with pytest.raises(ValueError):
            jobs.labels(**named)
    with pytest.raises(ValueError):
        jobs.labels("x", region="eu")
    assert jobs.labels(region="eu", kind="x") is jobs.labels("x", "eu")
