"""The aggregator's only Redis reader: window counts, cumulative totals, breaker states, the
provider registry, the workers' own metrics, the published snapshot and the dashboard's history.

Every read is a ``plan.Plan`` (the cycle's window read: ``window_read``), so what each read costs
Redis is counted from the commands sent. Never transfers window members.

The reader of the serving aggregator also maintains what it reads (``maintains``): once per
``TRIM_SHARE`` of the window it removes from each window key what left the window, it drops
names older than the retention from the registry, and dead processes from the gauge writers.
A reader built for a command (``maintains=False``: ``breaker``, ``inspect``) changes nothing:
its window, its clock and its settings may not be the aggregator's.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import redis
from redis.cluster import RedisCluster

from aggregator.core.history import HistoryPoint, read_points
from aggregator.core.readings import (
    BackendReading,
    ProviderInspection,
    Reading,
    RedisMemory,
    Skip,
    redis_memory,
    shard_counts,
)
from aggregator.core.reuse import Reuse
from aggregator.engine.backend_read import DEFAULT_MAX_FAMILIES, BackendRead
from aggregator.engine.inspect_read import InspectRead
from aggregator.engine.plan import Plan
from aggregator.engine.window_read import Place, WindowRead
from gatewayz_protocol.breaker_state import (
    CLOSED,
    FORCED_FIELD,
    STATE_FIELD,
    BreakerState,
    decode_state_name,
)
from gatewayz_protocol.keys import DEFAULT_MAX_PROVIDERS, Keys
from gatewayz_protocol.names import is_valid_provider
from gatewayz_transport.connection import Connection
from gatewayz_transport.raw import as_scored, as_text
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
        maintains: bool = True,
        max_providers: int = DEFAULT_MAX_PROVIDERS,
    ):
        self._redis = connection
        self._keys = keys
        self._window = window_seconds
        self._tolerance = future_tolerance_seconds
        self._maintains = maintains
        self._max_providers = max_providers
        self.ops: Counter[str] = Counter()
        """Commands issued so far; the cycle moves them into Redis's shared op counter."""
        self.skipped: list[Skip] = []
        """What the reads met that no writer of this project could have written, skipped (the
        cycle reports them)."""
        self.over_cap = 0
        """Providers active in the registry beyond ``max_providers`` at the last read: not read
        (only the most recently seen ones are)."""
        self.backend_over_cap = (0, 0)
        """Backend metrics, and processes with gauges, left out of the last backend read
        (beyond its caps: ``BackendRead``)."""
        self._shards: dict[str, int] = {}
        """Providers split over several shards (``Keys.shards``), as last read."""
        self._trim_slots: dict[str, int] = {}
        """Provider -> the trim slot in which its window keys were last trimmed."""
        self._empty: dict[Place, tuple[int, ...]] = {}
        """(provider, shard) -> its partitions without calls in the window at the last read."""
        self.decoded = {True: Reuse(), False: Reuse()}
        """What the last read with counters (a metrics cycle's), and the last without (a breaker
        cycle's), decoded: reused for the replies that come back unchanged."""
        self._backend_decoded = Reuse()

    def take_ops(self) -> Counter[str]:
        """The commands issued since the last call (for the shared op counter)."""
        ops, self.ops = self.ops, Counter()
        return ops

    def take_skipped(self) -> list[Skip]:
        """What the reads skipped since the last call."""
        skipped, self.skipped = self.skipped, []
        return skipped

    def _run(self, plan: Plan) -> None:
        try:
            self.ops.update(plan.run(self._redis))
        finally:
            for key in plan.wrong_type:
                self.skipped.append(Skip(self._keys.kind(key), key, ()))

    def redis_time(self) -> tuple[int, int]:
        """Redis's clock: (seconds, microseconds). (Not a plan: TIME has no key to route by on
        a Cluster; redis-py sends it to a node of its choice.)"""
        seconds, micros = self._redis.time()
        self.ops["time"] += 1
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
        Names older than the retention leave the registry unless their breaker acts (when
        this reader maintains the keys)."""
        keys = self._keys
        horizon = retention_seconds if horizon_seconds is None else horizon_seconds
        found: list[Any] = []
        active, retained = f"({now - horizon!r}", f"({now - retention_seconds!r}"
        registry, cap = keys.providers, self._max_providers
        commands: list[tuple[Any, ...]] = [
            # at most a cap of stale names a read: the rest leave at the next ones
            ("ZRANGEBYSCORE", registry, "-inf", retained.lstrip("("), "LIMIT", 0, cap),
            ("ZREVRANGEBYSCORE", registry, "+inf", active, "LIMIT", 0, cap),  # the newest
            ("ZCOUNT", registry, active, "+inf"),
        ]
        if check_idle:
            commands.append(("ZRANGEBYSCORE", registry, retained, repr(now - horizon)))
        plan = Plan()
        plan.add([*commands, ("ZRANGE", keys.shards, 0, -1, "WITHSCORES")], found.extend)
        self._run(plan)
        raw_stale, raw_active, active_count, *raw_idle, raw_shards = found
        self.over_cap = max(0, int(active_count) - cap)
        self._shards = shard_counts(as_scored(raw_shards))
        stale = self._valid(raw_stale)
        acting = self._acting([*stale, *self._valid(raw_idle[0] if raw_idle else [])])
        gone = [n for n in stale if n not in acting]
        if gone and self._maintains:
            plan = Plan()
            plan.add([("ZREM", keys.providers, *gone)], lambda replies: None)
            self._run(plan)
        return list(dict.fromkeys((*self._valid(raw_active), *acting)))

    def _valid(self, raw_names: Sequence[Any]) -> list[str]:
        """The registry's names that a client could have written; the others noted, skipped."""
        names = [as_text(raw) for raw in raw_names]
        valid = [name for name in names if is_valid_provider(name)]
        if len(valid) < len(names):
            strangers = [repr(name[:64]) for name in names if not is_valid_provider(name)]
            self.skipped.append(Skip("registry", self._keys.providers, tuple(strangers)))
        return valid

    def _acting(self, candidates: Sequence[str]) -> list[str]:
        """Those of ``candidates`` whose breaker acts (forced, or not closed)."""
        if not candidates:
            return []
        states: list[Any] = []
        plan = Plan()
        fields = (STATE_FIELD, FORCED_FIELD)
        plan.add(
            [("HMGET", self._keys.breaker(name), *fields) for name in candidates], states.extend
        )
        self._run(plan)
        return [
            name
            for name, (state, forced) in zip(candidates, states, strict=True)
            if decode_state_name(state) != CLOSED or forced == b"1"
        ]

    def read(
        self,
        now: float,
        providers: Iterable[str],
        counting_start: Callable[[str, BreakerState], float] = lambda name, state: state.since,
        counters: bool = True,
    ) -> Reading:
        """Window counts, totals, breaker states and transitions of ``providers``, and per
        provider the calls made after ``counting_start(provider, its breaker state)``
        (``WindowRead``: one round trip, two when a breaker's counting starts inside the window
        or a partition empty last time has calls now). ``counters=False`` (what a breaker
        evaluation needs) leaves out each provider's totals, exemplars and transitions."""
        names = list(dict.fromkeys(providers))
        trimming = self._trim_schedule(now, names) if self._maintains else frozenset()
        window_read = WindowRead(
            self._keys,
            names,
            now,
            self._window,
            self._tolerance,
            self._shards,
            self._empty,
            trimming,
            counters,
            self.decoded[counters],
        )
        self._run(window_read.first_round())
        second = window_read.second_round(counting_start)
        if second is not None:
            self._run(second)
        self._empty = window_read.empty_partitions()
        reading = window_read.reading()
        self.decoded[counters].finish()
        self.skipped += window_read.skips.found
        return reading

    def _trim_schedule(self, now: float, names: list[str]) -> frozenset[str]:
        """The providers whose window keys this read trims: each one once per ``TRIM_SHARE``
        of the window, spread over the reads by a phase taken from its name (a read never
        trims every provider at once, except the first)."""
        interval = self._window * TRIM_SHARE
        slots = {name: int(now / interval + zlib.crc32(name.encode()) / 2**32) for name in names}
        due = frozenset(name for name, slot in slots.items() if self._trim_slots.get(name) != slot)
        self._trim_slots = slots  # names no longer read are forgotten
        return due

    def memory(self) -> RedisMemory | None:
        """Redis's memory (``read_memory``); None from a server without INFO (fakeredis).
        Raises when Redis is unreachable."""
        return read_memory(self._redis, self.ops)

    def backend(
        self, now: float, retention_seconds: float, max_families: int = DEFAULT_MAX_FAMILIES
    ) -> BackendReading:
        """The workers' declared metrics (``BackendRead``; at most ``max_families``): specs,
        admitted series, values, and the gauge values of processes whose gauge hash has not
        expired. Two round trips. What was left out: ``backend_over_cap``."""
        backend_read = BackendRead(self._keys, self._backend_decoded, max_families)
        prune_below = now - retention_seconds if self._maintains else None
        self._run(backend_read.first_round(prune_below))
        self._run(backend_read.second_round())
        self.skipped += backend_read.skips.found
        self.backend_over_cap = (backend_read.families_over_cap, backend_read.writers_over_cap)
        reading = backend_read.reading()
        self._backend_decoded.finish()
        return reading

    def published_snapshot(self) -> bytes | None:
        """The leader's last published snapshot as stored (``snapshot.decode_published``), if
        any."""
        found: list[Any] = []
        plan = Plan()
        plan.add([("GET", self._keys.snapshot)], found.extend)
        self._run(plan)
        raw = found[0]
        return raw if raw is None or isinstance(raw, bytes) else str(raw).encode()

    def history(self, providers: Sequence[str]) -> tuple[str | None, dict[str, list[HistoryPoint]]]:
        """The dashboard's view, read only, in one round trip: the leader lease's holder (None:
        no lease) and each provider's history points, oldest first."""
        found: list[Any] = []
        plan = Plan()
        plan.add([("GET", self._keys.leader_lease)], found.extend)
        plan.add([("ZRANGE", self._keys.history(p), 0, -1) for p in providers], found.extend)
        self._run(plan)
        lease, *members = found
        holder = None if lease is None else (as_text(lease).rpartition("|")[0] or None)
        return holder, _points(self._keys, providers, members, self.skipped)

    # -- read-only views (``python -m aggregator inspect``): no trim, no registry change --------

    def registered(self, newest: int, names: Sequence[str] = ()) -> tuple[dict[str, float], int]:
        """``read_registry``'s part of the registry (the ``newest`` most recently seen and those
        of ``names`` it holds: name -> last seen) and how many names it holds, then the shard
        counts of those by name (``ZSCORE``): bounded work whatever the registries hold. Unlike
        ``known_providers`` it removes nothing."""
        found, count = read_registry(self._redis, self._keys, newest, names)
        scores: list[Any] = []
        plan = Plan()
        plan.add([("ZSCORE", self._keys.shards, name) for name in found], scores.extend)
        self._run(plan)
        pairs = zip(found, scores, strict=True)
        self._shards = shard_counts([(n.encode(), float(s)) for n, s in pairs if s is not None])
        return found, count

    def inspect(
        self, now: float, providers: Sequence[str], edges: Sequence[float]
    ) -> list[ProviderInspection]:
        """Per provider: its window counts in each interval between consecutive ``edges`` (the
        first excludes its start, the last includes its end, the others are ``[a, b)``), its
        totals, breaker and transitions hashes, the half-open permits live at ``now`` and the
        TTL of each key (``InspectRead``). One round trip of reads only: nothing is trimmed or
        registered."""
        inspect_read = InspectRead(self._keys, now, edges, self._shards)
        self._run(inspect_read.plan(providers))
        return inspect_read.found


def _points(
    keys: Keys, providers: Sequence[str], members: Sequence[Any], skipped: list[Skip]
) -> dict[str, list[HistoryPoint]]:
    """Each provider's history points from its ZRANGE reply; members that are not points noted
    in ``skipped`` (appended, the list never rebound: this runs on a serving thread, beside the
    cycles that take it)."""
    points = {}
    for provider, raw in zip(providers, members, strict=True):
        points[provider], bad = read_points(raw)
        if bad:
            key = keys.history(provider)
            skipped.append(Skip(keys.kind(key), key, tuple(bad)))
    return points


def read_memory(connection: Connection, ops: Counter[str]) -> RedisMemory | None:
    """INFO memory, stats and errorstats in one round trip (on a cluster: of every master, and
    the one nearest its limit is reported, with every master's evictions and refusals);
    None from a server without INFO (fakeredis). Counts its commands in ``ops`` (INFO's reply
    is parsed by redis-py: not a raw plan)."""
    if isinstance(connection, RedisCluster):
        masters = RedisCluster.PRIMARIES
        memory = connection.info("memory", target_nodes=masters)
        stats = connection.info("stats", target_nodes=masters)
        errors = connection.info("errorstats", target_nodes=masters)
        ops["info"] += len(memory) + len(stats) + len(errors)
        # the masters that answered both reads: a failover between them changes the set, and a
        # master read once is read in full by the next cycle
        readings = [
            redis_memory(memory[node], stats[node], errors.get(node))
            for node in memory
            if node in stats
        ]
        if not readings:
            raise redis.ConnectionError("no cluster master answered both INFO memory and stats")
        worst = max(readings, key=lambda m: m.used_bytes / m.max_bytes if m.max_bytes else 0)
        return replace(
            worst,
            policy=next((m.policy for m in readings if m.can_evict), worst.policy),
            evicted_keys=sum(m.evicted_keys for m in readings),
            oom_refusals=sum(m.oom_refusals for m in readings),
            permission_refusals=sum(m.permission_refusals for m in readings),
        )
    pipe = pipeline(connection)
    for section in ("memory", "stats", "errorstats"):
        pipe.info(section)
    try:
        found, stats, errors = pipe.execute()
    except redis.ResponseError:
        return None
    ops["info"] += 3
    return redis_memory(found, stats, errors)


def read_registry(
    connection: Connection, keys: Keys, newest: int, names: Sequence[str] = ()
) -> tuple[dict[str, float], int]:
    """Part of the provider registry, read only, in one round trip whatever its size (for the
    operators' commands, through ``WindowReader.registered``: 100,000 names read in full took
    seconds): the ``newest`` most recently seen names and those of ``names`` it holds (name ->
    last seen; names no client could have written left out), and how many names it holds."""
    found: list[Any] = []
    registry = keys.providers
    commands: list[tuple[Any, ...]] = [("ZCOUNT", registry, "-inf", "+inf")]
    if newest > 0:
        commands.append(("ZRANGE", registry, -newest, -1, "WITHSCORES"))
    commands += [("ZSCORE", registry, name) for name in names]
    plan = Plan()
    plan.add(commands, found.extend)
    plan.run(connection)
    count, *rest = found
    known = {as_text(name): seen for name, seen in (as_scored(rest.pop(0)) if newest > 0 else [])}
    known |= {name: float(seen) for name, seen in zip(names, rest, strict=True) if seen is not None}
    return {name: seen for name, seen in known.items() if is_valid_provider(name)}, int(count)
