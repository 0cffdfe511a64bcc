"""The example gateway. ``gunicorn -c examples/gateway/gunicorn.conf.py examples.gateway.app:app``

Every worker records into Redis through one MetricsClient built at import (safe with
``--preload``); the aggregator serves the totals. ``/worker-metrics`` shows what this worker
alone knows, the per-process view that prometheus_client gives without this project.

A provider whose breaker turns the call away is answered 503 with ``Retry-After`` (when the
breaker says when); a streamed answer (``"stream": true``) whose client goes away mid-stream is
booked ``cancelled``, not as the provider's failure; the credits of a call are charged after
the call and added to it (``call.add_usage()``), as a gateway that learns them late does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import prometheus_client
from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from client import BreakerStatus, GatewayMetrics, MetricsClient, MetricsMiddleware
from examples.gateway import providers
from examples.gateway.providers import UpstreamError

log = logging.getLogger("gatewayz.gateway")
metrics = MetricsClient.from_env()
gateway = GatewayMetrics(metrics, app_name="gatewayz-example")
upstreams = providers.load(os.environ)

# The "before" world: a per-process prometheus_client counter, for comparison.
worker_registry = prometheus_client.CollectorRegistry()
worker_requests = prometheus_client.Counter(
    "worker_chat_requests", "Chat requests this worker served", registry=worker_registry
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    metrics.close(timeout=5.0)  # a stopping worker ships what it buffered


app = FastAPI(title="example gateway", lifespan=lifespan)
app.add_middleware(MetricsMiddleware, gateway=gateway)


class ChatRequest(BaseModel):
    provider: str
    model: str = "default"
    status: int | None = None
    latency_s: float | None = None
    chunks: int = 3
    input_tokens: int = 100
    output_tokens: int = 50
    stream: bool = False


@app.post("/v1/chat/completions", response_model=None)
async def chat(request: ChatRequest, response: Response) -> dict[str, object] | Response:
    worker_requests.inc()
    pid = {"x-worker-pid": str(os.getpid())}
    response.headers.update(pid)
    upstream = upstreams.get(request.provider)
    if upstream is None:
        raise HTTPException(404, f"unknown provider {request.provider!r}")
    breaker = await metrics.admit_async(request.provider)  # never blocks the event loop
    if not breaker:
        raise HTTPException(
            503, f"circuit {breaker.state} for {request.provider}", headers=retry_after(breaker)
        )
    if request.stream:
        return StreamingResponse(_streamed(upstream, request), media_type="text/plain", headers=pid)
    text = []
    started = time.perf_counter()
    try:
        with gateway.inference(request.provider, request.model, "/v1/chat/completions") as call:
            async for piece in call.stream(_encoded(upstream, request)):
                text.append(piece.decode())
            call.status_code = 200
            call.input_tokens, call.output_tokens = request.input_tokens, request.output_tokens
            call.cost_usd = request.output_tokens * 2e-6
    except UpstreamError as exc:
        # A rate limit is passed on as one (the caller should back off); any other upstream
        # error is a bad gateway.
        status = 429 if exc.status_code == 429 else 502
        _log_completion(request, status, started)
        raise HTTPException(
            status, f"upstream {request.provider} answered {exc.status_code}"
        ) from None
    # The credits charged once the answer is in (a gateway may learn its cost later still):
    # added to the call booked above, never a second call (nor on its span, which has ended).
    call.add_usage(credits=request.output_tokens / 1000)
    _log_completion(request, 200, started)
    return {"provider": request.provider, "text": "".join(text), "pid": os.getpid()}


def retry_after(breaker: BreakerStatus) -> dict[str, str]:
    """The ``Retry-After`` header of a call the breaker turned away: whole seconds, at least 1,
    when the breaker says when (none for a breaker an operator holds open)."""
    if breaker.retry_after_s is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(breaker.retry_after_s)))}


async def _streamed(upstream: providers.FakeProvider, request: ChatRequest) -> AsyncIterator[bytes]:
    """A streamed answer: its status is sent before the provider's first chunk, so an upstream
    error ends the stream. A client that goes away cancels it inside the timed block: booked
    ``cancelled``, outside the provider's error rate and breaker."""
    started, status = time.perf_counter(), 200
    try:
        with gateway.inference(request.provider, request.model, "/v1/chat/completions") as call:
            async for piece in call.stream(_encoded(upstream, request)):
                yield piece
            call.status_code = 200
            call.input_tokens, call.output_tokens = request.input_tokens, request.output_tokens
            call.credits = request.output_tokens / 1000
            call.cost_usd = request.output_tokens * 2e-6
    except UpstreamError as exc:
        status = 429 if exc.status_code == 429 else 502
    except (asyncio.CancelledError, GeneratorExit):
        status = 499  # the client closed the request
        raise
    finally:
        _log_completion(request, status, started)


def _log_completion(request: ChatRequest, status: int, started: float) -> None:
    # Provider, model and duration go in the line (extra=), not in Loki labels: they have many
    # values. Under gatewayz_telemetry.setup() this is a queue put; Loki is never waited on.
    log.info(
        "chat completion",
        extra={
            "provider": request.provider,
            "model": request.model,
            "status": status,
            "duration_s": round(time.perf_counter() - started, 4),
        },
    )


async def _encoded(upstream: providers.FakeProvider, request: ChatRequest) -> AsyncIterator[bytes]:
    async for piece in providers.complete(
        upstream, request.status, request.latency_s, request.chunks
    ):
        yield piece.encode()


@app.get("/v1/chat/{chat_id}")
async def get_chat(chat_id: str) -> dict[str, str]:
    hit = chat_id.endswith("0")
    (gateway.cache_hits if hit else gateway.cache_misses).labels("chats").inc()
    if not hit:
        gateway.database_queries.labels("chats", "select").inc()
    return {"id": chat_id}


@app.get("/worker-metrics")
def worker_metrics() -> Response:
    body = prometheus_client.generate_latest(worker_registry)
    return Response(
        body,
        media_type=prometheus_client.CONTENT_TYPE_LATEST,
        headers={"x-worker-pid": str(os.getpid())},
    )
