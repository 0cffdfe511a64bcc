"""Exemplars as the histogram families take them (aggregator/serve/exemplars.py): attached to
their bucket, and one OpenMetrics would refuse left out. Pure."""

from __future__ import annotations

import math

from prometheus_client.samples import Exemplar as PromExemplar

from aggregator.serve.exemplars import with_exemplars

LE = ("0.1", "1.0", "+Inf")


def test_each_bucket_gets_its_exemplar() -> None:
    exemplars = {"1": ({"trace_id": "ab"}, 0.5, 100.0)}
    assert with_exemplars(LE, [1, 3, 4], exemplars) == [
        ("0.1", 1),
        ("1.0", 3, PromExemplar({"trace_id": "ab"}, 0.5, 100.0)),
        ("+Inf", 4),
    ]


def test_one_openmetrics_would_refuse_is_left_out() -> None:
    exemplars = {
        "0": ({"trace id": "ab"}, 0.05, 100.0),
        "1": ({"t": "x" * 128}, 0.5, 100.0),
        "2": ({"trace_id": "ab"}, math.inf, 100.0),
    }
    assert with_exemplars(LE, [1, 3, 4], exemplars) == [("0.1", 1), ("1.0", 3), ("+Inf", 4)]
