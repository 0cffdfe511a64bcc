"""The families of Redis's state as the aggregator's last cycle saw it (``INFO``): memory,
its policy, evictions, refusals. Part of the replica's own families (``collector``)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from aggregator.core.served import CycleStatus


def redis_metrics(status: CycleStatus) -> Iterator[Metric]:
    """Redis's memory, eviction and refusals as this replica's last cycle saw them (none from
    a server without INFO)."""
    memory = status.redis_memory
    if memory is None:  # a server without INFO (fakeredis)
        return
    yield GaugeMetricFamily(
        "gatewayz_redis_memory_used_bytes",
        "Memory Redis counts against maxmemory, seen by this replica's last cycle",
        value=memory.used_bytes,
    )
    yield GaugeMetricFamily(
        "gatewayz_redis_memory_max_bytes",
        "Redis maxmemory (0: no limit)",
        value=memory.max_bytes,
    )
    yield GaugeMetricFamily(
        "gatewayz_redis_out_of_memory",
        "1 when Redis refused a write for lack of memory since this replica's last cycle "
        "(anyone's: INFO errorstats), or refused its own",
        value=1.0 if status.redis_out_of_memory else 0.0,
    )
    policy = GaugeMetricFamily(
        "gatewayz_redis_maxmemory_policy_safe",
        "1 when Redis's maxmemory-policy cannot evict this project's keys (noeviction, or no "
        "maxmemory), 0 when it can",
        labels=["policy"],
    )
    policy.add_metric([memory.policy], 0.0 if memory.can_evict else 1.0)
    yield policy
    yield CounterMetricFamily(
        "gatewayz_redis_evicted_keys",
        "Keys Redis evicted since it started (INFO evicted_keys)",
        value=memory.evicted_keys,
    )
    yield CounterMetricFamily(
        "gatewayz_redis_permission_refusals",
        "Commands Redis refused since it started because the user's ACL does not allow them "
        "(INFO errorstats NOPERM, all clients): a process doing what its role may not; ACL LOG "
        "names the user",
        value=memory.permission_refusals,
    )
