"""The Redis key schema: every key format used by the client and the aggregator lives here.

Layout (namespace ``gatewayz`` by default; ``{p}`` is the provider name, a Redis Cluster hash tag
so all of one provider's keys share a slot and can be read in one pipeline):

==========================================  ======  ===============================================
key                                         type    content
==========================================  ======  ===============================================
``gatewayz:providers``                      zset    member = provider, score = last-seen unix time
``gatewayz:{p}:w:ok:<i>``                   zset    window: successful calls whose latency falls in
                                                    latency partition ``i`` (see WINDOW_BOUNDS)
``gatewayz:{p}:w:fail``                     zset    window: provider failures
``gatewayz:{p}:w:rl``                       zset    window: rate-limited calls (429)
``gatewayz:{p}:w:ce``                       zset    window: caller errors (other 4xx)
``gatewayz:{p}:totals``                     hash    cumulative counters since the key was created
``gatewayz:{p}:breaker``                    hash    circuit-breaker state (aggregator writes)
``gatewayz:{p}:permits``                    zset    half-open trial permits: member = holder,
                                                    score = expiry (Redis server time)
``gatewayz:{p}:transitions``                hash    breaker transitions, field ``from>to``
``gatewayz:{leader}:lease``                 string  ``<instance>|<fencing token>``, with a TTL
``gatewayz:{leader}:token``                 string  last fencing token handed out (INCR)
``gatewayz:snapshot``                       string  the leader's last snapshot (JSON)
``gatewayz:event_ids``                      string  last window member id handed out (INCRBY)
``gatewayz:{metrics}:schema``               hash    backend metric name -> its spec (JSON)
``gatewayz:{metrics}:series:<name>``        set     series ids (JSON label values) admitted
``gatewayz:{metrics}:data:<name>``          hash    counter/histogram values per series
``gatewayz:{metrics}:gauges:<writer>``      hash    one process's gauge values (expires)
``gatewayz:{metrics}:gauge_writers``        zset    processes with gauges, by last write
``gatewayz:stats:clients``                  hash    events rejected/dropped by clients, by cause
``gatewayz:stats:redis_ops``                hash    Redis commands issued, by operation
==========================================  ======  ===============================================

Window members are event ids, unique per event across all writers of the namespace: each flush
reserves a block of ids with one INCRBY on ``event_ids`` and writes each id, modulo 2**36, as six
characters of ``[A-Za-z0-9_-]`` (``event_members``). Six characters is the longest member Redis
7 stores in its smallest allocation (8 bytes); a longer one costs 8-16 bytes more per event. Ids
repeat only after 2**36 (68 billion) events, long after the first ones left the window. Scored
with the event's unix time. Every window key expires ``window + margin`` seconds after its last
write; ``totals`` and ``breaker`` expire after the retention period of an idle provider.
"""

from __future__ import annotations

import re
import string
from bisect import bisect_left
from dataclasses import dataclass
from typing import Final

OUTCOMES: Final = ("success", "failure", "rate_limited", "caller_error")
"""Outcome classes, in the order of their numeric codes (0..3)."""

SUCCESS: Final = 0
FAILURE: Final = 1
RATE_LIMITED: Final = 2
CALLER_ERROR: Final = 3

HISTOGRAM_BOUNDS: Final = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Upper bounds of ``provider_response_time_seconds`` (seed contract); +Inf is implicit."""

WINDOW_BOUNDS: Final = (
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0,
    15.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds of the latency partitions of successful calls in the window (+Inf is implicit).

The window p95 is interpolated inside one partition, so its error is at most that partition's
width: 0.5 s between the 2 s target and the 10 s ceiling of the default latency score.
"""

PROVIDER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Accepted provider names: 1-64 characters of ASCII letters, digits, ``.``, ``_``, ``-``,
starting with a letter or digit. Nothing else can reach a key, so a name cannot address another
provider's keys or leave the namespace."""

NAMESPACE_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_valid_provider(name: object) -> bool:
    """True when ``name`` is a provider name the key schema accepts."""
    return isinstance(name, str) and PROVIDER_NAME_RE.fullmatch(name) is not None


def window_partition(outcome: int, latency_s: float) -> int:
    """Index of the window partition an event belongs to (see ``Keys.window_keys``); the
    latency must be a valid one (record() checks)."""
    if outcome != SUCCESS:
        return len(WINDOW_BOUNDS) + outcome  # fail, rl, ce follow the ok partitions
    return bisect_left(WINDOW_BOUNDS, latency_s)  # first bound >= latency: "le" semantics


def histogram_bucket(latency_s: float) -> int:
    """Index into HISTOGRAM_BOUNDS (len = +Inf) of the first bucket holding ``latency_s``."""
    return bisect_left(HISTOGRAM_BOUNDS, latency_s)


def _bucket_field(index: int) -> str:
    return "b:+Inf" if index == len(HISTOGRAM_BOUNDS) else f"b:{HISTOGRAM_BOUNDS[index]:g}"


HISTOGRAM_FIELDS: Final = tuple(_bucket_field(i) for i in range(len(HISTOGRAM_BOUNDS) + 1))
"""``totals`` fields holding per-bucket (non-cumulative) call counts, ``b:0.1`` .. ``b:+Inf``."""

COUNT_FIELDS: Final = tuple(f"n:{outcome}" for outcome in OUTCOMES)
"""``totals`` fields counting calls per outcome class."""

LATENCY_SUM_FIELD: Final = "lat_us"  # integer microseconds: exact under millions of HINCRBYs
COST_FIELD: Final = "cost_nusd"  # integer nano-USD: exact, no float drift
TOKENS_FIELD: Final = "tokens"
BREAKER_REJECTED_FIELD: Final = "breaker_rejected"  # calls allow() turned away

NANO_USD_PER_USD: Final = 1_000_000_000
MICROS_PER_SECOND: Final = 1_000_000

EVENT_ID_BITS: Final = 36
"""Window member ids are taken modulo 2**EVENT_ID_BITS: six base-64 digits."""

_DIGITS: Final = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
_LOW_PAIRS: Final = tuple(a + b for a in _DIGITS for b in _DIGITS)  # the 12 low bits, 4096 pairs


def event_members(first_id: int, count: int) -> list[str]:
    """Window members of ``count`` consecutive event ids from ``first_id`` (modulo 2**36): six
    base-64 digits each, most significant first. The flusher names every event this way, so
    each run of 4,096 ids is one C-level concatenation, not per-id arithmetic."""
    members: list[str] = []
    modulus = 1 << EVENT_ID_BITS
    event_id, end = first_id % modulus, first_id % modulus + count
    while event_id < end:
        high, low = divmod(event_id % modulus, 4096)
        take = min(4096 - low, end - event_id)
        prefix = "".join(_DIGITS[(high >> shift) & 63] for shift in (18, 12, 6, 0))
        members += map(prefix.__add__, _LOW_PAIRS[low : low + take])
        event_id += take
    return members


DROPPED_FIELD: Final = "dropped"
REJECTED_FIELD_PREFIX: Final = "rejected:"


@dataclass(frozen=True)
class Keys:
    """Key names for one namespace."""

    namespace: str = "gatewayz"

    def __post_init__(self) -> None:
        if not NAMESPACE_RE.fullmatch(self.namespace):
            raise ValueError(f"invalid namespace {self.namespace!r}: use 1-64 of A-Z a-z 0-9 . _ -")

    @property
    def providers(self) -> str:
        return f"{self.namespace}:providers"

    @property
    def client_stats(self) -> str:
        return f"{self.namespace}:stats:clients"

    @property
    def redis_ops(self) -> str:
        return f"{self.namespace}:stats:redis_ops"

    def _provider(self, provider: str) -> str:
        if not is_valid_provider(provider):
            raise ValueError(f"invalid provider name {provider!r}")
        return f"{self.namespace}:{{{provider}}}"

    def window_keys(self, provider: str) -> tuple[str, ...]:
        """All window partition keys of a provider, indexed by ``window_partition()``."""
        base = self._provider(provider)
        ok = tuple(f"{base}:w:ok:{i}" for i in range(len(WINDOW_BOUNDS) + 1))
        return (*ok, f"{base}:w:fail", f"{base}:w:rl", f"{base}:w:ce")

    def totals(self, provider: str) -> str:
        return f"{self._provider(provider)}:totals"

    def breaker(self, provider: str) -> str:
        return f"{self._provider(provider)}:breaker"

    def permits(self, provider: str) -> str:
        return f"{self._provider(provider)}:permits"

    def transitions(self, provider: str) -> str:
        return f"{self._provider(provider)}:transitions"

    @property
    def leader_lease(self) -> str:
        return f"{self.namespace}:{{leader}}:lease"

    @property
    def leader_token(self) -> str:
        return f"{self.namespace}:{{leader}}:token"

    @property
    def event_ids(self) -> str:
        return f"{self.namespace}:event_ids"

    @property
    def snapshot(self) -> str:
        return f"{self.namespace}:snapshot"

    @property
    def metric_schema(self) -> str:
        return f"{self.namespace}:{{metrics}}:schema"

    def metric_series(self, name: str) -> str:
        return f"{self.namespace}:{{metrics}}:series:{name}"

    def metric_data(self, name: str) -> str:
        return f"{self.namespace}:{{metrics}}:data:{name}"

    def gauge_values(self, writer_id: str) -> str:
        return f"{self.namespace}:{{metrics}}:gauges:{writer_id}"

    @property
    def gauge_writers(self) -> str:
        return f"{self.namespace}:{{metrics}}:gauge_writers"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.namespace}:*"


SUCCESS_PARTITIONS: Final = len(WINDOW_BOUNDS) + 1
"""Number of window partitions holding successful calls (the first ones of window_keys)."""
