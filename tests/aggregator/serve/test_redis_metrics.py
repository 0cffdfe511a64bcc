"""Redis's state as a cycle saw it (aggregator/serve/redis_metrics.py): every family with its
exact value from a hand-made INFO reading, none without one. Pure: no Redis."""

from __future__ import annotations

from aggregator.core.readings import RedisMemory
from aggregator.core.served import CycleStatus
from aggregator.serve.redis_metrics import redis_metrics


def _samples(status: CycleStatus) -> dict[str, dict[tuple[str, ...], float]]:
    return {
        family.name: {
            (sample.name, *sorted(sample.labels.values())): sample.value
            for sample in family.samples
        }
        for family in redis_metrics(status)
    }


def test_each_figure_of_info_is_served_as_read() -> None:
    memory = RedisMemory(10, 100, "allkeys-lru", 2, oom_refusals=4, permission_refusals=3)
    assert _samples(CycleStatus(redis_memory=memory, redis_out_of_memory=True)) == {
        "gatewayz_redis_memory_used_bytes": {("gatewayz_redis_memory_used_bytes",): 10.0},
        "gatewayz_redis_memory_max_bytes": {("gatewayz_redis_memory_max_bytes",): 100.0},
        "gatewayz_redis_out_of_memory": {("gatewayz_redis_out_of_memory",): 1.0},
        "gatewayz_redis_maxmemory_policy_safe": {
            ("gatewayz_redis_maxmemory_policy_safe", "allkeys-lru"): 0.0  # it can evict
        },
        "gatewayz_redis_evicted_keys": {("gatewayz_redis_evicted_keys_total",): 2.0},
        "gatewayz_redis_permission_refusals": {("gatewayz_redis_permission_refusals_total",): 3.0},
    }
    unlimited = RedisMemory(10, 0, "allkeys-lru", 0)  # no maxmemory: nothing is evicted
    safe = _samples(CycleStatus(redis_memory=unlimited))["gatewayz_redis_maxmemory_policy_safe"]
    assert safe == {("gatewayz_redis_maxmemory_policy_safe", "allkeys-lru"): 1.0}


def test_a_server_without_info_gives_no_family() -> None:
    assert _samples(CycleStatus(redis_memory=None)) == {}
