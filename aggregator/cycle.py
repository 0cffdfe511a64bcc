"""Aggregation and breaker cycles.

The leader (one replica, chosen by the lease) evaluates breakers, computes each snapshot and
publishes it to Redis; a follower serves the published snapshot, so every replica exports
identical provider series from the same cycle. Snapshots are numbered by a counter in Redis that
only the lease holder advances, so replicas agree on which one is newest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import redis
from opentelemetry import trace

from aggregator.backend import build_families
from aggregator.breaker import (
    BreakerCalls,
    BreakerConfig,
    Transition,
    counting_start,
    evaluate,
    limit_open_share,
)
from aggregator.health import WindowCounts
from aggregator.history import HistoryPoint, snapshot_points
from aggregator.lease import LeaderLease
from aggregator.reader import WindowReader
from aggregator.readings import Reading, RedisMemory
from aggregator.served import CycleStatus, ServedState
from aggregator.settings import AggregatorSettings, describe_error
from aggregator.snapshot import Snapshot, provider_health
from aggregator.writer import FENCED, PlannedWrite, StateWriter
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState
from gatewayz_protocol.clock import SharedClock
from gatewayz_protocol.fields import LOG_RECORDS_DROPPED_FIELD, decode_client_stats
from gatewayz_protocol.hooks import NewLogDrops
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection

log = logging.getLogger("gatewayz.aggregator")

CLOCK_OFFSET_HORIZON_SECONDS = 600.0
"""A writer's clock offset is exported for this long after its last measurement (a process that
stopped writing for 10 minutes is gone or idle), then forgotten."""
tracer = trace.get_tracer("gatewayz.aggregator")


def breaker_calls(counts: WindowCounts, config: BreakerConfig) -> BreakerCalls:
    failures = counts.failures + (counts.rate_limited if config.rate_limited_is_failure else 0)
    return BreakerCalls(counts.successes, failures)


class Aggregator:
    """Owns the served state. The scheduler (or a test) drives ``run_cycle()``,
    ``run_breaker_cycle()`` and ``tick_lease()``; never two of them at once."""

    def __init__(
        self,
        settings: AggregatorSettings,
        connection: Connection,
        clock: Callable[[], float] | None = None,
    ):
        """``clock``: by default the system clock corrected to Redis's (measured each cycle),
        the clock the clients' events are on; an injected clock is taken as it is (tests)."""
        self.settings = settings
        self.instance = settings.instance
        self._clock = clock or time.time
        self._shared_clock = SharedClock() if clock is None else None
        keys = Keys(settings.namespace)
        self._redis = connection
        self._reader = WindowReader(connection, keys, settings.window_seconds)
        self._writer = StateWriter(
            connection,
            keys,
            settings.retention_seconds,
            settings.breaker.half_open_calls,
            settings.permit_seconds,
        )
        self._lease = LeaderLease(
            self._writer.hold_lease,
            self._writer.release_lease,
            settings.instance,
            settings.lease_seconds,
        )
        self._lock = threading.RLock()
        self._suppressed: frozenset[str] = frozenset()
        self._idle_checked = False
        """Whether this process looked at every idle provider's breaker (its first read)."""
        self._served = ServedState(
            settings.instance,
            interval_seconds=settings.interval_seconds,
            breaker_interval_seconds=settings.breaker_interval_seconds,
        )
        self._out_of_memory = False  # this cycle: Redis refused a plain write for lack of memory
        self._policy_reported: str | None = None
        self._log_drops = NewLogDrops()
        self._history_minutes: dict[str, int] = {}  # provider -> last minute this leader wrote

    # -- what is served ------------------------------------------------------------------------

    def served(self) -> ServedState:
        """The snapshot, cycle status and leadership to serve, read as one (immutable)."""
        return self._served

    @property
    def snapshot(self) -> Snapshot | None:
        return self._served.snapshot

    @property
    def status(self) -> CycleStatus:
        return self._served.status

    @property
    def is_leader(self) -> bool:
        return self._lease.is_leader

    def _serve(self, **changes: object) -> None:
        self._served = replace(self._served, **changes)  # type: ignore[arg-type]

    # -- leadership ----------------------------------------------------------------------------

    def tick_lease(self) -> bool:
        """Acquire or renew the leader lease; True while we lead."""
        with self._lock:
            leader = self._lease.tick()
            if leader != self._served.leader:
                self._serve(leader=leader)
            return leader

    def release_lease(self) -> None:
        with self._lock:
            self._lease.release()
            self._serve(leader=False)

    # -- cycles --------------------------------------------------------------------------------

    def run_breaker_cycle(self) -> list[Transition]:
        """Leader only: read the windows, evaluate every breaker, write transitions."""
        with self._lock, tracer.start_as_current_span("breaker_cycle"):
            if not self.tick_lease():
                return []
            try:
                now = self._now()
                reading = self._read(now, counters=False)  # breakers need no counters
                _, applied, _ = self._evaluate_and_write(reading, now)
            except (redis.RedisError, OSError) as exc:
                log.error("breaker cycle failed: %s", describe_error(exc))
                return []
            return applied

    def run_cycle(self) -> Snapshot | None:
        """One metrics cycle. The leader computes and publishes a snapshot (evaluating breakers
        first); a follower, or a leader deposed on the way, loads the published one. On a Redis
        error the previous snapshot stays and the failure is counted. Returns the new snapshot
        or None."""
        with self._lock, tracer.start_as_current_span("aggregation_cycle") as span:
            started = time.perf_counter()
            now = self._clock()
            status = self._served.status
            self._out_of_memory = False
            try:
                now = self._now()
                memory = self._reader.memory()
                self._check_memory_policy(memory)
                leader = self._lease.tick()
                snapshot = self._lead(now) if leader else None
                if snapshot is None:
                    snapshot = self._follow()
            except (redis.RedisError, OSError, ValueError) as exc:
                self._serve(
                    status=replace(
                        status,
                        cycles_failed=status.cycles_failed + 1,
                        last_duration_seconds=time.perf_counter() - started,
                        last_error=describe_error(exc),
                    ),
                    leader=self._lease.is_leader,
                )
                span.set_attribute("error", True)
                log.error(
                    "aggregation cycle failed, serving the last snapshot: %s", describe_error(exc)
                )
                return None
            duration = time.perf_counter() - started
            self._serve(
                snapshot=snapshot or self._served.snapshot,
                status=replace(
                    status,
                    cycles_ok=status.cycles_ok + 1,
                    last_success_at=now,
                    last_duration_seconds=duration,
                    last_error=None,
                    redis_memory=memory,
                    redis_out_of_memory=self._out_of_memory,
                    clock_offset_seconds=(
                        self._shared_clock.offset if self._shared_clock is not None else None
                    ),
                ),
                leader=self._lease.is_leader,
            )
            span.set_attribute("leader", leader)
            span.set_attribute("duration_seconds", duration)
            return snapshot

    def _now(self) -> float:
        """The time on the clients' clock: the injected one, or Redis's, measured now."""
        shared = self._shared_clock
        if shared is None:
            return self._clock()
        sent_at = shared.local()
        shared.observe(self._reader.redis_time(), sent_at, shared.local())
        return shared.now()

    def _read(self, now: float, counters: bool = True) -> Reading:
        """The configured providers, the registry's, and those whose breaker acted in the last
        snapshot (a registry lost to eviction must not hide an open breaker)."""
        with tracer.start_as_current_span("read_windows"):
            names = self._reader.known_providers(
                now,
                self.settings.retention_seconds,
                self.settings.export_horizon_seconds,
                check_idle=not self._idle_checked,
            )
            self._idle_checked = True
            snapshot = self._served.snapshot
            acting = [
                p.provider
                for p in (snapshot.providers if snapshot is not None else ())
                if p.breaker.forced or p.breaker.state != CLOSED
            ]
            config = self.settings.breaker
            return self._reader.read(
                now,
                [*self.settings.providers, *sorted({*names, *acting})],
                lambda state: counting_start(state, now, config),
                counters=counters,
            )

    def _lead(self, now: float) -> Snapshot | None:
        """Compute and publish a snapshot; None when the lease turned out to be lost."""
        reading = self._read(now)
        current = self._served.snapshot
        states, _, cycle = self._evaluate_and_write(
            reading, now, reserve_cycle_above=current.cycle if current else 0
        )
        if cycle is None or cycle == FENCED:
            self._lease.deposed()
            return None
        with tracer.start_as_current_span("read_backend_metrics"):
            backend = self._reader.backend(now, self.settings.retention_seconds)
            if backend.expired_writers:
                self._writer.forget_gauge_writers(backend.expired_writers)
        snapshot = replace(
            self._build(reading, states, now, cycle),
            backend=build_families(
                backend.schema,
                backend.series,
                backend.data,
                backend.gauge_writers,
                exemplars=backend.exemplars,
            ),
        )
        ttl = self.settings.readiness_max_age_intervals * self.settings.interval_seconds
        with tracer.start_as_current_span("publish_snapshot"):
            if not self._writer.publish(snapshot.to_json(), self._lease.fence, ttl):
                self._lease.deposed()
                return None
        return snapshot

    def _follow(self) -> Snapshot | None:
        """The published snapshot when it is not the one served already (the leader publishes
        each cycle number once, so a different number is a newer snapshot)."""
        published = self._reader.published_snapshot()
        committed = self._writer.commit(
            [], self._take_ops(), fence=None, log_records_dropped=self._log_drops.take()
        )
        self._out_of_memory |= committed.out_of_memory
        if published is None:
            return None
        snapshot = Snapshot.from_json(published)
        current = self._served.snapshot
        if current is not None and current.cycle == snapshot.cycle:
            return current  # the same object: its rendered bodies stay valid
        return snapshot

    def _take_ops(self) -> Counter[str]:
        ops = self._reader.ops.copy()
        self._reader.ops.clear()
        return ops

    def _evaluate_and_write(
        self, reading: Reading, now: float, reserve_cycle_above: int | None = None
    ) -> tuple[dict[str, BreakerState], list[Transition], int | None]:
        """Evaluate every breaker and write the transitions due (and, for a snapshot, reserve
        its cycle number in the same round trip): the states after them, the transitions
        applied, and the cycle (FENCED when a newer leader exists)."""
        config = self.settings.breaker
        states = {item.provider: item.breaker for item in reading.providers}
        fence = self._lease.fence
        if not fence:  # the lease ran out since the cycle began: write nothing
            return states, [], FENCED
        restores = self._vanished_breakers(states)
        planned: list[tuple[str, Transition]] = []
        for item in reading.providers:
            if item.provider in restores:
                continue  # evaluated from its restored state next cycle
            transition = evaluate(
                item.breaker, breaker_calls(item.breaker_counts, config), now, config
            )
            if transition is not None:
                planned.append((item.provider, transition))
        kept, suppressed = limit_open_share(planned, states, config.max_open_share)
        for name, transition in suppressed:
            log.warning(
                "breaker %s: would open (%s) but %.0f%% of providers are already open",
                name,
                transition.reason,
                config.max_open_share * 100,
            )
        self._suppressed = frozenset(name for name, _ in suppressed)
        writes = [
            PlannedWrite(name, t.old.epoch, t.new, f"{t.old.state}>{t.new.state}")
            for name, t in kept
        ]
        writes += [PlannedWrite(name, 0, state, "") for name, state in restores.items()]
        acting = [name for name, state in states.items() if state.forced or state.state != CLOSED]
        gone = [
            writer
            for writer, (_, measured_at) in reading.clock_offsets.items()
            if now - measured_at > CLOCK_OFFSET_HORIZON_SECONDS
        ]
        with tracer.start_as_current_span("write_state"):
            committed = self._writer.commit(
                writes,
                self._take_ops(),
                fence,
                reserve_cycle_above,
                acting,
                now,
                gone,
                self._log_drops.take(),
                self._history_due() if reserve_cycle_above is not None else None,
            )
        self._out_of_memory |= committed.out_of_memory
        for (name, state), result in zip(
            restores.items(), committed.results[len(kept) :], strict=True
        ):
            if result == 1:
                states[name] = state
                log.warning(
                    "breaker %s: its state vanished from Redis (evicted?); restored %s from the "
                    "last snapshot",
                    name,
                    "forced " + state.state if state.forced else state.state,
                )
        applied: list[Transition] = []
        for (name, transition), result in zip(kept, committed.results[: len(kept)], strict=True):
            if result == 1:
                states[name] = transition.new
                applied.append(transition)
                log.info(
                    "breaker %s: %s -> %s (%s); epoch %d, calls counted %d, next deadline %s",
                    name,
                    transition.old.state,
                    transition.new.state,
                    transition.reason,
                    transition.new.epoch,
                    transition.calls.total,
                    _deadline(transition.new, config),
                )
            elif result == FENCED:
                self._lease.deposed()
            else:
                log.warning("breaker %s: epoch moved on before our write; re-read next cycle", name)
        return states, applied, committed.cycle

    def _history_due(self) -> dict[str, HistoryPoint] | None:
        """The dashboard's points of the served snapshot for the providers whose point of its
        minute this leader has not written yet: one point per minute and provider, from the
        first snapshot taken in it that shows the provider."""
        snapshot = self._served.snapshot
        if snapshot is None:
            return None
        points = snapshot_points(snapshot)
        due = {
            name: point
            for name, point in points.items()
            if self._history_minutes.get(name) != point.minute_start
        }
        self._history_minutes = {name: point.minute_start for name, point in points.items()}
        return due or None

    def _vanished_breakers(self, states: dict[str, BreakerState]) -> dict[str, BreakerState]:
        """Breakers the last snapshot shows acting (open, half-open or forced) whose state is
        gone from Redis (evicted, or Redis emptied): their last known state, to restore. A
        breaker silently closed would let traffic through to a dead provider."""
        snapshot = self._served.snapshot
        if snapshot is None:
            return {}
        restores = {}
        for health in snapshot.providers:
            last = health.breaker
            now_in_redis = states.get(health.provider)
            if now_in_redis is None or now_in_redis.epoch != 0 or last.epoch == 0:
                continue
            if last.forced or last.state != CLOSED:
                restores[health.provider] = last
        return restores

    def _check_memory_policy(self, memory: RedisMemory | None) -> None:
        """Log once (per policy) a maxmemory-policy that lets Redis evict this project's keys."""
        policy = memory.policy if memory is not None and memory.can_evict else None
        if policy is not None and policy != self._policy_reported:
            log.error(
                "Redis maxmemory-policy is %s with maxmemory %d bytes: it can evict this "
                "project's keys (windows, counters, breaker states); set noeviction",
                policy,
                memory.max_bytes if memory is not None else 0,
            )
        self._policy_reported = policy

    def _build(
        self, reading: Reading, states: dict[str, BreakerState], now: float, cycle: int
    ) -> Snapshot:
        settings = self.settings
        rejected, dropped = decode_client_stats(reading.client_stats)
        log_drops = reading.client_stats.get(LOG_RECORDS_DROPPED_FIELD, 0)
        offsets = {
            writer: offset
            for writer, (offset, measured_at) in reading.clock_offsets.items()
            if now - measured_at <= CLOCK_OFFSET_HORIZON_SECONDS
        }
        health = tuple(
            provider_health(
                item.provider,
                item.window,
                states[item.provider],
                item.totals,
                item.transitions,
                settings.latency_target_seconds,
                settings.latency_ceiling_seconds,
                open_suppressed=item.provider in self._suppressed,
                exemplars=item.exemplars,
            )
            for item in reading.providers
        )
        return Snapshot(
            taken_at=now,
            cycle=cycle,
            window_seconds=settings.window_seconds,
            providers=health,
            redis_ops=reading.redis_ops,
            client_rejected=rejected,
            client_dropped=sum(dropped.values()),
            client_dropped_by_cause=dropped,
            client_clock_offsets=offsets,
            log_records_dropped=log_drops,
        )

    def history(self, providers: list[str]) -> tuple[str | None, dict[str, list[HistoryPoint]]]:
        """The dashboard's read (any thread; read only): the lease holder and each provider's
        history points (README "Dashboard")."""
        return self._reader.history(providers)

    def ready(self) -> tuple[bool, str]:
        """(ready, reason): Redis answers, has memory for writes and a maxmemory-policy that
        cannot evict this project's keys, and the served snapshot is at most N intervals old."""
        max_age = self.settings.readiness_max_age_intervals * self.settings.interval_seconds
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as exc:
            return False, f"redis unreachable: {describe_error(exc)}"
        status = self._served.status
        memory = status.redis_memory
        if status.redis_out_of_memory:
            used = f" (used {memory.used_bytes} of {memory.max_bytes} bytes)" if memory else ""
            return False, f"redis is out of memory: it refuses writes{used}"
        if memory is not None and memory.can_evict:
            return False, (
                f"redis maxmemory-policy {memory.policy} can evict this project's keys: "
                "set noeviction"
            )
        snapshot = self._served.snapshot
        if snapshot is None:
            return False, "no snapshot yet"
        shared = self._shared_clock
        age = (shared.now() if shared is not None else self._clock()) - snapshot.taken_at
        if age > max_age:
            return False, f"snapshot is {age:.1f}s old (max {max_age:.1f}s)"
        return True, "ok"


def _deadline(state: BreakerState, config: BreakerConfig) -> str:
    if state.forced:
        return "none (forced)"
    if state.state == OPEN:
        return f"half_open at {state.open_until:.3f}"
    if state.state == HALF_OPEN:
        timeout_at = state.since + config.half_open_timeout_seconds
        return f"decide after {config.half_open_calls} trial calls or at {timeout_at:.3f}"
    return "none"
