"""The origin-shaped gateway BEFORE the migration: prometheus_client metrics per process
(``before/metrics.py``, served by each worker's own ``/metrics``) and a home-grown breaker per
provider and process (``before/breaker.py``). It runs (``uvicorn
examples.origin_style.before.app:app``), and is right with one worker only: with more, each
counts, times and opens its breakers on its own slice of the traffic, and a reset through
``/admin/circuit-breakers`` reaches the one worker that answers it.

``../app.py`` is the same gateway after the migration; docs/migration/origin-gateway.md shows
the diff of their handler (``python -m examples.origin_style.handler_diff``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import prometheus_client
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from examples.origin_style import upstream
from examples.origin_style.before.breaker import CircuitBreakerError, get_circuit_breaker
from examples.origin_style.before.metrics import (
    APP_NAME,
    api_cost_per_request,
    credits_used,
    database_query_duration,
    fastapi_requests_duration,
    get_trace_exemplar,
    model_inference_duration,
    model_inference_requests,
    time_to_first_chunk,
    token_count_source,
    tokens_used,
)
from examples.origin_style.schemas import ChatRequest

ENDPOINT = "/v1/chat/completions"

app = FastAPI(title="origin-style gateway (before)")
app.mount("/metrics", prometheus_client.make_asgi_app())  # this worker's values only


@app.middleware("http")
async def observe_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.monotonic()
    response = await call_next(request)
    fastapi_requests_duration.labels(APP_NAME, request.method, request.url.path).observe(
        time.monotonic() - started, exemplar=get_trace_exemplar()
    )
    return response


def _call_provider(provider: str, request: ChatRequest) -> upstream.Completion:
    """The provider's SDK call, synchronous: the handler runs it in a thread."""
    breaker = get_circuit_breaker(provider)
    return breaker.call(
        upstream.complete, provider, request.model, request.messages, request.behaviour_of(provider)
    )


@app.post(ENDPOINT, response_model=None)
async def chat_completions(request: ChatRequest) -> dict[str, Any] | StreamingResponse:
    breakers = [get_circuit_breaker(p) for p in upstream.CHAINS[request.model]]
    chain = [b.provider for b in breakers if b.is_available()] or [breakers[0].provider]
    if request.stream:
        return StreamingResponse(_chunks(chain[0], request), media_type="text/event-stream")
    failure: Exception | None = None
    for provider in chain:
        started = time.monotonic()
        try:
            completion = await asyncio.to_thread(_call_provider, provider, request)
        except CircuitBreakerError as exc:
            failure = exc
            continue
        except upstream.ProviderError as exc:
            model_inference_requests.labels(provider, request.model, "error").inc()
            failure = exc
            continue
        model_inference_duration.labels(provider, request.model).observe(
            time.monotonic() - started, exemplar=get_trace_exemplar()
        )
        model_inference_requests.labels(provider, request.model, "success").inc()
        break
    else:
        raise _unavailable(failure)
    usage = completion.usage
    input_tokens, output_tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
    cost = await asyncio.to_thread(_cost, request.model, usage)
    tokens_used.labels(provider, request.model, "input").inc(input_tokens)
    tokens_used.labels(provider, request.model, "output").inc(output_tokens)
    credits_used.labels(provider, request.model).inc(cost)
    api_cost_per_request.labels(provider, request.model).observe(
        cost, exemplar=get_trace_exemplar()
    )
    return {"provider": provider, "text": completion.text, "usage": usage}


def _unavailable(failure: Exception | None) -> HTTPException:
    """The answer when no provider of the chain answered: 503 (with ``Retry-After``) when a
    breaker turned the call away, the provider's 429, or 502."""
    if isinstance(failure, CircuitBreakerError):
        seconds = get_circuit_breaker(failure.provider).get_state()["seconds_until_retry"]
        headers = {"Retry-After": str(max(1, math.ceil(seconds)))}
        return HTTPException(503, str(failure), headers=headers)
    status = (
        429 if isinstance(failure, upstream.ProviderError) and failure.status_code == 429 else 502
    )
    return HTTPException(status, f"no provider answered: {failure}")


def _cost(model: str, usage: dict[str, Any]) -> float:
    """USD of a call, from the model's prices (a blocking query of the gateway's database)."""
    with database_query_duration.labels("pricing").time():
        input_price, output_price = upstream.model_pricing(model)
    return (
        float(usage["prompt_tokens"]) * input_price
        + float(usage["completion_tokens"]) * output_price
    )


async def _chunks(provider: str, request: ChatRequest) -> AsyncIterator[bytes]:
    """A streamed answer: the provider's synchronous stream read in a thread, chunk by chunk."""
    started, usage, first = time.monotonic(), None, True
    try:
        stream = await asyncio.to_thread(
            get_circuit_breaker(provider).call,
            upstream.stream, provider, request.model, request.messages,
            request.behaviour_of(provider),
        )  # fmt: skip
        try:
            while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
                if first:
                    time_to_first_chunk.labels(provider, request.model).observe(
                        time.monotonic() - started
                    )
                    first = False
                usage = chunk.usage or usage
                yield f"data: {chunk.text}\n\n".encode()
        finally:
            stream.close()  # a client gone: the blocked read ends, the connection is released
    except (CircuitBreakerError, upstream.ProviderError) as exc:
        model_inference_requests.labels(provider, request.model, "error").inc()
        yield f"data: error {exc}\n\n".encode()
        return
    model_inference_duration.labels(provider, request.model).observe(time.monotonic() - started)
    model_inference_requests.labels(provider, request.model, "success").inc()
    if usage is not None:
        cost = await asyncio.to_thread(_cost, request.model, usage)
        tokens_used.labels(provider, request.model, "input").inc(int(usage["prompt_tokens"]))
        tokens_used.labels(provider, request.model, "output").inc(int(usage["completion_tokens"]))
        credits_used.labels(provider, request.model).inc(cost)
        token_count_source.labels(provider, request.model, "provider").inc(
            exemplar=get_trace_exemplar()
        )
    yield b"data: [DONE]\n\n"


@app.get("/admin/circuit-breakers")
def circuit_breakers() -> dict[str, dict[str, Any]]:
    """This worker's breakers (another worker's may say otherwise)."""
    return {p: get_circuit_breaker(p).get_state() for p in upstream.PROVIDERS}


@app.post("/admin/circuit-breakers/{provider}/reset")
def reset_circuit_breaker(provider: str) -> dict[str, str]:
    """Resets the breaker of the one worker this request reached."""
    get_circuit_breaker(provider).reset()
    return {"provider": provider, "state": "closed"}
