"""Traces from the example gateway under a real Gunicorn (preloaded workers): a request yields
its server span and the ``model_inference`` child, exported over OTLP/HTTP from the worker, a
Loki line with the same trace id, and an exemplar with it in the aggregator's OpenMetrics
``/metrics``. With the OTLP endpoint (and Loki) refused, a black hole or answering 500, the
requests keep their latency."""

from __future__ import annotations

import http.client
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from gatewayz_transport.connection import connect
from tests.support import loki as loki_receivers
from tests.support import otlp
from tests.support.gateway import example_gateway
from tests.support.processes import wait_for
from tests.support.scrape import scrape

ROOT = Path(__file__).resolve().parent.parent
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SERVER_KIND = 2  # SPAN_KIND_SERVER in OTLP's protobuf


@contextmanager
def gateway(redis_url: str, namespace: str, **env: str) -> Iterator[tuple[str, Path]]:
    """A Gunicorn gateway (2 preloaded workers); yields its base URL and its stderr file. Killed
    as a process group at the end: what a stopping worker does is not under test here."""
    settings = {
        "GATEWAY_WORKERS": "2",
        "FAKE_PROVIDERS": "openrouter:0.0:0.0",
        "GATEWAYZ_DEPLOYMENT_ENV": "test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, so the test waits little
        **env,
    }
    unset = ("GATEWAYZ_LOKI_APP", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")
    with tempfile.TemporaryDirectory() as folder:
        stderr_path = Path(folder) / "stderr"
        with (
            stderr_path.open("wb") as stderr,
            example_gateway(
                redis_url, namespace, settings, unset=unset, stderr=stderr, graceful=False
            ) as base,
        ):
            yield base, stderr_path


def chat(connection: http.client.HTTPConnection, model: str) -> tuple[float, str]:
    """One chat completion on a kept-alive connection: (seconds, worker pid)."""
    body = json.dumps({"provider": "openrouter", "model": model, "chunks": 1}).encode()
    started = time.perf_counter()
    connection.request(
        "POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"}
    )
    response = connection.getresponse()
    response.read()
    elapsed = time.perf_counter() - started
    assert response.status == 200
    return elapsed, response.headers["x-worker-pid"]


def test_a_request_is_a_server_span_with_its_inference_child_a_log_line_and_an_exemplar(
    redis_url: str, namespace: str
) -> None:
    with ExitStack() as stack:
        traces = stack.enter_context(otlp.receiver())
        logs = stack.enter_context(loki_receivers.receiver())
        base, _ = stack.enter_context(
            gateway(
                redis_url,
                namespace,
                GATEWAYZ_LOKI_URL=logs.url,
                OTEL_EXPORTER_OTLP_ENDPOINT=traces.endpoint,
                GATEWAYZ_FLUSH_INTERVAL_SECONDS="0.1",
            )
        )
        connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
        chat(connection, "m-traced")

        def inference() -> list[otlp.Span]:
            return [
                s
                for s in traces.spans()
                if s.name == "model_inference" and s.attributes.get("model") == "m-traced"
            ]

        wait_for(lambda: len(inference()) == 1, timeout=20)
        (child,) = inference()
        wait_for(lambda: child.parent_span_id in {s.span_id for s in traces.spans()}, timeout=10)
        by_id = {s.span_id: s for s in traces.spans() if s.trace_id == child.trace_id}
        server = by_id[child.parent_span_id]
        assert server.kind == SERVER_KIND
        assert server.name == "POST /v1/chat/completions"
        status = server.attributes.get("http.status_code")  # the semconv name by version
        assert (status or server.attributes.get("http.response.status_code")) == 200
        assert server.resource["service.name"] == "gatewayz-api"
        assert server.resource["deployment.environment"] == "test"
        assert child.attributes["provider"] == "openrouter"
        assert child.attributes["outcome"] == "success"
        assert child.attributes["http.status_code"] == 200
        assert child.attributes["gen_ai.usage.total_tokens"] == 150
        assert child.attributes["cost_usd"] > 0

        def logged() -> list[loki_receivers.Line]:
            return [line for line in logs.lines() if line.fields().get("model") == "m-traced"]

        wait_for(lambda: len(logged()) == 1, timeout=20)
        (line,) = logged()
        assert line.labels["app"] == "gatewayz-api"
        assert line.fields()["trace_id"] == child.trace_id

        settings = AggregatorSettings(redis_url=redis_url, namespace=namespace)
        aggregator = Aggregator(settings, connect(redis_url, socket_timeout=2.0))

        def exemplar() -> bool:
            aggregator.run_cycle()
            return f'trace_id="{child.trace_id}"' in scrape(aggregator, OPENMETRICS)

        wait_for(exemplar, timeout=20, poll=0.2)


def _rss_kib(pid: str) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise AssertionError("no VmRSS")


def test_a_dead_or_failing_tempo_and_loki_leave_request_latency_alone(
    redis_url: str, namespace: str
) -> None:
    requests = 300
    figures: dict[str, tuple[float, float, int, int]] = {}
    with ExitStack() as stack:
        healthy_traces = stack.enter_context(otlp.receiver())
        healthy_logs = stack.enter_context(loki_receivers.receiver())
        failing_traces = stack.enter_context(otlp.receiver())
        failing_traces.status = 500
        failing_logs = stack.enter_context(loki_receivers.receiver())
        failing_logs.status = 500
        hole = stack.enter_context(loki_receivers.black_hole())
        hole_base = hole.removesuffix(loki_receivers.PUSH_PATH)
        refused = loki_receivers.refused_url()
        cases = {
            "healthy": (healthy_traces.endpoint, healthy_logs.url),
            "refused": (refused.removesuffix(loki_receivers.PUSH_PATH), refused),
            "black hole": (hole_base, hole),
            "HTTP 500": (failing_traces.endpoint, failing_logs.url),
        }
        for case, (endpoint, loki_url) in cases.items():
            with gateway(
                redis_url,
                namespace,
                GATEWAYZ_LOKI_URL=loki_url,
                OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                OTEL_BSP_MAX_QUEUE_SIZE="256",  # small: the failing runs fill it and drop
                GATEWAY_WORKERS="1",
            ) as (base, stderr):
                connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
                for _ in range(20):  # warm-up: imports, first connections
                    chat(connection, "warm-up")
                rss_before = _rss_kib(chat(connection, "warm-up")[1])
                timings = [chat(connection, "m-latency") for _ in range(requests)]
                seconds = sorted(t for t, _ in timings)
                rss_after = _rss_kib(timings[-1][1])
                stderr_lines = stderr.read_bytes().decode(errors="replace").splitlines()
                p50 = statistics.median(seconds)
                p99 = seconds[int(len(seconds) * 0.99) - 1]
                figures[case] = (p50, p99, rss_after - rss_before, len(stderr_lines))
                # Nothing per request: a failing exporter or Loki says so a few times at most.
                assert len(stderr_lines) < 40, stderr_lines[-10:]
                assert not any("Queue full" in line for line in stderr_lines)
    print()
    for case, (p50, p99, rss, lines) in figures.items():
        print(
            f"{case:>10}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
            f"RSS +{rss} KiB over {requests} requests, {lines} stderr lines"
        )
    _, healthy_p99, _, _ = figures["healthy"]
    for case, (_, p99, rss, _) in figures.items():
        assert p99 < 5 * healthy_p99 + 0.010, (case, figures)
        assert rss < 30 * 1024, (case, figures)  # bounded queues: no growth per request
    assert healthy_traces.spans()  # the healthy run did export
