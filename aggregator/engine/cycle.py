"""Aggregation and breaker cycles, as explicit steps.

A cycle: take the lease (``lease``), read the windows (``reader``), evaluate the breakers
(``evaluate``), commit what they decided with the cycle's bookkeeping in one round trip
(``writer``), then publish the snapshot (the leader) or follow the one published (a follower).
The leader (one replica, chosen by the lease) is the only one that evaluates breakers and
computes snapshots, so every replica exports identical provider series from the same cycle.
Snapshots are numbered by a counter in Redis that only the lease holder advances, so replicas
agree on which one is newest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import redis
from opentelemetry import trace

from aggregator.core.breaker import Transition, counting_start
from aggregator.core.decisions import acting, acting_in
from aggregator.core.history import HistoryMinutes, HistoryPoint
from aggregator.core.readings import BackendReading, Reading, refusing
from aggregator.core.served import (
    CycleStatus,
    ServedState,
    after_breaker_failure,
    after_failure,
    after_success,
    readiness,
)
from aggregator.core.snapshot import Snapshot, decode_published, silent_clocks
from aggregator.core.snapshot_reuse import SnapshotReuse
from aggregator.core.snapshot_rules import published_bytes, snapshot_problem
from aggregator.engine.clock import CycleClock
from aggregator.engine.evaluate import BreakerStep, counted
from aggregator.engine.lease import LeaderLease
from aggregator.engine.notices import Notices
from aggregator.engine.operator_commands import BreakerCommands
from aggregator.engine.reader import FUTURE_TOLERANCE_SECONDS as FUTURE_TOLERANCE
from aggregator.engine.reader import WindowReader
from aggregator.engine.wake import Woken, WokenBreakers
from aggregator.engine.writer import FENCED, StateWriter
from aggregator.settings import AggregatorSettings, describe_error, redact
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.hooks import NewLogDrops
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.errors import is_auth_failure

log = logging.getLogger("gatewayz.aggregator")
tracer = trace.get_tracer("gatewayz.aggregator")


class Aggregator:
    """Owns the served state; the scheduler drives its cycles and ticks, one at a time."""

    def __init__(
        self,
        settings: AggregatorSettings,
        connection: Connection,
        clock: Callable[[], float] | None = None,
    ):
        """``clock``: default, the system clock corrected to Redis's, the clients' events' own."""
        self.settings = settings
        keys = Keys(settings.namespace)
        self._redis = connection
        self._reader = WindowReader(
            connection, keys, settings.window_seconds, max_providers=settings.max_providers
        )
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
        self._clock = CycleClock(self._reader.redis_time, clock)
        self._breakers = BreakerStep.of(settings, connection, keys, self._reader)
        self._history = HistoryMinutes()
        self._notices = Notices(f"namespace {settings.namespace!r} on {redact(settings.redis_url)}")
        self._log_drops = NewLogDrops()
        self._lock = threading.RLock()
        self._idle_checked = False  # looked at every idle provider's breaker (its first read)
        self._served = ServedState(
            settings.instance,
            interval_seconds=settings.interval_seconds,
            breaker_interval_seconds=settings.breaker_interval_seconds,
        )
        self._out_of_memory = False  # this cycle: Redis refused a plain write for lack of memory
        self._reuse = SnapshotReuse(settings.health_targets)  # the last cycle's, reused
        self._max_json = published_bytes(settings)  # a published snapshot's (snapshot_rules)
        self._max_age = settings.readiness_max_age_intervals * settings.interval_seconds

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
        if "leader" in changes:  # with why this replica cannot lead, if it cannot
            changes["lease_error"] = self._lease.error
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
                now = self._clock.measure()
                reading = self._read(now, counters=False)  # breakers need no counters
                _, _, applied, _ = self._evaluate_and_commit(reading, now)
            except (redis.RedisError, OSError) as exc:
                log.error("breaker cycle failed: %s", describe_error(exc))
                self._serve(status=after_breaker_failure(self._served.status))
                return []
            return applied

    def run_cycle(self) -> Snapshot | None:
        """One metrics cycle. The leader computes and publishes a snapshot (evaluating breakers
        first); a follower, or a leader deposed on the way, loads the published one. On a Redis
        error the previous snapshot stays and the failure is counted. Returns the new snapshot
        or None."""
        with self._lock, tracer.start_as_current_span("aggregation_cycle") as span:
            started = time.perf_counter()
            try:
                now = self._clock.measure()
                memory = self._reader.memory()
                self._notices.memory_policy(memory)
                # Redis refused someone's write for memory since the last cycle, or refuses ours
                self._out_of_memory = refusing(self._served.status.redis_memory, memory)
                leader = self._lease.tick()
                snapshot = self._lead(now) if leader else None
                if snapshot is None:
                    snapshot = self._follow(now)
            except (redis.RedisError, OSError, ValueError) as exc:
                error = describe_error(exc)
                failed = after_failure(self._served.status, time.perf_counter() - started, error)
                self._serve(status=failed, leader=self._lease.is_leader)
                kept = "the last snapshot" if self._served.snapshot else "no snapshot yet"
                log.error("aggregation cycle failed, serving %s: %s", kept, error)
                span.set_attribute("error", True)
                return None
            duration = time.perf_counter() - started
            self._notices.skipped(self._reader.take_skipped())
            status = after_success(
                self._served.status,
                now,
                duration,
                memory,
                self._out_of_memory,
                self._clock.offset,
                self._notices.counts,
                self._reader.over_cap,
                self._reader.backend_over_cap,
            )
            served = snapshot or self._served.snapshot
            self._serve(snapshot=served, status=status, leader=self._lease.is_leader)
            self._notices.providers_seen(len(served.providers) if served else 0, now)
            span.set_attribute("leader", leader)
            span.set_attribute("duration_seconds", duration)
            return snapshot

    # -- the steps -----------------------------------------------------------------------------

    def _read(self, now: float, counters: bool = True) -> Reading:
        """The configured, registered and last acting providers (eviction hides no breaker)."""
        with tracer.start_as_current_span("read_windows"):
            names = self._reader.known_providers(
                now,
                self.settings.retention_seconds,
                self.settings.export_horizon_seconds,
                check_idle=not self._idle_checked,
            )
            self._idle_checked = True
            last = acting_in(self._served.snapshot)
            policy = self.settings.breaker_policy
            return self._reader.read(
                now,
                [*self.settings.providers, *sorted({*names, *last})],
                lambda name, state: counting_start(state, now, policy.config(name)),
                counters=counters,
            )

    def _lead(self, now: float) -> Snapshot | None:
        """Compute and publish a snapshot; None when the lease turned out to be lost."""
        current = self._served.snapshot
        reading, states, _, cycle = self._evaluate_and_commit(
            self._read(now), now, reserve_cycle_above=current.cycle if current else 0
        )
        if cycle is None or cycle == FENCED:
            self._lease.deposed()
            return None
        snapshot = self._reuse.build(reading, states, now, cycle, *self._breakers.shown())
        with tracer.start_as_current_span("read_backend_metrics"):
            backend = _read_backend(self._reader, self._writer, self._notices, self.settings, now)
        snapshot = self._reuse.with_backend(snapshot, backend, *self.settings.backend_bounds)
        with tracer.start_as_current_span("publish_snapshot"):
            text = self._notices.published(snapshot.to_json(self._reuse), self._max_json)
            if not self._writer.publish(text, self._lease.fence, self._max_age):
                self._lease.deposed()
                return None
        return snapshot

    def _follow(self, now: float) -> Snapshot | None:
        """The published snapshot when it is not the one served already (``_same``: not by
        its number alone)."""
        published = self._reader.published_snapshot()
        commit = self._writer.begin(fence=None).log_drops(self._log_drops.take())
        self._out_of_memory |= commit.send(self._reader.take_ops()).out_of_memory
        if published is None:
            return None
        snapshot = decode_snapshot(published, self._max_json, now)
        self._notices.snapshot_version(snapshot.version)
        current = self._served.snapshot
        if current is not None and _same(current, snapshot):
            return current  # the same object: its rendered bodies stay valid
        return snapshot

    def _evaluate_and_commit(
        self, reading: Reading, now: float, reserve_cycle_above: int | None = None
    ) -> tuple[Reading, dict[str, BreakerState], list[Transition], int | None]:
        """Evaluate every breaker and commit the transitions due with the cycle's bookkeeping
        (and, for a snapshot, reserve its cycle number) in one round trip: the reading with the
        transitions applied counted and the states after them (a snapshot shows both), the
        transitions applied, and the cycle (FENCED when a newer leader exists)."""
        states = {item.provider: item.breaker for item in reading.providers}
        fence = self._lease.fence
        if not fence:  # the lease ran out since the cycle began: write nothing
            return reading, states, [], FENCED
        last = self._served.snapshot
        decisions = self._breakers.decide(reading, last, now)
        taken_over = self._lease.taken_over
        commit = self._writer.begin(fence, self._lease.valid_until_ms)
        if taken_over:  # before anything else: a deposed leader's late writes are refused
            commit.raise_fences(*self._breakers.fences(reading))
        commit = (
            commit.transitions(self._breakers.writes(decisions))
            .keep_registered(acting(states), now)
            .forget_clocks(silent_clocks(reading, now))
            .log_drops(self._log_drops.take())
        )
        if reserve_cycle_above is not None:
            commit.reserve_cycle(reserve_cycle_above).history(self._history.due(last))
        with tracer.start_as_current_span("write_state"):
            committed = commit.send(self._reader.take_ops())
        if taken_over:
            self._lease.taken_over = False  # raised: they stay raised
        self._out_of_memory |= committed.out_of_memory
        applied = self._breakers.settle(decisions, committed, states)
        if FENCED in committed.results:
            self._lease.deposed()
        return counted(reading, decisions, committed), states, applied, committed.cycle

    def history(self, providers: list[str]) -> tuple[str | None, dict[str, list[HistoryPoint]]]:
        """The dashboard's read (read only, any thread): the lease holder and each provider's
        history points (README "Dashboard")."""
        return self._reader.history(providers)

    def ready(self) -> tuple[bool, str]:
        """(ready, reason): Redis answers, has memory for writes and a maxmemory-policy that
        cannot evict this project's keys, and the served snapshot is at most N intervals old."""
        trouble = _ping_trouble(self._redis)
        if trouble:
            return False, trouble
        return readiness(self._served, self._clock.now(), self._max_age)


def _ping_trouble(connection: Connection) -> str:
    """Why Redis does not answer PING ("" when it does): unreachable, refusing the credentials
    (an answer, not an outage, though redis-py's AuthenticationError is a ConnectionError), or
    refusing PING (an ACL without it)."""
    try:
        connection.ping()
    except (redis.RedisError, OSError) as exc:
        if is_auth_failure(exc):
            state = "authentication failed"
        elif isinstance(exc, redis.ResponseError):
            state = "refuses PING"
        else:
            state = "unreachable"
        return f"redis {state}: {describe_error(exc)}"
    return ""


def breaker_commands(aggregator: Aggregator) -> BreakerCommands:
    """The operator's breaker commands (the CLI's) on ``aggregator``'s connection and clock
    (Redis's, as its cycles'), for the HTTP API (any thread)."""
    where = f"namespace {aggregator.settings.namespace!r}"
    return BreakerCommands(aggregator._redis, aggregator.settings, aggregator._clock.now, where)


def woken_breakers(aggregator: Aggregator) -> WokenBreakers:
    """The breakers workers wake (``wake``), evaluated at once while ``aggregator`` leads, under
    its cycles' lock, lease and clock, with its writer (the serving process makes one, for its
    wake listener)."""
    a, keys = aggregator, Keys(aggregator.settings.namespace)
    woken = Woken(a._redis, keys, a._writer, a._breakers, a.settings, FUTURE_TOLERANCE)
    return WokenBreakers(woken, a._lock, a._lease, a._clock, a.served)


class UnusableSnapshot(ValueError):
    """The published snapshot cannot be served by this replica (the cycle fails by this name)."""


def decode_snapshot(published: bytes, max_bytes: int, now: float) -> Snapshot:
    """The leader's published snapshot as stored (``encode_published``), taken at ``now``;
    UnusableSnapshot naming why it cannot be served: not a snapshot, over ``max_bytes`` of
    JSON (decompressed no further), a value no leader publishes (``snapshot_rules``: the
    snapshot is refused whole). A newer leader's, in a rolling upgrade, is served as far as
    this replica knows it."""
    try:
        snapshot = Snapshot.from_json(decode_published(published, max_bytes))
    except ValueError as exc:
        raise UnusableSnapshot(f"the published snapshot cannot be served: {exc}") from None
    problem = snapshot_problem(snapshot, now)
    if problem is not None:
        raise UnusableSnapshot(f"the published snapshot cannot be served: {problem}")
    return snapshot


def _same(served: Snapshot, published: Snapshot) -> bool:
    """The same snapshot: the same number, taken at the same time. The number alone is not
    enough: a cycle counter lost with Redis's data restarts, under a leader restarted meanwhile,
    below a number a follower may still serve (torture seed 190001)."""
    return (served.cycle, served.taken_at) == (published.cycle, published.taken_at)


def _read_backend(
    reader: WindowReader,
    writer: StateWriter,
    notices: Notices,
    settings: AggregatorSettings,
    now: float,
) -> BackendReading:
    """The workers' metrics, at most ``max_metric_families``: the processes whose gauges
    expired forgotten, what the read's caps left out said (once)."""
    backend = reader.backend(now, settings.retention_seconds, settings.max_metric_families)
    if backend.expired_writers:
        writer.forget_gauge_writers(backend.expired_writers)
    notices.backend_over_cap(*reader.backend_over_cap, settings.max_metric_families)
    return backend
