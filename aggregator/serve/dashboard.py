"""``GET /health/dashboard``: the status rules and the response built with them (its models, the
OpenAPI schema: ``dashboard_models``).

The rules are pure functions of one provider's figures in the snapshot (README "Health
dashboard"):

- **Offline** while the breaker is open or half-open (availability 0).
- **Degraded** with the breaker closed when the window error rate is above 5 %
  (``DEGRADED_ERROR_RATE``), or the window p95 of successful calls is above the latency target
  (``--latency-target``, 2 s), or the breaker would open but the max-open-share guard holds it
  closed (``open_suppressed``).
- **Online** otherwise, including a provider without traffic in the window.

The health score is shown in the snapshot, not used as a separate rule: with the breaker closed,
an error rate of at most 5 % and a p95 at or below the target, it is at least 0.985.

``overall_status``: ``unknown`` before the first cycle; ``unhealthy`` when at least half of the
providers (``UNHEALTHY_OFFLINE_SHARE``) are Offline; ``degraded`` when any is Offline or
Degraded; ``healthy`` otherwise (also with no provider at all).

The response is a superset of the origin gateway's ``HealthDashboardResponse`` (its frontend's
model: ``system_status``, ``providers[]`` with ``gateway``, ``models[]``, ``uptime_metrics``,
``last_updated``, ``monitoring_active``); a provider's gateway is itself (the origin's rows name
the gateway a provider was called through, and here the provider is what is called). A model's
status is its provider's (Healthy, Degraded, Unhealthy): the aggregator keeps no window per
model; its figures come from the workers' model metrics (``core.dashboard_figures``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

from aggregator.core.dashboard_figures import (
    ModelFigures,
    last_incident,
    model_figures,
    response_time_ms,
    system_uptime,
)
from aggregator.core.served import ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot
from aggregator.serve.dashboard_models import (
    DashboardCycleStatus,
    DashboardResponse,
    ModelStatus,
    ModelStatusEntry,
    OverallStatus,
    ProviderStatus,
    ProviderStatusEntry,
    StatusColor,
    SystemStatus,
    UptimeMetrics,
    UptimeStatus,
)
from gatewayz_protocol.breaker_state import CLOSED

__all__ = [
    "DashboardCache",
    "DashboardCycleStatus",
    "DashboardResponse",
    "ProviderStatus",
    "dashboard",
    "format_duration",
    "overall_status",
    "provider_status",
    "uptime",
]

DEGRADED_ERROR_RATE: Final = 0.05
"""A closed breaker's provider is Degraded above this window error rate (0.05 itself: Online)."""
UNHEALTHY_OFFLINE_SHARE: Final = 0.5
"""The system is unhealthy when at least this share of its providers is Offline."""
STATUS_COLORS: Final[dict[ProviderStatus, StatusColor]] = {
    "Online": "green",
    "Degraded": "yellow",
    "Offline": "red",
}
MODEL_STATUS: Final[dict[ProviderStatus, ModelStatus]] = {
    "Online": "Healthy",
    "Degraded": "Degraded",
    "Offline": "Unhealthy",
}
UPTIME_STATUS: Final[dict[OverallStatus, UptimeStatus]] = {
    "healthy": "operational",
    "degraded": "degraded",
    "unhealthy": "outage",
    "unknown": "unknown",
}
"""The origin's mapping of the overall status onto a status page's words."""

# -- the rules ------------------------------------------------------------------------------------


def provider_status(health: ProviderHealth, latency_target_s: float) -> ProviderStatus:
    """Offline with the breaker not closed; Degraded on errors above 5 %, a p95 above the
    target or a suppressed opening; Online otherwise (no traffic included)."""
    if health.breaker.state != CLOSED:
        return "Offline"
    slow = health.latency_p95_seconds is not None and health.latency_p95_seconds > latency_target_s
    if health.error_rate > DEGRADED_ERROR_RATE or slow or health.open_suppressed:
        return "Degraded"
    return "Online"


def overall_status(statuses: Sequence[ProviderStatus]) -> OverallStatus:
    """unhealthy when at least half are Offline, degraded when any is not Online, else healthy
    (no provider: healthy)."""
    offline = statuses.count("Offline")
    if statuses and offline >= UNHEALTHY_OFFLINE_SHARE * len(statuses):
        return "unhealthy"
    if any(status != "Online" for status in statuses):
        return "degraded"
    return "healthy"


def uptime(successes: int, failures: int, breaker_closed: bool) -> str:
    """successes / (successes + failures) as a percentage, rounded down to 0.1 (so any failure
    shows below 100%), without a trailing ``.0``. With no such call: 100% while the breaker is
    closed, 0% while it is not."""
    calls = successes + failures
    if calls == 0:
        return "100%" if breaker_closed else "0%"
    tenths = successes * 1000 // calls
    whole, tenth = divmod(tenths, 10)
    return f"{whole}%" if tenth == 0 else f"{whole}.{tenth}%"


def format_duration(seconds: float | None) -> str | None:
    """Whole milliseconds under a second (``450ms``), seconds with one decimal from there
    (``1.2s``); None stays None."""
    if seconds is None:
        return None
    millis = round(seconds * 1000)
    return f"{millis}ms" if millis < 1000 else f"{seconds:.1f}s"


def iso_utc(timestamp: float) -> datetime:
    """A Unix time as an aware UTC datetime (serialized as ISO 8601 with ``Z``)."""
    return datetime.fromtimestamp(timestamp, tz=UTC)


def provider_entry(
    health: ProviderHealth,
    taken_at: datetime,
    latency_target_s: float,
    models: Sequence[ModelStatusEntry] = (),
) -> ProviderStatusEntry:
    """One provider's frontend fields (``models``: its model rows)."""
    status = provider_status(health, latency_target_s)
    outcomes = health.window_by_outcome
    return ProviderStatusEntry(
        provider=health.provider,
        gateway=health.provider,
        status=status,
        status_color=STATUS_COLORS[status],
        models_count=len(models),
        healthy_count=sum(model.status == "Healthy" for model in models),
        uptime=uptime(
            outcomes.get("success", 0), outcomes.get("failure", 0), health.breaker.state == CLOSED
        ),
        avg_response_time=format_duration(health.latency_p95_seconds),
        last_updated=taken_at,
    )


def model_entry(
    figures: ModelFigures, provider: ProviderStatus, taken_at: datetime
) -> ModelStatusEntry:
    """One model's row: its provider's status, its own figures."""
    status = MODEL_STATUS[provider]
    return ModelStatusEntry(
        model_id=figures.model,
        name=figures.model.rsplit("/", 1)[-1],
        provider=figures.provider,
        status=status,
        status_color=STATUS_COLORS[provider],
        response_time=format_duration(figures.latency_mean_seconds),
        uptime=uptime(figures.successes, figures.failures, provider != "Offline"),
        last_checked=taken_at.strftime("%H:%M:%S"),
    )


def dashboard(
    served: ServedState, latency_target_s: float, now: float | None = None
) -> DashboardResponse:
    """The whole response for one served state (today's ``status`` and ``snapshot`` as they
    were, plus the frontend's fields). ``now`` (default: this host's clock) stands for the
    snapshot's time before there is one."""
    status, snapshot = served.status, served.snapshot
    cycle_status = DashboardCycleStatus(
        cycles_ok=status.cycles_ok,
        cycles_failed=status.cycles_failed,
        last_success_at=status.last_success_at,
        last_duration_seconds=status.last_duration_seconds,
        last_error=status.last_error,
    )
    if snapshot is not None:
        return _with_snapshot(cycle_status, snapshot, latency_target_s)
    answered = iso_utc(time.time() if now is None else now)
    counts = dict.fromkeys(("total", "healthy", "degraded", "unhealthy"), 0)
    return DashboardResponse(
        status=cycle_status,
        snapshot=None,
        system_status=_system_status("unknown", counts, counts, None, 0, 0.0),
        providers=[],
        models=[],
        uptime_metrics=UptimeMetrics(
            status="unknown",
            uptime_percentage=0.0,
            response_time_avg=None,
            last_incident=None,
            total_requests=0,
            successful_requests=0,
            failed_requests=0,
            error_rate=0.0,
            last_updated=answered,
        ),
        last_updated=answered,
        monitoring_active=False,
    )


def _with_snapshot(
    cycle_status: DashboardCycleStatus, snapshot: Snapshot, latency_target_s: float
) -> DashboardResponse:
    taken_at = iso_utc(snapshot.taken_at)
    statuses = {p.provider: provider_status(p, latency_target_s) for p in snapshot.providers}
    models = [
        model_entry(figures, statuses[figures.provider], taken_at)
        for figures in model_figures(snapshot.backend, statuses)
    ]
    by_provider: dict[str, list[ModelStatusEntry]] = {}
    for model in models:
        by_provider.setdefault(model.provider, []).append(model)
    entries = [
        provider_entry(p, taken_at, latency_target_s, by_provider.get(p.provider, ()))
        for p in snapshot.providers
    ]
    listed = [entry.status for entry in entries]
    overall = overall_status(listed)
    providers = _counts(listed, ("Online", "Degraded", "Offline"))
    by_model = _counts([m.status for m in models], ("Healthy", "Degraded", "Unhealthy"))
    uptime_metrics = _uptime_metrics(snapshot.providers, overall, taken_at)
    tracked = sum(p.window_requests > 0 for p in snapshot.providers)
    return DashboardResponse(
        status=cycle_status,
        snapshot=snapshot,
        system_status=_system_status(
            overall, providers, by_model, taken_at, tracked, uptime_metrics.uptime_percentage
        ),
        providers=entries,
        models=models,
        uptime_metrics=uptime_metrics,
        last_updated=taken_at,
        monitoring_active=cycle_status.last_error is None,
    )


def _counts(statuses: Sequence[str], names: tuple[str, str, str]) -> dict[str, int]:
    """The total, and how many are each of ``names`` (good, middling, bad)."""
    good, middling, bad = (statuses.count(name) for name in names)
    return {"total": len(statuses), "healthy": good, "degraded": middling, "unhealthy": bad}


def _system_status(
    overall: OverallStatus,
    providers: dict[str, int],
    models: dict[str, int],
    taken_at: datetime | None,
    tracked_providers: int,
    uptime_percentage: float,
) -> SystemStatus:
    return SystemStatus(
        overall_status=overall,
        total_providers=providers["total"],
        healthy_providers=providers["healthy"],
        degraded_providers=providers["degraded"],
        unhealthy_providers=providers["unhealthy"],
        last_updated=taken_at,
        total_models=models["total"],
        healthy_models=models["healthy"],
        degraded_models=models["degraded"],
        unhealthy_models=models["unhealthy"],
        total_gateways=providers["total"],
        healthy_gateways=providers["healthy"],
        tracked_models=models["total"],
        tracked_providers=tracked_providers,
        system_uptime=uptime_percentage,
    )


def _uptime_metrics(
    providers: Sequence[ProviderHealth], overall: OverallStatus, taken_at: datetime
) -> UptimeMetrics:
    successes = sum(p.window_by_outcome.get("success", 0) for p in providers)
    failures = sum(p.window_by_outcome.get("failure", 0) for p in providers)
    incident = last_incident(providers)
    return UptimeMetrics(
        status=UPTIME_STATUS[overall],
        uptime_percentage=system_uptime(providers),
        response_time_avg=response_time_ms(providers),
        last_incident=None if incident is None else iso_utc(incident),
        total_requests=sum(p.window_requests for p in providers),
        successful_requests=successes,
        failed_requests=failures,
        error_rate=100.0 * failures / (successes + failures) if successes + failures else 0.0,
        last_updated=taken_at,
    )


class DashboardCache:
    """The JSON body of the last served state: a served state is immutable and replaced as a
    whole, so its body is computed once, by the first request that sees it. Before the first
    snapshot the body holds the answer's time (``clock``), so it is computed per request."""

    def __init__(self, latency_target_s: float, clock: Callable[[], float] = time.time) -> None:
        self._latency_target_s = latency_target_s
        self._clock = clock
        self._last: tuple[ServedState, bytes] | None = None

    def body(self, served: ServedState) -> bytes:
        if served.snapshot is None:
            answer = dashboard(served, self._latency_target_s, self._clock())
            return answer.model_dump_json().encode()
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] is served:
            return last[1]
        body = dashboard(served, self._latency_target_s).model_dump_json().encode()
        self._last = (served, body)
        return body
