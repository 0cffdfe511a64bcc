"""The workers' own metrics in /metrics (aggregator/serve/backend_metrics.py): each family as
the snapshot holds it, one that would clash with the aggregator's own or an earlier one left out
(its counts still served); summaries, infos, units, counter exemplars and histograms with
negative buckets rendered as prometheus_client renders its own, in both formats, each exposition
parsed by the strict parsers (tests/support/scrape.py). Pure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from aggregator.core.backend import BackendFamily
from aggregator.core.snapshot import Snapshot
from aggregator.serve.backend_metrics import RESERVED_NAMES, backend_metrics
from tests.support.scrape import check_parses


def _family(name: str, kind: str = "counter", dropped: int = 0) -> BackendFamily:
    return BackendFamily(name, kind, "help", ("a",), (), ((("x",), 2.0),), (), dropped, 0)


def _served(*families: BackendFamily) -> dict[str, dict[tuple[str, tuple[str, ...]], float]]:
    snapshot = Snapshot(1.0, 1, backend=families)
    return {
        metric.name: {(s.name, tuple(s.labels.values())): s.value for s in metric.samples}
        for metric in backend_metrics(snapshot)
    }


def test_families_are_served_with_their_counts() -> None:
    served = _served(_family("requests", dropped=3), _family("inflight", kind="gauge"))
    assert served["requests"] == {("requests_total", ("x",)): 2.0}
    assert served["inflight"] == {("inflight", ("x",)): 2.0}
    assert served["gatewayz_metrics_series_dropped"] == {
        ("gatewayz_metrics_series_dropped_total", ("requests",)): 3.0,
        ("gatewayz_metrics_series_dropped_total", ("inflight",)): 0.0,
    }


def test_a_clash_is_left_out() -> None:
    ours = sorted(RESERVED_NAMES)[0]
    served = _served(
        _family(ours),
        _family("gatewayz_aggregator_x"),  # a reserved prefix
        _family("jobs"),
        _family("jobs_total"),  # the same samples as "jobs"
    )
    assert set(served) == {
        "jobs",
        "gatewayz_metrics_series_dropped",
        "gatewayz_metrics_values_rejected",
        "gatewayz_metrics_conflicting_updates",
        "gatewayz_metrics_label_values_truncated",
    }
    assert len(served["gatewayz_metrics_series_dropped"]) == 4  # every family still counted


class _Families(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        return backend_metrics(self._snapshot)


def _expositions(*families: BackendFamily) -> tuple[str, str]:
    """(text format, OpenMetrics) of these families, each parsed by its strict parser."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(Snapshot(1.0, 1, backend=families)))
    text, openmetrics = generate_latest(registry).decode(), generate_openmetrics(registry).decode()
    check_parses(text, openmetrics=False)
    check_parses(openmetrics, openmetrics=True)
    return text, openmetrics


def _lines(exposition: str, *names: str) -> list[str]:
    """The lines of these families or samples (HELP, TYPE, UNIT lines by the name they give)."""
    found = []
    for line in exposition.splitlines():
        words = line.split(" ")
        name = words[2] if line.startswith("#") and len(words) > 2 else line.split("{")[0]
        if name.split(" ")[0] in names:
            found.append(line)
    return found


def test_a_summary_is_its_count_and_sum() -> None:
    db = BackendFamily(
        "db_seconds", "summary", "DB time", ("table",), (), (),
        ((("users",), (3,), 0.6), (("keys",), (1,), 0.75), (("odd",), (1,), -1.0)), 0, 0,
    )  # fmt: skip
    text, openmetrics = _expositions(db)
    assert _lines(text, "db_seconds", "db_seconds_count", "db_seconds_sum") == [
        "# HELP db_seconds DB time",
        "# TYPE db_seconds summary",
        'db_seconds_count{table="users"} 3.0',
        'db_seconds_sum{table="users"} 0.6',
        'db_seconds_count{table="keys"} 1.0',
        'db_seconds_sum{table="keys"} 0.75',
    ]  # a negative sum (no client writes one) is left out: OpenMetrics would refuse the scrape
    assert 'db_seconds_count{table="users"} 3.0' in openmetrics.splitlines()
    assert "# TYPE db_seconds summary" in openmetrics.splitlines()


def test_an_info_is_each_label_set_with_the_value_one() -> None:
    app = BackendFamily(
        "fastapi_app_info", "info", "FastAPI application information", (), (), (), (), 0, 0,
        infos=(((), (("app_name", "gatewayz"),)),),
    )  # fmt: skip
    build = BackendFamily(
        "build", "info", "Build", ("host",), (), (), (), 0, 0,
        infos=((("h1",), (("version", "1.2"),)), (("h2",), (("version", "1.3"),))),
    )  # fmt: skip
    text, openmetrics = _expositions(app, build)
    # as prometheus_client serves Info("fastapi_app_info", ...): the family's samples end in _info
    assert _lines(text, "fastapi_app_info_info", "build_info") == [
        "# HELP fastapi_app_info_info FastAPI application information",
        "# TYPE fastapi_app_info_info gauge",
        'fastapi_app_info_info{app_name="gatewayz"} 1.0',
        "# HELP build_info Build",
        "# TYPE build_info gauge",
        'build_info{host="h1",version="1.2"} 1.0',
        'build_info{host="h2",version="1.3"} 1.0',
    ]
    assert _lines(openmetrics, "fastapi_app_info", "fastapi_app_info_info") == [
        "# HELP fastapi_app_info FastAPI application information",
        "# TYPE fastapi_app_info info",
        'fastapi_app_info_info{app_name="gatewayz"} 1.0',
    ]


def test_a_counter_exemplar_is_on_its_total_in_openmetrics_only() -> None:
    linked = (("x",), 0, ({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}, 2.0, 1_800_000_000.5))
    odd = (("y",), 0, ({"trace id": "no"}, 1.0, 1_800_000_000.5))  # OpenMetrics would refuse it
    calls = BackendFamily(
        "calls", "counter", "Calls", ("p",), (), ((("x",), 5.0), (("y",), 1.0)), (), 0, 0,
        exemplars=(linked, odd),
    )  # fmt: skip
    text, openmetrics = _expositions(calls)
    assert _lines(openmetrics, "calls_total") == [
        'calls_total{p="x"} 5.0 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 2.0 1800000000.5',
        'calls_total{p="y"} 1.0',
    ]
    assert _lines(text, "calls_total") == [
        "# HELP calls_total Calls",
        "# TYPE calls_total counter",
        'calls_total{p="x"} 5.0',
        'calls_total{p="y"} 1.0',
    ]


def test_units_and_negative_buckets_as_openmetrics_wants_them() -> None:
    sent = BackendFamily(
        "sent_bytes", "counter", "Sent", (), (), (((), 10.0),), (), 0, 0, unit="bytes"
    )
    delta = BackendFamily(
        "token_delta", "histogram", "Estimated - actual", (), (-10.0, 0.0, 10.0), (),
        (((), (1, 3, 4, 5), -12.0),), 0, 0,
    )  # fmt: skip
    odd = BackendFamily(
        "odd_seconds", "histogram", "Odd", (), (1.0,), (), (((), (1, 2), -3.0),), 0, 0
    )  # no client writes a negative sum with non-negative buckets
    text, openmetrics = _expositions(sent, delta, odd)
    assert "# UNIT sent_bytes bytes" in openmetrics.splitlines()
    # a histogram with a negative bucket has no _sum and _count (its sum may go down)
    for exposition in (text, openmetrics):
        assert 'token_delta_bucket{le="-10.0"} 1.0' in exposition.splitlines()
        assert 'odd_seconds_bucket{le="+Inf"} 2.0' in exposition.splitlines()
        for left_out in ("token_delta_sum", "token_delta_count", "odd_seconds_sum"):
            assert left_out not in exposition


def test_every_count_of_a_metric_is_served() -> None:
    family = BackendFamily(
        "jobs", "counter", "Jobs", (), (), (), (), 1, 2, conflicts=3, truncated=4
    )
    served = _served(family)
    assert {name: list(values.values()) for name, values in served.items() if name != "jobs"} == {
        "gatewayz_metrics_series_dropped": [1.0],
        "gatewayz_metrics_values_rejected": [2.0],
        "gatewayz_metrics_conflicting_updates": [3.0],
        "gatewayz_metrics_label_values_truncated": [4.0],
    }
