"""/health/dashboard against the origin gateway's ``HealthDashboardResponse``: its JSON Schema is a
fixture (``tests/fixtures/origin_health_dashboard_response.schema.json``, made by
``python -m devtools.origin_schema`` from the origin's models at the commit its ``$comment``
names). The aggregator's real answer validates, over real traffic with breakers in every state
and model rows; the token goes as the origin's frontend sends its API key; the check bites."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.serve.dashboard_models import DashboardResponse
from client import GatewayMetrics, MetricsClient
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]
FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / ("origin_health_dashboard_response.schema.json")
)
ORIGIN = jsonschema_rs.validator_for(json.loads(FIXTURE.read_text()), validate_formats=True)
READER, OPERATOR = "api-key-7Qx2", "operator-key-9Lm3"
AS_FRONTEND = {"Authorization": f"Bearer {READER}"}  # how the origin's frontend sends its key


def origin_errors(body: object) -> list[str]:
    """Where ``body`` fails the origin's model, one line per error (empty: it validates)."""
    return sorted(
        f"/{'/'.join(str(part) for part in error.instance_path)}: {error.message}"
        for error in ORIGIN.iter_errors(body)
    )


def _traffic(metrics: MetricsClient) -> None:
    gateway = GatewayMetrics(metrics)
    book = gateway.record_inference
    for _ in range(20):
        book("openai", "openai/gpt-4o", 0.4, status_code=200)
        book("anthropic", "claude-3-5-sonnet", 3.0, status_code=200)  # p95 above 2 s: Degraded
    for i in range(20):
        book("openai", "openai/gpt-4o-mini", 0.2, status_code=503 if i < 2 else 200)
    for _ in range(25):
        book("flaky", "flaky/large", 1.0, status_code=503)
        book("down", "down-1", 1.0, status_code=502)


def _every_state(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> tuple[Aggregator, TestClient]:
    """openai Online, anthropic Degraded, flaky half-open, down open (re-opened after its trial
    calls failed), pinned forced open, held forced closed, idle listed without traffic."""
    metrics = make_client(clock=clock)
    _traffic(metrics)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(providers=("idle",), auth_token=READER, operator_token=OPERATOR)
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    clock.advance(1)
    assert [t.new.state for t in aggregator.run_breaker_cycle()] == ["open", "open"]
    clock.advance(31)  # past the open time: both half-open
    assert [t.new.state for t in aggregator.run_breaker_cycle()] == ["half_open", "half_open"]
    clock.advance(1)
    for _ in range(5):  # down's trial calls fail: open again
        metrics.record("down", 1.0, status_code=502)
    assert metrics.flush(timeout=5)
    clock.advance(1)
    assert [t.new.state for t in aggregator.run_breaker_cycle()] == ["open"]
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    for path in ("pinned/open", "held/close"):
        assert http.post(f"/admin/breakers/{path}?create=true", headers=operator).status_code == 200
    assert aggregator.run_cycle() is not None
    return aggregator, http


def test_the_answer_validates_against_the_origins_model(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    aggregator, http = _every_state(make_client, make_aggregator, clock)
    assert http.get("/health/dashboard").status_code == 401  # the origin requires a key too
    response = http.get("/health/dashboard", headers=AS_FRONTEND)
    assert response.status_code == 200
    body = response.json()
    assert origin_errors(body) == []
    DashboardResponse.model_validate(body)  # and our own, strict, schema
    snapshot = aggregator.served().snapshot
    assert snapshot is not None
    breakers = {p.provider: (p.breaker.state, p.breaker.forced) for p in snapshot.providers}
    assert breakers == {
        "anthropic": ("closed", False),
        "down": ("open", False),
        "flaky": ("half_open", False),
        "held": ("closed", True),
        "idle": ("closed", False),
        "openai": ("closed", False),
        "pinned": ("open", True),
    }
    statuses = {
        p["provider"]: (p["gateway"], p["status"], p["models_count"]) for p in body["providers"]
    }
    assert statuses == {
        "anthropic": ("anthropic", "Degraded", 1),
        "down": ("down", "Offline", 1),
        "flaky": ("flaky", "Offline", 1),
        "held": ("held", "Online", 0),
        "idle": ("idle", "Online", 0),
        "openai": ("openai", "Online", 2),
        "pinned": ("pinned", "Offline", 0),
    }
    models = {m["model_id"]: m for m in body["models"]}
    assert sorted(models) == [
        "claude-3-5-sonnet",
        "down-1",
        "flaky/large",
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
    ]
    assert models["openai/gpt-4o-mini"] == {
        "model_id": "openai/gpt-4o-mini",
        "name": "gpt-4o-mini",
        "provider": "openai",
        "status": "Healthy",
        "status_color": "green",
        "response_time": "200ms",
        "uptime": "90%",  # 18 of 20
        "last_checked": "08:00:34",
    }
    assert (models["flaky/large"]["status"], models["flaky/large"]["uptime"]) == ("Unhealthy", "0%")
    assert models["claude-3-5-sonnet"]["status"] == "Degraded"
    assert body["system_status"]["overall_status"] == "degraded"  # 3 of 7 Offline
    assert body["uptime_metrics"]["status"] == "degraded"
    assert body["monitoring_active"] is True


def test_before_the_first_cycle_it_validates_too(make_aggregator: MakeAggregator) -> None:
    http = TestClient(create_app(make_aggregator(auth_token=READER)), base_url="http://127.0.0.1")
    body = http.get("/health/dashboard", headers=AS_FRONTEND).json()
    assert origin_errors(body) == []
    assert (body["monitoring_active"], body["uptime_metrics"]["status"]) == (False, "unknown")


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(body: dict[str, Any]) -> None:
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]

    return change


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(body: dict[str, Any]) -> None:
        node: Any = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (_delete("providers.0.gateway"), "/providers/0: \"gateway\" is a required property"),
        (_delete("uptime_metrics"), '/: "uptime_metrics" is a required property'),
        (_set("last_updated", None), "/last_updated: null is not of type \"string\""),
        (_set("last_updated", "yesterday"), '/last_updated: "yesterday" is not a "date-time"'),
        (_set("system_status.overall_status", "fine"), "/system_status/overall_status: "),
        (_set("models.0.uptime", 99.5), "/models/0/uptime: 99.5 is not of type \"string\""),
        (_set("uptime_metrics.total_requests", "12"), "/uptime_metrics/total_requests: "),
    ],
)  # fmt: skip
def test_the_check_bites(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    change: Callable[[dict[str, Any]], None],
    error: str,
) -> None:
    _, http = _every_state(make_client, make_aggregator, clock)
    body = http.get("/health/dashboard", headers=AS_FRONTEND).json()
    broken = copy.deepcopy(body)
    change(broken)
    (found,) = origin_errors(broken)
    assert found.startswith(error), found


def test_the_answer_before_28_failed_on_these_fields(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    """Without the fields added for the origin: each provider's gateway, the uptime metrics and
    the answer's time (issue 28: 6 fields with 4 providers)."""
    _, http = _every_state(make_client, make_aggregator, clock)
    body = http.get("/health/dashboard", headers=AS_FRONTEND).json()
    for name in ("models", "uptime_metrics", "last_updated", "monitoring_active"):
        del body[name]
    for provider in body["providers"]:
        for name in ("gateway", "models_count", "healthy_count"):
            del provider[name]
    errors = origin_errors(body)
    assert len(errors) == len(body["providers"]) + 2
    assert '/: "last_updated" is a required property' in errors
