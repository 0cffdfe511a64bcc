"""``GET /health/dashboard``: the response models (the OpenAPI schema) and the status rules.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from aggregator.core.served import ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot
from gatewayz_protocol.breaker_state import CLOSED

ProviderStatus = Literal["Online", "Degraded", "Offline"]
OverallStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
StatusColor = Literal["green", "yellow", "red"]

DEGRADED_ERROR_RATE: Final = 0.05
"""A closed breaker's provider is Degraded above this window error rate (0.05 itself: Online)."""
UNHEALTHY_OFFLINE_SHARE: Final = 0.5
"""The system is unhealthy when at least this share of its providers is Offline."""
STATUS_COLORS: Final[dict[ProviderStatus, StatusColor]] = {
    "Online": "green",
    "Degraded": "yellow",
    "Offline": "red",
}

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


class ProviderStatusEntry(_Strict):
    """One provider as the gateway frontend shows it."""

    provider: str
    status: ProviderStatus
    status_color: StatusColor
    uptime: str = Field(description="successes / (successes + failures) in the window: 99.5%")
    avg_response_time: str | None = Field(
        description="p95 latency of successful calls in the window (not a mean: the snapshot "
        "keeps no windowed mean): 450ms, 1.2s; null without any"
    )
    last_updated: datetime


class DashboardResponse(_Strict):
    """``GET /health/dashboard``."""

    status: DashboardCycleStatus
    snapshot: Snapshot | None = Field(description="null before the first cycle")
    system_status: SystemStatus
    providers: list[ProviderStatusEntry]


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
    health: ProviderHealth, taken_at: datetime, latency_target_s: float
) -> ProviderStatusEntry:
    """One provider's frontend fields."""
    status = provider_status(health, latency_target_s)
    outcomes = health.window_by_outcome
    return ProviderStatusEntry(
        provider=health.provider,
        status=status,
        status_color=STATUS_COLORS[status],
        uptime=uptime(
            outcomes.get("success", 0), outcomes.get("failure", 0), health.breaker.state == CLOSED
        ),
        avg_response_time=format_duration(health.latency_p95_seconds),
        last_updated=taken_at,
    )


def dashboard(served: ServedState, latency_target_s: float) -> DashboardResponse:
    """The whole response for one served state (today's ``status`` and ``snapshot`` as they
    were, plus ``system_status`` and ``providers``)."""
    status, snapshot = served.status, served.snapshot
    cycle_status = DashboardCycleStatus(
        cycles_ok=status.cycles_ok,
        cycles_failed=status.cycles_failed,
        last_success_at=status.last_success_at,
        last_duration_seconds=status.last_duration_seconds,
        last_error=status.last_error,
    )
    if snapshot is None:
        return DashboardResponse(
            status=cycle_status,
            snapshot=None,
            system_status=SystemStatus(
                overall_status="unknown",
                total_providers=0,
                healthy_providers=0,
                degraded_providers=0,
                unhealthy_providers=0,
                last_updated=None,
            ),
            providers=[],
        )
    return _with_snapshot(cycle_status, snapshot, latency_target_s)


def _with_snapshot(
    cycle_status: DashboardCycleStatus, snapshot: Snapshot, latency_target_s: float
) -> DashboardResponse:
    taken_at = iso_utc(snapshot.taken_at)
    entries = [provider_entry(p, taken_at, latency_target_s) for p in snapshot.providers]
    statuses = [entry.status for entry in entries]
    return DashboardResponse(
        status=cycle_status,
        snapshot=snapshot,
        system_status=SystemStatus(
            overall_status=overall_status(statuses),
            total_providers=len(statuses),
            healthy_providers=statuses.count("Online"),
            degraded_providers=statuses.count("Degraded"),
            unhealthy_providers=statuses.count("Offline"),
            last_updated=taken_at,
        ),
        providers=entries,
    )


class DashboardCache:
    """The JSON body of the last served state: a served state is immutable and replaced as a
    whole, so its body is computed once, by the first request that sees it."""

    def __init__(self, latency_target_s: float) -> None:
        self._latency_target_s = latency_target_s
        self._last: tuple[ServedState, bytes] | None = None

    def body(self, served: ServedState) -> bytes:
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] is served:
            return last[1]
        body = dashboard(served, self._latency_target_s).model_dump_json().encode()
        self._last = (served, body)
        return body
