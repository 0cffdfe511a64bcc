"""Exemplars as prometheus_client's histogram families take them: only the OpenMetrics
exposition shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.samples import Exemplar as PromExemplar

from gatewayz_protocol.fields import Exemplar


def with_exemplars(
    le: Sequence[str], counts: Sequence[int], exemplars: Mapping[str, Exemplar]
) -> list[Any]:
    """Histogram buckets as HistogramMetricFamily takes them: (le, count), or (le, count,
    exemplar) where a bucket has one. Only the OpenMetrics exposition shows exemplars."""
    buckets: list[Any] = []
    for index, (bound, count) in enumerate(zip(le, counts, strict=True)):
        found = exemplars.get(str(index))
        if found is None:
            buckets.append((bound, count))
        else:
            labels, value, at = found
            buckets.append((bound, count, PromExemplar(dict(labels), value, at)))
    return buckets
