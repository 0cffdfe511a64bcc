"""One aggregation cycle: read Redis, evaluate breakers, write transitions, swap the Snapshot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis
from opentelemetry import trace

from aggregator.breaker import BreakerCalls, BreakerConfig, BreakerState, Transition, evaluate
from aggregator.health import WindowCounts
from aggregator.reader import WindowReader
from aggregator.settings import AggregatorSettings
from aggregator.snapshot import Snapshot, client_counters, provider_health
from aggregator.writer import StateWriter
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
    """Owns the current Snapshot; ``run_cycle()`` is driven by the scheduler or by tests."""

    def __init__(
        self,
        settings: AggregatorSettings,
        connection: redis.Redis,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self._clock = clock
        keys = Keys(settings.namespace)
        self._redis = connection
        self._reader = WindowReader(connection, keys, settings.window_seconds)
        self._writer = StateWriter(connection, keys, settings.retention_seconds)
        self._cycle_lock = threading.Lock()
        self.snapshot: Snapshot | None = None
        self.status = CycleStatus()

    def run_cycle(self) -> Snapshot | None:
        """Run one cycle (never two at once). On a Redis error the previous snapshot stays and
        the failure is counted; returns the new snapshot or None."""
        with self._cycle_lock, tracer.start_as_current_span("aggregation_cycle") as span:
            started = time.perf_counter()
            now = self._clock()
            try:
                snapshot = self._cycle(now)
            except (redis.RedisError, OSError) as exc:
                duration = time.perf_counter() - started
                self.status = replace(
                    self.status,
                    cycles_failed=self.status.cycles_failed + 1,
                    last_duration_seconds=duration,
                    last_error=_describe(exc),
                )
                span.set_attribute("error", True)
                log.error("aggregation cycle failed, serving the last snapshot: %s", _describe(exc))
                return None
            duration = time.perf_counter() - started
            self.snapshot = snapshot
            self.status = replace(
                self.status,
                cycles_ok=self.status.cycles_ok + 1,
                last_success_at=now,
                last_duration_seconds=duration,
                last_error=None,
            )
            span.set_attribute("providers", len(snapshot.providers))
            span.set_attribute("duration_seconds", duration)
            return snapshot

    def _cycle(self, now: float) -> Snapshot:
        settings = self.settings
        with tracer.start_as_current_span("read_windows"):
            names = self._reader.known_providers(now, settings.retention_seconds)
            reading = self._reader.read(now, [*settings.providers, *sorted(names)])

        planned: list[tuple[str, Transition]] = []
        states: dict[str, BreakerState] = {}
        for item in reading.providers:
            states[item.provider] = item.breaker
            calls = breaker_calls(item.since_transition, settings.breaker)
            transition = evaluate(item.breaker, calls, now, settings.breaker)
            if transition is not None:
                planned.append((item.provider, transition))
                states[item.provider] = transition.new

        ops = self._reader.ops.copy()
        self._reader.ops.clear()
        with tracer.start_as_current_span("write_state"):
            won = self._writer.commit([(n, t.old.epoch, t.new) for n, t in planned], ops)
        for (name, transition), ok in zip(planned, won, strict=True):
            if ok:
                log.info(
                    "breaker %s: %s -> %s (%s); epoch %d, open until %.3f",
                    name,
                    transition.old.state,
                    transition.new.state,
                    transition.reason,
                    transition.new.epoch,
                    transition.new.open_until,
                )
            else:
                states[name] = transition.old
                log.warning(
                    "breaker %s: transition lost a compare-and-set; re-read next cycle", name
                )

        rejected, dropped = client_counters(reading.client_stats)
        health = tuple(
            provider_health(
                item.provider,
                item.window,
                states[item.provider],
                item.totals,
                settings.latency_target_seconds,
                settings.latency_ceiling_seconds,
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
        """(ready, reason): Redis answers and the snapshot is at most N intervals old."""
        max_age = self.settings.readiness_max_age_intervals * self.settings.interval_seconds
        try:
            self._redis.ping()
        except (redis.RedisError, OSError) as exc:
            return False, f"redis unreachable: {_describe(exc)}"
        last = self.status.last_success_at
        if last is None:
            return False, "no successful cycle yet"
        age = self._clock() - last
        if age > max_age:
            return False, f"snapshot is {age:.1f}s old (max {max_age:.1f}s)"
        return True, "ok"


def _describe(exc: BaseException) -> str:
    """An error message without credentials (redis-py never puts the URL password in it)."""
    return f"{type(exc).__name__}: {exc}"
