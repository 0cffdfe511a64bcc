"""Declaring metrics with prometheus_client's constructor arguments (client/_metric_registry.py):
full names as prometheus_client builds them, ``multiprocess_mode``, buckets, and a conflicting
redeclaration in one process refused without raising (its updates counted, logged once) while an
invalid declaration raises. Across processes: test_instruments.py."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest

from client._instruments import InstrumentStore
from client._metric_registry import MULTIPROCESS_MODES, MetricRegistry, full_name, gauge_combine


def registry() -> tuple[MetricRegistry, InstrumentStore]:
    store = InstrumentStore(100, clock=lambda: 1.0)
    return MetricRegistry(store), store


@pytest.mark.parametrize(
    ("kind", "args", "expected"),
    [
        ("counter", ("requests_total", "", "", ""), "requests"),
        ("counter", ("requests", "gw", "http", ""), "gw_http_requests"),
        ("counter", ("sent_total", "", "", "bytes"), "sent_bytes"),  # _total off, then the unit
        ("gauge", ("size_bytes", "", "cache", "bytes"), "cache_size_bytes"),  # unit already there
        ("histogram", ("latency", "gw", "", "seconds"), "gw_latency_seconds"),
        ("info", ("fastapi_app_info", "", "", ""), "fastapi_app_info"),
    ],
)
def test_full_names_are_built_as_prometheus_client_builds_them(
    kind: str, args: tuple[str, str, str, str], expected: str
) -> None:
    assert full_name(kind, *args) == expected


def test_names_that_prometheus_client_refuses_are_refused() -> None:
    with pytest.raises(ValueError, match="should not be empty"):
        full_name("counter", "", "", "", "")
    with pytest.raises(ValueError, match="cannot have a unit"):
        full_name("info", "build", "", "", "seconds")


def test_multiprocess_modes_map_to_combine_modes() -> None:
    assert {mode: gauge_combine(mode, None) for mode in MULTIPROCESS_MODES} == {
        "all": "sum",
        "liveall": "sum",
        "sum": "sum",
        "livesum": "sum",
        "max": "max",
        "livemax": "max",
        "min": "min",
        "livemin": "min",
        "mostrecent": "latest",
        "livemostrecent": "latest",
    }
    assert gauge_combine("all", "max") == "max"  # combine says more than the default mode
    assert gauge_combine("livemax", "max") == "max"
    with pytest.raises(ValueError, match="differ"):
        gauge_combine("livemax", "min")
    with pytest.raises(ValueError, match="invalid multiprocess_mode"):
        gauge_combine("average", None)


def test_declarations_take_prometheus_clients_arguments() -> None:
    metrics, store = registry()
    sent = metrics.counter("sent_total", "Sent", ["peer"], "gw", "net", "bytes", registry=None)
    assert (sent.spec.name, sent.spec.unit, sent.spec.labelnames) == (
        "gw_net_sent_bytes",
        "bytes",
        ("peer",),
    )
    depth = metrics.gauge("depth", "Depth", ("queue",), multiprocess_mode="livemax")
    assert depth.spec.combine == "max"
    latency = metrics.histogram("lat", "Latency", buckets=["0.5", 1, 2.5, math.inf])
    assert latency.spec.buckets == (0.5, 1.0, 2.5)  # +Inf implied, numbers from strings
    db = metrics.summary("db_seconds", "DB time", ["table"])
    app = metrics.info("fastapi_app", "App")
    assert (db.spec.kind, app.spec.kind) == ("summary", "info")
    assert sorted(store.declarations.specs) == [
        "db_seconds",
        "depth",
        "fastapi_app",
        "gw_net_sent_bytes",
        "lat",
    ]


@pytest.mark.parametrize(
    "declare",
    [
        lambda m: m.counter("bad-name", "Invalid name"),
        lambda m: m.counter("jobs", "Label", ["le"]),
        lambda m: m.gauge("g", "Unknown combine", combine="avg"),
        lambda m: m.gauge("g", "Positional combine, before namespaces", [], "max"),
        lambda m: m.histogram("h", "Unsorted buckets", buckets=[2, 1]),
        lambda m: m.histogram("h", "No buckets", buckets=[math.inf]),
        lambda m: m.histogram("h", "Not numbers", buckets=["x"]),
        lambda m: m.summary("s", "Reserved label", ["quantile"]),
        lambda m: m.counter("c", "Bad unit", unit="bad unit"),
    ],
)
def test_an_invalid_declaration_raises_value_error(
    declare: Callable[[MetricRegistry], object],
) -> None:
    metrics, _ = registry()
    with pytest.raises(ValueError):
        declare(metrics)


def test_a_repeated_declaration_returns_the_first_handle() -> None:
    metrics, _ = registry()
    hits = metrics.counter("hits_total", "Hits", ["route"])
    assert metrics.counter("hits", "Hits", ["route"]) is hits  # the suffix is optional
    assert metrics.counter("hits", "Another help text", ["route"]) is hits  # help may differ
    assert hits.spec.help == "Hits"
    latency = metrics.histogram("lat", "Latency", buckets=[1, 2])
    assert metrics.histogram("lat", "Latency", buckets=[1.0, 2.0, math.inf]) is latency


def test_a_conflicting_redeclaration_is_refused_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, store = registry()
    latency = metrics.histogram("lat", "Latency", ["route"], buckets=[1, 2])
    jobs = metrics.counter("jobs", "Jobs", ["kind"])
    with caplog.at_level(logging.ERROR, logger="gatewayz.metrics.client"):
        other = metrics.histogram("lat", "Latency", ["route"], buckets=[1, 3])  # no raise
        other.labels("/a").observe(0.5)
        other.labels(route="/b").observe(0.5)
        with other.labels("/a").time():
            pass
        gauge = metrics.gauge("jobs", "Jobs", ["kind"])  # another type
        gauge.labels("x").set(1)
        metrics.counter("jobs", "Jobs", ["region"]).labels("eu").inc()  # other labels
        metrics.histogram("lat", "Latency", ["route"], buckets=[1, 3])  # logged once already
    assert other is not latency and other.spec.buckets == (1.0, 3.0)
    with pytest.raises(ValueError):
        other.labels("/a", "/b")  # its own labels are still checked
    latency.labels("/a").observe(1.5)  # the first declaration works on
    jobs.labels("x").inc()
    drained = store.drain(include_all_gauges=False)
    assert drained.conflicts == {"lat": 3, "jobs": 2}
    assert [(spec.name, updates) for spec, _, updates, _ in drained.deltas] == [
        ("lat", 1),
        ("jobs", 1),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("metric 'lat' is declared otherwise elsewhere")
    assert '"buckets":[1.0,2.0]' in messages[0] and '"buckets":[1.0,3.0]' in messages[0]
