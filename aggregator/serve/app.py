"""The aggregator's HTTP API: /metrics, /healthz, /readyz, /health/dashboard, /health/history,
and the dashboard page (/dashboard; / redirects to it).

With a bearer token configured (``--auth-token-file``), /metrics, /health/dashboard and
/health/history answer 401 to a request without ``Authorization: Bearer <token>`` or with a
wrong token; /healthz and /readyz stay open for probes, and so does the dashboard page: it holds
no data (it asks for the token and sends it with its own requests). There is no admin endpoint:
breaker commands are CLI-only.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources

import redis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from aggregator.core.history import HISTORY_POINTS, HistoryPointModel, HistoryResponse
from aggregator.engine.cycle import Aggregator
from aggregator.serve.dashboard import DashboardCache, DashboardResponse
from aggregator.serve.rendering import RenderedMetrics, accepts_gzip

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

    settings = aggregator.settings

    @app.get(
        "/health/history",
        summary="The last hour per provider and this replica's view of the aggregator",
        description="One point per minute (health score, error rate), kept in Redis by the "
        'leader; README "Dashboard".',
        response_model=HistoryResponse,
        dependencies=protected,
    )
    def history() -> HistoryResponse:
        served = aggregator.served()
        names = [p.provider for p in served.snapshot.providers] if served.snapshot else []
        try:
            holder, points = aggregator.history(names)
            reachable = True
        except (redis.RedisError, OSError):
            holder, points, reachable = None, {}, False
        return HistoryResponse(
            now=time.time(),
            instance=served.instance,
            leader=served.leader,
            leader_instance=holder,
            redis_reachable=reachable,
            interval_seconds=served.interval_seconds,
            breaker_interval_seconds=served.breaker_interval_seconds,
            max_age_seconds=settings.readiness_max_age_intervals * settings.interval_seconds,
            half_open_calls=settings.breaker.half_open_calls,
            half_open_timeout_seconds=settings.breaker.half_open_timeout_seconds,
            points=HISTORY_POINTS,
            providers={
                name: [
                    HistoryPointModel(
                        minute_start=p.minute_start,
                        health_score=p.health_score,
                        error_rate=p.error_rate,
                    )
                    for p in found
                ]
                for name, found in points.items()
            },
        )

    page = resources.files("aggregator.serve").joinpath("static/dashboard.html").read_bytes()

    @app.get(
        "/dashboard",
        summary="The dashboard page (no data in it, hence no token: it fetches with one)",
        response_class=HTMLResponse,
    )
    def dashboard_page() -> Response:
        return Response(
            content=page,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"},
        )

    @app.get("/", summary="Redirects to /dashboard", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)

    return app
