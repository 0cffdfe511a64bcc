"""The client's Redis I/O: batches of events (one MULTI/EXEC round trip each), breaker states
and half-open permits."""

from __future__ import annotations

import secrets
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from client.events import Event
from client.instruments import Drained
from client.keys import (
    BREAKER_REJECTED_FIELD,
    COST_FIELD,
    COUNT_FIELDS,
    DROPPED_FIELD,
    EVENT_ID_BITS,
    HISTOGRAM_BOUNDS,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    MICROS_PER_SECOND,
    REJECTED_FIELD_PREFIX,
    TOKENS_FIELD,
    WINDOW_BOUNDS,
    Keys,
    event_members,
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

# Counter/histogram deltas of one flush under a per-metric series cap: a series id not yet in
# the metric's set is admitted while the set is smaller than the cap, else its updates are
# dropped and counted. All keys share the {metrics} hash tag (one cluster slot).
# KEYS: per metric, its series set then its data hash. ARGV[1] cap, ARGV[2] TTL seconds; then
# per metric: series count; per series: id, updates, field count, (field, increment)...
_INSTRUMENTS_SCRIPT = """
local cap = tonumber(ARGV[1])
local a = 3
for m = 1, #KEYS, 2 do
  local set, data = KEYS[m], KEYS[m + 1]
  local dropped = 0
  local nseries = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, nseries do
    local sid, updates, nfields = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local known = redis.call('SISMEMBER', set, sid) == 1
    if not known and redis.call('SCARD', set) < cap then
      redis.call('SADD', set, sid)
      known = true
    end
    if known then
      for j = 0, nfields - 1 do
        local name = ARGV[a + 2 * j]
        local value = redis.call('HINCRBY', data, name, ARGV[a + 2 * j + 1])
        if string.sub(name, 1, 2) == 'n:' and value >= 1000000000 then
          -- carry whole units out of the nano-units so the field never overflows
          local whole = math.floor(value / 1000000000)
          redis.call('HINCRBY', data, name, -whole * 1000000000)
          redis.call('HINCRBY', data, 'i:' .. string.sub(name, 3), whole)
        end
      end
    else
      dropped = dropped + updates
    end
    a = a + 2 * nfields
  end
  if dropped > 0 then
    redis.call('HINCRBY', data, '!dropped', dropped)
  end
  redis.call('EXPIRE', set, ARGV[2])
  redis.call('EXPIRE', data, ARGV[2])
end
return 1
"""


# Admit providers into the registry while it holds fewer than the cap: a flood of new provider
# names cannot grow Redis or /metrics without bound. KEYS[1] registry zset; ARGV[1] cap,
# ARGV[2] now, ARGV[3..] names. Returns 1 (admitted or already known) or 0 per name.
_ADMIT_SCRIPT = """
local admitted = {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    admitted[#admitted + 1] = 1
  elseif redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    admitted[#admitted + 1] = 1
  else
    admitted[#admitted + 1] = 0
  end
end
return admitted
"""


@dataclass
class _ProviderBatch:
    partitions: dict[int, list[float | str]] = field(default_factory=dict)
    """window partition -> flat ZADD arguments: score (unix time, ms), member, score..."""
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
    instruments: Drained | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.providers
            or self.rejected
            or self.dropped
            or self.breaker_rejected
            or (self.instruments is not None and not self.instruments.empty)
        )


_TALLY_STRIDE = len(WINDOW_BOUNDS) + 1
# Every histogram bound is a window bound, so a latency's window partition (its first window
# bound >= latency) names its histogram bucket too: one bisect per event, not two.
assert set(HISTOGRAM_BOUNDS) <= set(WINDOW_BOUNDS)
_BUCKET_OF_PARTITION = tuple(
    bisect_left(HISTOGRAM_BOUNDS, bound) for bound in (*WINDOW_BOUNDS, float("inf"))
)


def build_batch(
    events: list[Event],
    first_id: int,
    rejected: dict[str, int],
    dropped: int,
    breaker_rejected: dict[str, int] | None = None,
) -> Batch:
    """Group events per provider: one window member each, counters pre-aggregated. This is the
    flusher's per-event cost, so the loop does the least it can: one member, one tally. The
    events are named by the ids ``first_id``, ``first_id + 1``... (reserved in Redis)."""
    grouped: dict[str, tuple[dict[int, list[float | str]], dict[int, int], list[float]]] = {}
    ok_partitions = len(WINDOW_BOUNDS)
    window_bounds = WINDOW_BOUNDS
    named = zip(events, event_members(first_id, len(events)), strict=True)
    for (provider, ts, latency_s, outcome, tokens, cost_nusd), member in named:
        entry = grouped.get(provider)
        if entry is None:
            entry = grouped[provider] = ({}, {}, [0.0, 0, 0, 0.0])
        partitions, tally, sums = entry
        latency_partition = bisect_left(window_bounds, latency_s)
        partition = latency_partition if outcome == 0 else ok_partitions + outcome
        members = partitions.get(partition)
        if members is None:
            members = partitions[partition] = []
        members.append(ts)
        members.append(member)
        # one int per (outcome, latency partition): the histogram bucket follows from it
        key = outcome * _TALLY_STRIDE + latency_partition
        tally[key] = tally.get(key, 0) + 1
        sums[0] += latency_s  # rounded to whole microseconds once per batch
        sums[3] = ts  # events are in arrival order: the registry keeps the largest (ZADD GT)
        if tokens:
            sums[1] += tokens
        if cost_nusd:
            sums[2] += cost_nusd
    providers: dict[str, _ProviderBatch] = {}
    for provider, (
        partitions,
        tally,
        (latency_us, tokens_sum, cost_sum, last_seen),
    ) in grouped.items():
        for flat in partitions.values():
            flat[0::2] = _scores(flat[0::2])
        totals: Counter[str] = Counter()
        for key, count in tally.items():
            outcome, latency_partition = divmod(key, _TALLY_STRIDE)
            totals[COUNT_FIELDS[outcome]] += count
            totals[HISTOGRAM_FIELDS[_BUCKET_OF_PARTITION[latency_partition]]] += count
        totals[LATENCY_SUM_FIELD] = round(latency_us * MICROS_PER_SECOND)
        if tokens_sum:
            totals[TOKENS_FIELD] = int(tokens_sum)
        if cost_sum:
            totals[COST_FIELD] = int(cost_sum)
        providers[provider] = _ProviderBatch(partitions, totals, last_seen)
    return Batch(providers, dict(rejected), dropped, len(events), dict(breaker_rejected or {}))


def _scores(times: list[float | str]) -> list[str]:
    """Event times as ZADD scores, to the millisecond: one C-level formatting of the whole list.
    A float argument costs redis-py its shortest repr, about twice as much per event."""
    return ("%.3f\n" * len(times) % tuple(times)).split("\n")[:-1]


class _OneBufferPipelines:
    """Packs a pipeline into one buffer, so it goes out in one ``sendall``. redis-py cuts it into
    ~6 KB pieces, and every socket call releases the GIL: a flusher taking it back from a
    thread that records flat out waits up to a switch interval (5 ms) per piece, which capped
    one process at about 100,000 events/s. Each command goes straight to hiredis's packer (a
    dependency via ``redis[hiredis]``): redis-py's per-argument checks cost more than the
    packing itself for a ZADD of thousands of members."""

    def pack_commands(self, commands: Any) -> list[bytes]:
        packed = []
        for args in commands:
            if isinstance(args[0], str) and " " in args[0]:  # "SCRIPT EXISTS": redis-py splits
                packed += self.pack_command(*args)  # type: ignore[attr-defined]
                continue
            try:
                packed.append(hiredis.pack_command(tuple(args)))
            except TypeError as exc:  # an argument Redis has no encoding for
                raise redis.DataError(str(exc)) from exc
        return [b"".join(packed)]


_ONE_BUFFER_CLASSES: dict[type, type] = {}


def connect(redis_url: str, socket_timeout: float) -> redis.Redis:
    """A Redis connection that never retries on its own (the flusher owns retries, so a
    command is never silently sent twice) and sends each pipeline in one piece."""
    pool = redis.ConnectionPool.from_url(
        redis_url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    base = pool.connection_class  # TCP, TLS or Unix socket, from the URL's scheme
    one_buffer = _ONE_BUFFER_CLASSES.get(base)
    if one_buffer is None:
        one_buffer = type(f"OneBuffer{base.__name__}", (_OneBufferPipelines, base), {})
        _ONE_BUFFER_CLASSES[base] = one_buffer
    pool.connection_class = one_buffer
    return redis.Redis.from_pool(pool)


class RedisWriter:
    """Writes batches for one namespace."""

    def __init__(
        self,
        connection: redis.Redis,
        keys: Keys,
        window_ttl: int,
        retention: int,
        writer_id: str = "",
        max_series: int = 1000,
        gauge_ttl: int = 30,
    ):
        self._redis = connection
        self._keys = keys
        self._window_ttl = window_ttl
        self._retention = retention
        self._writer_id = writer_id
        self._max_series = max_series
        self._gauge_ttl = gauge_ttl
        self._permit = connection.register_script(_PERMIT_SCRIPT)
        self._admit = connection.register_script(_ADMIT_SCRIPT)
        self._unreported_ops: Counter[str] = Counter()

    def reserve_event_ids(self, count: int) -> int:
        """The first of ``count`` event ids no other writer of the namespace gets (one round
        trip; raises redis.RedisError). A missing counter (new or emptied Redis) starts at a
        random id, so a batch reserved before Redis was emptied and written after it is
        unlikely to reuse ids written since."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.event_ids, secrets.randbelow(1 << EVENT_ID_BITS), nx=True)
        pipe.incrby(self._keys.event_ids, count)
        pipe.expire(self._keys.event_ids, self._retention)
        _, last, _ = pipe.execute()
        self._unreported_ops.update({"set": 1, "incrby": 1, "expire": 1})
        return int(last) - count

    def write(self, batch: Batch) -> list[str]:
        """Apply the batch atomically (MULTI/EXEC) in one round trip; raises redis.RedisError.
        Returns the names of metrics whose spec in Redis differs from this process's."""
        keys = self._keys
        ops: Counter[str] = Counter()
        pipe = self._redis.pipeline(transaction=True)
        last_seen: dict[str, float] = {}
        for provider, pbatch in batch.providers.items():
            window_keys = keys.window_keys(provider)
            for partition, members in pbatch.partitions.items():
                key = window_keys[partition]
                pipe.execute_command("ZADD", key, *members)  # type: ignore[no-untyped-call]
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
            # Providers here passed admission (the cap); re-adding them restores a registry
            # lost with an emptied Redis. GT only ever moves last-seen times forward.
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
        checks: list[tuple[int, str, str]] = []
        if batch.instruments is not None:
            checks = self._queue_instruments(pipe, batch.instruments, ops)
        ops.update(self._unreported_ops)
        for operation, count in ops.items():
            pipe.hincrby(keys.redis_ops, operation, count)
        replies = pipe.execute()
        self._unreported_ops.clear()
        return [name for index, name, spec in checks if _text(replies[index]) != spec]

    def _queue_instruments(
        self, pipe: Pipeline, drained: Drained, ops: Counter[str]
    ) -> list[tuple[int, str, str]]:
        """Queue the backend metrics' writes; returns (reply index, metric, spec JSON) of the
        HGETs that tell whether Redis holds the same spec."""
        keys = self._keys
        checks: list[tuple[int, str, str]] = []
        for spec in drained.specs:
            spec_json = spec.to_json()
            pipe.hsetnx(keys.metric_schema, spec.name, spec_json)
            checks.append((len(pipe), spec.name, spec_json))
            pipe.hget(keys.metric_schema, spec.name)
            ops["hsetnx"] += 1
            ops["hget"] += 1
        if drained.specs:
            pipe.expire(keys.metric_schema, self._retention)
            ops["expire"] += 1
        if drained.deltas:
            by_metric: dict[str, list[tuple[str, int, list[tuple[str, int]]]]] = {}
            for spec, sid, updates, fields in drained.deltas:
                by_metric.setdefault(spec.name, []).append((sid, updates, fields))
            script_keys: list[str] = []
            args: list[str | int] = [self._max_series, self._retention]
            for name, series in by_metric.items():
                script_keys += [keys.metric_series(name), keys.metric_data(name)]
                args.append(len(series))
                for sid, updates, fields in series:
                    args += [sid, updates, len(fields)]
                    for field_name, amount in fields:
                        args += [field_name, amount]
            pipe.eval(_INSTRUMENTS_SCRIPT, len(script_keys), *script_keys, *args)
            ops["eval"] += 1
        for counts, field_name in ((drained.dropped, "!dropped"), (drained.rejected, "!rejected")):
            for name, count in counts.items():
                pipe.hincrby(keys.metric_data(name), field_name, count)
                ops["hincrby"] += 1
        if drained.gauges:
            gauge_key = keys.gauge_values(self._writer_id)
            pipe.delete(gauge_key)
            pipe.hset(
                gauge_key,
                mapping={
                    f"{name}|{sid}": f"{value!r}|{updated_at!r}"
                    for name, sid, value, updated_at in drained.gauges
                },
            )
            pipe.expire(gauge_key, self._gauge_ttl)
            pipe.zadd(keys.gauge_writers, {self._writer_id: max(g[3] for g in drained.gauges)})
            pipe.expire(keys.gauge_writers, self._retention)
            ops.update({"del": 1, "hset": 1, "expire": 2, "zadd": 1})
        return checks

    def admit_providers(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        """Which providers the registry holds or takes in (while it has fewer than ``cap``)."""
        flags = self._admit(keys=[self._keys.providers], args=[cap, now, *providers])
        return {p: bool(f) for p, f in zip(providers, flags, strict=True)}

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


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)
