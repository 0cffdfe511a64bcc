"""Backend metrics (the workers' Counters, Gauges, Histograms, Summaries, Infos) as plain data:
pure functions from what the reader fetched to the families the snapshot holds."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from pydantic import ConfigDict

from aggregator.core.readings import BackendReading
from aggregator.core.reuse import Reuse
from aggregator.core.schema import DATA_CONFIG
from gatewayz_protocol.fields import (
    CONFLICTS_FIELD,
    SERIES_DROPPED_FIELD,
    TRUNCATED_FIELD,
    VALUES_REJECTED_FIELD,
    Exemplar,
    decode_exemplar,
    decode_gauges,
    exemplar_field,
    gauge_cap,
    series_buckets,
    series_value,
)
from gatewayz_protocol.labels import bounded_label_value
from gatewayz_protocol.options import MAX_LABEL_VALUE_BYTES, MAX_SERIES
from gatewayz_protocol.specs import MetricSpec, info_labels, series_labels, spec_of

DEFAULT_MAX_SERIES = MAX_SERIES.default
"""Gauge series served per metric (``GATEWAYZ_MAX_SERIES``: the clients' cap for counters and
histograms is the same setting)."""
DEFAULT_MAX_LABEL_VALUE_BYTES = MAX_LABEL_VALUE_BYTES.default


@functools.lru_cache(maxsize=1 << 16)  # every cycle reads the same series ids again
def _bounded(values: tuple[str, ...], max_bytes: int) -> tuple[str, ...]:
    return tuple(bounded_label_value(value, max_bytes) for value in values)


@dataclass
class _LabelSets:
    """Label sets as served: every value within the bound, whoever wrote it (a client bounds
    its own; a raw write or a client configured with a larger bound may not), and each set once
    (two series ids may decode to one set: ``["1"]`` and ``[1]``, or a JSON spelling with
    spaces). Both are counted: a cut value as truncated, a second set as dropped, as Prometheus
    refuses a whole scrape that repeats a series."""

    max_bytes: int
    truncated: int = 0
    repeated: int = 0
    _seen: set[tuple[str, ...]] = field(default_factory=set)

    def admit(self, labels: tuple[str, ...]) -> tuple[str, ...] | None:
        bounded = _bounded(labels, self.max_bytes)
        if bounded != labels:
            self.truncated += 1
        if bounded in self._seen:
            self.repeated += 1
            return None
        self._seen.add(bounded)
        return bounded


@dataclass(frozen=True)
class BackendFamily:
    """One of the workers' own metrics, all its series."""

    __pydantic_config__: ClassVar[ConfigDict] = DATA_CONFIG

    name: str
    kind: str
    help: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]
    """counter and gauge: (label values, value)"""
    histograms: tuple[tuple[tuple[str, ...], tuple[int, ...], float], ...]
    """histogram: (label values, cumulative counts per bucket then +Inf, sum); summary: (label
    values, (count,), sum)"""
    dropped: int
    """updates to series beyond the cardinality cap"""
    rejected: int
    """invalid values (negative counter increments, NaN, inf)"""
    exemplars: tuple[tuple[tuple[str, ...], int, Exemplar], ...] = ()
    """histogram: (label values, bucket index, the latest exemplar in that bucket); counter:
    (label values, 0, the latest exemplar of an increment)"""
    conflicts: int = 0
    """updates refused: their process declared the metric otherwise than this declaration"""
    truncated: int = 0
    """label values the clients cut to their bound"""
    unit: str = ""
    """OpenMetrics' unit (the name ends with it)"""
    infos: tuple[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ...] = ()
    """info: (label values, info labels) of each distinct set a live process holds"""


def _sum_family(
    spec: MetricSpec,
    series: Iterable[str],
    data: Mapping[str, int],
    exemplars: Mapping[str, str] | None = None,
    max_label_bytes: int = DEFAULT_MAX_LABEL_VALUE_BYTES,
) -> BackendFamily:
    """A counter's, histogram's or summary's series, added up in Redis by every process."""
    samples: list[tuple[tuple[str, ...], float]] = []
    histograms: list[tuple[tuple[str, ...], tuple[int, ...], float]] = []
    linked: list[tuple[tuple[str, ...], int, Exemplar]] = []
    linkable = {"counter": 1, "histogram": len(spec.buckets) + 1}.get(spec.kind, 0)
    sets = _LabelSets(max_label_bytes)
    for sid in sorted(set(series)):
        decoded = series_labels(sid, len(spec.labelnames))
        labels = sets.admit(decoded) if decoded is not None else None
        if labels is None:
            continue
        total = series_value(data, sid)
        if spec.kind == "counter":
            samples.append((labels, total))
        else:
            histograms.append((labels, series_buckets(data, sid, len(spec.buckets)), total))
        for bucket in range(linkable) if exemplars else ():
            raw = exemplars.get(exemplar_field(bucket, sid)) if exemplars else None
            exemplar = decode_exemplar(raw) if raw is not None else None
            if exemplar is not None:
                linked.append((labels, bucket, exemplar))
    return _family(
        spec, data, samples=tuple(samples), histograms=tuple(histograms), linked=linked, sets=sets
    )


def _family(
    spec: MetricSpec,
    data: Mapping[str, int],
    *,
    samples: tuple[tuple[tuple[str, ...], float], ...] = (),
    histograms: tuple[tuple[tuple[str, ...], tuple[int, ...], float], ...] = (),
    linked: Sequence[tuple[tuple[str, ...], int, Exemplar]] = (),
    over: int = 0,
    infos: tuple[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ...] = (),
    sets: _LabelSets | None = None,
) -> BackendFamily:
    """A family with the counts every metric's data hash keeps (``over``: series the aggregator
    left out, counted as dropped; ``sets``: the label sets it bounded or left out on read)."""
    truncated, repeated = (sets.truncated, sets.repeated) if sets is not None else (0, 0)
    return BackendFamily(
        spec.name,
        spec.kind,
        spec.help,
        spec.labelnames,
        spec.buckets,
        samples,
        histograms,
        data.get(SERIES_DROPPED_FIELD, 0) + over + repeated,
        data.get(VALUES_REJECTED_FIELD, 0),
        tuple(linked),
        data.get(CONFLICTS_FIELD, 0),
        data.get(TRUNCATED_FIELD, 0) + truncated,
        spec.unit,
        infos,
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


def _held(
    writers: Iterable[Mapping[str, str]], metric: str, max_series: int
) -> tuple[list[tuple[str, float, float]], int]:
    """A gauge's (or info's) values as the live writers hold them, (series id, value, updated
    at) each, and its series cap across those writers: the largest they declared (one writer's
    cap applies across writers, as a counter's set is admitted up to it), never above the
    aggregator's own; the aggregator's while any of them declared none (a client from before
    caps)."""
    held: list[tuple[str, float, float]] = []
    caps: list[int | None] = []
    for values in writers:
        mine = list(decode_gauges(values, metric))
        if mine:
            held += mine
            caps.append(gauge_cap(values))
    if not caps or None in caps:
        return held, max_series
    return held, min(max_series, max(cap for cap in caps if cap is not None))


def gauge_family(
    spec: MetricSpec,
    writers: Iterable[Mapping[str, str]],
    data: Mapping[str, int],
    max_series: int = DEFAULT_MAX_SERIES,
    max_label_bytes: int = DEFAULT_MAX_LABEL_VALUE_BYTES,
) -> BackendFamily:
    """Each live writer's values for this gauge, combined per label set, at most the largest
    series cap among those writers (``_held``)."""
    held, max_series = _held(writers, spec.name, max_series)
    by_series: dict[str, list[tuple[float, float]]] = {}
    for sid, value, updated in held:
        by_series.setdefault(sid, []).append((value, updated))
    samples = []
    sets = _LabelSets(max_label_bytes)
    for sid in sorted(by_series):
        decoded = series_labels(sid, len(spec.labelnames))
        labels = sets.admit(decoded) if decoded is not None else None
        if labels is not None:
            samples.append((labels, _combine(spec.combine, by_series[sid])))
    # Gauges are capped in each process; across processes the cap applies here (the series
    # first in order kept: the same ones every cycle while the same series are held).
    over = max(0, len(samples) - max_series)
    return _family(spec, data, samples=tuple(samples[:max_series]), over=over, sets=sets)


def info_family(
    spec: MetricSpec,
    writers: Iterable[Mapping[str, str]],
    data: Mapping[str, int],
    max_series: int = DEFAULT_MAX_SERIES,
    max_label_bytes: int = DEFAULT_MAX_LABEL_VALUE_BYTES,
) -> BackendFamily:
    """Each distinct set of labels a live writer holds for this info (served with the value 1),
    at most ``max_series`` of them."""
    held, max_series = _held(writers, spec.name, max_series)
    found: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], None] = {}
    for sid, _, _ in held:
        decoded = info_labels(sid, spec.labelnames)
        if decoded is not None:
            found[(decoded[0], tuple(sorted(decoded[1].items())))] = None
    sets = _LabelSets(max_label_bytes)
    bounded: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], None] = {}
    for labels, info in found:  # distinct sets: each served once, whoever holds it
        cut = sets.admit((*labels, *(value for _, value in info)))
        if cut is not None:
            named = zip((name for name, _ in info), cut[len(labels) :], strict=True)
            bounded[(cut[: len(labels)], tuple(named))] = None
    found = bounded
    infos = sorted(found)
    over = max(0, len(infos) - max_series)
    return _family(spec, data, infos=tuple(infos[:max_series]), over=over, sets=sets)


def build_families(
    schema: Mapping[str, str],
    series: Mapping[str, Iterable[str]],
    data: Mapping[str, Mapping[str, int]],
    gauge_writers: Sequence[Mapping[str, str]],
    max_series: int = DEFAULT_MAX_SERIES,
    exemplars: Mapping[str, Mapping[str, str]] | None = None,
    max_label_bytes: int = DEFAULT_MAX_LABEL_VALUE_BYTES,
    reuse: Reuse | None = None,
) -> tuple[BackendFamily, ...]:
    """Each metric's family, by name. ``reuse``: the families the last call built, kept (the
    same objects) for the metrics whose inputs are equal (``Reuse.reuse``); the caller calls
    its ``finish()``."""
    families = []
    for name in sorted(schema):
        spec = spec_of(schema[name])
        if spec is None:  # the reader skipped and counted it already (``read_specs``)
            continue
        values = data.get(name, {})
        build: Callable[[], BackendFamily]
        bounds = (max_series, max_label_bytes)
        if spec.kind in ("gauge", "info"):
            family_of = gauge_family if spec.kind == "gauge" else info_family
            build = partial(family_of, spec, gauge_writers, values, *bounds)
            inputs: tuple[object, ...] = (spec, values, bounds, tuple(gauge_writers))
        else:
            linked = (exemplars or {}).get(name)
            build = partial(_sum_family, spec, series.get(name, ()), values, linked, bounds[1])
            inputs = (spec, values, bounds, series.get(name, ()), linked)
        families.append(build() if reuse is None else reuse.reuse(name, inputs, build))
    return tuple(families)


def families_of(
    reading: BackendReading,
    max_series: int = DEFAULT_MAX_SERIES,
    max_label_bytes: int = DEFAULT_MAX_LABEL_VALUE_BYTES,
    reuse: Reuse | None = None,
) -> tuple[BackendFamily, ...]:
    """``build_families`` over what the reader read (``reuse``: see there; finished here)."""
    families = build_families(
        reading.schema,
        reading.series,
        reading.data,
        reading.gauge_writers,
        max_series,
        exemplars=reading.exemplars,
        max_label_bytes=max_label_bytes,
        reuse=reuse,
    )
    if reuse is not None:
        reuse.finish()
    return families
