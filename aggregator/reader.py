"""The aggregator's only Redis reader: window counts, cumulative totals and breaker states.

Never transfers window members: per partition it counts the window (ZCOUNT) and, once per
``TRIM_SHARE`` of the window, removes what left it (ZREMRANGEBYSCORE). At most four pipelined round
trips per cycle.
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import cast

import redis
from redis.cluster import RedisCluster

from aggregator.health import WindowCounts
from aggregator.history import HistoryPoint, decode_points
from aggregator.readings import (
    BackendReading,
    ProviderInspection,
    ProviderReading,
    Reading,
    RedisMemory,
    decode_exemplars,
    int_hash,
    newest_exemplars,
    redis_memory,
    shard_counts,
    text_hash,
    window_counts,
)
from aggregator.snapshot import decode_published
from gatewayz_protocol.breaker_state import (
    CLOSED,
    FORCED_FIELD,
    STATE_FIELD,
    BreakerState,
    decode_breaker,
    decode_state_name,
)
from gatewayz_protocol.fields import Exemplar, decode_clock_offsets
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.names import is_valid_provider
from gatewayz_protocol.partitions import WINDOW_PARTITIONS
from gatewayz_transport.connection import Connection
from gatewayz_transport.errors import raise_first_error
from gatewayz_transport.raw import RawCommands, as_dict
from gatewayz_transport.routing import pipeline

TRIM_SHARE = 0.1
"""Each window key loses what left the window (ZREMRANGEBYSCORE) once per this share of the
window (30 s of the default 5 minutes). Counting never needs it (ZCOUNT takes the window's
bounds); memory does: a key holds at most this share of a window past the window. Trimming
every key on every read was half of a read's commands (24 of 52 per provider)."""

FUTURE_TOLERANCE_SECONDS = 10.0
"""Events stamped up to this far past "now" still count (clocks agree to the ms through the
shared clock; this is slack, not a way for a skewed writer to stay in the window)."""


class WindowReader:
    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        window_seconds: float,
        future_tolerance_seconds: float = FUTURE_TOLERANCE_SECONDS,
    ):
        self._redis = connection
        self._keys = keys
        self._window = window_seconds
        self._tolerance = future_tolerance_seconds
        self.ops: Counter[str] = Counter()
        """Commands issued so far; the cycle moves them into Redis's shared op counter."""
        self._shards: dict[str, int] = {}
        """Providers split over several shards (``Keys.shards``), as last read."""
        self._trim_slots: dict[str, int] = {}
        """Provider -> the trim slot in which its window keys were last trimmed."""
        self._empty: dict[tuple[str, int], tuple[int, ...]] = {}
        """(provider, shard) -> its partitions without calls in the window at the last read."""

    def _count_op(self, name: str, count: int = 1) -> None:
        self.ops[name] += count

    def redis_time(self) -> tuple[int, int]:
        """Redis's clock: (seconds, microseconds)."""
        seconds, micros = self._redis.time()
        self._count_op("time")
        return int(seconds), int(micros)

    def known_providers(
        self,
        now: float,
        retention_seconds: float,
        horizon_seconds: float | None = None,
        check_idle: bool = False,
    ) -> list[str]:
        """Providers seen within ``horizon_seconds`` (default: the retention period), so a
        cycle costs what the active providers cost, not every name seen in the retention
        period; and those whose breaker still acts (forced, or not closed): the leader keeps
        them registered as seen now, and ``check_idle`` (a process's first read: it may have
        been down for longer than the horizon) looks at every idle name's breaker once.
        Names older than the retention leave the registry unless their breaker acts."""
        keys = self._keys
        horizon = retention_seconds if horizon_seconds is None else horizon_seconds
        pipe = pipeline(self._redis)
        pipe.zrangebyscore(keys.providers, "-inf", now - retention_seconds)
        pipe.zrangebyscore(keys.providers, f"({now - horizon!r}", "+inf")
        if check_idle:
            pipe.zrangebyscore(keys.providers, f"({now - retention_seconds!r}", now - horizon)
        pipe.zrange(keys.shards, 0, -1, withscores=True)
        raw_stale, raw_active, *raw_idle, raw_shards = pipe.execute()
        self._count_op("zrangebyscore", 2 + len(raw_idle))
        self._count_op("zrange")
        self._shards = shard_counts(raw_shards)
        # A name no client could have written (the registry is shared) is ignored, not fatal.
        stale = [raw.decode("utf-8", "replace") for raw in raw_stale]
        active = [raw.decode("utf-8", "replace") for raw in raw_active]
        idle = [raw.decode("utf-8", "replace") for raw in (raw_idle[0] if raw_idle else [])]
        candidates = [n for n in (*stale, *idle) if is_valid_provider(n)]
        acting = []
        if candidates:
            pipe = pipeline(self._redis)
            for name in candidates:
                pipe.hmget(keys.breaker(name), [STATE_FIELD, FORCED_FIELD])
            for name, (state, forced) in zip(candidates, pipe.execute(), strict=True):
                if decode_state_name(state) != CLOSED or forced == b"1":
                    acting.append(name)
            self._count_op("hmget", len(candidates))
        gone = [n for n in stale if n not in acting]
        if gone:
            self._redis.zrem(keys.providers, *gone)
            self._count_op("zrem")
        return list(dict.fromkeys(n for n in (*active, *acting) if is_valid_provider(n)))

    def read(
        self,
        now: float,
        providers: Iterable[str],
        counting_start: Callable[[BreakerState], float] = lambda state: state.since,
        counters: bool = True,
    ) -> Reading:
        """Window counts, totals, breaker states and transitions of ``providers``, and per
        provider the calls made after ``counting_start(its breaker state)``. An event counts
        while ``now - window < its time <= now + tolerance``. Two pipelined round trips.
        ``counters=False`` (what a breaker evaluation needs) leaves out each provider's
        totals, exemplars and transitions: three of its four hashes.

        A partition that was empty at the last read is not counted again while it does not
        exist (one EXISTS for all of them): a provider's calls fill a few of its 24
        partitions, and at 1,000 providers a count of every partition was most of a read."""
        keys = self._keys
        names = list(dict.fromkeys(providers))
        start, end = now - self._window, now + self._tolerance
        low, high, trim_below = f"({start!r}", repr(end), repr(start)
        trimming = self._trim_schedule(now, names)
        every = range(WINDOW_PARTITIONS)
        # Tens of thousands of commands at 1,000 providers: sent raw (``RawCommands``).
        raw = RawCommands(self._redis)
        add = raw.add
        add("HGETALL", keys.client_stats)
        add("HGETALL", keys.redis_ops)
        add("HGETALL", keys.clock_offsets)
        counted: dict[tuple[str, int], list[int]] = {}
        for name in names:
            add("HGETALL", keys.breaker(name))
            if counters:
                add("HGETALL", keys.transitions(name))
            for shard in range(self._shards.get(name, 1)):
                if counters:
                    add("HGETALL", keys.totals(name, shard))
                    add("HGETALL", keys.exemplars(name, shard))
                window_keys = keys.window_keys(name, shard)
                if name in trimming:
                    for key in window_keys:
                        add("ZREMRANGEBYSCORE", key, "-inf", trim_below)
                empty = self._empty.get((name, shard), ())
                counted[(name, shard)] = [i for i in every if i not in empty]
                for index in counted[(name, shard)]:
                    add("ZCOUNT", window_keys[index], low, high)
                if empty:
                    add("EXISTS", *(window_keys[index] for index in empty))
        replies = raw.execute()
        raise_first_error(replies)  # a cycle must not half-read
        provider_hashes = len(names) + (len(names) + 2 * len(counted) if counters else 0)
        self._count_op("hgetall", 3 + provider_hashes)
        self._count_op("zremrangebyscore", WINDOW_PARTITIONS * len(trimming))
        self._count_op("zcount", sum(len(c) for c in counted.values()))
        self._count_op("exists", sum(1 for place in counted if self._empty.get(place)))

        client_stats = int_hash(as_dict(replies[0]))
        redis_ops = int_hash(as_dict(replies[1]))
        clock_offsets = decode_clock_offsets(text_hash(as_dict(replies[2])))
        found: dict[str, tuple[BreakerState, dict[str, int], Counter[str], dict[int, Exemplar]]]
        found = {}
        windows: dict[tuple[str, int], list[int]] = {}
        recount: dict[tuple[str, int], tuple[int, ...]] = {}  # empty before, maybe not now
        at = 3
        for name in names:
            breaker, transitions = replies[at], (replies[at + 1] if counters else {})
            at += 2 if counters else 1
            totals: Counter[str] = Counter()
            exemplars: dict[int, Exemplar] = {}
            for shard in range(self._shards.get(name, 1)):
                if counters:
                    totals.update(int_hash(as_dict(replies[at])))
                    exemplars = newest_exemplars(
                        exemplars, decode_exemplars(as_dict(replies[at + 1]))
                    )
                    at += 2
                at += WINDOW_PARTITIONS if name in trimming else 0
                window = [0] * WINDOW_PARTITIONS
                for index in counted[(name, shard)]:
                    window[index] = int(replies[at])
                    at += 1
                windows[(name, shard)] = window
                empty = self._empty.get((name, shard), ())
                if empty:
                    if int(replies[at]):
                        recount[(name, shard)] = empty
                    at += 1
            found[name] = (decode_breaker(as_dict(breaker)), int_hash(as_dict(transitions)),
                           totals, exemplars)  # fmt: skip
        starts = {name: counting_start(state) for name, (state, *_) in found.items()}
        since = self._second_pass(
            {
                name: counting_from
                for name, counting_from in starts.items()
                if counting_from > start
            },
            windows,
            recount,
            low,
            high,
        )
        self._empty = {
            place: tuple(i for i, count in enumerate(window) if not count)
            for place, window in windows.items()
        }
        readings = []
        for name, (breaker_state, transitions_hash, totals, exemplars) in found.items():
            shards = self._shards.get(name, 1)
            per_shard = [windows[(name, shard)] for shard in range(shards)]
            summed = per_shard[0] if shards == 1 else [sum(c) for c in zip(*per_shard, strict=True)]
            window_total = window_counts(summed)
            readings.append(
                ProviderReading(
                    name,
                    window_total,
                    since.get(name, window_total),
                    dict(totals),
                    breaker_state,
                    transitions_hash,
                    exemplars,
                )
            )
        return Reading(tuple(readings), client_stats, redis_ops, clock_offsets)

    def _trim_schedule(self, now: float, names: list[str]) -> frozenset[str]:
        """The providers whose window keys this read trims: each one once per ``TRIM_SHARE``
        of the window, spread over the reads by a phase taken from its name (a read never
        trims every provider at once, except the first)."""
        interval = self._window * TRIM_SHARE
        slots = {name: int(now / interval + zlib.crc32(name.encode()) / 2**32) for name in names}
        due = frozenset(name for name, slot in slots.items() if self._trim_slots.get(name) != slot)
        self._trim_slots = slots  # names no longer read are forgotten
        return due

    def _second_pass(
        self,
        counting_from: dict[str, float],
        windows: dict[tuple[str, int], list[int]],
        recount: dict[tuple[str, int], tuple[int, ...]],
        low: str,
        high: str,
    ) -> dict[str, WindowCounts]:
        """Counts the partitions that were empty but exist now (filling ``windows``), and the
        calls the breaker judges where its counting starts inside the window: only in the
        partitions with calls in the window (a partition empty there has none since a later
        time, but for calls written between the two reads, which the next read counts)."""
        if not counting_from and not recount:
            return {}
        keys = self._keys
        raw = RawCommands(self._redis)
        for (name, shard), indexes in recount.items():
            window_keys = keys.window_keys(name, shard)
            for index in indexes:
                raw.add("ZCOUNT", window_keys[index], low, high)
        judged: list[tuple[str, int]] = []  # (provider, partition) of each breaker count
        for name, since in counting_from.items():
            for shard in range(self._shards.get(name, 1)):
                window_keys = keys.window_keys(name, shard)
                again = recount.get((name, shard), ())
                for index, count in enumerate(windows[(name, shard)]):
                    if count or index in again:
                        raw.add("ZCOUNT", window_keys[index], f"({since!r}", high)
                        judged.append((name, index))
        replies = raw.execute()
        raise_first_error(replies)
        self._count_op("zcount", len(replies))
        counts = iter(replies)
        for (name, shard), indexes in recount.items():
            for index in indexes:
                windows[(name, shard)][index] = int(next(counts))
        found = {name: [0] * WINDOW_PARTITIONS for name in counting_from}
        for name, index in judged:
            found[name][index] += int(next(counts))
        return {name: window_counts(totals) for name, totals in found.items()}

    def memory(self) -> RedisMemory | None:
        """INFO memory and stats in one round trip (on a cluster: of every master, and the
        one nearest its limit is reported, with every master's evictions); None from a server
        without INFO (fakeredis). Raises when Redis is unreachable."""
        if isinstance(self._redis, RedisCluster):
            masters = RedisCluster.PRIMARIES
            memory = self._redis.info("memory", target_nodes=masters)
            stats = self._redis.info("stats", target_nodes=masters)
            self._count_op("info", 2 * len(memory))
            readings = [redis_memory(memory[node], stats[node]) for node in memory]
            worst = max(readings, key=lambda m: m.used_bytes / m.max_bytes if m.max_bytes else 0)
            return replace(
                worst,
                policy=next((m.policy for m in readings if m.can_evict), worst.policy),
                evicted_keys=sum(m.evicted_keys for m in readings),
            )
        pipe = pipeline(self._redis)
        pipe.info("memory")
        pipe.info("stats")
        try:
            memory, stats = pipe.execute()
        except redis.ResponseError:
            return None
        self._count_op("info", 2)
        return redis_memory(memory, stats)

    def backend(self, now: float, retention_seconds: float) -> BackendReading:
        return read_backend(self._redis, self._keys, now, retention_seconds, self.ops)

    def published_snapshot(self) -> str | None:
        """The leader's last published snapshot (JSON), if any."""
        raw = self._redis.get(self._keys.snapshot)
        self._count_op("get")
        if raw is None:
            return None
        return decode_published(raw if isinstance(raw, bytes) else str(raw).encode())

    def history(self, providers: Sequence[str]) -> tuple[str | None, dict[str, list[HistoryPoint]]]:
        """The dashboard's view, read only, in one round trip: the leader lease's holder (None:
        no lease) and each provider's history points, oldest first."""
        pipe = pipeline(self._redis)
        pipe.get(self._keys.leader_lease)
        for provider in providers:
            pipe.zrange(self._keys.history(provider), 0, -1)
        lease, *members = pipe.execute()
        self._count_op("get")
        self._count_op("zrange", len(providers))
        holder = None
        if lease is not None:
            text = lease.decode("utf-8", "replace") if isinstance(lease, bytes) else str(lease)
            holder = text.rpartition("|")[0] or None
        return holder, {
            provider: decode_points(raw) for provider, raw in zip(providers, members, strict=True)
        }

    # -- read-only views (``python -m aggregator inspect``): no trim, no registry change --------

    def registered(self) -> dict[str, float]:
        """The provider registry as it is: name -> last seen. Unlike ``known_providers`` it
        removes nothing."""
        pipe = pipeline(self._redis)
        pipe.zrange(self._keys.providers, 0, -1, withscores=True)
        pipe.zrange(self._keys.shards, 0, -1, withscores=True)
        pairs, raw_shards = pipe.execute()
        self._shards = shard_counts(raw_shards)
        raw = cast("list[tuple[bytes, float]]", pairs)
        self._count_op("zrange", 2)
        return {name.decode("utf-8", "replace"): float(score) for name, score in raw}

    def inspect(
        self, now: float, providers: Sequence[str], edges: Sequence[float]
    ) -> list[ProviderInspection]:
        """Per provider: its window counts in each interval between consecutive ``edges`` (the
        first excludes its start, the last includes its end, the others are ``[a, b)``), its
        totals, breaker and transitions hashes, the half-open permits live at ``now`` and the
        TTL of each key. One pipelined round trip of reads only (ZCOUNT, HGETALL, ZRANGEBYSCORE,
        PTTL): nothing is trimmed or registered."""
        keys = self._keys
        spans = len(edges) - 1
        bounds = [
            (f"({a!r}" if i == 0 else repr(a), repr(b) if i == spans - 1 else f"({b!r}")
            for i, (a, b) in enumerate(itertools.pairwise(edges))
        ]
        pipe = pipeline(self._redis)
        for name in providers:
            for shard in range(self._shards.get(name, 1)):
                for key in keys.window_keys(name, shard):
                    for low, high in bounds:
                        pipe.zcount(key, low, high)
                pipe.hgetall(keys.totals(name, shard))
            pipe.hgetall(keys.breaker(name))
            pipe.hgetall(keys.transitions(name))
            pipe.zrangebyscore(keys.permits(name), f"({now * 1000!r}", "+inf", withscores=True)
            for key in _provider_keys(keys, name, self._shards.get(name, 1)):
                pipe.pttl(key)
        replies = pipe.execute()
        shards = sum(self._shards.get(name, 1) for name in providers)
        self._count_op("zcount", WINDOW_PARTITIONS * spans * shards)
        self._count_op("hgetall", 2 * len(providers) + shards)
        self._count_op("zrangebyscore", len(providers))
        found, at = [], 0
        per_shard = WINDOW_PARTITIONS * spans + 1
        for name in providers:
            zcounts = [0] * (WINDOW_PARTITIONS * spans)
            totals: Counter[str] = Counter()
            for _ in range(self._shards.get(name, 1)):
                chunk = replies[at : at + per_shard]
                at += per_shard
                zcounts = [a + int(b) for a, b in zip(zcounts, chunk[:-1], strict=True)]
                totals.update(int_hash(chunk[-1]))
            breaker, transitions, permits = replies[at : at + 3]
            at += 3
            names = _provider_keys(keys, name, self._shards.get(name, 1))
            ttls = dict(zip(names, (int(t) for t in replies[at : at + len(names)]), strict=True))
            at += len(names)
            self._count_op("pttl", len(names))
            found.append(
                ProviderInspection(
                    provider=name,
                    spans=[window_counts(zcounts[i::spans]) for i in range(spans)],
                    totals=dict(totals),
                    breaker=text_hash(breaker),
                    transitions=int_hash(transitions),
                    permits=[(m.decode("utf-8", "replace"), s / 1000) for m, s in permits],
                    ttl_ms=ttls,
                )
            )
        return found


def read_backend(
    connection: Connection,
    keys: Keys,
    now: float,
    retention_seconds: float,
    ops: Counter[str],
) -> BackendReading:
    """The workers' declared metrics: specs, admitted series, values, and the gauge values of
    processes whose gauge hash has not expired. Two pipelined round trips."""
    pipe = pipeline(connection)
    pipe.hgetall(keys.metric_schema)
    pipe.zremrangebyscore(keys.gauge_writers, "-inf", now - retention_seconds)
    pipe.zrange(keys.gauge_writers, 0, -1)
    raw_schema, _, raw_writers = pipe.execute()
    schema = text_hash(raw_schema)
    writers = [w.decode() for w in raw_writers]
    names = sorted(schema)
    pipe = pipeline(connection)
    for name in names:
        pipe.smembers(keys.metric_series(name))
        pipe.hgetall(keys.metric_data(name))
        pipe.hgetall(keys.metric_exemplars(name))
    for writer in writers:
        pipe.hgetall(keys.gauge_values(writer))
    replies = pipe.execute()
    ops.update({"hgetall": 1 + 2 * len(names) + len(writers), "zremrangebyscore": 1, "zrange": 1})
    ops["smembers"] += len(names)
    series = {n: sorted(m.decode() for m in replies[3 * i]) for i, n in enumerate(names)}
    data = {n: int_hash(replies[3 * i + 1]) for i, n in enumerate(names)}
    exemplars = {n: text_hash(replies[3 * i + 2]) for i, n in enumerate(names)}
    values = replies[3 * len(names) :]
    gauge_values = [text_hash(r) for r in values if r]
    expired = [writer for writer, raw in zip(writers, values, strict=True) if not raw]
    return BackendReading(schema, series, data, gauge_values, expired, exemplars)


def _provider_keys(keys: Keys, provider: str, shards: int = 1) -> tuple[str, ...]:
    """Every key of one provider (``protocol/keys.py``), of each of its ``shards``."""
    return (
        *(
            key
            for shard in range(shards)
            for key in (
                *keys.window_keys(provider, shard),
                keys.totals(provider, shard),
                keys.exemplars(provider, shard),
            )
        ),
        keys.breaker(provider),
        keys.permits(provider),
        keys.transitions(provider),
    )
