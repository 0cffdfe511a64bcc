"""Aggregation and breaker cycles, and the leader lease that decides who runs them.

The leader (one replica, chosen by a lease in Redis) evaluates breakers, computes each snapshot
and publishes it to Redis; a follower serves the published snapshot, so every replica exports
identical provider series from the same cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis
from opentelemetry import trace

from aggregator.backend import build_families
from aggregator.breaker import (
    BreakerCalls,
    BreakerConfig,
    BreakerState,
    Transition,
    counting_start,
    evaluate,
    limit_open_share,
)
from aggregator.health import WindowCounts
from aggregator.reader import Reading, WindowReader
from aggregator.settings import AggregatorSettings, redact
from aggregator.snapshot import Snapshot, client_counters, provider_health
from aggregator.writer import PlannedWrite, StateWriter
from client.keys import Keys

log = logging.getLogger("gatewayz.aggregator")
tracer = trace.get_tracer("gatewayz.aggregator")


@dataclass(frozen=True)
class CycleStatus:
    """The aggregator's own health, exported beside the snapshot."""

    cycles_ok: int = 0
    cycles_failed: int = 0
    last_success_at: float | None = None
    last_duration_seconds: float = 0.0
    last_error: str | None = None


def breaker_calls(counts: WindowCounts, config: BreakerConfig) -> BreakerCalls:
    failures = counts.failures + (counts.rate_limited if config.rate_limited_is_failure else 0)
    return BreakerCalls(counts.successes, failures)


class Aggregator:
    """Owns the served Snapshot. The scheduler (or a test) drives ``run_cycle()``,
    ``run_breaker_cycle()`` and ``tick_lease()``; never two of them at once."""

    def __init__(
        self,
        settings: AggregatorSettings,
        connection: redis.Redis,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.instance = settings.instance
        self._clock = clock
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
        self._lock = threading.RLock()
        self._fence = 0  # our fencing token while we hold the lease, else 0
        self._lease_deadline = 0.0  # monotonic time our lease surely lasts until
        self._suppressed: frozenset[str] = frozenset()
        self.snapshot: Snapshot | None = None
        self.status = CycleStatus()

    # -- leadership ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._fence > 0 and time.monotonic() < self._lease_deadline

    def tick_lease(self) -> bool:
        """Acquire or renew the leader lease; True while we lead. Redis errors mean we stop
        leading once the lease we had may have expired."""
        with self._lock:
            was_leader = self.is_leader
            started = time.monotonic()
            try:
                token = self._writer.hold_lease(self.instance, self.settings.lease_seconds)
            except (redis.RedisError, OSError) as exc:
                if was_leader and not self.is_leader:
                    log.warning("lost leadership: lease not renewed (%s)", _describe(exc))
                return self.is_leader
            if token:
                self._fence = token
                self._lease_deadline = started + self.settings.lease_seconds
                if not was_leader:
                    log.info("%s leads (fencing token %d)", self.instance, token)
            else:
                if was_leader:
                    log.warning("%s lost leadership to another replica", self.instance)
                self._fence = 0
            return self.is_leader

    def release_lease(self) -> None:
        with self._lock:
            if self._fence:
                self._writer.release_lease(self.instance)
                self._fence = 0

    # -- cycles --------------------------------------------------------------------------------

    def run_breaker_cycle(self) -> list[Transition]:
        """Leader only: read the windows, evaluate every breaker, write transitions."""
        with self._lock, tracer.start_as_current_span("breaker_cycle"):
            if not self.tick_lease():
                return []
            now = self._clock()
            try:
                reading = self._read(now)
                _, applied = self._evaluate_and_write(reading, now)
            except (redis.RedisError, OSError) as exc:
                log.error("breaker cycle failed: %s", _describe(exc))
                return []
            return applied

    def run_cycle(self) -> Snapshot | None:
        """One metrics cycle. The leader computes and publishes a snapshot (evaluating breakers
        first); a follower loads the published one. On a Redis error the previous snapshot
        stays and the failure is counted. Returns the new snapshot or None."""
        with self._lock, tracer.start_as_current_span("aggregation_cycle") as span:
            started = time.perf_counter()
            now = self._clock()
            try:
                leader = self.tick_lease()
                snapshot = self._lead(now) if leader else self._follow()
            except (redis.RedisError, OSError, ValueError) as exc:
                self.status = replace(
                    self.status,
                    cycles_failed=self.status.cycles_failed + 1,
                    last_duration_seconds=time.perf_counter() - started,
                    last_error=_describe(exc),
                )
                span.set_attribute("error", True)
                log.error("aggregation cycle failed, serving the last snapshot: %s", _describe(exc))
                return None
            duration = time.perf_counter() - started
            if snapshot is not None:
                self.snapshot = snapshot
            self.status = replace(
                self.status,
                cycles_ok=self.status.cycles_ok + 1,
                last_success_at=now,
                last_duration_seconds=duration,
                last_error=None,
            )
            span.set_attribute("leader", leader)
            span.set_attribute("duration_seconds", duration)
            return snapshot

    def _read(self, now: float) -> Reading:
        with tracer.start_as_current_span("read_windows"):
            names = self._reader.known_providers(now, self.settings.retention_seconds)
            config = self.settings.breaker
            return self._reader.read(
                now,
                [*self.settings.providers, *sorted(names)],
                lambda state: counting_start(state, now, config),
            )

    def _lead(self, now: float) -> Snapshot:
        reading = self._read(now)
        states, _ = self._evaluate_and_write(reading, now)
        with tracer.start_as_current_span("read_backend_metrics"):
            backend = self._reader.backend(now, self.settings.retention_seconds)
        snapshot = replace(
            self._build(reading, states, now),
            backend=build_families(
                backend.schema, backend.series, backend.data, backend.gauge_writers
            ),
        )
        ttl = self.settings.readiness_max_age_intervals * self.settings.interval_seconds
        with tracer.start_as_current_span("publish_snapshot"):
            self._writer.commit([], self._take_ops(), self._fence, snapshot.to_json(), ttl)
        return snapshot

    def _follow(self) -> Snapshot | None:
        published = self._reader.published_snapshot()
        self._writer.commit([], self._take_ops(), fence=None)
        if published is None:
            return None
        snapshot = Snapshot.from_json(published)
        current = self.snapshot
        if current is not None and current.cycle >= snapshot.cycle:
            return current
        return snapshot

    def _take_ops(self) -> Counter[str]:
        ops = self._reader.ops.copy()
        self._reader.ops.clear()
        return ops

    def _evaluate_and_write(
        self, reading: Reading, now: float
    ) -> tuple[dict[str, BreakerState], list[Transition]]:
        config = self.settings.breaker
        states = {item.provider: item.breaker for item in reading.providers}
        planned: list[tuple[str, Transition]] = []
        for item in reading.providers:
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
        with tracer.start_as_current_span("write_state"):
            results = self._writer.commit(writes, self._take_ops(), self._fence)
        applied: list[Transition] = []
        for (name, transition), result in zip(kept, results, strict=True):
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
            elif result == -1:
                self._fence = 0
                log.warning("breaker %s: write fenced off, a newer leader exists", name)
            else:
                log.warning("breaker %s: epoch moved on before our write; re-read next cycle", name)
        return states, applied

    def _build(self, reading: Reading, states: dict[str, BreakerState], now: float) -> Snapshot:
        settings = self.settings
        rejected, dropped = client_counters(reading.client_stats)
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
            )
            for item in reading.providers
        )
        previous = self.snapshot
        return Snapshot(
            taken_at=now,
            cycle=(previous.cycle + 1) if previous else 1,
            window_seconds=settings.window_seconds,
            providers=health,
            redis_ops=reading.redis_ops,
            client_rejected=rejected,
            client_dropped=dropped,
        )

    def ready(self) -> tuple[bool, str]:
        """(ready, reason): Redis answers and the served snapshot is at most N intervals old."""
        max_age = self.settings.readiness_max_age_intervals * self.settings.interval_seconds
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as exc:
            return False, f"redis unreachable: {_describe(exc)}"
        snapshot = self.snapshot
        if snapshot is None:
            return False, "no snapshot yet"
        age = self._clock() - snapshot.taken_at
        if age > max_age:
            return False, f"snapshot is {age:.1f}s old (max {max_age:.1f}s)"
        return True, "ok"


def _deadline(state: BreakerState, config: BreakerConfig) -> str:
    if state.forced:
        return "none (forced)"
    if state.state == "open":
        return f"half_open at {state.open_until:.3f}"
    if state.state == "half_open":
        timeout_at = state.since + config.half_open_timeout_seconds
        return f"decide after {config.half_open_calls} trial calls or at {timeout_at:.3f}"
    return "none"


def _describe(exc: BaseException) -> str:
    """An error message without credentials: redis-py never puts the URL's password in one, and
    any URL credentials that might appear are redacted all the same."""
    return redact(f"{type(exc).__name__}: {exc}")
