"""The client's metric factories (client/_metric_factories.py) take prometheus_client's
constructor arguments, positionally and by keyword, on a real client."""

from __future__ import annotations

from collections.abc import Callable

from client import MetricsClient
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]


def test_the_factories_have_prometheus_clients_signatures(make_client: MakeClient) -> None:
    metrics = make_client()
    # Counter(name, documentation, labelnames, namespace, subsystem, unit, registry)
    assert metrics.counter("c_total", "C", ["a"], "ns", "sub", "", None).spec.name == "ns_sub_c"
    assert metrics.gauge("g", "G", multiprocess_mode="mostrecent").spec.combine == "latest"
    assert metrics.gauge("g2", "G", combine="max").spec.combine == "max"
    histogram = metrics.histogram("h", "H", ["a"], "", "", "seconds", None, buckets=[0.1, 1])
    assert (histogram.spec.name, histogram.spec.buckets) == ("h_seconds", (0.1, 1.0))
    summary = metrics.summary("s", "S", labelnames=["table"], namespace="db")
    assert (summary.spec.name, summary.spec.kind) == ("db_s", "summary")
    assert metrics.info("i", "I", registry=object()).spec.kind == "info"
