"""The HTTP API over a real cycle: /metrics contract, negotiation, /readyz, /health/dashboard."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from aggregator.core.served import ServedState
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.serve.exposition import Exposition
from aggregator.serve.rendering import RenderedMetrics, accepts_gzip
from client import MetricsClient
from tests.support.clock import FakeClock
from tests.support.scrape import samples

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]


def test_metrics_export_the_seed_contract_from_one_snapshot(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    for _ in range(3):
        metrics.record("openrouter", 0.3, status_code=200, cost_usd=0.5)
    metrics.record("openrouter", 6.0, status_code=502)
    metrics.record("bad name", 1.0)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(providers=("idle",))
    aggregator.run_cycle()
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")

    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = samples(response.text)
    p = (("provider", "openrouter"),)
    assert s[("provider_availability", p)] == 1.0
    assert s[("provider_error_rate", p)] == 0.25
    # p95 of three calls in (0.25, 0.5]: 0.25 + 0.25 * 2.85 / 3; latency score 1
    assert s[("gatewayz_provider_health_score", p)] == 0.4 + 0.3 * 0.75 + 0.3
    assert s[("gatewayz_provider_window_requests", p)] == 4
    # le values as prometheus_client itself writes them ("5.0", not "5")
    assert s[("provider_response_time_seconds_bucket", (("le", "0.5"), *p))] == 3
    assert s[("provider_response_time_seconds_bucket", (("le", "5.0"), *p))] == 3
    assert s[("provider_response_time_seconds_bucket", (("le", "10.0"), *p))] == 4
    assert s[("provider_response_time_seconds_bucket", (("le", "+Inf"), *p))] == 4
    assert s[("provider_response_time_seconds_count", p)] == 4
    assert s[("provider_response_time_seconds_sum", p)] == 6.9
    assert s[("gatewayz_provider_requests_total", (("outcome", "failure"), *p))] == 1
    assert s[("gatewayz_cost_by_provider_total", p)] == 1.5
    for state, value in (("closed", 1.0), ("open", 0.0), ("half_open", 0.0)):
        for provider in ("openrouter", "idle"):
            key = (("provider", provider), ("state", state))
            assert s[("gatewayz_circuit_breaker_state", key)] == value
    idle = (("provider", "idle"),)
    assert s[("provider_availability", idle)] == 1.0
    assert s[("provider_error_rate", idle)] == 0.0
    assert s[("gatewayz_provider_health_score", idle)] == 1.0
    assert s[("gatewayz_provider_window_requests", idle)] == 0
    assert s[("gatewayz_client_events_rejected_total", (("reason", "invalid_provider"),))] == 1
    for cause in ("buffer_full", "refused", "error", "shutdown"):  # 0 before any drop
        assert s[("gatewayz_client_events_dropped_total", (("cause", cause),))] == 0
    assert s[("gatewayz_redis_operations_total", (("operation", "zadd"),))] >= 2
    assert s[("gatewayz_aggregator_cycles_total", ())] == 1
    assert s[("gatewayz_aggregator_cycles_failed_total", ())] == 0
    assert s[("gatewayz_aggregator_last_success_timestamp_seconds", ())] == clock.now
    assert "# HELP provider_error_rate" in response.text
    assert "300s sliding window" in response.text


def test_openmetrics_is_served_when_asked_for(make_aggregator: MakeAggregator) -> None:
    aggregator = make_aggregator(providers=("idle",))
    aggregator.run_cycle()
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    response = http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_gzip_is_served_to_scrapers_that_accept_it(make_aggregator: MakeAggregator) -> None:
    aggregator = make_aggregator(providers=("idle",))
    aggregator.run_cycle()
    app = create_app(aggregator)
    http = TestClient(app, base_url="http://127.0.0.1")
    plain = http.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    with http.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert raw[:2] == b"\x1f\x8b"  # gzip magic: compressed on the wire
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 3
    refused = http.get("/metrics", headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    assert refused.content == plain.content


def test_bodies_are_cached_per_snapshot_and_primed(
    make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    aggregator = make_aggregator(providers=("idle",))
    aggregator.run_cycle()
    rendered = RenderedMetrics(aggregator.served)
    rendered.prime()  # no format asked for yet: renders nothing
    asked = [(None, True), ("application/openmetrics-text", False)]
    for accept, gzipped in asked:
        assert rendered.cached(accept, gzipped) is None  # a first scrape asks for it ...
    clock.advance(15)
    aggregator.run_cycle()
    rendered.prime()  # ... and every later snapshot has it rendered before any scrape
    for accept, gzipped in asked:
        found = rendered.cached(accept, gzipped)
        assert found is not None
        assert found == rendered.render(accept, gzipped)
    assert rendered.cached("application/openmetrics-text", True) is None  # never asked

    body = rendered.cached(None, True)
    clock.advance(15)
    aggregator.run_cycle()  # a new snapshot: the old bodies are not served
    assert rendered.cached(None, True) is None
    fresh = rendered.render(None, True)
    assert fresh != body
    assert rendered.cached(None, True) == fresh


def test_scrapes_get_the_previous_bodies_while_a_new_snapshot_is_primed(
    make_aggregator: MakeAggregator, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    aggregator = make_aggregator(providers=("idle",))
    aggregator.run_cycle()
    rendered = RenderedMetrics(aggregator.served)
    previous = rendered.render(None)
    clock.advance(15)
    aggregator.run_cycle()

    rendering, release = threading.Event(), threading.Event()
    render = Exposition.render

    def slow_render(self: Exposition, served: ServedState) -> bytes:
        rendering.set()
        assert release.wait(timeout=10)
        return render(self, served)

    monkeypatch.setattr(Exposition, "render", slow_render)
    primer = threading.Thread(target=rendered.prime)
    primer.start()
    assert rendering.wait(timeout=10)
    assert rendered.cached(None) == previous  # finished, of the previous snapshot
    release.set()
    primer.join(timeout=10)
    fresh = rendered.cached(None)
    assert fresh is not None
    assert fresh != previous
    assert fresh[0] == rendered.render(None)[0]


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br", True),
        ("deflate, gzip;q=0.5", True),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=bogus", False),
        ("*", True),
        ("*;q=0, gzip", True),
        ("gzip;q=0, *", False),
    ],
)
def test_accept_encoding_negotiation(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_readiness_follows_the_snapshot_age(
    make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    aggregator = make_aggregator(providers=("idle",), interval_seconds=10)
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 503  # no cycle yet
    aggregator.run_cycle()
    assert http.get("/readyz").status_code == 200
    clock.advance(30)  # 3 intervals: still fresh enough
    assert http.get("/readyz").status_code == 200
    clock.advance(0.5)
    response = http.get("/readyz")
    assert response.status_code == 503
    assert "old" in response.json()["reason"]


def test_dashboard_returns_the_snapshot(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.3, status_code=429)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator()
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    assert http.get("/health/dashboard").json()["snapshot"] is None
    aggregator.run_cycle()
    body = http.get("/health/dashboard").json()
    (provider,) = body["snapshot"]["providers"]
    assert provider["provider"] == "openrouter"
    assert provider["window_by_outcome"]["rate_limited"] == 1
    assert provider["error_rate"] == 0.0  # 429 is not a provider failure
    assert provider["breaker"]["state"] == "closed"
    assert body["status"]["cycles_ok"] == 1
