"""What a published snapshot may be, as a follower takes it: at most ``published_bytes`` of
JSON (decompressed no further: ``snapshot.decode_published``), holding what a leader builds
(``snapshot_problem``), or it is refused as a whole and the last one served.

The bound is what the leader can publish at this replica's settings (every replica should run
the same): each provider at its largest, the model breakers, the bounded counts and clock
offsets, and the workers' own metrics at ``max_metric_families`` families at their series cap.

The rules are the leader's own, checked again: provider names by the key schema's rule, each
once; figures finite, counts and counters never negative, shares in [0, 1]; cumulative buckets
that never decrease; breaker states and transitions by their names; bounded count names and
writers; exemplars OpenMetrics takes; backend declarations a client could write, each label set
once; and a time taken no later than now. One value outside them (another writer's snapshot, a
bug) made a follower serve an exposition Prometheus refuses, or answer 500 on /health/history
or /health/dashboard, for as long as it stayed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final, Protocol

from aggregator.core.backend import BackendFamily
from aggregator.core.bounded import COUNT_NAME_RE, MAX_COUNT_LABELS, MAX_WRITERS, OTHER, WRITER_RE
from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.snapshot import ProviderHealth, Snapshot
from gatewayz_protocol.breaker_state import STATES, BreakerState, is_transition_field
from gatewayz_protocol.fields import Exemplar, exemplar_labels_ok
from gatewayz_protocol.names import is_valid_label_name, is_valid_provider
from gatewayz_protocol.specs import MetricSpec
from gatewayz_protocol.text import is_text

PROVIDER_BYTES: Final = 36 * 1024
"""A provider's JSON at its largest is 16.7 KB (every figure at its longest: 19-digit counts,
17-digit floats; an exemplar in each of the 10 buckets, 128 characters of labels each at 12
bytes escaped); twice that for the providers a snapshot holds beyond ``max_providers`` (the
configured ones, those whose breaker is open)."""
MODEL_BYTES: Final = 512
"""A model breaker's JSON but its model name (a provider name and a breaker state)."""
ESCAPED: Final = 6
"""Bytes of JSON per byte of text at most (a control character is ``\\u0001``)."""
FIXED_BYTES: Final = 64 * 1024 + MAX_WRITERS * 300 + 3 * (MAX_COUNT_LABELS + 1) * 100
"""The rest: the snapshot's own fields, the clients' rejection, drop and Redis operation counts
(``MAX_COUNT_LABELS`` names each) and ``MAX_WRITERS`` writers' clock offsets."""
SERIES_BYTES: Final = 768
"""A backend series' JSON but one label value at the bound: its other label values, a
histogram's cumulative counts and sum, an exemplar."""


class SnapshotSettings(Protocol):
    """The settings a snapshot's size follows (``AggregatorSettings``' own)."""

    @property
    def max_providers(self) -> int: ...
    @property
    def providers(self) -> tuple[str, ...]: ...
    @property
    def breaker_models(self) -> tuple[str, ...]: ...
    @property
    def max_models_per_provider(self) -> int: ...
    @property
    def max_metric_families(self) -> int: ...
    @property
    def max_series_per_metric(self) -> int: ...
    @property
    def max_label_value_bytes(self) -> int: ...


def published_bytes(settings: SnapshotSettings) -> int:
    """The most JSON a leader publishes at ``settings``: ``max_providers`` read from the
    registry and the configured ``providers``, ``max_models_per_provider`` model breakers for
    each of the ``breaker_models``, ``max_metric_families`` families of ``max_series_per_metric``
    series whose label values are at most ``max_label_value_bytes`` UTF-8 bytes. About 170 MB
    at the defaults (1,000 providers, 128 families of 1,000 series, 256 bytes)."""
    label = settings.max_label_value_bytes
    models = len(settings.breaker_models) * settings.max_models_per_provider
    families = settings.max_metric_families
    backend = families * settings.max_series_per_metric * (SERIES_BYTES + label)
    providers = settings.max_providers + len(settings.providers)
    return (
        FIXED_BYTES
        + providers * PROVIDER_BYTES
        + models * (MODEL_BYTES + ESCAPED * label)
        + backend
    )


FUTURE_SECONDS: Final = 60.0
"""A snapshot is taken no later than this past this replica's clock (both are Redis's clock,
measured: they agree to the millisecond). One from far ahead would never age (``/readyz`` ready
for good) and a date past year 9999 failed ``/health/dashboard``."""


def snapshot_problem(snapshot: Snapshot, now: float) -> str | None:
    """Why a follower cannot serve ``snapshot`` at ``now`` (its first value outside the rules
    above), None when it can."""
    return next(_problems(snapshot, now), None)


def _problems(snapshot: Snapshot, now: float) -> Iterator[str]:
    if not (math.isfinite(snapshot.taken_at) and 0 < snapshot.taken_at <= now + FUTURE_SECONDS):
        yield f"taken_at {snapshot.taken_at!r}: not a time up to now ({now!r})"
    if snapshot.cycle < 0 or not _positive(snapshot.window_seconds):
        yield f"cycle {snapshot.cycle} or window {snapshot.window_seconds!r} out of range"
    if min(snapshot.client_dropped, snapshot.log_records_dropped) < 0:
        yield "a negative count of dropped events or log records"
    for name, counts in (
        ("redis_ops", snapshot.redis_ops),
        ("client_rejected", snapshot.client_rejected),
        ("client_dropped_by_cause", snapshot.client_dropped_by_cause),
    ):
        yield from _bounded_counts(name, counts)
    offsets = snapshot.client_clock_offsets
    if len(offsets) > MAX_WRITERS or not all(map(WRITER_RE.fullmatch, offsets)):
        yield f"more than {MAX_WRITERS} clock offsets, or a writer no client names"
    if not all(map(math.isfinite, offsets.values())):
        yield "a clock offset that is not a finite number"
    buckets = len(snapshot.histogram_bounds) + 1
    yield from _repeated("provider", [p.provider for p in snapshot.providers])
    for health in snapshot.providers:
        yield from (f"provider {health.provider!r}: {p}" for p in _provider(health, buckets))
    yield from _model_breakers(snapshot.model_breakers)
    yield from _repeated("backend metric", [f.name for f in snapshot.backend])
    for family in snapshot.backend:
        yield from (f"backend metric {family.name!r}: {p}" for p in _family(family))


def _bounded_counts(name: str, counts: Mapping[str, int]) -> Iterator[str]:
    """``bounded.bounded_counts``' shape: at most ``MAX_COUNT_LABELS`` names and ``other``."""
    names_ok = all(n == OTHER or COUNT_NAME_RE.fullmatch(n) for n in counts)
    if len(counts) > MAX_COUNT_LABELS + 1 or not names_ok:
        yield f"{name}: more than {MAX_COUNT_LABELS} names, or a name no client writes"
    if not _counts(counts.values()):
        yield f"{name}: a negative count"


def _provider(health: ProviderHealth, buckets: int) -> Iterator[str]:
    if not is_valid_provider(health.provider):
        yield "not a provider name"
    shares = (health.availability, health.error_rate, health.latency_score, health.health_score)
    if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in shares):
        yield "a health figure outside [0, 1]"
    latencies = (health.latency_p95_seconds, health.latency_p50_seconds)
    sums = (health.latency_sum_seconds, health.cost_usd)
    if not all(x is None or _amount(x) for x in latencies) or not all(map(_amount, sums)):
        yield "a latency, latency sum or cost that is not a finite number >= 0"
    counts: tuple[int, ...] = (health.window_requests, health.tokens_total)
    counts += (health.breaker_rejected_total,)
    counts += (health.cancelled_total, *health.window_by_outcome.values())
    counts += tuple(health.requests_total.values()) + tuple(health.transitions.values())
    if not _counts(counts):
        yield "a negative count"
    if not _cumulative(health.histogram_cumulative):
        yield "histogram buckets that decrease"
    if not all(map(is_transition_field, health.transitions)):
        yield "a transition between states that are not states"
    yield from _breaker(health.breaker)
    for bucket, exemplar in health.exemplars.items():
        if not (bucket.isdigit() and int(bucket) < buckets and _exemplar(exemplar)):
            yield f"exemplar {bucket!r} is not one of a bucket OpenMetrics takes"


def _breaker(state: BreakerState) -> Iterator[str]:
    if state.state not in STATES:
        yield f"breaker state {state.state!r}"
    if not (math.isfinite(state.since) and math.isfinite(state.open_until)):
        yield "a breaker time that is not a finite number"
    if not _counts((state.epoch, state.consecutive_opens)):
        yield "a negative breaker count"


def _model_breakers(breakers: Sequence[ModelBreaker]) -> Iterator[str]:
    yield from _repeated("model breaker", [(b.provider, b.model) for b in breakers])
    for breaker in breakers:
        if not (is_valid_provider(breaker.provider) and breaker.model and is_text(breaker.model)):
            yield f"model breaker {breaker.provider!r} {breaker.model!r}: not a provider's model"
        yield from (f"model breaker {breaker.model!r}: {p}" for p in _breaker(breaker.breaker))


def _family(family: BackendFamily) -> Iterator[str]:
    combine = "sum" if family.kind == "gauge" else ""  # not in the snapshot: any will do
    try:
        MetricSpec(family.name, family.kind, family.help, family.labelnames, family.buckets,
                   combine, family.unit)  # fmt: skip
    except (ValueError, TypeError) as exc:
        yield f"not a declaration a client writes: {exc}"
        return
    if not _counts((family.dropped, family.rejected, family.conflicts, family.truncated)):
        yield "a negative count"
    width = len(family.labelnames)
    sets: list[object] = [labels for labels, _ in family.samples]
    sets += [h[0] for h in family.histograms] + list(family.infos)
    yield from _repeated("label set", sets)
    if not all(len(labels) == width for labels, _ in (*family.samples, *family.infos)):
        yield "a label set of another width"
    valid = _amount if family.kind == "counter" else _number
    if not all(valid(value) for _, value in family.samples):
        yield "a counter that is not a finite number >= 0, or a gauge that is no number"
    yield from _histograms(family)
    yield from _infos(family)
    linkable = len(family.buckets) + 1 if family.kind == "histogram" else 1
    for labels, bucket, exemplar in family.exemplars:
        if len(labels) != width or not (0 <= bucket < linkable) or not _exemplar(exemplar):
            yield f"exemplar of {labels!r} in bucket {bucket}: not one OpenMetrics takes"


def _histograms(family: BackendFamily) -> Iterator[str]:
    width = len(family.labelnames)
    buckets = len(family.buckets) + 1 if family.kind == "histogram" else 1
    for labels, cumulative, total in family.histograms:
        if len(labels) != width or len(cumulative) != buckets:
            yield f"series {labels!r}: {len(cumulative)} buckets, {len(labels)} label values"
        elif not (_cumulative(cumulative) and _amount(total)):
            yield f"series {labels!r}: buckets that decrease, or a sum that is not >= 0"


def _infos(family: BackendFamily) -> Iterator[str]:
    for _, info in family.infos:
        names = [name for name, _ in info]
        valid = all(map(is_valid_label_name, names)) and not set(names) & set(family.labelnames)
        if not valid or len(set(names)) != len(names):
            yield f"info labels {names!r}: not label names of their own"


def _repeated(what: str, items: Iterable[object]) -> Iterator[str]:
    seen: set[object] = set()
    for item in items:
        if item in seen:
            yield f"{what} {item!r} twice"
            return
        seen.add(item)


def _exemplar(exemplar: Exemplar) -> bool:
    labels, value, at = exemplar
    return exemplar_labels_ok(labels) and math.isfinite(value) and math.isfinite(at)


def _cumulative(counts: Sequence[int]) -> bool:
    return all(0 <= a <= b for a, b in zip((0, *counts), counts, strict=False))


def _counts(counts: Iterable[int]) -> bool:
    return all(count >= 0 for count in counts)


def _amount(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _number(value: float) -> bool:
    """A gauge's value: any but NaN (workers' finite values added up may overflow to inf)."""
    return not math.isnan(value)


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
