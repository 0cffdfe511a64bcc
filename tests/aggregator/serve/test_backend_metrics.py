"""The workers' own metrics in /metrics (aggregator/serve/backend_metrics.py): each family as
the snapshot holds it, one that would clash with the aggregator's own or an earlier one left out
(its drop and rejection counts still served). Pure."""

from __future__ import annotations

from aggregator.core.backend import BackendFamily
from aggregator.core.snapshot import Snapshot
from aggregator.serve.backend_metrics import RESERVED_NAMES, backend_metrics


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
    }
    assert len(served["gatewayz_metrics_series_dropped"]) == 4  # every family still counted
