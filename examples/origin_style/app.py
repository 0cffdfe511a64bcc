"""The origin-shaped gateway AFTER the migration, under Gunicorn with any number of workers::

    GATEWAYZ_REDIS_URL=redis://127.0.0.1:6379/0 GATEWAY_WORKERS=4 \\
        gunicorn -c examples/gateway/gunicorn.conf.py examples.origin_style.app:app

Its shape is the origin's: the provider's SDK call is synchronous (``_call_provider``, run with
``asyncio.to_thread``), a stream is a synchronous iterator read with ``asyncio.to_thread(next,
stream, None)``, tokens and cost are known only after the call (the price is a database query),
and its metrics module (``metrics.py``) keeps prometheus_client's declarations and exemplars.
What changed (``before/app.py``, docs/migration/origin-gateway.md):

- a call is timed and booked by ``gateway.inference(..., guard=True)`` in the thread that makes
  it: its outcome class, latency, TTFB and TTFC, for every worker at once; the breaker (one per
  provider for the whole fleet, the aggregator's) is asked first, and a call it turns away
  raises ``CircuitOpenError`` with ``retry_after_s``, counted as a rejection, never booked;
- the failover chain is filtered with ``metrics.breaker_async()``, which takes no half-open
  permit and counts nothing (only the provider actually called is admitted);
- tokens, credits and cost are added once known (``call.add_usage()``), to the call booked:
  no second event; a bad value (``prompt_tokens: 12.5``) is left out and counted, the call stays
  booked;
- a client that goes away mid-stream cancels the task inside the timed block: booked
  ``cancelled``, outside the error rate and the breaker;
- the per-process breakers, their admin routes and ``/metrics`` are gone: the aggregator serves
  ``/metrics``, ``/health/dashboard`` and ``/admin/breakers`` (status, open, close, reset behind
  the operator token). ``GET /admin/circuit-breakers`` stays, read-only: what this worker sees.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import StreamingResponse

from client import CircuitOpenError, InferenceCall, MetricsMiddleware
from examples.origin_style import upstream
from examples.origin_style.metrics import (
    api_cost_per_request,
    database_query_duration,
    gateway,
    get_trace_exemplar,
    metrics,
    token_count_source,
)
from examples.origin_style.schemas import ChatRequest

ENDPOINT = "/v1/chat/completions"


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    metrics.close(timeout=5.0)  # a stopping worker ships what it buffered


app = FastAPI(title="origin-style gateway", lifespan=lifespan)
app.add_middleware(MetricsMiddleware, gateway=gateway)  # fastapi_requests_*, every worker's


def _call_provider(
    provider: str, request: ChatRequest
) -> tuple[upstream.Completion, InferenceCall]:
    """The provider's SDK call, synchronous: the handler runs it in a thread."""
    with gateway.inference(provider, request.model, ENDPOINT, guard=True) as call:
        completion = upstream.complete(
            provider, request.model, request.messages, request.behaviour_of(provider)
        )
        call.first_byte()
    return completion, call


@app.post(ENDPOINT, response_model=None)
async def chat_completions(request: ChatRequest) -> dict[str, Any] | StreamingResponse:
    breakers = [await metrics.breaker_async(p) for p in upstream.CHAINS[request.model]]
    chain = [b.provider for b in breakers if b] or [breakers[0].provider]
    if request.stream:
        admitted = await metrics.admit_async(chain[0])  # a half-open trial permit taken for it
        if not admitted:
            raise _unavailable(CircuitOpenError.of(admitted))
        return StreamingResponse(_chunks(chain[0], request), media_type="text/event-stream")
    failure: Exception | None = None
    for provider in chain:
        try:
            completion, call = await asyncio.to_thread(_call_provider, provider, request)
        except (CircuitOpenError, upstream.ProviderError) as exc:
            failure = exc
            continue
        break
    else:
        raise _unavailable(failure)
    usage = completion.usage
    cost = await asyncio.to_thread(_cost, request.model, usage)
    call.add_usage(
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage["completion_tokens"],
        credits=cost,
        cost_usd=cost,
    )
    api_cost_per_request.labels(provider, request.model).observe(
        cost, exemplar=get_trace_exemplar()
    )
    return {"provider": provider, "text": completion.text, "usage": usage}


def _unavailable(failure: Exception | None) -> HTTPException:
    """The answer when no provider of the chain answered: 503 when a breaker turned the call
    away (with ``Retry-After`` when the breaker knows when; an operator holding it open gives
    no deadline), the provider's 429, or 502."""
    if isinstance(failure, CircuitOpenError):
        seconds = failure.retry_after_s
        headers = {} if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}
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
    """A streamed answer: the provider's synchronous stream read in a thread, chunk by chunk,
    inside the timed block (TTFB when the stream opens, TTFC at its first chunk). A client that
    goes away cancels this task inside the block: booked ``cancelled``; the stream is closed,
    which ends the read blocked in its thread."""
    usage = None
    try:
        with gateway.inference(provider, request.model, ENDPOINT) as call:
            stream = await asyncio.to_thread(
                upstream.stream, provider, request.model, request.messages,
                request.behaviour_of(provider),
            )  # fmt: skip
            call.first_byte()
            try:
                while (chunk := await asyncio.to_thread(next, stream, None)) is not None:
                    call.chunk()
                    usage = chunk.usage or usage
                    yield f"data: {chunk.text}\n\n".encode()
            finally:
                stream.close()  # a client gone: the blocked read ends, the connection is released
    except upstream.ProviderError as exc:
        yield f"data: error {exc}\n\n".encode()
        return
    if usage is not None:  # the provider's counts come with its last chunk
        cost = await asyncio.to_thread(_cost, request.model, usage)
        call.add_usage(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            credits=cost,
            cost_usd=cost,
        )
        token_count_source.labels(provider, request.model, "provider").inc(
            exemplar=get_trace_exemplar()
        )
    yield b"data: [DONE]\n\n"


@app.get("/admin/circuit-breakers")
async def circuit_breakers(response: Response) -> dict[str, dict[str, Any]]:
    """What this worker sees of each provider's breaker (the fleet's, kept by the aggregator),
    taking nothing. Changing one is the aggregator's ``POST /admin/breakers/{provider}/...``."""
    response.headers["x-worker-pid"] = str(os.getpid())
    return {p: dataclasses.asdict(await metrics.breaker_async(p)) for p in upstream.PROVIDERS}
