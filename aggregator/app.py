"""The aggregator's HTTP API: /metrics, /healthz, /readyz, /health/dashboard."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from aggregator.cycle import Aggregator
from aggregator.exposition import make_registry, render

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(aggregator: Aggregator, lifespan: Lifespan | None = None) -> FastAPI:
    """The API over ``aggregator``'s snapshot. ``lifespan`` runs around serving (the entry
    point starts the scheduler there and, on shutdown, stops it and releases the lease)."""
    app = FastAPI(title="gatewayz metrics aggregator", version="0.1.0", lifespan=lifespan)
    registry = make_registry(aggregator)

    @app.get("/metrics", summary="Prometheus exposition of the current snapshot")
    def metrics(request: Request) -> Response:
        body, content_type = render(registry, request.headers.get("accept"))
        return Response(content=body, media_type=content_type)

    @app.get("/healthz", summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Redis answers and the snapshot is fresh")
    async def readyz() -> JSONResponse:
        ok, reason = await run_in_threadpool(aggregator.ready)
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @app.get("/health/dashboard", summary="Per-provider health of the current snapshot")
    def dashboard() -> dict[str, Any]:
        snapshot, status = aggregator.snapshot, aggregator.status
        return {
            "status": {
                "cycles_ok": status.cycles_ok,
                "cycles_failed": status.cycles_failed,
                "last_success_at": status.last_success_at,
                "last_duration_seconds": status.last_duration_seconds,
                "last_error": status.last_error,
            },
            "snapshot": None if snapshot is None else snapshot.as_dict(),
        }

    return app
