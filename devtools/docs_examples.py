"""Examples the docs' generated pages are rendered from (``docs_reference``): a served state
that holds every kind of value the collector exports, and the aggregator's app (no I/O)."""

from __future__ import annotations

from fastapi import FastAPI

from aggregator.core.backend import BackendFamily
from aggregator.core.health import WindowCounts
from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.readings import RedisMemory
from aggregator.core.served import CycleStatus, ServedState
from aggregator.core.snapshot import Snapshot, provider_health
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.partitions import LATENCY_PARTITIONS
from gatewayz_transport.connection import connect


def every_kind_of_state() -> ServedState:
    counts = WindowCounts((1,) * LATENCY_PARTITIONS, 1, 1, 1)
    health = provider_health(
        "openrouter", counts, BreakerState(), {"n:success": 1}, {"closed>open": 1}, 2.0, 10.0
    )
    # A worker's family, for the per-metric counts' `metric` label: the metrics page leaves the
    # family itself out (the workers' own families are not the aggregator's).
    worker_metric = BackendFamily("requests", "counter", "help", (), (), (((), 1.0),), (), 0, 0)
    snapshot = Snapshot(
        1.0,
        1,
        providers=(health,),
        redis_ops={"zadd": 1},
        client_rejected={"invalid_latency": 1},
        client_dropped_by_cause={"buffer_full": 1},
        client_clock_offsets={"host:1": 0.0},
        backend=(worker_metric,),
        model_breakers=(ModelBreaker("openrouter", "openai/gpt-4o"),),
    )
    status = CycleStatus(
        cycles_ok=1,
        last_success_at=1.0,
        redis_memory=RedisMemory(1, 2, "noeviction", 0),
        clock_offset_seconds=0.0,
        values_skipped={"totals": 1},
    )
    return ServedState("replica", snapshot, status, leader=True)


def example_app() -> FastAPI:
    """The aggregator's app over settings' defaults (building it does no I/O)."""
    settings = AggregatorSettings()
    return create_app(Aggregator(settings, connect(settings.redis_url, 1.0), clock=lambda: 0.0))
