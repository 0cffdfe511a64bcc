"""/health/dashboard: the status rules (pure, no Redis), the exact JSON over a real cycle, and
the published OpenAPI schema (exact, and what a real response validates against)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient

from aggregator.core.backend import BackendFamily
from aggregator.core.health import WindowCounts
from aggregator.core.served import CycleStatus, ServedState
from aggregator.core.snapshot import ProviderHealth, Snapshot, provider_health
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.serve.dashboard import (
    DashboardCache,
    DashboardCycleStatus,
    ProviderStatus,
    format_duration,
    overall_status,
    provider_status,
    uptime,
)
from client import GatewayMetrics, MetricsClient
from gatewayz_protocol.breaker_state import CLOSED, HALF_OPEN, OPEN, BreakerState
from gatewayz_protocol.partitions import LATENCY_PARTITIONS, WINDOW_BOUNDS
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]
TARGET = 2.0


def iso(timestamp: float) -> str:
    """A Unix time as the dashboard writes it (ISO 8601, UTC, ``Z``)."""
    text = datetime.fromtimestamp(timestamp, tz=UTC).isoformat().replace("+00:00", "Z")
    return text


def _health(
    successes: int = 0,
    partition: int = 3,
    failures: int = 0,
    state: str = CLOSED,
    suppressed: bool = False,
    rate_limited: int = 0,
) -> ProviderHealth:
    """A provider whose successful calls all fall in latency partition ``partition``."""
    parts = [0] * LATENCY_PARTITIONS
    parts[partition] = successes
    window = WindowCounts(tuple(parts), failures, rate_limited, 0)
    return provider_health(
        "p", window, BreakerState(state=state), {}, {}, TARGET, 10.0, open_suppressed=suppressed
    )


# -- the rules -----------------------------------------------------------------------------------


def test_a_breaker_not_closed_is_offline_whatever_the_calls() -> None:
    assert provider_status(_health(100, state=OPEN), TARGET) == "Offline"
    assert provider_status(_health(100, state=HALF_OPEN), TARGET) == "Offline"
    assert provider_status(_health(0, state=OPEN), TARGET) == "Offline"
    assert provider_status(_health(100, state=CLOSED), TARGET) == "Online"


def test_no_traffic_is_online() -> None:
    idle = _health()
    assert idle.window_requests == 0
    assert provider_status(idle, TARGET) == "Online"


def test_the_error_rate_threshold_is_5_percent_exclusive() -> None:
    assert provider_status(_health(95, failures=5), TARGET) == "Online"  # 0.05
    assert provider_status(_health(94, failures=6), TARGET) == "Degraded"  # 0.06
    # 429s are not provider failures: no effect on the error rate
    assert provider_status(_health(10, rate_limited=90), TARGET) == "Online"


def test_the_latency_threshold_is_the_target_exclusive() -> None:
    fast = _health(20, partition=WINDOW_BOUNDS.index(2.0))  # (1.5, 2] s: p95 1.975
    slow = _health(20, partition=WINDOW_BOUNDS.index(2.5))  # (2, 2.5] s: p95 2.475
    assert fast.latency_p95_seconds is not None and slow.latency_p95_seconds is not None
    assert provider_status(fast, TARGET) == "Online"
    assert provider_status(slow, TARGET) == "Degraded"
    p95 = slow.latency_p95_seconds
    assert provider_status(slow, p95) == "Online"  # at the target: Online
    assert provider_status(slow, math.nextafter(p95, 0.0)) == "Degraded"  # just above it


def test_a_suppressed_opening_is_degraded() -> None:
    assert provider_status(_health(10, failures=0, suppressed=True), TARGET) == "Degraded"


def test_online_implies_a_health_score_of_at_least_0_985() -> None:
    worst = _health(95, partition=WINDOW_BOUNDS.index(2.0), failures=5)
    assert provider_status(worst, TARGET) == "Online"
    assert worst.health_score == pytest.approx(0.985)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "healthy"),
        (["Online"], "healthy"),
        (["Online", "Online"], "healthy"),
        (["Online", "Degraded"], "degraded"),
        (["Online", "Online", "Offline"], "degraded"),  # 1 of 3: below half
        (["Online", "Offline"], "unhealthy"),  # 1 of 2: half
        (["Offline"], "unhealthy"),
        (["Degraded", "Degraded", "Offline", "Offline"], "unhealthy"),
        (["Online", "Degraded", "Degraded", "Offline", "Offline"], "degraded"),  # 2 of 5
    ],
)
def test_overall_status(statuses: list[ProviderStatus], expected: str) -> None:
    assert overall_status(statuses) == expected


@pytest.mark.parametrize(
    ("successes", "failures", "closed", "expected"),
    [
        (0, 0, True, "100%"),
        (0, 0, False, "0%"),
        (10, 0, True, "100%"),
        (10, 0, False, "100%"),  # calls measured: the breaker does not change them
        (0, 5, True, "0%"),
        (995, 5, True, "99.5%"),
        (999, 1, True, "99.9%"),
        (9999, 1, True, "99.9%"),  # rounded down: never 100% with a failure
        (1, 2, True, "33.3%"),
        (2, 1, True, "66.6%"),
        (1, 1, True, "50%"),
        (95, 5, True, "95%"),
    ],
)
def test_uptime(successes: int, failures: int, closed: bool, expected: str) -> None:
    assert uptime(successes, failures, closed) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (None, None),
        (0.0, "0ms"),
        (0.45, "450ms"),
        (0.0124, "12ms"),
        (0.9994, "999ms"),
        (0.9996, "1.0s"),
        (1.2, "1.2s"),
        (2.475, "2.5s"),
        (60.0, "60.0s"),
    ],
)
def test_format_duration(seconds: float | None, expected: str | None) -> None:
    assert format_duration(seconds) == expected


# -- the schema is the dataclasses' own -----------------------------------------------------------


@pytest.mark.parametrize(
    ("dataclass", "field", "description"),
    [
        (Snapshot, "client_dropped", "Events clients gave up on, all causes."),
        (ProviderHealth, "transitions", "Applied breaker transitions by ``from>to``."),
        (BreakerState, "state", "closed, open or half_open"),
        (BackendFamily, "samples", "counter and gauge: (label values, value)"),
    ],
)
def test_the_published_schema_is_each_dataclass_with_its_docstrings(
    three: tuple[Aggregator, TestClient], dataclass: type[Any], field: str, description: str
) -> None:
    _, http = three
    schemas = http.get("/openapi.json").json()["components"]["schemas"]
    published = schemas[dataclass.__name__]["properties"]
    assert list(published) == [f.name for f in dataclasses.fields(dataclass)]
    assert published[field]["description"] == description


def test_the_cycle_status_shows_todays_fields() -> None:
    names = {f.name for f in dataclasses.fields(CycleStatus)}
    assert set(DashboardCycleStatus.model_fields) <= names
    assert list(DashboardCycleStatus.model_fields) == [
        "cycles_ok",
        "cycles_failed",
        "last_success_at",
        "last_duration_seconds",
        "last_error",
    ]


def test_the_body_is_built_once_per_served_state() -> None:
    clock = FakeClock()
    cache = DashboardCache(TARGET, clock)
    state = ServedState(instance="x", snapshot=Snapshot(taken_at=clock.now, cycle=1))
    body = cache.body(state)
    assert cache.body(state) is body
    failed = ServedState(instance="x", status=CycleStatus(cycles_failed=1))
    other = cache.body(failed)
    assert json.loads(other)["status"]["cycles_failed"] == 1
    # before the first snapshot the answer's time stands for the snapshot's: built per request
    clock.advance(5)
    later = json.loads(cache.body(failed))
    assert later["last_updated"] == "2027-01-15T08:00:05Z"
    assert later["uptime_metrics"]["last_updated"] == "2027-01-15T08:00:05Z"


# -- over a real cycle ---------------------------------------------------------------------------


def _three_providers(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> Aggregator:
    """fast (Online), slow (Degraded: p95 above the 2 s target), down (Offline: breaker open)."""
    metrics = make_client(clock=clock)
    for _ in range(20):
        metrics.record("slow", 2.2, status_code=200)
    for _ in range(19):
        metrics.record("fast", 0.3, status_code=200)
    # the 20th fast call, through the gateway helper: backend families in the snapshot too
    GatewayMetrics(metrics).record_inference("fast", "model-a", 0.3, status_code=200)
    metrics.record("fast", 0.3, status_code=429)
    for _ in range(25):
        metrics.record("down", 1.0, status_code=503)
    assert metrics.flush(timeout=5)
    # schemathesis's ASGI client always says Host: testserver (the one name allowed here)
    aggregator = make_aggregator(allowed_hosts=("testserver",))
    clock.advance(1)
    (opened,) = aggregator.run_breaker_cycle()  # only "down" fails
    assert opened.new.state == "open"
    assert aggregator.run_cycle() is not None
    return aggregator


@pytest.fixture
def three(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> Iterator[tuple[Aggregator, TestClient]]:
    aggregator = _three_providers(make_client, make_aggregator, clock)
    with TestClient(create_app(aggregator)) as http:
        yield aggregator, http


def test_before_the_first_cycle_the_status_is_unknown(make_aggregator: MakeAggregator) -> None:
    before = datetime.now(UTC)
    response = TestClient(create_app(make_aggregator()), base_url="http://127.0.0.1").get(
        "/health/dashboard"
    )
    assert response.status_code == 200
    body = response.json()
    answered = body.pop("last_updated")
    assert before <= datetime.fromisoformat(answered) <= datetime.now(UTC)
    assert body == {
        "status": {
            "cycles_ok": 0,
            "cycles_failed": 0,
            "last_success_at": None,
            "last_duration_seconds": 0.0,
            "last_error": None,
        },
        "snapshot": None,
        "system_status": {
            "overall_status": "unknown",
            "total_providers": 0,
            "healthy_providers": 0,
            "degraded_providers": 0,
            "unhealthy_providers": 0,
            "last_updated": None,
            "total_models": 0,
            "healthy_models": 0,
            "degraded_models": 0,
            "unhealthy_models": 0,
            "total_gateways": 0,
            "healthy_gateways": 0,
            "tracked_models": 0,
            "tracked_providers": 0,
            "system_uptime": 0.0,
        },
        "providers": [],
        "models": [],
        "uptime_metrics": {
            "status": "unknown",
            "uptime_percentage": 0.0,
            "response_time_avg": None,
            "last_incident": None,
            "total_requests": 0,
            "successful_requests": 0,
            "failed_requests": 0,
            "error_rate": 0.0,
            "last_updated": answered,
        },
        "monitoring_active": False,
    }


def test_the_dashboard_json_of_an_online_a_degraded_and_an_offline_provider(
    three: tuple[Aggregator, TestClient], clock: FakeClock
) -> None:
    aggregator, http = three
    response = http.get("/health/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    served = aggregator.served()
    assert served.snapshot is not None
    assert served.snapshot.taken_at == clock.now == 1_800_000_001.0
    when = "2027-01-15T08:00:01Z"
    # 40 successes (fast's 20, slow's 20), 25 failures (down's); the 429 in neither
    window_uptime = 100 * 40 / 65
    assert body["system_status"] == {
        "overall_status": "degraded",  # 1 of 3 Offline: below half
        "total_providers": 3,
        "healthy_providers": 1,
        "degraded_providers": 1,
        "unhealthy_providers": 1,
        "last_updated": when,
        "total_models": 1,
        "healthy_models": 1,
        "degraded_models": 0,
        "unhealthy_models": 0,
        "total_gateways": 3,
        "healthy_gateways": 1,
        "tracked_models": 1,
        "tracked_providers": 3,
        "system_uptime": window_uptime,
    }
    assert body["providers"] == [
        {
            "provider": "down",
            "gateway": "down",
            "status": "Offline",
            "status_color": "red",
            "models_count": 0,
            "healthy_count": 0,
            "uptime": "0%",
            "avg_response_time": None,  # no successful call: no p95
            "last_updated": when,
        },
        {
            "provider": "fast",
            "gateway": "fast",
            "status": "Online",
            "status_color": "green",
            "models_count": 1,  # model-a, booked through GatewayMetrics
            "healthy_count": 1,
            "uptime": "100%",  # the 429 is not a failure
            "avg_response_time": "488ms",  # p95 in (0.25, 0.5]: 0.25 + 0.25 * 19 / 20
            "last_updated": when,
        },
        {
            "provider": "slow",
            "gateway": "slow",
            "status": "Degraded",
            "status_color": "yellow",
            "models_count": 0,
            "healthy_count": 0,
            "uptime": "100%",
            "avg_response_time": "2.5s",  # p95 in (2, 2.5]: 2.475
            "last_updated": when,
        },
    ]
    assert body["models"] == [
        {
            "model_id": "model-a",
            "name": "model-a",
            "provider": "fast",
            "status": "Healthy",
            "status_color": "green",
            "response_time": "300ms",  # the mean of its one call
            "uptime": "100%",
            "last_checked": "08:00:01",
        }
    ]
    down = next(p for p in served.snapshot.providers if p.provider == "down")
    assert body["uptime_metrics"] == {
        "status": "degraded",
        "uptime_percentage": window_uptime,
        # the p95s (0.4875 s, 2.475 s) weighted by 20 successful calls each, in ms
        "response_time_avg": 1000 * (0.4875 * 20 + 2.475 * 20) / 40,
        "last_incident": iso(down.breaker.since),  # down's breaker opened: in progress
        "total_requests": 66,  # every outcome: 40 + 25 + the 429
        "successful_requests": 40,
        "failed_requests": 25,
        "error_rate": 100 * 25 / 65,
        "last_updated": when,
    }
    assert body["last_updated"] == when
    assert body["monitoring_active"] is True
    # today's fields, unchanged
    assert body["snapshot"] == json.loads(served.snapshot.to_json())
    as_copied = json.dumps(dataclasses.asdict(served.snapshot), separators=(",", ":"))
    assert served.snapshot.to_json() == as_copied  # the fast path writes the same text
    assert body["status"] == {
        "cycles_ok": 1,
        "cycles_failed": 0,
        "last_success_at": clock.now,
        "last_duration_seconds": served.status.last_duration_seconds,
        "last_error": None,
    }
    assert body["snapshot"]["backend"]  # the workers' metrics are there too


# -- the published schema ------------------------------------------------------------------------


def _untyped(node: Any, where: str = "") -> Iterator[str]:
    """Paths of schemas that stand for anything: ``additionalProperties: true``, an object
    without properties or typed values, or a schema with no type at all."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is True:
            yield where
        if node.get("type") == "object" and not (
            node.get("properties") or isinstance(node.get("additionalProperties"), dict)
        ):
            yield where
        typed = {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"}
        for key in ("properties", "additionalProperties", "items", "prefixItems", "anyOf"):
            child = node.get(key)
            children = child.items() if isinstance(child, dict) and key == "properties" else None
            if children is not None:
                for name, schema in children:
                    if not typed & set(schema):
                        yield f"{where}.{name}"
                    yield from _untyped(schema, f"{where}.{name}")
            elif isinstance(child, list):
                for i, schema in enumerate(child):
                    yield from _untyped(schema, f"{where}.{key}[{i}]")
            elif isinstance(child, dict):
                yield from _untyped(child, f"{where}.{key}")


def test_the_published_schema_types_every_known_structure(
    three: tuple[Aggregator, TestClient],
) -> None:
    _, http = three
    spec = http.get("/openapi.json").json()
    response = spec["paths"]["/health/dashboard"]["get"]["responses"]["200"]
    ref = response["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/DashboardResponse"
    schemas = spec["components"]["schemas"]
    for name in (
        "DashboardResponse",
        "DashboardCycleStatus",
        "Snapshot",
        "ProviderHealth",
        "BreakerState",
        "BackendFamily",
        "SystemStatus",
        "ProviderStatusEntry",
        "ModelStatusEntry",
        "UptimeMetrics",
    ):
        assert schemas[name]["additionalProperties"] is False, name
        assert list(_untyped(schemas[name], name)) == []
    entry = schemas["ProviderStatusEntry"]["properties"]
    assert entry["status"]["enum"] == ["Online", "Degraded", "Offline"]
    assert entry["status_color"]["enum"] == ["green", "yellow", "red"]
    assert entry["last_updated"] == {
        "type": "string",
        "format": "date-time",
        "title": "Last Updated",
    }
    overall = schemas["SystemStatus"]["properties"]["overall_status"]
    assert overall["enum"] == ["healthy", "degraded", "unhealthy", "unknown"]


def test_a_real_response_validates_against_the_published_schema(
    three: tuple[Aggregator, TestClient], make_aggregator: MakeAggregator
) -> None:
    _, http = three
    schema = schemathesis.openapi.from_asgi("/openapi.json", http.app)
    operation = schema["/health/dashboard"]["GET"]
    response = http.get("/health/dashboard")
    operation.validate_response(response)
    empty = TestClient(create_app(make_aggregator()), base_url="http://127.0.0.1").get(
        "/health/dashboard"
    )
    operation.validate_response(empty)  # snapshot null

    # the check bites: a wrong type, an unknown field, a status outside the enum
    body = response.json()
    real = schemathesis.Response.from_any(response)
    for corrupt, valid in (
        (lambda b: None, True),  # the control: the body unchanged, through the same path
        (lambda b: b["snapshot"]["providers"][0]["breaker"].update(epoch="1"), False),
        (lambda b: b["snapshot"].update(surprise=1), False),
        (lambda b: b["providers"][0].update(status="Up"), False),
    ):
        bad = json.loads(json.dumps(body))
        corrupt(bad)
        forged = schemathesis.Response(
            status_code=200,
            headers={"content-type": ["application/json"]},
            content=json.dumps(bad).encode(),
            request=real.request,
            elapsed=0.0,
            verify=True,
        )
        assert operation.is_valid_response(forged) is valid
