"""What a replica serves: one immutable state, replaced as a whole, so a scrape reads the
snapshot, the cycle status and the leadership that belong together."""

from __future__ import annotations

from dataclasses import dataclass, field

from aggregator.readings import RedisMemory
from aggregator.snapshot import Snapshot


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


@dataclass(frozen=True)
class ServedState:
    instance: str
    snapshot: Snapshot | None = None
    status: CycleStatus = field(default_factory=CycleStatus)
    leader: bool = False
    interval_seconds: float = 30.0
    breaker_interval_seconds: float = 5.0
