"""Backend metrics (the workers' Counters, Gauges, Histograms) as plain data: pure functions from
what the reader fetched to the families the snapshot holds."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.fields import (
    SERIES_DROPPED_FIELD,
    VALUES_REJECTED_FIELD,
    decode_gauges,
    series_buckets,
    series_value,
)
from protocol.specs import MetricSpec, series_labels

log = logging.getLogger("gatewayz.aggregator")
DEFAULT_MAX_SERIES = 1000
"""Gauge series served per metric (the clients' cap for counters and histograms is the same)."""


@dataclass(frozen=True)
class BackendFamily:
    name: str
    kind: str
    help: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]
    """counter and gauge: (label values, value)"""
    histograms: tuple[tuple[tuple[str, ...], tuple[int, ...], float], ...]
    """histogram: (label values, cumulative counts per bucket then +Inf, sum)"""
    dropped: int
    """updates to series beyond the cardinality cap"""
    rejected: int
    """invalid values (negative counter increments, NaN, inf)"""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackendFamily:
        """From the JSON form (lists where tuples were)."""
        return cls(
            name=data["name"],
            kind=data["kind"],
            help=data["help"],
            labelnames=tuple(data["labelnames"]),
            buckets=tuple(data["buckets"]),
            samples=tuple((tuple(labels), value) for labels, value in data["samples"]),
            histograms=tuple(
                (tuple(labels), tuple(counts), total)
                for labels, counts, total in data["histograms"]
            ),
            dropped=data["dropped"],
            rejected=data["rejected"],
        )


def _sum_family(spec: MetricSpec, series: Iterable[str], data: Mapping[str, int]) -> BackendFamily:
    samples: list[tuple[tuple[str, ...], float]] = []
    histograms: list[tuple[tuple[str, ...], tuple[int, ...], float]] = []
    for sid in sorted(set(series)):
        labels = series_labels(sid, len(spec.labelnames))
        if labels is None:
            continue
        total = series_value(data, sid)
        if spec.kind == "counter":
            samples.append((labels, total))
        else:
            histograms.append((labels, series_buckets(data, sid, len(spec.buckets)), total))
    return BackendFamily(
        spec.name,
        spec.kind,
        spec.help,
        spec.labelnames,
        spec.buckets,
        tuple(samples),
        tuple(histograms),
        data.get(SERIES_DROPPED_FIELD, 0),
        data.get(VALUES_REJECTED_FIELD, 0),
    )


def _combine(mode: str, contributions: list[tuple[float, float]]) -> float:
    values = [value for value, _ in contributions]
    if mode == "max":
        return max(values)
    if mode == "min":
        return min(values)
    if mode == "latest":
        return max(contributions, key=lambda c: c[1])[0]
    return sum(values)


def gauge_family(
    spec: MetricSpec,
    writers: Iterable[Mapping[str, str]],
    data: Mapping[str, int],
    max_series: int = DEFAULT_MAX_SERIES,
) -> BackendFamily:
    """Each live writer's values for this gauge, combined per label set."""
    by_series: dict[str, list[tuple[float, float]]] = {}
    for values in writers:
        for sid, value, updated in decode_gauges(values, spec.name):
            by_series.setdefault(sid, []).append((value, updated))
    samples = []
    for sid in sorted(by_series):
        labels = series_labels(sid, len(spec.labelnames))
        if labels is not None:
            samples.append((labels, _combine(spec.combine, by_series[sid])))
    # Gauges are capped in each process; across processes the cap applies here.
    over = max(0, len(samples) - max_series)
    samples = samples[:max_series]
    return BackendFamily(
        spec.name,
        spec.kind,
        spec.help,
        spec.labelnames,
        (),
        tuple(samples),
        (),
        data.get(SERIES_DROPPED_FIELD, 0) + over,
        data.get(VALUES_REJECTED_FIELD, 0),
    )


def build_families(
    schema: Mapping[str, str],
    series: Mapping[str, Iterable[str]],
    data: Mapping[str, Mapping[str, int]],
    gauge_writers: Sequence[Mapping[str, str]],
    max_series: int = DEFAULT_MAX_SERIES,
) -> tuple[BackendFamily, ...]:
    families = []
    for name in sorted(schema):
        try:
            spec = MetricSpec.from_json(schema[name])
        except (ValueError, KeyError, TypeError):
            log.warning("metric %r has an unreadable spec in Redis; skipped", name)
            continue
        values = data.get(name, {})
        if spec.kind == "gauge":
            families.append(gauge_family(spec, gauge_writers, values, max_series))
        else:
            families.append(_sum_family(spec, series.get(name, ()), values))
    return tuple(families)
