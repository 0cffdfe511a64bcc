"""The immutable Snapshot: every exported value of one cycle, computed by pure functions."""

from __future__ import annotations

import json
import zlib
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final

from pydantic import ConfigDict, TypeAdapter

from aggregator.core.backend import BackendFamily
from aggregator.core.bounded import bounded_counts, bounded_writers
from aggregator.core.health import (
    WindowCounts,
    bucket_quantile,
    error_rate,
    health_score,
    latency_score,
)
from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.readings import Reading
from aggregator.core.schema import DATA_CONFIG
from gatewayz_protocol.breaker_state import CLOSED, BreakerState
from gatewayz_protocol.fields import (
    LOG_RECORDS_DROPPED_FIELD,
    Exemplar,
    decode_client_stats,
    decode_totals,
    histogram_bounds_ok,
)
from gatewayz_protocol.partitions import HISTOGRAM_BOUNDS, OUTCOMES, WINDOW_BOUNDS

if TYPE_CHECKING:
    from aggregator.core.snapshot_reuse import SnapshotReuse

SNAPSHOT_VERSION = 4
"""The layout of a published snapshot (1: before versions; 3: ``histogram_bounds``; 4:
``model_breakers``). A replica
reads any version: what it does not know is ignored, what is missing takes the default below,
and what it cannot use fails the cycle by name (counted, ``last_error``), never silently
(README "Two replicas")."""

_NO_CALLS: Final = MappingProxyType(dict.fromkeys(OUTCOMES, 0))
_EMPTY_HISTOGRAM: Final = (0,) * (len(HISTOGRAM_BOUNDS) + 1)


@dataclass(frozen=True)
class ProviderHealth:
    """One provider's figures in one cycle. Every field but the name has the value of a provider
    without traffic as its default, for a snapshot published without it."""

    __pydantic_config__: ClassVar[ConfigDict] = DATA_CONFIG

    provider: str
    availability: float = 1.0
    error_rate: float = 0.0
    latency_p95_seconds: float | None = None
    latency_score: float = 1.0
    health_score: float = 1.0
    window_requests: int = 0
    window_by_outcome: dict[str, int] = field(default_factory=lambda: dict(_NO_CALLS))
    breaker: BreakerState = field(default_factory=BreakerState)
    requests_total: dict[str, int] = field(default_factory=lambda: dict(_NO_CALLS))
    histogram_cumulative: tuple[int, ...] = _EMPTY_HISTOGRAM
    """Cumulative counts for the snapshot's ``histogram_bounds`` then +Inf (== count)."""
    latency_sum_seconds: float = 0.0
    cost_usd: float = 0.0
    tokens_total: int = 0
    breaker_rejected_total: int = 0
    transitions: dict[str, int] = field(default_factory=dict)
    """Applied breaker transitions by ``from>to``."""
    open_suppressed: bool = False
    """The breaker would open but the max-open-share guard holds it closed."""
    exemplars: dict[str, Exemplar] = field(default_factory=dict)
    """Histogram bucket index (as text: JSON keys; into the snapshot's ``histogram_bounds``, then
    +Inf) -> the latest exemplar in it."""
    latency_p50_seconds: float | None = None
    """The window median of successful calls (None without any; last: older snapshots lack it)."""
    cancelled_total: int = 0
    """Calls the caller abandoned before the provider's answer (cumulative; not in
    ``requests_total``, the window or the breaker)."""


@dataclass(frozen=True)
class Snapshot:
    """Every exported value of one cycle."""

    __pydantic_config__: ClassVar[ConfigDict] = DATA_CONFIG

    taken_at: float
    cycle: int
    window_seconds: float = 300.0
    providers: tuple[ProviderHealth, ...] = ()
    redis_ops: dict[str, int] = field(default_factory=dict)
    client_rejected: dict[str, int] = field(default_factory=dict)
    client_dropped: int = 0
    """Events clients gave up on, all causes."""
    backend: tuple[BackendFamily, ...] = ()
    """The workers' own metrics (fastapi_requests_total, ...), same cycle."""
    client_dropped_by_cause: dict[str, int] = field(default_factory=dict)
    client_clock_offsets: dict[str, float] = field(default_factory=dict)
    """Writer (host:pid) -> its clock's offset to Redis's, measured within 10 minutes."""
    log_records_dropped: int = 0
    """Log records the processes' Loki senders gave up on, all processes."""
    version: int = 1
    """``SNAPSHOT_VERSION`` of the leader that published it (absent: 1, before versions)."""
    histogram_bounds: tuple[float, ...] = HISTOGRAM_BOUNDS
    """The bounds of ``provider_response_time_seconds`` (then +Inf): the seed's, and the extra
    ones the leader was configured with (absent: the seed's)."""
    model_breakers: tuple[ModelBreaker, ...] = ()
    """The model breakers of the ``breaker_models`` providers (absent: none)."""

    def __post_init__(self) -> None:
        if not histogram_bounds_ok(self.histogram_bounds):
            raise ValueError(
                f"histogram bounds {self.histogram_bounds} are not ones this replica knows"
            )
        buckets = len(self.histogram_bounds) + 1
        for health in self.providers:
            if len(health.histogram_cumulative) != buckets:
                raise ValueError(
                    f"{health.provider}: {len(health.histogram_cumulative)} histogram buckets "
                    f"for {len(self.histogram_bounds)} bounds"
                )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, reuse: SnapshotReuse | None = None) -> str:
        """The snapshot as JSON; ``reuse``: the text of each provider and backend family
        written for the last snapshot where it is the same object (the same text either way:
        JSON is written without context, an object's text is the same wherever it stands)."""
        # json walks the dataclasses itself: asdict() would deep-copy every value first, half
        # of a cycle at 1,000 providers. The same text either way (the tests compare).
        if reuse is None:
            return json.dumps(self, default=fields_of, separators=(",", ":"))
        rest = {**self.__dict__, "providers": [], "backend": []}
        text = json.dumps(rest, default=fields_of, separators=(",", ":"))
        for name, items in (("providers", self.providers), ("backend", self.backend)):
            # The first '"name":[]': no text before it can hold one (an encoded string holds
            # no unescaped quote, and no other field holds a list before "histogram_bounds")
            before, found, after = text.partition(f'"{name}":[]')
            if not found:
                raise AssertionError(f"a snapshot's JSON without its {name}")
            parts = ",".join([reuse.json_of(item) for item in items])
            text = f'{before}"{name}":[{parts}]{after}'
        reuse.finish()
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        """Inverse of to_json (floats round-trip exactly); fields it does not know are ignored.
        Raises ValueError (pydantic's ValidationError) for what is not a snapshot."""
        return _SNAPSHOT.validate_json(text, extra="ignore")


_SNAPSHOT: TypeAdapter[Snapshot] = TypeAdapter(Snapshot)


def provider_health(
    provider: str,
    window: WindowCounts,
    breaker: BreakerState,
    totals: dict[str, int],
    transitions: dict[str, int],
    latency_target_s: float,
    latency_ceiling_s: float,
    open_suppressed: bool = False,
    exemplars: Mapping[int, Exemplar] | None = None,
    histogram_bounds: tuple[float, ...] = HISTOGRAM_BOUNDS,
) -> ProviderHealth:
    availability = 1.0 if breaker.state == CLOSED else 0.0
    err = error_rate(window.successes, window.failures)
    p95 = bucket_quantile(0.95, window.success_partitions, WINDOW_BOUNDS)
    lat = latency_score(p95, latency_target_s, latency_ceiling_s)
    counters = decode_totals(totals, histogram_bounds)
    return ProviderHealth(
        provider=provider,
        availability=availability,
        error_rate=err,
        latency_p95_seconds=p95,
        latency_score=lat,
        health_score=health_score(availability, err, lat),
        window_requests=window.total,
        window_by_outcome={
            "success": window.successes,
            "failure": window.failures,
            "rate_limited": window.rate_limited,
            "caller_error": window.caller_errors,
        },
        breaker=breaker,
        requests_total=counters.requests,
        histogram_cumulative=counters.histogram_cumulative,
        latency_sum_seconds=counters.latency_sum_seconds,
        cost_usd=counters.cost_usd,
        tokens_total=counters.tokens,
        breaker_rejected_total=counters.breaker_rejected,
        transitions=dict(transitions),
        open_suppressed=open_suppressed,
        exemplars=_placed(exemplars or {}, histogram_bounds),
        latency_p50_seconds=bucket_quantile(0.5, window.success_partitions, WINDOW_BOUNDS),
        cancelled_total=counters.cancelled,
    )


def _placed(exemplars: Mapping[int, Exemplar], bounds: tuple[float, ...]) -> dict[str, Exemplar]:
    """The latest exemplar per bucket of ``bounds``, each placed by its value ("le": the first
    bound at or above it): clients keep one per bucket of the seed's bounds, so one above 10 s
    lands in the extra bucket it belongs to."""
    placed: dict[str, Exemplar] = {}
    for exemplar in exemplars.values():
        bucket = str(bisect_left(bounds, exemplar[1]))
        if bucket not in placed or exemplar[2] > placed[bucket][2]:
            placed[bucket] = exemplar
    return placed


CLOCK_OFFSET_HORIZON_SECONDS = 600.0
"""A writer's clock offset is exported for this long after its last measurement (a process that
stopped writing for 10 minutes is gone or idle), then forgotten."""


@dataclass(frozen=True)
class HealthTargets:
    """What the health figures are measured against (the aggregator's settings)."""

    window_seconds: float
    latency_target_seconds: float
    latency_ceiling_seconds: float
    histogram_bounds: tuple[float, ...] = HISTOGRAM_BOUNDS
    """``provider_response_time_seconds``'s bounds: the seed's, then the extra ones asked for."""


def build_snapshot(
    reading: Reading,
    states: Mapping[str, BreakerState],
    now: float,
    cycle: int,
    targets: HealthTargets,
    open_suppressed: frozenset[str] = frozenset(),
    reuse: SnapshotReuse | None = None,
) -> Snapshot:
    """The snapshot of one cycle: each provider's health from its reading and its breaker's
    state after the cycle's transitions (``states``), and the clients' counters. ``reuse``:
    the last snapshot's health objects, kept where their inputs are the same."""
    rejected, dropped = decode_client_stats(reading.client_stats)
    rejected, dropped = bounded_counts(rejected), bounded_counts(dropped)
    recent = {
        writer: measurement
        for writer, measurement in reading.clock_offsets.items()
        if now - measurement[1] <= CLOCK_OFFSET_HORIZON_SECONDS
    }
    offsets = {writer: offset for writer, (offset, _) in bounded_writers(recent).items()}
    health = []
    for item in reading.providers:
        build = partial(
            provider_health,
            item.provider,
            item.window,
            states[item.provider],
            item.totals,
            item.transitions,
            targets.latency_target_seconds,
            targets.latency_ceiling_seconds,
            open_suppressed=item.provider in open_suppressed,
            exemplars=item.exemplars,
            histogram_bounds=targets.histogram_bounds,
        )
        if reuse is None:
            health.append(build())
            continue
        # every input of provider_health: not the breaker's own counts, which move with time
        state, suppressed = states[item.provider], item.provider in open_suppressed
        inputs: tuple[object, ...] = (item.window, item.totals, item.transitions, item.exemplars)
        inputs += (state, suppressed, targets)
        health.append(reuse.health(item.provider, inputs, build))
    if reuse is not None:
        reuse.built()
    return Snapshot(
        taken_at=now,
        cycle=cycle,
        window_seconds=targets.window_seconds,
        providers=tuple(health),
        redis_ops=bounded_counts(reading.redis_ops),
        client_rejected=rejected,
        client_dropped=sum(dropped.values()),
        client_dropped_by_cause=dropped,
        client_clock_offsets=offsets,
        log_records_dropped=reading.client_stats.get(LOG_RECORDS_DROPPED_FIELD, 0),
        version=SNAPSHOT_VERSION,
        histogram_bounds=targets.histogram_bounds,
    )


def silent_clocks(reading: Reading, now: float) -> list[str]:
    """Writers whose clock offset was last measured over ``CLOCK_OFFSET_HORIZON_SECONDS`` ago:
    to forget."""
    return [
        writer
        for writer, (_, measured_at) in reading.clock_offsets.items()
        if now - measured_at > CLOCK_OFFSET_HORIZON_SECONDS
    ]


def fields_of(value: object) -> dict[str, Any]:
    """A dataclass's fields, for json.dumps (which recurses into them)."""
    if is_dataclass(value) and not isinstance(value, type):
        fields: dict[str, Any] = value.__dict__
        return fields
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


PUBLISHED_PREFIX = b"z1:"
"""A published snapshot is its JSON compressed with zlib behind this prefix (about a tenth of
the JSON: followers fetch it every cycle); a value without it is plain JSON (older leaders)."""


def encode_published(snapshot_json: str) -> bytes:
    """The bytes the leader publishes for ``snapshot_json`` (level 1: fast, most of the gain)."""
    return PUBLISHED_PREFIX + zlib.compress(snapshot_json.encode(), 1)


def decode_published(raw: bytes, max_bytes: int | None = None) -> str:
    """The JSON of a published snapshot; ValueError when it is neither form, or its JSON is over
    ``max_bytes`` (``snapshot_rules.published_bytes``; None: no bound): decompressed no further
    than that, so a small value (a zlib bomb: 1 MB that inflates to 1 GB) costs no more."""
    over = f"published snapshot: over {max_bytes} bytes of JSON, this replica's bound"
    if not raw.startswith(PUBLISHED_PREFIX):
        if max_bytes is not None and len(raw) > max_bytes:
            raise ValueError(over)
        return raw.decode()
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(raw[len(PUBLISHED_PREFIX) :], max_bytes or 0)  # 0: no bound
        if not inflate.eof:  # stopped at the bound, or the stream ends early
            more = inflate.decompress(inflate.unconsumed_tail, 1)
            raise ValueError(over if more else "published snapshot: truncated stream")
    except zlib.error as exc:
        raise ValueError(f"published snapshot: {exc}") from exc
    return data.decode()
