"""``GET /health/history``: the last hour per provider (``core.history``'s points, kept in Redis
by the leader) and this replica's view of the aggregator, what the dashboard page shows beside
the snapshot."""

from __future__ import annotations

import time

import redis
from pydantic import BaseModel, ConfigDict, Field

from aggregator.core.history import HISTORY_POINTS, HistoryPoint
from aggregator.engine.cycle import Aggregator


class HistoryResponse(BaseModel):
    """``GET /health/history``: the last hour per provider and this replica's view of the
    aggregator (what the dashboard page shows beside the snapshot)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    now: float = Field(description="this replica's Unix time when answering")
    instance: str = Field(description="the replica answering")
    leader: bool = Field(description="the replica answering holds the leader lease")
    leader_instance: str | None = Field(description="the lease holder; null: none or unknown")
    redis_reachable: bool = Field(description="Redis answered this request")
    interval_seconds: float
    breaker_interval_seconds: float
    max_age_seconds: float = Field(description="a snapshot older than this is stale (/readyz)")
    half_open_calls: int = Field(description="trial calls a half-open breaker lets through")
    half_open_timeout_seconds: float
    points: int = Field(description="points kept per provider (one per minute)")
    providers: dict[str, list[HistoryPoint]] = Field(description="provider -> points, oldest first")


def history_response(aggregator: Aggregator) -> HistoryResponse:
    """What this replica answers now (reads Redis: the lease holder and the points)."""
    served, settings = aggregator.served(), aggregator.settings
    names = [p.provider for p in served.snapshot.providers] if served.snapshot else []
    try:
        holder, points = aggregator.history(names)
        reachable = True
    except (redis.RedisError, OSError):
        holder, points, reachable = None, {}, False
    return HistoryResponse(
        now=time.time(),
        instance=served.instance,
        leader=served.leader,
        leader_instance=holder,
        redis_reachable=reachable,
        interval_seconds=served.interval_seconds,
        breaker_interval_seconds=served.breaker_interval_seconds,
        max_age_seconds=settings.readiness_max_age_intervals * settings.interval_seconds,
        half_open_calls=settings.breaker.half_open_calls,
        half_open_timeout_seconds=settings.breaker.half_open_timeout_seconds,
        points=HISTORY_POINTS,
        providers=points,
    )
