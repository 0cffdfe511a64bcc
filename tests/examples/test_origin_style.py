"""The origin-shaped example gateway (``examples/origin_style``, issue 28's migration example)
under a real Gunicorn with 2 uvicorn workers (preloaded, traced), against the aggregator on a
real Redis: every item of the issue exercised, and the aggregator's ``/metrics`` checked for the
exact totals of the traffic driven. The fake providers log every call they receive
(``UPSTREAM_CALL_LOG``), so "the provider was not called" is the providers' word, not the
gateway's. And docs/migration/origin-gateway.md shows the diffs the example's files make."""

from __future__ import annotations

import ast
import collections
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import jsonschema_rs
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import client
from aggregator.core.breaker import BreakerConfig
from aggregator.core.breaker_policy import parse_overrides
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from devtools.redis_server import free_port
from examples.origin_style import handler_diff
from gatewayz_protocol.keys import Keys
from tests.support import otlp
from tests.support.clock import FakeClock
from tests.support.processes import wait_for
from tests.support.scrape import Samples, samples

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "origin_style"
PAGE = ROOT / "docs" / "migration" / "origin-gateway.md"
SCHEMA = ROOT / "tests" / "fixtures" / "origin_health_dashboard_response.schema.json"
READER, OPERATOR = "reader-key-5Rt1", "operator-key-8Wd4"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
GPT, SONNET, HAIKU, LLAMA = (
    "openai/gpt-4o",  # flakyai, then openrouter
    "anthropic/claude-3.5-sonnet",  # anthropic, then openrouter
    "anthropic/claude-3-haiku",  # anthropic
    "meta/llama-3-70b",  # flakyai
)
FAILING = {"flakyai": {"status": 503}}
BUCKETS = {  # the origin's, per histogram (its prometheus_metrics.py)
    "model_inference_duration_seconds": (0.1, 0.5, 1, 2.5, 5, 10, 25, 60),
    "backend_ttfb_seconds": (0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0),
    "time_to_first_chunk_seconds": (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 10.0, 15.0),
    "gatewayz_api_cost_per_request_usd": (1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0),
}


@contextmanager
def origin_gateway(redis_url: str, namespace: str, env: Mapping[str, str]) -> Iterator[str]:
    """Gunicorn with ``examples.origin_style.app`` (the example gateway's Gunicorn settings: 2
    preloaded uvicorn workers here, telemetry started in each); yields its base URL once a
    worker answers; the process group killed at the end."""
    port = free_port()
    full = {
        **os.environ,
        "GATEWAYZ_REDIS_URL": redis_url,
        "GATEWAYZ_NAMESPACE": namespace,
        "GATEWAYZ_FLUSH_INTERVAL_SECONDS": "0.05",
        "GATEWAY_BIND": f"127.0.0.1:{port}",
        "GATEWAY_WORKERS": "2",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **env,
    }
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(ROOT / "examples/gateway/gunicorn.conf.py"),
        "examples.origin_style.app:app",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=full, stderr=subprocess.DEVNULL, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{base}/admin/circuit-breakers")[0] == 200, timeout=30, poll=0.1)
        yield base
    finally:
        os.killpg(process.pid, 9)
        process.wait(timeout=10)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    return _send(urllib.request.Request(url))


def _chat(
    base: str, model: str, headers: Mapping[str, str] | None = None, **body: object
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps({"model": model, **body}).encode()
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=data,
        headers={"content-type": "application/json", **(headers or {})},
    )
    return _send(request)


def _send(request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    """(status, headers by lower-case name, body)."""
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    return status, {name.lower(): value for name, value in headers.items()}, body


def _called(log: Path) -> collections.Counter[str]:
    """How many calls each fake provider received, from their own log."""
    text = log.read_text() if log.exists() else ""
    return collections.Counter(line.split()[0] for line in text.splitlines())


def _every_worker_sees(base: str, provider: str, allowed: bool) -> None:
    """Wait until both workers' ``breaker()`` of ``provider`` says ``allowed`` (each worker's
    cache is refreshed on its own): two processes seen answering so."""
    seen: set[str] = set()
    last: dict[str, object] = {}  # each worker's last answer, for the failure's message

    def both() -> bool:
        status, headers, body = _get(f"{base}/admin/circuit-breakers")
        pid = headers.get("x-worker-pid", "?")
        answer = json.loads(body)[provider] if status == 200 else body
        last[pid] = (round(time.monotonic(), 2), status, answer)
        if status == 200 and answer["allowed"] is allowed:
            seen.add(pid)
        return len(seen) == 2

    try:
        wait_for(both, timeout=20, poll=0.02)
    except AssertionError:
        raise AssertionError(f"not every worker saw {provider} allowed={allowed}: {last}") from None


def _cancelled_stream(base: str, log: Path) -> None:
    """A streamed answer whose client goes away while the provider's first chunk is 30 s away
    (the provider called: the status line goes out before the stream opens, so the client
    waits for the call to show in the provider's log): the worker's task is cancelled inside
    the timed block."""
    called = _called(log)["flakyai"]
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": GPT, "stream": True, "behaviour": {"flakyai": {"chunk_s": 30}}}
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"}
    )
    assert connection.getresponse().status == 200
    wait_for(lambda: _called(log)["flakyai"] == called + 1, timeout=20)
    connection.close()


def _totals(
    aggregator: Aggregator,
    clock: FakeClock,
    http: TestClient,
    want: Mapping[tuple[str, str], float],
) -> Samples:
    """Cycles of the aggregator until its /metrics holds ``want`` ((name, labels as
    ``a=1,b=2``) -> value), or a deadline; returns its samples for the caller's assertion."""
    deadline = time.monotonic() + 20
    while True:
        clock.now = time.time()  # the workers stamp events with the real (Redis) clock
        aggregator.run_cycle()
        found = samples(http.get("/metrics", headers=_bearer(READER)).text)
        if all(_value(found, key) == value for key, value in want.items()):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _value(found: Samples, key: tuple[str, str]) -> float | None:
    name, labels = key
    pairs = tuple(sorted(tuple(pair.split("=", 1)) for pair in labels.split(",") if pair))
    return found.get((name, pairs))  # type: ignore[arg-type]


def _breaker(admin: TestClient, provider: str) -> tuple[str, bool]:
    """(state, forced) of ``provider``'s breaker, as the aggregator's admin route says (read with
    the reader's token)."""
    answer = admin.get(f"/admin/breakers/{provider}", headers=_bearer(READER))
    (row,) = answer.json()["breakers"]
    return row["state"], row["forced"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_origin_style_gateway_books_every_item_exactly_across_two_workers(
    redis_url: str,
    namespace: str,
    r: redis.Redis,
    keys: Keys,
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    # The breaker judges a minute of calls (not 8 s): a slow machine cannot spread the 20
    # failing calls thin enough to keep it closed. Item 7: the global thresholds would never
    # open a breaker (1,000 calls); flakyai's own (20 calls) opens it.
    breaker = BreakerConfig(window_seconds=60.0, min_calls=1000)
    aggregator = make_aggregator(
        breaker,
        auth_token=READER,
        operator_token=OPERATOR,
        breaker_providers=parse_overrides("flakyai:min_calls=20"),
    )
    admin = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    hold = "/admin/breakers/anthropic/open?create=true"
    # Item 8: breaker commands over HTTP, the operator's token only.
    assert admin.post(hold, headers=_bearer(READER)).status_code == 403
    assert admin.post(hold, headers=_bearer(OPERATOR)).status_code == 200
    assert _breaker(admin, "anthropic") == ("open", True)
    log = tmp_path / "upstream-calls"
    with otlp.receiver() as traces:
        env = {"UPSTREAM_CALL_LOG": str(log), "OTEL_EXPORTER_OTLP_ENDPOINT": traces.endpoint}
        with origin_gateway(redis_url, namespace, env) as base:
            _drive(base, log, r, keys, aggregator, clock, admin)
            _check_totals(aggregator, clock, admin)  # while the workers live and flush
    body = admin.get("/health/dashboard", headers=_bearer(READER)).json()
    origin = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()), validate_formats=True)
    assert [error.message for error in origin.iter_errors(body)] == []  # item 9
    rows = {(m["provider"], m["model_id"]) for m in body["models"]}
    assert {("flakyai", GPT), ("anthropic", HAIKU), ("openrouter", SONNET)} <= rows


def _drive(
    base: str,
    log: Path,
    r: redis.Redis,
    keys: Keys,
    aggregator: Aggregator,
    clock: FakeClock,
    admin: TestClient,
) -> None:
    """The traffic, and what each answer must be, in order."""
    ok = [_chat(base, GPT) for _ in range(6)]  # flakyai, usage {12.0, 5.0}: integral floats
    assert {(status, json.loads(body)["provider"]) for status, _, body in ok} == {(200, "flakyai")}
    # Item 6: a token count that is no count (12.5) is left out; the call stays booked.
    bad = _chat(base, GPT, behaviour={"flakyai": {"prompt_tokens": 12.5}})
    assert bad[0] == 200
    failover = [_chat(base, GPT, behaviour=FAILING) for _ in range(2)]
    assert {(s, json.loads(b)["provider"]) for s, _, b in failover} == {(200, "openrouter")}
    for _ in range(2):
        status, _, streamed = _chat(base, GPT, stream=True)
        assert status == 200
        assert streamed.endswith(b"data: [DONE]\n\n")  # usage added before it (item 4)
    # Item 2: a client gone mid-stream is booked cancelled, outside the error rate.
    _cancelled_stream(base, log)
    wait_for(lambda: r.hget(keys.totals("flakyai"), "cancelled") == b"1", timeout=20)
    # Item 3 and 8: held open by the operator: 503, no deadline to tell, anthropic not called.
    held = _chat(base, HAIKU)
    assert (held[0], "retry-after" in held[1]) == (503, False)
    # The chain filtered with breaker() (nothing taken): anthropic skipped, openrouter answers.
    traced = {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    sonnet = _chat(base, SONNET, headers=traced)
    assert (sonnet[0], json.loads(sonnet[2])["provider"]) == (200, "openrouter")
    assert _called(log)["anthropic"] == 0
    # flakyai fails 20 times in a row: its breaker opens (the aggregator's, for every worker).
    assert {_chat(base, LLAMA, behaviour=FAILING)[0] for _ in range(20)} == {502}
    failures = ("gatewayz_provider_requests_total", "outcome=failure,provider=flakyai")
    _totals(aggregator, clock, admin, {failures: 22})
    clock.now = time.time()
    aggregator.run_breaker_cycle()
    assert _breaker(admin, "flakyai") == ("open", False)  # opened by its failures
    _every_worker_sees(base, "flakyai", allowed=False)
    before = _called(log)
    denied = _chat(base, LLAMA)
    assert denied[0] == 503
    assert 15 <= int(denied[1]["retry-after"]) <= 30  # the open deadline, 30 s after opening
    rerouted = _chat(base, GPT)
    assert (rerouted[0], json.loads(rerouted[2])["provider"]) == (200, "openrouter")
    assert _called(log)["flakyai"] == before["flakyai"]  # neither request reached flakyai
    # Item 8: the operator resets anthropic over HTTP; every worker lets it through again.
    reset = admin.post("/admin/breakers/anthropic/reset", headers=_bearer(OPERATOR))
    assert reset.status_code == 200
    assert _breaker(admin, "anthropic") == ("closed", False)
    _every_worker_sees(base, "anthropic", allowed=True)
    haiku = _chat(base, HAIKU)
    assert (haiku[0], json.loads(haiku[2])["provider"]) == (200, "anthropic")
    # The providers' own count: flakyai 6 + 1 + 2 + 2 streams + 1 cancelled + 20 failing.
    assert _called(log) == {"flakyai": 32, "openrouter": 4, "anthropic": 1}


def _check_totals(aggregator: Aggregator, clock: FakeClock, admin: TestClient) -> None:
    """The aggregator's /metrics: the exact totals of ``_drive``'s traffic, both workers'."""
    fg, og, os_, ah, fl = (
        f"model={GPT},provider=flakyai",
        f"model={GPT},provider=openrouter",
        f"model={SONNET},provider=openrouter",
        f"model={HAIKU},provider=anthropic",
        f"model={LLAMA},provider=flakyai",
    )
    want: dict[tuple[str, str], float] = {
        # Items 2, 3: outcomes; the cancelled call and the rejections outside the error rate.
        ("gatewayz_provider_requests_total", "outcome=success,provider=flakyai"): 9,
        ("gatewayz_provider_requests_total", "outcome=failure,provider=flakyai"): 22,
        ("gatewayz_provider_requests_total", "outcome=success,provider=openrouter"): 4,
        ("gatewayz_provider_requests_total", "outcome=failure,provider=openrouter"): 0,
        ("gatewayz_provider_requests_total", "outcome=success,provider=anthropic"): 1,
        ("gatewayz_provider_cancelled_calls_total", "provider=flakyai"): 1,
        ("gatewayz_circuit_breaker_rejected_calls_total", "provider=flakyai"): 1,
        ("gatewayz_circuit_breaker_rejected_calls_total", "provider=anthropic"): 1,
        ("gatewayz_circuit_breaker_state", "provider=flakyai,state=open"): 1,
        ("gatewayz_circuit_breaker_state", "provider=anthropic,state=closed"): 1,
        # Item 4: tokens added after the call (17 a call; 5 of the call whose 12.5 was left out).
        ("gatewayz_provider_tokens_total", "provider=flakyai"): 8 * 17 + 5,
        ("gatewayz_provider_tokens_total", "provider=openrouter"): 4 * 17,
        ("gatewayz_provider_tokens_total", "provider=anthropic"): 17,
        ("tokens_used_total", f"{fg},token_type=input"): 8 * 12,
        ("tokens_used_total", f"{fg},token_type=output"): 9 * 5,
        ("tokens_used_total", f"{og},token_type=input"): 3 * 12,
        ("tokens_used_total", f"{ah},token_type=output"): 5,
        # Item 6: the bad count counted by cause, its call booked above.
        ("gatewayz_client_events_rejected_total", "reason=invalid_tokens"): 1,
        # Item 5: the origin's metrics, status values and buckets; Summary and Info.
        ("model_inference_requests_total", f"{fg},status=success"): 9,
        ("model_inference_requests_total", f"{fg},status=error"): 2,
        ("model_inference_requests_total", f"{fl},status=error"): 20,
        ("model_inference_requests_total", f"{og},status=success"): 3,
        ("model_inference_requests_total", f"{os_},status=success"): 1,
        ("model_inference_requests_total", f"{ah},status=success"): 1,
        ("model_inference_duration_seconds_count", fg): 11,
        ("time_to_first_chunk_seconds_count", fg): 2,
        ("gatewayz_api_cost_per_request_usd_count", fg): 7,
        ("gatewayz_api_cost_per_request_usd_count", os_): 1,
        ("gatewayz_token_count_source_total", f"{fg},source=provider"): 2,
        ("database_query_duration_seconds_count", "table=pricing"): 14,
        ("fastapi_app_info_info", "app_name=gatewayz"): 1,
    }
    found = _totals(aggregator, clock, admin, want)
    assert {key: _value(found, key) for key in want} == want
    costs = {  # USD: 12 x 1e-6 + 5 x 2e-6 a call; 12.5 x 1e-6 + 5 x 2e-6 for the bad count
        ("gatewayz_cost_by_provider_total", "provider=flakyai"): 8 * 22e-6 + 22.5e-6,
        ("gatewayz_cost_by_provider_total", "provider=openrouter"): 4 * 22e-6,
        ("credits_used_total", fg): 8 * 22e-6 + 22.5e-6,
        ("gatewayz_api_cost_usd_total", ah): 22e-6,
    }
    assert {key: _value(found, key) for key in costs} == pytest.approx(costs, abs=1e-12)
    for name, buckets in BUCKETS.items():  # each histogram with its own buckets
        bounds = sorted(
            float(dict(labels)["le"])
            for (sample, labels), _ in found.items()
            if sample == f"{name}_bucket" and dict(labels).get("model") == GPT
            and dict(labels).get("provider") == "flakyai"
        )  # fmt: skip
        assert bounds == [*map(float, buckets), float("inf")], name
    _check_exemplars(admin.get("/metrics", headers={**_bearer(READER), "accept": OPENMETRICS}).text)


def _check_exemplars(text: str) -> None:
    """Item 5: exemplars passed as prometheus_client takes them reach the OpenMetrics
    exposition: the traced request's trace id on its cost and latency buckets, and a trace on
    the stream's counter."""
    exemplars: dict[str, list[str]] = collections.defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                key = f"{sample.name}:{sample.labels.get('provider')}:{sample.labels.get('model')}"
                exemplars[key].append(sample.exemplar.labels["trace_id"])
    sonnet = f"openrouter:{SONNET}"
    assert TRACE_ID in exemplars[f"gatewayz_api_cost_per_request_usd_bucket:{sonnet}"]
    assert TRACE_ID in exemplars[f"model_inference_duration_seconds_bucket:{sonnet}"]
    (stream_trace,) = exemplars[f"gatewayz_token_count_source_total:flakyai:{GPT}"]
    assert len(stream_trace) == 32


def test_the_page_shows_the_diffs_the_example_files_make() -> None:
    page = PAGE.read_text()
    assert f"```diff\n{handler_diff.handler_diff()}```" in page, (
        "docs/migration/origin-gateway.md: run python -m examples.origin_style.handler_diff"
    )
    assert f"```diff\n{handler_diff.metrics_diff()}```" in page


def test_the_example_uses_the_clients_public_api_only() -> None:
    """Item 1's side in the example: nothing private of the library (what a pinned redis-py
    could break is the library's, tested on redis 5.0.1 by ``make test-deps``)."""
    used: list[str] = []
    for path in sorted(EXAMPLE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                root = node.module.split(".")[0]
                if root in ("client", "aggregator", "gatewayz_protocol", "gatewayz_transport"):
                    used += [f"{node.module}.{alias.name}" for alias in node.names]
    assert used
    assert all(name.split(".")[:1] == ["client"] and name.count(".") == 1 for name in used), used
    assert {name.removeprefix("client.") for name in used} <= set(client.__all__)


def test_the_before_gateway_runs_on_prometheus_client_alone() -> None:
    """The "before" side is real code: one request through it, counted by prometheus_client in
    its own process (its default registry would clash with other tests')."""
    script = """
from fastapi.testclient import TestClient
from examples.origin_style.before.app import app
http = TestClient(app)
answer = http.post("/v1/chat/completions", json={"model": "openai/gpt-4o"})
assert answer.status_code == 200, answer.text
text = http.get("/metrics/").text
line = 'model_inference_requests_total{model="openai/gpt-4o",provider="flakyai",status="success"}'
assert f"{line} 1.0" in text, text
"""
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=60)
