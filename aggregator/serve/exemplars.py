"""Exemplars as prometheus_client's histogram and counter families take them: only the OpenMetrics
exposition shows them. Checked again here (a snapshot published by another version may hold
what this one's reader would have skipped): an exemplar OpenMetrics would refuse is left out,
never the scrape."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.samples import Exemplar as PromExemplar

from gatewayz_protocol.fields import Exemplar, exemplar_labels_ok


def with_exemplars(
    le: Sequence[str], counts: Sequence[int], exemplars: Mapping[str, Exemplar]
) -> list[Any]:
    """Histogram buckets as HistogramMetricFamily takes them: (le, count), or (le, count,
    exemplar) where a bucket has one. Only the OpenMetrics exposition shows exemplars."""
    buckets: list[Any] = []
    for index, (bound, count) in enumerate(zip(le, counts, strict=True)):
        found = exemplars.get(str(index))
        exemplar = prom_exemplar(found) if found is not None else None
        buckets.append((bound, count) if exemplar is None else (bound, count, exemplar))
    return buckets


def prom_exemplar(exemplar: Exemplar) -> PromExemplar | None:
    """``exemplar`` as prometheus_client renders one, or None when OpenMetrics would refuse
    it."""
    if not _renderable(exemplar):
        return None
    labels, value, at = exemplar
    return PromExemplar(dict(labels), value, at)


def _renderable(exemplar: Exemplar) -> bool:
    labels, value, at = exemplar
    return exemplar_labels_ok(labels) and math.isfinite(value) and math.isfinite(at)
