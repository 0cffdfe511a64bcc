"""``GET /health/dashboard``'s response models: its OpenAPI schema, strict (no field unknown,
none untyped). Today's fields (the cycle status and the snapshot, described by the snapshot's
own dataclasses: no model copies them) and the gateway frontend's (the origin's
``HealthDashboardResponse``: ``system_status``, ``providers[]``, ``models[]``,
``uptime_metrics``, ``last_updated``, ``monitoring_active``), so one answer validates against
both. The rules that fill them: ``dashboard``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aggregator.core.snapshot import Snapshot

ProviderStatus = Literal["Online", "Degraded", "Offline"]
ModelStatus = Literal["Healthy", "Degraded", "Unhealthy"]
OverallStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
StatusColor = Literal["green", "yellow", "red"]
UptimeStatus = Literal["operational", "degraded", "outage", "unknown"]

# -- today's fields -------------------------------------------------------------------------------
# The snapshot is described by its own dataclasses (``core.schema``): no model copies them.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DashboardCycleStatus(_Strict):
    """The aggregator's own cycle status (the fields of ``CycleStatus`` shown since v0.1)."""

    cycles_ok: int
    cycles_failed: int
    last_success_at: float | None = Field(description="Unix time of the last successful cycle")
    last_duration_seconds: float
    last_error: str | None


# -- the gateway frontend's fields ---------------------------------------------------------------


class SystemStatus(_Strict):
    """The whole system, from every provider's status."""

    overall_status: OverallStatus
    total_providers: int
    healthy_providers: int = Field(description="providers Online")
    degraded_providers: int = Field(description="providers Degraded")
    unhealthy_providers: int = Field(description="providers Offline")
    last_updated: datetime | None = Field(description="the snapshot's time, UTC; null before it")
    total_models: int = Field(description="model rows (models[])")
    healthy_models: int = Field(description="model rows Healthy")
    degraded_models: int = Field(description="model rows Degraded")
    unhealthy_models: int = Field(description="model rows Unhealthy")
    total_gateways: int = Field(description="providers (each its own gateway)")
    healthy_gateways: int = Field(description="providers Online")
    tracked_models: int = Field(description="models with figures (model rows)")
    tracked_providers: int = Field(description="providers with calls in the window")
    system_uptime: float = Field(description="uptime_metrics.uptime_percentage")


class ProviderStatusEntry(_Strict):
    """One provider as the gateway frontend shows it."""

    provider: str
    gateway: str = Field(description="the provider itself: it is what the gateway calls")
    status: ProviderStatus
    status_color: StatusColor
    models_count: int = Field(description="its model rows")
    healthy_count: int = Field(description="its model rows Healthy")
    uptime: str = Field(description="successes / (successes + failures) in the window: 99.5%")
    avg_response_time: str | None = Field(
        description="p95 latency of successful calls in the window (not a mean: the snapshot "
        "keeps no windowed mean): 450ms, 1.2s; null without any"
    )
    last_updated: datetime


class ModelStatusEntry(_Strict):
    """One model, from the workers' model metrics since they began (not a window)."""

    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    name: str = Field(description="model_id after its last /")
    provider: str
    status: ModelStatus = Field(description="its provider's: no window is kept per model")
    status_color: StatusColor
    response_time: str | None = Field(
        description="mean latency of its calls, every outcome: 450ms, 1.2s; null without any"
    )
    uptime: str = Field(description="successes / (successes + failures): 99.5%")
    last_checked: str | None = Field(description="the snapshot's time of day, UTC: 08:00:01")


class UptimeMetrics(_Strict):
    """The whole system for a status page, from the window."""

    status: UptimeStatus = Field(description="from overall_status (healthy: operational, ...)")
    uptime_percentage: float = Field(description="window successes / (successes + failures)")
    response_time_avg: float | None = Field(
        description="ms: the providers' p95, weighted by their successful calls; null without"
    )
    last_incident: datetime | None = Field(
        description="the latest transition of a breaker open or half-open now; null if none"
    )
    total_requests: int = Field(description="calls in the window, every outcome")
    successful_requests: int
    failed_requests: int = Field(description="failures (not rate limited, not caller errors)")
    error_rate: float = Field(description="percent: failures / (successes + failures)")
    last_updated: datetime


class DashboardResponse(_Strict):
    """``GET /health/dashboard``: today's fields and the origin frontend's."""

    status: DashboardCycleStatus
    snapshot: Snapshot | None = Field(description="null before the first cycle")
    system_status: SystemStatus
    providers: list[ProviderStatusEntry]
    models: list[ModelStatusEntry]
    uptime_metrics: UptimeMetrics
    last_updated: datetime = Field(description="the snapshot's time; before it: the answer's")
    monitoring_active: bool = Field(description="a snapshot is served and the last cycle ran")
