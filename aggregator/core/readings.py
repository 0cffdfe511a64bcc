"""What the aggregator's reader returns, and how Redis's replies decode into it (pure: no I/O,
``reader.py`` does the reading)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from aggregator.core.health import WindowCounts
from gatewayz_protocol.breaker_state import BreakerState, is_transition_field, read_breaker
from gatewayz_protocol.fields import (
    Exemplar,
    decode_exemplar,
    int_fields,
    read_clock_offsets,
    read_gauges,
    text_fields,
)
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import is_valid_provider
from gatewayz_protocol.partitions import LATENCY_PARTITIONS
from gatewayz_protocol.specs import (
    MetricSpec,
    process_series_problems,
    read_series,
    read_specs,
)


@dataclass(frozen=True)
class ProviderReading:
    provider: str
    window: WindowCounts
    breaker_counts: WindowCounts
    """Calls made after the breaker's counting start (== window when that is before it)."""
    totals: dict[str, int]
    breaker: BreakerState
    transitions: dict[str, int]
    """Applied breaker transitions by ``from>to``."""
    exemplars: dict[int, Exemplar] = field(default_factory=dict)
    """Latest exemplar per ``provider_response_time_seconds`` bucket."""


@dataclass(frozen=True)
class RedisMemory:
    """Redis's memory, as INFO tells it."""

    used_bytes: int
    """used_memory, less what Redis does not count against maxmemory (replication buffers)"""
    max_bytes: int
    """maxmemory; 0: no limit"""
    policy: str
    """maxmemory-policy"""
    evicted_keys: int
    """keys Redis evicted since it started"""
    oom_refusals: int = 0
    """commands Redis refused for lack of memory since it started (INFO errorstats
    ``errorstat_OOM``): any writer's, so the aggregator sees OOM while only workers meet it"""
    permission_refusals: int = 0
    """commands Redis refused to a user whose ACL does not allow them since it started
    (``errorstat_NOPERM``): a worker or tool doing what its role may not (``ACL LOG`` says who)"""

    @property
    def can_evict(self) -> bool:
        """Whether Redis may evict this project's keys when full: every policy but noeviction
        can (the volatile ones too: windows, totals and the registry carry TTLs)."""
        return self.max_bytes > 0 and self.policy != "noeviction"


@dataclass(frozen=True)
class Reading:
    providers: tuple[ProviderReading, ...]
    client_stats: dict[str, int]
    redis_ops: dict[str, int]
    clock_offsets: dict[str, tuple[float, float]] = field(default_factory=dict)
    """writer -> (its clock's offset to Redis's, when measured)"""


def window_counts(values: list[int]) -> WindowCounts:
    """Window counts from ZCOUNT counts (ints) in ``Keys.window_keys`` order."""
    failures, rate_limited, caller_errors = values[LATENCY_PARTITIONS:]
    return WindowCounts(tuple(values[:LATENCY_PARTITIONS]), failures, rate_limited, caller_errors)


def redis_memory(
    memory: Mapping[str, object],
    stats: Mapping[str, object],
    errorstats: Mapping[str, object] | None = None,
) -> RedisMemory:
    """From INFO's memory, stats and errorstats sections as redis-py parses them."""
    errors = errorstats or {}
    return RedisMemory(
        used_bytes=int(str(memory.get("used_memory", 0)))
        - int(str(memory.get("mem_not_counted_for_evict", 0))),
        max_bytes=int(str(memory.get("maxmemory", 0))),
        policy=str(memory.get("maxmemory_policy", "")),
        evicted_keys=int(str(stats.get("evicted_keys", 0))),
        oom_refusals=_error_count(errors.get("errorstat_OOM")),
        permission_refusals=_error_count(errors.get("errorstat_NOPERM")),
    )


def _error_count(stat: object) -> int:
    """The ``count`` of an errorstats line: a mapping as redis-py 5.1+ parses it, the text
    ``count=N`` as redis-py 5.0 leaves it; 0 when absent."""
    if isinstance(stat, str):
        stat = dict(part.partition("=")[::2] for part in stat.split(","))
    return int(str(stat.get("count", 0))) if isinstance(stat, Mapping) else 0


def refusing(before: RedisMemory | None, now: RedisMemory | None) -> bool:
    """Whether Redis refused a command for lack of memory between two readings (a restart in
    between resets its count: nothing is known of that interval)."""
    return before is not None and now is not None and now.oom_refusals > before.oom_refusals


@dataclass(frozen=True)
class BackendReading:
    schema: dict[str, str]
    series: dict[str, list[str]]
    data: dict[str, dict[str, int]]
    gauge_writers: list[dict[str, str]]
    """The gauge values of each live process."""
    expired_writers: list[str]
    """Processes whose gauge values expired: dead, to be forgotten."""
    exemplars: dict[str, dict[str, str]] = field(default_factory=dict)
    """metric -> its exemplars hash (``<bucket>:<sid>`` -> exemplar JSON)"""


def decode_exemplars(raw: dict[bytes, bytes]) -> dict[int, Exemplar]:
    """Bucket index -> exemplar, from an exemplars hash (fields no client wrote are skipped)."""
    return read_exemplars(raw)[0]


def read_exemplars(raw: dict[bytes, bytes]) -> tuple[dict[int, Exemplar], list[str]]:
    """Bucket index -> exemplar, and the fields that are not one (no client wrote them)."""
    found = {}
    bad = []
    for name, value in raw.items():
        exemplar = decode_exemplar(value.decode("utf-8", "replace"))
        if exemplar is not None and name.isdigit() and len(name) < 4:
            found[int(name)] = exemplar
        else:
            bad.append(name.decode("utf-8", "replace"))
    return found, bad


def shard_counts(raw: list[tuple[bytes, float]]) -> dict[str, int]:
    """Provider -> shard count, from ``Keys.shards`` (names no client could write skipped)."""
    counts = {}
    for member, score in raw:
        name = member.decode("utf-8", "replace")
        if is_valid_provider(name) and 1 < score <= 64:
            counts[name] = int(score)
    return counts


def newest_exemplars(a: dict[int, Exemplar], b: dict[int, Exemplar]) -> dict[int, Exemplar]:
    """Per bucket, the later of two shards' exemplars."""
    merged = dict(a)
    for bucket, exemplar in b.items():
        if bucket not in merged or exemplar[2] > merged[bucket][2]:
            merged[bucket] = exemplar
    return merged


@dataclass(frozen=True)
class ProviderInspection:
    """What ``WindowReader.inspect`` read of one provider."""

    provider: str
    spans: list[WindowCounts]
    """Window counts per interval between the edges asked for."""
    totals: dict[str, int]
    breaker: dict[str, str]
    """The breaker hash, every field as stored."""
    transitions: dict[str, int]
    permits: list[tuple[str, float]]
    """Live half-open permits: (holder, expiry in unix seconds)."""
    ttl_ms: dict[str, int]
    """Each key's PTTL: -2 missing, -1 no expiry."""
    bad: dict[str, dict[str, str]] = field(default_factory=dict)
    """Key -> the fields of its hash no writer of this project writes (not UTF-8, a count that
    is not one, a breaker field the aggregator would not take), each with its value as text
    (cut at ``SHOWN_CHARACTERS``): left out of ``totals``, ``breaker`` and ``transitions``."""

    @property
    def exists(self) -> bool:
        """Whether any key of the provider exists."""
        return any(ttl != -2 for ttl in self.ttl_ms.values())


@dataclass(frozen=True)
class Skip:
    """Something read from Redis that no writer of this project could have written (another
    version, a bug, a hand edit): skipped, so a read never stops for it."""

    kind: str
    """The key's role (``Keys.kind``): breaker, totals, client stats, ..."""
    key: str
    fields: tuple[str, ...]
    """The fields skipped; empty: the whole key (it holds another type)."""


class Skips:
    """Reads a hash another writer may have touched, noting what it skips (``found``)."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self.found: list[Skip] = []

    def note(self, key: str, fields: Sequence[str] = ()) -> None:
        self.found.append(Skip(self._keys.kind(key), key, tuple(fields)))

    def ints(self, key: str, raw: Mapping[bytes, bytes]) -> dict[str, int]:
        values, bad = int_fields(raw)
        if bad:
            self.note(key, bad)
        return values

    def transitions(self, key: str, raw: Mapping[bytes, bytes]) -> dict[str, int]:
        """A ``transitions`` hash: counts whose field is a transition (``is_transition_field``),
        the only ones the leader publishes and a follower takes."""
        counts = self.ints(key, raw)
        usable = {name: count for name, count in counts.items() if is_transition_field(name)}
        if len(usable) < len(counts):
            self.note(key, [name for name in counts if name not in usable])
        return usable

    def texts(self, key: str, raw: Mapping[bytes, bytes]) -> dict[str, str]:
        values, bad = text_fields(raw)
        if bad:
            self.note(key, bad)
        return values

    def gauges(
        self, key: str, raw: Mapping[bytes, bytes], schema: Mapping[str, str]
    ) -> dict[str, str]:
        """A process's gauge hash: the values the aggregator can serve (``read_gauges``) whose
        series id is one of its declared gauge or info (``process_series_problems``)."""
        values, bad = read_gauges(self.texts(key, raw))
        strangers = process_series_problems(values, schema)
        if bad or strangers:
            self.note(key, [*bad, *strangers])
        return {name: value for name, value in values.items() if name not in strangers}

    def breaker(self, key: str, raw: Mapping[bytes, bytes]) -> BreakerState:
        state, bad = read_breaker(raw)
        if bad:
            self.note(key, bad)
        return state

    def specs(self, key: str, raw: Mapping[bytes, bytes]) -> dict[str, str]:
        usable, bad = read_specs(self.texts(key, raw))
        if bad:
            self.note(key, bad)
        return usable

    def series(self, key: str, members: Iterable[str], spec: MetricSpec) -> list[str]:
        usable, bad = read_series(members, spec)
        if bad:
            self.note(key, bad)
        return usable

    def metric_exemplars(self, key: str, raw: Mapping[bytes, bytes]) -> dict[str, str]:
        """A backend metric's exemplars hash (``<bucket>:<sid>`` -> exemplar JSON): the fields
        whose exemplar decodes (``decode_exemplar``)."""
        texts = self.texts(key, raw)
        usable = {name: text for name, text in texts.items() if decode_exemplar(text) is not None}
        if len(usable) < len(texts):
            self.note(key, [name for name in texts if name not in usable])
        return usable

    def exemplars(self, key: str, raw: dict[bytes, bytes]) -> dict[int, Exemplar]:
        found, bad = read_exemplars(raw)
        if bad:
            self.note(key, bad)
        return found

    def clock_offsets(self, key: str, raw: Mapping[bytes, bytes]) -> dict[str, tuple[float, float]]:
        offsets, bad = read_clock_offsets(self.texts(key, raw))
        if bad:
            self.note(key, bad)
        return offsets
