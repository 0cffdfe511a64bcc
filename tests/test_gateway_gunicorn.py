"""The example gateway under a real Gunicorn with 4 uvicorn workers (preloaded): every counter
and histogram in the aggregator's /metrics equals the exact totals of the traffic driven, while
the workers' own per-process metrics disagree from scrape to scrape."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from aggregator.engine.writer import PlannedWrite, StateWriter
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from tests.support.clock import FakeClock
from tests.support.gateway import example_gateway
from tests.support.scrape import Samples, samples, scrape

ROOT = Path(__file__).resolve().parent.parent


def _request(url: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("x-worker-pid", "")
    except urllib.error.HTTPError as error:
        return error.code, ""


@pytest.fixture
def gateway(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[str]:
    log = tmp_path / "gunicorn.stderr"
    with log.open("wb") as stderr, example_gateway(redis_url, namespace, stderr=stderr) as base:
        yield base
    # A worker whose events never arrived says why here (pytest shows it beside a failure).
    print(log.read_text(errors="replace")[-20_000:])


def _wait_for_totals(
    aggregator: Aggregator, clock: FakeClock, ready: Callable[[Samples], bool]
) -> Samples:
    deadline = time.monotonic() + 20
    while True:
        clock.now = time.time()  # the workers stamp events with the real clock
        aggregator.run_cycle()
        scraped = samples(scrape(aggregator))
        if ready(scraped) or time.monotonic() > deadline:
            return scraped  # the caller's assertion shows what is missing
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

    app, chat_path, user = "gatewayz-example", "/v1/chat/completions", "/v1/chat/{chat_id}"
    requests, duration = "fastapi_requests_total", "fastapi_requests_duration_seconds"
    m1 = {"provider": "openrouter", "model": "m1"}
    m2 = {"provider": "openrouter", "model": "m2"}
    expected: list[tuple[str, dict[str, str], float]] = [
        (requests, {"method": "POST", "path": chat_path, "status_code": "200"}, 120),
        (requests, {"method": "POST", "path": chat_path, "status_code": "502"}, 30),
        (requests, {"method": "GET", "path": user, "status_code": "200"}, 20),
        (requests, {"method": "GET", "path": "__unmatched__", "status_code": "404"}, 10),
        (f"{duration}_count", {"method": "POST", "path": chat_path}, 150),
        (f"{duration}_bucket", {"method": "POST", "path": chat_path, "le": "+Inf"}, 150),
        (f"{duration}_count", {"method": "GET", "path": user}, 20),
        (f"{duration}_count", {"method": "GET", "path": "__unmatched__"}, 10),
        ("model_inference_requests_total", {**m1, "status": "success"}, 120),
        ("model_inference_requests_total", {**m2, "status": "failure"}, 30),
        ("model_inference_duration_seconds_count", m1, 120),
        ("model_inference_duration_seconds_count", m2, 30),
        ("tokens_used_total", {**m1, "token_type": "input"}, 120 * 100),
        ("tokens_used_total", {**m1, "token_type": "output"}, 120 * 50),
        ("credits_used_total", m1, 6.0),  # 120 x 50/1000
        ("gatewayz_api_cost_usd_total", m1, 0.012),  # 120 x 50 x 2e-6, by model
        ("cache_hits_total", {"cache_name": "chats"}, 2),  # ids 0 and 10
        ("cache_misses_total", {"cache_name": "chats"}, 18),
        ("database_queries_total", {"table": "chats", "operation": "select"}, 18),
        ("backend_ttfb_seconds_count", {**m1, "endpoint": chat_path}, 120),
        ("time_to_first_chunk_seconds_count", m1, 120),
        # the provider view comes from the same records: no double bookkeeping
        ("gatewayz_provider_requests_total", {"provider": "openrouter", "outcome": "success"}, 120),
        ("gatewayz_provider_requests_total", {"provider": "openrouter", "outcome": "failure"}, 30),
        ("gatewayz_provider_tokens_total", {"provider": "openrouter"}, 120 * 150),
        ("gatewayz_cost_by_provider_total", {"provider": "openrouter"}, 0.012),  # 120 x 1e-4
        ("provider_response_time_seconds_count", {"provider": "openrouter"}, 150),
    ]

    def key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        if name.startswith("fastapi_"):
            labels = {"app_name": app, **labels}
        if name == requests:
            labels = {**labels, "status_class": labels["status_code"][0] + "xx"}
        return name, tuple(sorted(labels.items()))

    want = {key(name, labels): value for name, labels, value in expected}

    def arrived(scraped: Samples) -> bool:
        return all(scraped.get(k) == v for k, v in want.items())

    s = _wait_for_totals(make_aggregator(), clock, arrived)
    assert {k: s.get(k) for k in want} == want
    all_requests = [
        v
        for (n, labels), v in s.items()
        if n == requests and ("path", "/worker-metrics") not in labels
    ]
    assert sum(all_requests) == 180  # nothing else was counted

    # The per-process view: each scrape sees one worker's slice, never the 150 chat requests.
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 20
    while len(seen) < 2:
        assert time.monotonic() < deadline, "every scrape hit the same worker"
        with urllib.request.urlopen(f"{gateway}/worker-metrics", timeout=5) as response:
            text, pid = response.read().decode(), response.headers["x-worker-pid"]
        seen[pid] = samples(text)[("worker_chat_requests_total", ())]
    assert all(value < 150 for value in seen.values())
    assert sum(seen.values()) <= 150
    assert len(set(seen.values())) >= 2 or sum(seen.values()) < 150


def test_a_breaker_denial_says_when_to_retry_and_a_client_gone_is_no_failure(
    redis_url: str,
    namespace: str,
    r: redis.Redis,
    keys: Keys,
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
) -> None:
    seconds, micros = r.time()
    open_until = seconds + micros / 1e6 + 30.0  # on Redis's clock, the one workers share
    writer = StateWriter(r, keys, 3600, permits=5, permit_seconds=60)
    opened = PlannedWrite(
        "down", 0, BreakerState("open", open_until - 30, 1, open_until, 1), "test"
    )
    assert writer.begin(None).transitions([opened]).send().results == [1]
    env = {"GATEWAY_WORKERS": "1", "FAKE_PROVIDERS": "openrouter:0.02:0.0,down:0.02:0.0"}
    with example_gateway(redis_url, namespace, env) as base:
        chat = f"{base}/v1/chat/completions"
        request = urllib.request.Request(
            chat, data=json.dumps({"provider": "down"}).encode(),
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=30)
        assert denied.value.code == 503
        assert 28 <= int(denied.value.headers["Retry-After"]) <= 30

        # A streamed answer whose client goes away after the status line, the provider still
        # working (30 s to its first chunk): cancelled inside the timed block.
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        body = {"provider": "openrouter", "model": "m1", "stream": True, "latency_s": 60}
        connection.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"}
        )
        assert connection.getresponse().status == 200
        connection.close()  # the client goes away mid-stream
        deadline = time.monotonic() + 20
        while r.hget(keys.totals("openrouter"), "cancelled") != b"1":
            assert time.monotonic() < deadline, "the abandoned stream was never booked"
            time.sleep(0.05)
    totals = {k.decode() for k in r.hgetall(keys.totals("openrouter"))}
    assert not any(field.startswith(("n:", "b:")) for field in totals)  # no outcome, no latency
    assert sum(int(r.zcard(key)) for key in keys.window_keys("openrouter")) == 0
    assert r.hget(keys.totals("down"), "breaker_rejected") == b"1"

    def arrived(scraped: Samples) -> bool:
        return scraped.get(CANCELLED) == 1

    s = _wait_for_totals(make_aggregator(), clock, arrived)
    assert s.get(CANCELLED) == 1
    assert s.get(("gatewayz_provider_requests_total", FAILED)) == 0


CANCELLED = ("gatewayz_provider_cancelled_calls_total", (("provider", "openrouter"),))
FAILED = (("outcome", "failure"), ("provider", "openrouter"))
