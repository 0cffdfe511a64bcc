"""The ``model_inference`` span of a timed call and the exemplar that links its latency buckets
to it, through Redis to the OpenMetrics exposition (never the text format)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from http import HTTPStatus

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.concurrency import iterate_in_threadpool

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import GatewayMetrics, MetricsClient
from gatewayz_transport.connection import connect
from tests.support.clock import FakeClock
from tests.support.scrape import scrape

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span finished in the test, from the process's SDK tracer provider (set here
    unless a test before set one: a process has one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def test_a_timed_call_is_a_child_span_with_its_outcome_and_an_exemplar(
    spans: InMemorySpanExporter,
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /v1/chat/completions") as request:
        with gateway.inference("openrouter", "gpt", "/v1/chat/completions") as call:
            call.status_code = 200
            call.input_tokens, call.output_tokens, call.cost_usd = 100, 40, 0.25
        with pytest.raises(TimeoutError), metrics.track("anthropic"):
            raise TimeoutError("upstream timed out")
    assert metrics.flush(timeout=5)

    by_provider = {s.attributes["provider"]: s for s in spans.get_finished_spans()
                   if s.name == "model_inference"}  # fmt: skip
    ok, failed = by_provider["openrouter"], by_provider["anthropic"]
    trace_id = request.get_span_context().trace_id
    for span in (ok, failed):
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert span.context.trace_id == trace_id
    assert dict(ok.attributes or {}) | {} == {
        "gen_ai.system": "openrouter",
        "provider": "openrouter",
        "model": "gpt",
        "outcome": "success",
        "http.status_code": 200,
        "gen_ai.usage.total_tokens": 140,
        "cost_usd": 0.25,
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["outcome"] == "failure"
    assert [e.name for e in failed.events] == ["exception"]

    aggregator = make_aggregator()
    aggregator.run_cycle()
    text = scrape(aggregator, OPENMETRICS)
    trace_hex = f"{trace_id:032x}"
    ok_span = f"{ok.context.span_id:016x}"
    linked = [line for line in text.splitlines() if f'trace_id="{trace_hex}"' in line]
    assert any(
        line.startswith("provider_response_time_seconds_bucket{")
        and 'provider="openrouter"' in line
        and f'span_id="{ok_span}"' in line
        for line in linked
    ), linked
    assert any(
        line.startswith("model_inference_duration_seconds_bucket{")
        and 'provider="openrouter"' in line
        and f'span_id="{ok_span}"' in line
        for line in linked
    ), linked
    assert any('provider="anthropic"' in line for line in linked)  # the failure links too
    assert trace_hex not in scrape(aggregator)  # the text format carries no exemplars


def test_a_stream_ending_in_another_context_links_its_own_span_and_logs_no_error(
    spans: InMemorySpanExporter,
    make_client: Callable[..., MetricsClient],
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    tracer = trace.get_tracer("test")

    def sync_body() -> Iterator[bytes]:  # a StreamingResponse's sync body
        with gateway.inference("openrouter", "gpt", "/v1/chat") as call:
            for chunk in (b"a", b"b", b"c"):
                call.chunk()
                yield chunk
            call.status_code = HTTPStatus.OK

    async def async_body() -> AsyncIterator[bytes]:
        with gateway.inference("anthropic", "claude", "/v1/chat") as call:
            yield b"first"
            call.status_code = 200  # never reached: its client went away

    async def serve() -> AsyncIterator[bytes]:
        with tracer.start_as_current_span("GET /sync") as request:
            # Starlette's own iteration of a sync body: each next() in a worker thread, in a
            # new copy of the request's context; the block ends in the last one
            assert [chunk async for chunk in iterate_in_threadpool(sync_body())] == [
                b"a",
                b"b",
                b"c",
            ]
            assert trace.get_current_span() is request
        with tracer.start_as_current_span("GET /async"):
            abandoned = async_body()
            assert await anext(abandoned) == b"first"
        return abandoned  # closed by asyncio.run's shutdown_asyncgens, in a task of its own

    with caplog.at_level(logging.ERROR):
        abandoned = asyncio.run(serve())
    assert [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert metrics.flush(timeout=5)

    by_provider = {s.attributes["provider"]: s for s in spans.get_finished_spans()
                   if s.name == "model_inference"}  # fmt: skip
    streamed, cancelled = by_provider["openrouter"], by_provider["anthropic"]
    assert (streamed.attributes or {})["outcome"] == "success"
    status = (streamed.attributes or {})["http.status_code"]
    assert (status, type(status)) == (200, int)  # the HTTPStatus as its int
    assert (cancelled.attributes or {})["outcome"] == "cancelled"
    aggregator = make_aggregator()
    aggregator.run_cycle()
    text = scrape(aggregator, OPENMETRICS)
    own = f'span_id="{streamed.context.span_id:016x}"'
    linked = [line for line in text.splitlines() if "span_id=" in line]
    for family in (
        "provider_response_time_seconds_bucket",
        "model_inference_duration_seconds_bucket",
    ):
        assert [own in line for line in linked if line.startswith(family)] == [True], linked
    del abandoned


def test_an_application_that_configures_no_tracing_links_nothing(
    redis_url: str, namespace: str
) -> None:
    script = f"""
from client import GatewayMetrics, MetricsClient
metrics = MetricsClient(redis_url={redis_url!r}, namespace={namespace!r})
with GatewayMetrics(metrics).inference("openrouter", "gpt") as call:
    call.status_code = 200
assert metrics.flush(timeout=10)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    settings = AggregatorSettings(redis_url=redis_url, namespace=namespace)
    aggregator = Aggregator(settings, connect(redis_url, socket_timeout=2.0))  # real time
    aggregator.run_cycle()
    text = scrape(aggregator, OPENMETRICS)
    assert 'provider_response_time_seconds_count{provider="openrouter"} 1.0' in text
    assert "trace_id" not in text
