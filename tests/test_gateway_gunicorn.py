"""The example gateway under a real Gunicorn with 4 uvicorn workers (preloaded): every counter
and histogram in the aggregator's /metrics equals the exact totals of the traffic driven, while
the workers' own per-process metrics disagree from scrape to scrape."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aggregator.app import create_app
from aggregator.cycle import Aggregator
from devtools.redis_server import free_port
from tests.conftest import FakeClock

ROOT = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _request(url: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("x-worker-pid", "")
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.fixture
def gateway(redis_url: str, namespace: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "METRICS_NAMESPACE": namespace,
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WORKERS": "4",
        "FAKE_PROVIDERS": "openrouter:0.02:0.0",
    }
    command = [
        sys.executable, "-m", "gunicorn",
        "-c", str(ROOT / "examples/gateway/gunicorn.conf.py"),
        "examples.gateway.app:app",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{base}/worker-metrics", timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.1)
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def _samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _wait_for_totals(
    aggregator: Aggregator, clock: FakeClock, ready: Callable[[Samples], bool]
) -> Samples:
    http = TestClient(create_app(aggregator))
    deadline = time.monotonic() + 20
    while True:
        clock.now = time.time()  # the workers stamp events with the real clock
        aggregator.run_cycle()
        samples = _samples(http.get("/metrics").text)
        if ready(samples):
            return samples
        assert time.monotonic() < deadline, "totals never arrived"
        time.sleep(0.1)


def test_aggregated_metrics_are_exact_across_gunicorn_workers(
    gateway: str, make_aggregator: Callable[..., Aggregator], clock: FakeClock
) -> None:
    chat = f"{gateway}/v1/chat/completions"
    calls: list[tuple[str, dict[str, object] | None]] = []
    calls += [(chat, {"provider": "openrouter", "model": "m1", "latency_s": 0.02})] * 120
    calls += [(chat, {"provider": "openrouter", "model": "m2", "status": 503})] * 30
    calls += [(f"{gateway}/v1/chat/{i}", None) for i in range(20)]  # ids 0, 10: cache hits
    calls += [(f"{gateway}/nope/{i}", None) for i in range(10)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda call: _request(*call), calls))
    statuses = [status for status, _ in results]
    assert statuses.count(200) == 120 + 20
    assert statuses.count(502) == 30
    assert statuses.count(404) == 10
    assert len({pid for _, pid in results if pid}) >= 2  # the load was spread over workers

    post = (("app_name", "gatewayz-example"), ("method", "POST"))
    get = (("app_name", "gatewayz-example"), ("method", "GET"))

    def requests(labels: tuple[tuple[str, str], ...]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("fastapi_requests_total", tuple(sorted(labels)))

    chat_ok = requests((*post, ("path", "/v1/chat/completions"), ("status_code", "200"),
                        ("status_class", "2xx")))  # fmt: skip
    s = _wait_for_totals(make_aggregator(), clock, lambda s: s.get(chat_ok) == 120)
    assert s[requests((*post, ("path", "/v1/chat/completions"), ("status_code", "502"),
                       ("status_class", "5xx")))] == 30  # fmt: skip
    assert s[requests((*get, ("path", "/v1/chat/{chat_id}"), ("status_code", "200"),
                       ("status_class", "2xx")))] == 20  # fmt: skip
    assert s[requests((*get, ("path", "__unmatched__"), ("status_code", "404"),
                       ("status_class", "4xx")))] == 10  # fmt: skip
    readiness_polls = ("path", "/worker-metrics")
    assert (
        sum(
            v
            for (n, labels), v in s.items()
            if n == "fastapi_requests_total" and readiness_polls not in labels
        )
        == 180
    )

    def one(name: str, **labels: str) -> float:
        return s[(name, tuple(sorted(labels.items())))]

    duration = "fastapi_requests_duration_seconds"
    app = "gatewayz-example"
    chat_path = "/v1/chat/completions"
    assert one(f"{duration}_count", app_name=app, method="POST", path=chat_path) == 150
    assert one(f"{duration}_bucket", app_name=app, method="POST", path=chat_path, le="+Inf") == 150
    assert one(f"{duration}_count", app_name=app, method="GET", path="/v1/chat/{chat_id}") == 20
    assert one(f"{duration}_count", app_name=app, method="GET", path="__unmatched__") == 10
    inference = "model_inference_requests_total"
    assert one(inference, provider="openrouter", model="m1", status="success") == 120
    assert one(inference, provider="openrouter", model="m2", status="failure") == 30
    assert one("model_inference_duration_seconds_count", provider="openrouter", model="m1") == 120
    assert one("model_inference_duration_seconds_count", provider="openrouter", model="m2") == 30
    assert one("tokens_used_total", provider="openrouter", model="m1", token_type="input") == 12000
    assert one("tokens_used_total", provider="openrouter", model="m1", token_type="output") == 6000
    assert one("credits_used_total", provider="openrouter", model="m1") == 6.0  # 120 x 50/1000
    assert one("cache_hits_total", cache_name="chats") == 2
    assert one("cache_misses_total", cache_name="chats") == 18
    assert one("database_queries_total", table="chats", operation="select") == 18
    ttfb = "backend_ttfb_seconds_count"
    assert one(ttfb, provider="openrouter", model="m1", endpoint=chat_path) == 120
    assert one("time_to_first_chunk_seconds_count", provider="openrouter", model="m1") == 120
    # the provider view comes from the same records: no double bookkeeping
    assert one("gatewayz_provider_requests_total", provider="openrouter", outcome="success") == 120
    assert one("gatewayz_provider_requests_total", provider="openrouter", outcome="failure") == 30
    assert one("gatewayz_provider_tokens_total", provider="openrouter") == 120 * 150
    assert one("gatewayz_cost_by_provider_total", provider="openrouter") == 0.012  # 120 x 1e-4
    assert one("provider_response_time_seconds_count", provider="openrouter") == 150

    # The per-process view: each scrape sees one worker's slice, never the 150 chat requests.
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 20
    while len(seen) < 2:
        assert time.monotonic() < deadline, "every scrape hit the same worker"
        with urllib.request.urlopen(f"{gateway}/worker-metrics", timeout=5) as response:
            text, pid = response.read().decode(), response.headers["x-worker-pid"]
        seen[pid] = _samples(text)[("worker_chat_requests_total", ())]
    assert all(value < 150 for value in seen.values())
    assert sum(seen.values()) <= 150
    assert len(set(seen.values())) >= 2 or sum(seen.values()) < 150
