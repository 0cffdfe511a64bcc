"""The metric families of one served state (aggregator/serve/collector.py): their order, names
and exact values from a hand-built snapshot; before the first cycle only the aggregator's own.
Pure: no Redis, no HTTP."""

from __future__ import annotations

from aggregator.core.backend import BackendFamily
from aggregator.core.health import WindowCounts
from aggregator.core.readings import RedisMemory
from aggregator.core.served import CycleStatus, ServedState
from aggregator.core.snapshot import Snapshot, provider_health
from aggregator.serve.collector import DROP_CAUSES, SnapshotCollector
from gatewayz_protocol.breaker_state import OPEN, BreakerState
from gatewayz_protocol.partitions import LATENCY_PARTITIONS

OWN = [
    "gatewayz_aggregator_cycles",
    "gatewayz_aggregator_cycles_failed",
    "gatewayz_aggregator_cycle_duration_seconds",
    "gatewayz_redis_values_skipped",
    "gatewayz_aggregator_providers_over_cap",
    "gatewayz_aggregator_metric_families_over_cap",
    "gatewayz_aggregator_gauge_writers_over_cap",
    "gatewayz_aggregator_interval_seconds",
    "gatewayz_aggregator_breaker_interval_seconds",
    "gatewayz_aggregator_breaker_cycles_failed",
]
REDIS = [
    "gatewayz_redis_memory_used_bytes",
    "gatewayz_redis_memory_max_bytes",
    "gatewayz_redis_out_of_memory",
    "gatewayz_redis_maxmemory_policy_safe",
    "gatewayz_redis_evicted_keys",
    "gatewayz_redis_permission_refusals",
]
PROVIDERS = [
    "provider_availability",
    "provider_error_rate",
    "gatewayz_provider_health_score",
    "gatewayz_provider_latency_p95_seconds",
    "gatewayz_provider_window_requests",
    "gatewayz_circuit_breaker_state",
    "provider_response_time_seconds",
    "gatewayz_provider_requests",
    "gatewayz_cost_by_provider",
    "gatewayz_provider_tokens",
    "gatewayz_circuit_breaker_transitions",
    "gatewayz_circuit_breaker_rejected_calls",
    "gatewayz_circuit_breaker_forced",
    "gatewayz_circuit_breaker_open_suppressed",
    "gatewayz_provider_cancelled_calls",
]
BACKEND = [
    "inflight",
    "gatewayz_metrics_series_dropped",
    "gatewayz_metrics_values_rejected",
    "gatewayz_metrics_conflicting_updates",
    "gatewayz_metrics_label_values_truncated",
]
CLIENTS = [
    "gatewayz_redis_operations",
    "gatewayz_client_events_rejected",
    "gatewayz_client_events_dropped",
    "gatewayz_log_records_dropped",
    "gatewayz_client_clock_offset_seconds",
]


def _collect(
    served: ServedState,
) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    families = {}
    for family in SnapshotCollector(lambda: served).collect():
        families[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
    return families


def test_before_the_first_cycle_only_the_aggregators_own_metrics() -> None:
    status = CycleStatus(
        cycles_failed=2,
        values_skipped={"totals": 3},
        providers_over_cap=4,
        metric_families_over_cap=5,
        gauge_writers_over_cap=6,
    )
    served = ServedState("r1", leader=True, status=status)
    families = _collect(served)
    assert list(families) == [*OWN, "gatewayz_aggregator_leader"]  # no INFO: no Redis figures
    assert families["gatewayz_aggregator_cycles_failed"] == {
        ("gatewayz_aggregator_cycles_failed_total", ()): 2.0
    }
    assert families["gatewayz_aggregator_leader"] == {
        ("gatewayz_aggregator_leader", (("replica", "r1"),)): 1.0
    }
    assert families["gatewayz_redis_values_skipped"] == {
        ("gatewayz_redis_values_skipped_total", (("kind", "totals"),)): 3.0
    }
    assert families["gatewayz_aggregator_providers_over_cap"] == {
        ("gatewayz_aggregator_providers_over_cap", ()): 4.0
    }
    assert families["gatewayz_aggregator_metric_families_over_cap"] == {
        ("gatewayz_aggregator_metric_families_over_cap", ()): 5.0
    }
    assert families["gatewayz_aggregator_gauge_writers_over_cap"] == {
        ("gatewayz_aggregator_gauge_writers_over_cap", ()): 6.0
    }


def _snapshot() -> Snapshot:
    window = WindowCounts((6,) + (0,) * (LATENCY_PARTITIONS - 1), 2, 1, 1)
    opened = BreakerState(OPEN, 90.0, 3, 120.0, 1)
    health = provider_health(
        "openrouter",
        window,
        opened,
        {
            "n:success": 40,
            "n:failure": 4,
            "b:0.1": 40,
            "b:+Inf": 4,
            "lat_us": 9_000_000,
            "cancelled": 5,
        },
        {"closed>open": 2},
        2.0,
        10.0,
    )
    gauge = BackendFamily(
        "inflight", "gauge", "in flight", ("route",), (), ((("/v1",), 3.0),), (), 0, 1
    )
    return Snapshot(
        100.0, 9, 300.0, (health,), {"zcount": 24}, {"invalid_latency": 5}, 7,
        backend=(gauge,), client_dropped_by_cause={"refused": 7},
        client_clock_offsets={"h:1": 0.5}, log_records_dropped=3,
    )  # fmt: skip


def test_every_family_of_a_snapshot_in_order_with_its_values() -> None:
    memory = RedisMemory(10, 100, "noeviction", 2, oom_refusals=4, permission_refusals=3)
    served = ServedState(
        "r1", _snapshot(), CycleStatus(cycles_ok=5, last_success_at=100.0, redis_memory=memory)
    )
    families = _collect(served)
    assert list(families) == [
        *OWN[:3],
        "gatewayz_aggregator_last_success_timestamp_seconds",
        *OWN[3:7],
        "gatewayz_aggregator_snapshot_timestamp_seconds",
        "gatewayz_aggregator_snapshot_cycle",
        *OWN[7:],
        *REDIS,
        "gatewayz_aggregator_leader",
        *PROVIDERS,
        *BACKEND,
        *CLIENTS,
        "gatewayz_model_circuit_breaker_state",
    ]
    assert families["gatewayz_redis_permission_refusals"] == {
        ("gatewayz_redis_permission_refusals_total", ()): 3.0
    }
    p = (("provider", "openrouter"),)
    assert families["provider_availability"] == {("provider_availability", p): 0.0}
    assert families["provider_error_rate"] == {("provider_error_rate", p): 0.25}
    assert families["gatewayz_provider_window_requests"] == {
        ("gatewayz_provider_window_requests", p): 10.0
    }
    states = families["gatewayz_circuit_breaker_state"]
    assert {labels[1][1]: value for (_, labels), value in states.items()} == {
        "closed": 0.0,
        "open": 1.0,
        "half_open": 0.0,
    }
    histogram = families["provider_response_time_seconds"]
    assert histogram[("provider_response_time_seconds_bucket", (("le", "0.1"), *p))] == 40.0
    assert histogram[("provider_response_time_seconds_bucket", (("le", "+Inf"), *p))] == 44.0
    assert histogram[("provider_response_time_seconds_sum", p)] == 9.0
    # cancelled calls: a counter of their own, never among the requests by outcome class
    assert families["gatewayz_provider_cancelled_calls"] == {
        ("gatewayz_provider_cancelled_calls_total", p): 5.0
    }
    requests = families["gatewayz_provider_requests"]
    assert sum(requests.values()) == 44.0 == histogram[("provider_response_time_seconds_count", p)]
    transitions = families["gatewayz_circuit_breaker_transitions"]
    labels = (("from_state", "closed"), ("provider", "openrouter"), ("to_state", "open"))
    assert transitions == {("gatewayz_circuit_breaker_transitions_total", labels): 2.0}
    assert families["inflight"] == {("inflight", (("route", "/v1"),)): 3.0}
    dropped = families["gatewayz_client_events_dropped"]
    assert {labels[0][1]: v for (_, labels), v in dropped.items()} == {
        **dict.fromkeys(DROP_CAUSES, 0.0),
        "refused": 7.0,
    }
    assert families["gatewayz_log_records_dropped"] == {
        ("gatewayz_log_records_dropped_total", ()): 3.0
    }


def test_a_worker_metric_that_would_clash_with_ours_is_not_served() -> None:
    clash = BackendFamily(
        "gatewayz_provider_requests", "counter", "x", (), (), (((), 1.0),), (), 0, 0
    )
    theirs = BackendFamily("gatewayz_aggregator_x", "gauge", "x", (), (), (((), 1.0),), (), 0, 0)
    snapshot = Snapshot(100.0, 1, 300.0, (), {}, {}, 0, backend=(clash, theirs))
    families = _collect(ServedState("r1", snapshot))
    assert "gatewayz_aggregator_x" not in families
    assert families["gatewayz_metrics_series_dropped"] == {
        ("gatewayz_metrics_series_dropped_total", (("metric", "gatewayz_provider_requests"),)): 0.0,
        ("gatewayz_metrics_series_dropped_total", (("metric", "gatewayz_aggregator_x"),)): 0.0,
    }
    assert families["gatewayz_provider_requests"] == {}  # ours, without a provider: no samples
