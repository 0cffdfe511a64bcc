"""The three gateways ``bench_gateway`` drives, one trivial route each, chosen by
``GATEWAY_VARIANT`` (served by ``examples/gateway/gunicorn.conf.py``):

- ``none``: no metrics at all;
- ``prometheus``: what the gateway would use otherwise: prometheus_client in multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR``) with prometheus-fastapi-instrumentator's middleware and
  ``/metrics``, plus the provider histogram and counters written by hand;
- ``ours``: this project's ``MetricsMiddleware`` and ``gateway.inference()``.

``GET /v1/infer``: a 1 ms ``asyncio.sleep`` stands for the provider call, so what differs between
the variants is the metrics work around it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

VARIANT = os.environ.get("GATEWAY_VARIANT", "none")
PROVIDER, MODEL, ROUTE = "openrouter", "gpt-4o", "/v1/infer"
INPUT_TOKENS, OUTPUT_TOKENS, CREDITS, COST_USD = 100, 50, 0.05, 0.0001
PROVIDER_CALL_SECONDS = 0.001


async def provider_call() -> None:
    await asyncio.sleep(PROVIDER_CALL_SECONDS)


def _plain() -> Callable[[], Awaitable[dict[str, bool]]]:
    async def infer() -> dict[str, bool]:
        await provider_call()
        return {"ok": True}

    return infer


def _prometheus(app: FastAPI) -> Callable[[], Awaitable[dict[str, bool]]]:
    # Imported here: multiprocess mode is decided when prometheus_client's values are first
    # made, from PROMETHEUS_MULTIPROC_DIR (set by the benchmark for this variant only).
    import time

    import prometheus_client
    from prometheus_fastapi_instrumentator import Instrumentator

    from client._gateway import INFERENCE_BUCKETS

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise RuntimeError("the prometheus variant needs PROMETHEUS_MULTIPROC_DIR")
    Instrumentator().instrument(app).expose(app)
    requests = prometheus_client.Counter(
        "model_inference_requests_total", "Model calls", ["provider", "model", "status"]
    )
    duration = prometheus_client.Histogram(
        "model_inference_duration_seconds",
        "Model latency",
        ["provider", "model"],
        buckets=INFERENCE_BUCKETS,
    )
    tokens = prometheus_client.Counter(
        "tokens_used_total", "Token usage", ["provider", "model", "token_type"]
    )
    credits = prometheus_client.Counter("credits_used", "Credit usage", ["provider", "model"])

    async def infer() -> dict[str, bool]:
        started = time.perf_counter()
        await provider_call()
        duration.labels(PROVIDER, MODEL).observe(time.perf_counter() - started)
        requests.labels(PROVIDER, MODEL, "success").inc()
        tokens.labels(PROVIDER, MODEL, "input").inc(INPUT_TOKENS)
        tokens.labels(PROVIDER, MODEL, "output").inc(OUTPUT_TOKENS)
        credits.labels(PROVIDER, MODEL).inc(CREDITS)
        return {"ok": True}

    return infer


def _ours(app: FastAPI) -> Callable[[], Awaitable[dict[str, bool]]]:
    from client import GatewayMetrics, MetricsClient, MetricsMiddleware

    metrics = MetricsClient.from_env()  # built in the preloading master: safe across the fork
    gateway = GatewayMetrics(metrics, app_name="gateway-bench")
    app.add_middleware(MetricsMiddleware, gateway=gateway)
    app.state.closers.append(lambda: metrics.close(timeout=5.0))  # ships what it buffered

    async def infer() -> dict[str, bool]:
        with gateway.inference(PROVIDER, MODEL, ROUTE) as call:
            await provider_call()
            call.status_code = 200
            call.input_tokens, call.output_tokens = INPUT_TOKENS, OUTPUT_TOKENS
            call.credits, call.cost_usd = CREDITS, COST_USD
        return {"ok": True}

    return infer


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    for close in app.state.closers:
        close()


def make_app(variant: str) -> FastAPI:
    app = FastAPI(title=f"gateway benchmark: {variant}", lifespan=_lifespan)
    app.state.closers = []
    if variant == "none":
        infer = _plain()
    elif variant == "prometheus":
        infer = _prometheus(app)
    elif variant == "ours":
        infer = _ours(app)
    else:
        raise ValueError(f"GATEWAY_VARIANT={variant!r}: none, prometheus or ours")
    app.get(ROUTE)(infer)
    return app


app = make_app(VARIANT)
