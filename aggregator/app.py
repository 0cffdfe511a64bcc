"""The aggregator's HTTP API: /metrics, /healthz, /readyz, /health/dashboard.

With a bearer token configured (``--auth-token-file``), /metrics and /health/dashboard answer
401 to a request without ``Authorization: Bearer <token>`` or with a wrong token; /healthz and
/readyz stay open for probes. There is no admin endpoint: breaker commands are CLI-only.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from aggregator.cycle import Aggregator
from aggregator.dashboard import DashboardCache, DashboardResponse
from aggregator.rendering import RenderedMetrics, accepts_gzip

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def bearer_guard(token: str | None) -> Callable[[Request], Awaitable[None]]:
    """A dependency that lets a request through only with ``Authorization: Bearer <token>``
    (constant-time comparison); with ``token`` None it lets everything through. A missing or
    malformed header and a wrong token both get 401 with ``WWW-Authenticate: Bearer`` (RFC
    6750; a wrong token adds ``error="invalid_token"``)."""
    expected = None if token is None else token.encode("ascii")

    async def guard(request: Request) -> None:  # async: no thread hop for a header check
        if expected is None:
            return
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise HTTPException(
                401, "bearer token required", headers={"WWW-Authenticate": "Bearer"}
            )
        # Starlette decodes header bytes as latin-1: encoding back gives the bytes sent.
        if not hmac.compare_digest(credentials.strip().encode("latin-1"), expected):
            raise HTTPException(
                401,
                "invalid bearer token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return guard


def create_app(aggregator: Aggregator, lifespan: Lifespan | None = None) -> FastAPI:
    """The API over ``aggregator``'s snapshot. ``lifespan`` runs around serving (the entry
    point starts the scheduler there and, on shutdown, stops it and releases the lease)."""
    app = FastAPI(title="gatewayz metrics aggregator", version="0.1.0", lifespan=lifespan)
    rendered = RenderedMetrics(aggregator.served)
    app.state.rendered = rendered  # the entry point primes it after each cycle
    protected = [Depends(bearer_guard(aggregator.settings.auth_token))]

    @app.get(
        "/metrics",
        summary="Prometheus exposition of the current snapshot",
        dependencies=protected,
    )
    async def metrics(request: Request) -> Response:
        accept = request.headers.get("accept")
        gzipped = accepts_gzip(request.headers.get("accept-encoding"))
        # Bodies are rendered after each cycle: serve them from the event loop, and render in
        # a worker thread only when a snapshot or format is not rendered yet.
        found = rendered.cached(accept, gzipped)
        if found is None:
            found = await run_in_threadpool(rendered.render, accept, gzipped)
        body, content_type = found
        headers = {"Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(content=body, media_type=content_type, headers=headers)

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Redis answers and the snapshot is fresh")
    async def readyz() -> JSONResponse:
        ok, reason = await run_in_threadpool(aggregator.ready)
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    cache = DashboardCache(aggregator.settings.latency_target_seconds)

    @app.get(
        "/health/dashboard",
        summary="Per-provider health of the current snapshot",
        description="Today's `status` and `snapshot`, plus `system_status` and `providers[]` "
        'for the gateway frontend; the status rules are in README "Health dashboard".',
        response_model=DashboardResponse,
        dependencies=protected,
    )
    def dashboard() -> Response:
        # The body is validated against DashboardResponse when it is built, once per served
        # state; returned as bytes, it is not validated and serialized again per request.
        return Response(content=cache.body(aggregator.served()), media_type="application/json")

    return app
