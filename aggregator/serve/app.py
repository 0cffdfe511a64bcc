"""The aggregator's HTTP API: /metrics, /healthz, /readyz, /health/dashboard, /health/history,
and the dashboard page (/dashboard; / redirects to it).

With a bearer token configured (``--auth-token-file``), /metrics, /health/dashboard and
/health/history answer 401 to a request without ``Authorization: Bearer <token>`` or with a
wrong token; /healthz and /readyz stay open for probes, and so does the dashboard page: it holds
no data (it asks for the token and sends it with its own requests). The breaker commands
(/admin/breakers, ``admin``) change state only with the operator token (``access``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from aggregator.engine.cycle import Aggregator
from aggregator.serve.access import Access, Refused, refused_answer
from aggregator.serve.admin import add_admin
from aggregator.serve.dashboard import DashboardCache, DashboardResponse
from aggregator.serve.history import HistoryResponse, history_response
from aggregator.serve.metrics_route import MetricsFastPath
from aggregator.serve.rendering import RenderedMetrics, accepts_gzip

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(aggregator: Aggregator, lifespan: Lifespan | None = None) -> FastAPI:
    """The API over ``aggregator``'s snapshot. ``lifespan`` runs around serving (the entry
    point starts the scheduler there and, on shutdown, stops it and releases the lease)."""
    # No /docs nor /redoc: they load scripts from a CDN onto the origin where the dashboard
    # keeps its token. The schema stays, behind the token like the data it describes.
    app = FastAPI(
        title="gatewayz metrics aggregator",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    settings = aggregator.settings
    rendered = RenderedMetrics(aggregator.served)
    app.state.rendered = rendered  # the entry point primes it after each cycle
    access = Access(settings.auth_token, settings.operator_token)
    app.add_exception_handler(Refused, refused_answer)  # {"error", "detail"}, as every error
    # a scrape of a rendered body answered ahead of the routing (inside the host check)
    app.add_middleware(MetricsFastPath, rendered=rendered, access=access)
    hosts = settings.trusted_hosts
    if hosts != ("*",):  # a page on another name resolving here (DNS rebinding) is refused
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    protected = [Depends(access.reader_guard())]
    _add_metrics(app, rendered, protected)
    _add_probes(app, aggregator)
    _add_dashboard(app, aggregator, protected)
    add_admin(app, aggregator, access)

    @app.get("/openapi.json", include_in_schema=False, dependencies=protected)
    def schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


def _add_metrics(app: FastAPI, rendered: RenderedMetrics, protected: list[Any]) -> None:
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


def _add_probes(app: FastAPI, aggregator: Aggregator) -> None:
    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Redis answers and the snapshot is fresh")
    async def readyz() -> JSONResponse:
        ok, reason = await run_in_threadpool(aggregator.ready)
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)


def _add_dashboard(app: FastAPI, aggregator: Aggregator, protected: list[Any]) -> None:
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

    @app.get(
        "/health/history",
        summary="The last hour per provider and this replica's view of the aggregator",
        description="One point per minute (health score, error rate), kept in Redis by the "
        'leader; README "Dashboard".',
        response_model=HistoryResponse,
        dependencies=protected,
    )
    def history() -> HistoryResponse:
        return history_response(aggregator)

    page = resources.files("aggregator.serve").joinpath("static/dashboard.html").read_bytes()
    headers = page_headers(page)

    @app.get(
        "/dashboard",
        summary="The dashboard page (no data in it, hence no token: it fetches with one)",
        response_class=HTMLResponse,
    )
    def dashboard_page() -> Response:
        return Response(content=page, media_type="text/html; charset=utf-8", headers=headers)

    @app.get("/", summary="Redirects to /dashboard", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)


def page_headers(page: bytes) -> dict[str, str]:
    """The dashboard page's headers: a Content-Security-Policy that runs its own inline script
    and style only (by their hashes: nothing injected, nothing from another origin), talks to
    this origin only and may not be framed; no sniffing, no referrer."""
    html = page.decode()
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    if script is None or style is None:
        raise ValueError("the dashboard page has lost its inline script or style")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_digest(script.group(1))}",
            f"style-src {_digest(style.group(1))}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _digest(source: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()}'"
