"""The client's Redis I/O: batches of events (one MULTI/EXEC round trip each), breaker states
and half-open permits."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from client.keys import (
    BREAKER_REJECTED_FIELD,
    COST_FIELD,
    COUNT_FIELDS,
    DROPPED_FIELD,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    MICROS_PER_SECOND,
    REJECTED_FIELD_PREFIX,
    TOKENS_FIELD,
    Keys,
    histogram_bucket,
    window_partition,
)

# Take one half-open trial permit if fewer than the breaker's ``permits`` are live. Permits
# expire ``permit_ms`` after they are taken (Redis server time, so hosts' clocks do not matter).
# KEYS[1] breaker hash, KEYS[2] permits zset; ARGV[1] holder. Returns {state, granted}.
_PERMIT_SCRIPT = """
local fields = redis.call('HMGET', KEYS[1], 'state', 'permits', 'permit_ms')
local state = fields[1] or 'closed'
if state ~= 'half_open' then
  return {state, 0}
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if redis.call('ZCARD', KEYS[2]) >= tonumber(fields[2] or '5') then
  return {state, 0}
end
local ttl = tonumber(fields[3] or '30000')
redis.call('ZADD', KEYS[2], now_ms + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return {state, 1}
"""

Event = tuple[str, float, float, int, int, int]
"""(provider, unix time, latency seconds, outcome code, tokens, cost in nano-USD)."""


@dataclass
class _ProviderBatch:
    partitions: dict[int, dict[str, float]] = field(default_factory=dict)
    totals: Counter[str] = field(default_factory=Counter)
    last_seen: float = 0.0


@dataclass(frozen=True)
class Batch:
    """Everything one flush writes; built once, so a retry re-sends the same members."""

    providers: dict[str, _ProviderBatch]
    rejected: dict[str, int]
    dropped: int
    events: int
    breaker_rejected: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.providers or self.rejected or self.dropped or self.breaker_rejected)


def build_batch(
    events: list[Event],
    writer_id: str,
    first_seq: int,
    rejected: dict[str, int],
    dropped: int,
    breaker_rejected: dict[str, int] | None = None,
) -> Batch:
    """Group events per provider: one window member each, counters pre-aggregated."""
    providers: dict[str, _ProviderBatch] = {}
    seq = first_seq
    for provider, ts, latency_s, outcome, tokens, cost_nusd in events:
        batch = providers.get(provider)
        if batch is None:
            batch = providers[provider] = _ProviderBatch()
        partition = window_partition(outcome, latency_s)
        members = batch.partitions.get(partition)
        if members is None:
            members = batch.partitions[partition] = {}
        members[f"{writer_id}.{seq:x}"] = ts
        seq += 1
        totals = batch.totals
        totals[COUNT_FIELDS[outcome]] += 1
        totals[HISTOGRAM_FIELDS[histogram_bucket(latency_s)]] += 1
        totals[LATENCY_SUM_FIELD] += round(latency_s * MICROS_PER_SECOND)
        if tokens:
            totals[TOKENS_FIELD] += tokens
        if cost_nusd:
            totals[COST_FIELD] += cost_nusd
        if ts > batch.last_seen:
            batch.last_seen = ts
    return Batch(providers, dict(rejected), dropped, len(events), dict(breaker_rejected or {}))


def connect(redis_url: str, socket_timeout: float) -> redis.Redis:
    """A Redis connection that never retries on its own: the flusher owns retries, so a
    command is never silently sent twice."""
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisWriter:
    """Writes batches for one namespace."""

    def __init__(self, connection: redis.Redis, keys: Keys, window_ttl: int, retention: int):
        self._redis = connection
        self._keys = keys
        self._window_ttl = window_ttl
        self._retention = retention
        self._permit = connection.register_script(_PERMIT_SCRIPT)

    def write(self, batch: Batch) -> None:
        """Apply the batch atomically (MULTI/EXEC) in one round trip; raises redis.RedisError."""
        keys = self._keys
        ops: Counter[str] = Counter()
        pipe = self._redis.pipeline(transaction=True)
        last_seen: dict[str, float] = {}
        for provider, pbatch in batch.providers.items():
            window_keys = keys.window_keys(provider)
            for partition, members in pbatch.partitions.items():
                key = window_keys[partition]
                pipe.zadd(key, members)
                pipe.expire(key, self._window_ttl)
                ops["zadd"] += 1
                ops["expire"] += 1
            totals_key = keys.totals(provider)
            for name, amount in pbatch.totals.items():
                pipe.hincrby(totals_key, name, amount)
                ops["hincrby"] += 1
            pipe.expire(totals_key, self._retention)
            ops["expire"] += 1
            last_seen[provider] = pbatch.last_seen
        for provider, count in batch.breaker_rejected.items():
            pipe.hincrby(keys.totals(provider), BREAKER_REJECTED_FIELD, count)
            pipe.expire(keys.totals(provider), self._retention)
            ops["hincrby"] += 1
            ops["expire"] += 1
        if last_seen:
            pipe.zadd(keys.providers, last_seen, gt=True)
            pipe.expire(keys.providers, self._retention)
            ops["zadd"] += 1
            ops["expire"] += 1
        for cause, count in batch.rejected.items():
            pipe.hincrby(keys.client_stats, REJECTED_FIELD_PREFIX + cause, count)
            ops["hincrby"] += 1
        if batch.dropped:
            pipe.hincrby(keys.client_stats, DROPPED_FIELD, batch.dropped)
            ops["hincrby"] += 1
        for operation, count in ops.items():
            pipe.hincrby(keys.redis_ops, operation, count)
        pipe.execute()

    def breaker_states(self, providers: list[str]) -> dict[str, str]:
        """Current breaker state name per provider ("closed" when it has no state)."""
        pipe = self._redis.pipeline(transaction=False)
        for provider in providers:
            pipe.hget(self._keys.breaker(provider), "state")
        replies = pipe.execute()
        return {
            provider: raw.decode() if raw else "closed"
            for provider, raw in zip(providers, replies, strict=True)
        }

    def take_permit(self, provider: str, holder: str) -> tuple[str, bool]:
        """Try to take a half-open trial permit: (current state, granted)."""
        state, granted = self._permit(
            keys=[self._keys.breaker(provider), self._keys.permits(provider)], args=[holder]
        )
        return (state.decode() if isinstance(state, bytes) else str(state)), bool(granted)
