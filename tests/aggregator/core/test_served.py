"""What a replica serves (aggregator/core/served.py): the cycle status after a success or a
failure, and readiness with its reason. Pure."""

from __future__ import annotations

from aggregator.core.readings import RedisMemory
from aggregator.core.served import (
    CycleStatus,
    ServedState,
    after_failure,
    after_success,
    readiness,
)
from aggregator.core.snapshot import Snapshot

SNAPSHOT = Snapshot(1_000.0, 4, 300.0, (), {}, {}, 0)
ROOMY = RedisMemory(used_bytes=10, max_bytes=100, policy="noeviction", evicted_keys=0)


def test_a_failure_is_counted_and_keeps_the_last_success() -> None:
    before = CycleStatus(cycles_ok=3, last_success_at=990.0, redis_memory=ROOMY)
    after = after_failure(before, 0.25, "ConnectionError: refused")
    assert after == CycleStatus(
        cycles_ok=3,
        cycles_failed=1,
        last_success_at=990.0,
        last_duration_seconds=0.25,
        last_error="ConnectionError: refused",
        redis_memory=ROOMY,
    )


def test_a_success_clears_the_error_and_records_what_it_saw() -> None:
    before = CycleStatus(cycles_ok=1, cycles_failed=2, last_error="x")
    after = after_success(before, 1_000.0, 0.5, ROOMY, True, -0.125)
    assert after == CycleStatus(
        cycles_ok=2,
        cycles_failed=2,
        last_success_at=1_000.0,
        last_duration_seconds=0.5,
        last_error=None,
        redis_memory=ROOMY,
        redis_out_of_memory=True,
        clock_offset_seconds=-0.125,
    )


def _served(snapshot: Snapshot | None = SNAPSHOT, **status: object) -> ServedState:
    return ServedState("a", snapshot, CycleStatus(**status))  # type: ignore[arg-type]


def test_ready_with_a_fresh_snapshot_and_room_in_redis() -> None:
    assert readiness(_served(redis_memory=ROOMY), 1_090.0, 90.0) == (True, "ok")


def test_not_ready_reasons() -> None:
    assert readiness(_served(None), 1_000.0, 90.0) == (False, "no snapshot yet")
    assert readiness(_served(), 1_090.5, 90.0) == (False, "snapshot is 90.5s old (max 90.0s)")
    refused = _served(last_error="UnusableSnapshot: the published snapshot cannot be served: x")
    assert readiness(refused, 1_090.5, 90.0) == (
        False,
        "snapshot is 90.5s old (max 90.0s); last cycle failed: UnusableSnapshot: the published "
        "snapshot cannot be served: x",
    )
    assert readiness(refused, 1_090.0, 90.0) == (True, "ok")  # fresh: a failed cycle is no reason
    assert readiness(_served(redis_out_of_memory=True, redis_memory=ROOMY), 1_000.0, 90.0) == (
        False,
        "redis is out of memory: it refuses writes (used 10 of 100 bytes)",
    )
    evicting = RedisMemory(10, 100, "allkeys-lru", 0)
    assert readiness(_served(redis_memory=evicting), 1_000.0, 90.0) == (
        False,
        "redis maxmemory-policy allkeys-lru can evict this project's keys: set noeviction",
    )
    unlimited = RedisMemory(10, 0, "allkeys-lru", 0)  # no maxmemory: nothing is ever evicted
    assert readiness(_served(redis_memory=unlimited), 1_000.0, 90.0) == (True, "ok")
