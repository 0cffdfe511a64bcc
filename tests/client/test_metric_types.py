"""Counter, Gauge and Histogram handles over an instrument store (no Redis but the last test):
what a declaration and ``labels()`` accept, the label values series are named by, and that an
invalid update or one past the series cap is counted, never raised. End to end through Redis
and the aggregator: tests/client/test_instruments.py."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

import client._metric_types as metric_types
from client import MetricsClient
from client._instruments import InstrumentStore
from client._metric_types import MetricRegistry
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS  # the test that declares through a client runs on both

MakeClient = Callable[..., MetricsClient]


def registry(max_series: int = 100) -> tuple[MetricRegistry, InstrumentStore]:
    store = InstrumentStore(max_series, clock=lambda: 1_800_000_000.0)
    return MetricRegistry(store), store


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_a_counter_is_named_without_total_and_declared_once() -> None:
    metrics, _ = registry()
    hits = metrics.counter("hits_total", "Hits", ["route"])
    assert hits.spec.name == "hits"
    assert metrics.counter("hits", "Hits", ["route"]) is hits  # the suffix is optional


def test_a_histograms_inf_bucket_is_implied() -> None:
    metrics, _ = registry()
    latency = metrics.histogram("lat", "Latency", [], [1, 2.5, math.inf])
    assert latency.spec.buckets == (1.0, 2.5)


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


def test_invalid_updates_are_counted_per_metric_and_valid_ones_kept() -> None:
    metrics, store = registry()
    jobs = metrics.counter("jobs", "Jobs", [])
    level = metrics.gauge("level", "Level", [], "max")
    latency = metrics.histogram("lat", "Latency", [], [1.0])
    bad: list[Any] = [-1, math.nan, math.inf, "two", None, 1e15 * 2]
    for value in bad:
        jobs.inc(value)
        latency.observe(value)
    for value in (math.nan, math.inf, -math.inf, "x", 2e15):
        level.set(value)
    jobs.inc(2)
    latency.observe(0.5)
    level.set(-3)
    drained = store.drain(include_all_gauges=True)
    assert drained.rejected == {"jobs": 6, "lat": 6, "level": 5}
    assert [(spec.name, updates) for spec, _, updates, _ in drained.deltas] == [
        ("jobs", 1),
        ("lat", 1),
    ]
    assert [(name, value) for name, _, value, _ in drained.gauges] == [("level", -3.0)]


def test_updates_past_the_series_cap_are_dropped_and_counted() -> None:
    metrics, store = registry(max_series=1)
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    level = metrics.gauge("level", "Level", ["kind"], "sum")
    latency = metrics.histogram("lat", "Latency", ["kind"], [1.0])
    jobs.labels("a").inc()
    level.labels("a").set(1)
    latency.labels("a").observe(0.5)
    jobs.labels("b").inc()  # a second series of each: past the cap of one
    level.labels("b").set(1)
    level.labels("b").dec()
    with latency.labels("b").time():
        pass
    assert jobs.series("b") is None
    jobs.count_drop()  # what record_inference() does for a series it cannot update
    assert store.drain(include_all_gauges=False).dropped == {"jobs": 2, "level": 2, "lat": 1}


def test_a_timed_block_is_observed_with_its_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [10.0]
    monkeypatch.setattr(metric_types, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    metrics, _ = registry()
    latency = metrics.histogram("lat", "Latency", [], [1.0, 2.0])
    with latency.time():
        now[0] += 1.5
    series = latency.series()
    assert series is not None
    assert (series.buckets, series.ints, series.nanos) == ([0, 1, 0], 1, 500_000_000)


def test_an_unlabelled_handle_of_a_labelled_metric_is_refused() -> None:
    metrics, _ = registry()
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    for update in (jobs.inc, metrics.gauge("g", "G", ["kind"], "sum").set):
        with pytest.raises(ValueError, match=r"has labels: use \.labels"):
            update(1)


def test_declarations_are_checked(make_client: MakeClient) -> None:
    metrics = make_client()
    jobs = metrics.counter("jobs", "Jobs", ["kind", "region"])
    assert metrics.counter("jobs", "Jobs", ["kind", "region"]) is jobs
    latency = metrics.histogram("lat", "Latency", buckets=[1, 2])
    assert metrics.histogram("lat", "Latency", buckets=[1.0, 2.0, math.inf]) is latency
    level = metrics.gauge("level", "Level", combine="max")
    assert metrics.gauge("level", "Level", combine="max") is level

    conflicting: list[Callable[[], object]] = [
        lambda: metrics.gauge("jobs", "Jobs", ["kind", "region"]),
        lambda: metrics.counter("jobs", "Jobs", ["kind"]),
        lambda: metrics.counter("jobs", "Jobs", ["region", "kind"]),
        lambda: metrics.histogram("lat", "Latency", buckets=[1, 3]),
        lambda: metrics.gauge("level", "Level", combine="min"),
        lambda: metrics.counter("bad-name", "Invalid name"),
        lambda: metrics.gauge("g", "Unknown combine", combine="avg"),
        lambda: metrics.histogram("h", "Unsorted buckets", buckets=[2, 1]),
    ]
    for declare in conflicting:
        with pytest.raises(ValueError):
            declare()

    for wrong in (("x",), ("x", "eu", "y")):
        with pytest.raises(ValueError):
            jobs.labels(*wrong)
    for named in ({"kind": "x"}, {"kind": "x", "zone": "eu"}):
        with pytest.raises(ValueError):
            jobs.labels(**named)
    with pytest.raises(ValueError):
        jobs.labels("x", region="eu")
    with pytest.raises(ValueError):
        jobs.inc()  # labelled: needs labels()
    assert jobs.labels(region="eu", kind="x") is jobs.labels("x", "eu")
