"""What a replica serves: one immutable state, replaced as a whole, so a scrape reads the
snapshot, the cycle status and the leadership that belong together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from aggregator.core.readings import RedisMemory
from aggregator.core.snapshot import Snapshot


@dataclass(frozen=True)
class CycleStatus:
    """The aggregator's own health, exported beside the snapshot."""

    cycles_ok: int = 0
    cycles_failed: int = 0
    last_success_at: float | None = None
    last_duration_seconds: float = 0.0
    last_error: str | None = None
    redis_memory: RedisMemory | None = None
    """What this replica saw of Redis's memory at its last cycle (None: INFO unavailable)."""
    redis_out_of_memory: bool = False
    """Redis refused this replica's last plain write for lack of memory."""
    clock_offset_seconds: float | None = None
    """Redis's clock minus this replica's (None: an injected clock)."""
    values_skipped: dict[str, int] = field(default_factory=dict)
    """Values read from Redis that no writer of this project writes, skipped, by key kind
    (this replica, since it started)."""
    providers_over_cap: int = 0
    """Providers active in the registry beyond the cap at the last read: not read."""
    metric_families_over_cap: int = 0
    """Backend metrics beyond ``--max-metric-families`` at this replica's last backend read
    (a leader's): neither read nor exported."""
    gauge_writers_over_cap: int = 0
    """Processes with gauges beyond those a backend read takes (the latest to write them)."""
    breaker_cycles_failed: int = 0
    """Breaker cycles of this replica, as leader, that failed: breakers not evaluated then."""


@dataclass(frozen=True)
class ServedState:
    instance: str
    snapshot: Snapshot | None = None
    status: CycleStatus = field(default_factory=CycleStatus)
    leader: bool = False
    lease_error: str | None = None
    """Why this replica could not ask Redis for the leader lease at its last try (None: it
    could, whether it leads or not)."""
    interval_seconds: float = 30.0
    breaker_interval_seconds: float = 5.0


def after_breaker_failure(status: CycleStatus) -> CycleStatus:
    """The status after a failed breaker cycle: counted (the breakers keep their states)."""
    return replace(status, breaker_cycles_failed=status.breaker_cycles_failed + 1)


def after_failure(status: CycleStatus, duration: float, error: str) -> CycleStatus:
    """The status after a failed cycle: the snapshot served stays, the failure is counted."""
    return replace(
        status,
        cycles_failed=status.cycles_failed + 1,
        last_duration_seconds=duration,
        last_error=error,
    )


def after_success(
    status: CycleStatus,
    now: float,
    duration: float,
    memory: RedisMemory | None,
    out_of_memory: bool,
    clock_offset: float | None,
    values_skipped: Mapping[str, int] | None = None,
    providers_over_cap: int = 0,
    backend_over_cap: tuple[int, int] = (0, 0),
) -> CycleStatus:
    """The status after a successful cycle at ``now``; ``backend_over_cap``: metric families
    and gauge writers left out of the last backend read."""
    return replace(
        status,
        values_skipped=dict(values_skipped or {}),
        providers_over_cap=providers_over_cap,
        metric_families_over_cap=backend_over_cap[0],
        gauge_writers_over_cap=backend_over_cap[1],
        cycles_ok=status.cycles_ok + 1,
        last_success_at=now,
        last_duration_seconds=duration,
        last_error=None,
        redis_memory=memory,
        redis_out_of_memory=out_of_memory,
        clock_offset_seconds=clock_offset,
    )


def readiness(served: ServedState, now: float, max_age_seconds: float) -> tuple[bool, str]:
    """(ready, reason) of a replica whose Redis answers: Redis has memory for writes and a
    maxmemory-policy that cannot evict this project's keys, and the served snapshot is at
    most ``max_age_seconds`` old at ``now``."""
    status = served.status
    memory = status.redis_memory
    if status.redis_out_of_memory:
        used = f" (used {memory.used_bytes} of {memory.max_bytes} bytes)" if memory else ""
        return False, f"redis is out of memory: it refuses writes{used}"
    if memory is not None and memory.can_evict:
        return False, (
            f"redis maxmemory-policy {memory.policy} can evict this project's keys: set noeviction"
        )
    # A replica that cannot lead says why, where that may be why no snapshot comes
    cannot_lead = (
        f"; cannot take the leader lease: {served.lease_error}" if served.lease_error else ""
    )
    snapshot = served.snapshot
    if snapshot is None:
        return False, f"no snapshot yet{cannot_lead}"
    age = now - snapshot.taken_at
    if age > max_age_seconds:
        # and why no newer one came, when a cycle said so (a published snapshot refused)
        failed = f"; last cycle failed: {status.last_error}" if status.last_error else ""
        return False, (
            f"snapshot is {age:.1f}s old (max {max_age_seconds:.1f}s){cannot_lead}{failed}"
        )
    return True, "ok"
