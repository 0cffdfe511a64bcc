"""MetricsMiddleware in a FastAPI app: the route template as ``path``, FastAPI's own routes
included, and no raw path ever."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from http import HTTPStatus

import redis
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient

from client import GatewayMetrics, MetricsClient, MetricsMiddleware
from gatewayz_protocol.keys import Keys
from tests.support.clock import FakeClock


def test_every_matched_route_is_labelled_by_its_template(
    make_client: Callable[..., MetricsClient], r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    app = FastAPI()

    @app.get("/v1/chat/{chat_id}")
    def chat(chat_id: str) -> dict[str, str]:
        return {"id": chat_id}

    app.add_middleware(MetricsMiddleware, gateway=GatewayMetrics(metrics, app_name="t"))
    http = TestClient(app)
    for path in ("/docs", "/openapi.json", "/redoc", "/v1/chat/1", "/v1/chat/2", "/nope/3"):
        http.get(path)
    assert metrics.flush(timeout=5)
    counts = {
        field.decode(): int(value)
        for field, value in r.hgetall(keys.metric_data("fastapi_requests")).items()
    }
    assert counts == {
        'i:["t","GET","/docs","200","2xx"]': 1,
        'i:["t","GET","/openapi.json","200","2xx"]': 1,
        'i:["t","GET","/redoc","200","2xx"]': 1,
        'i:["t","GET","/v1/chat/{chat_id}","200","2xx"]': 2,
        'i:["t","GET","__unmatched__","404","4xx"]': 1,
    }


def _requests(r: redis.Redis, keys: Keys) -> dict[str, int]:
    raw = r.hgetall(keys.metric_data("fastapi_requests"))
    return {field.decode(): int(value) for field, value in raw.items()}


def test_a_status_sent_as_an_int_enum_is_counted_as_its_int(
    make_client: Callable[..., MetricsClient], r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    # Starlette sends the status a response was given: FastAPI's HTTPException keeps an
    # HTTPStatus, and so does a response built with one
    metrics = make_client(clock=clock)
    app = FastAPI()

    @app.get("/missing")
    def missing() -> None:
        raise HTTPException(status_code=HTTPStatus.NOT_FOUND, detail="no such model")

    @app.get("/created")
    def created() -> JSONResponse:
        return JSONResponse({"ok": True}, status_code=HTTPStatus.CREATED)

    app.add_middleware(MetricsMiddleware, gateway=GatewayMetrics(metrics, app_name="t"))
    http = TestClient(app)
    assert [http.get(path).status_code for path in ("/missing", "/created", "/created")] == [
        404, 201, 201,
    ]  # fmt: skip
    assert metrics.flush(timeout=5)
    assert _requests(r, keys) == {
        'i:["t","GET","/missing","404","4xx"]': 1,
        'i:["t","GET","/created","201","2xx"]': 2,
    }


def test_an_exception_before_the_response_is_a_500_and_after_it_the_status_sent(
    make_client: Callable[..., MetricsClient], r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("before the response started")

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        raise RuntimeError("upstream broke mid-stream")

    @app.get("/stream")
    def stream() -> StreamingResponse:
        return StreamingResponse(body(), media_type="text/event-stream")

    app.add_middleware(MetricsMiddleware, gateway=GatewayMetrics(metrics, app_name="t"))
    http = TestClient(app, raise_server_exceptions=False)
    assert http.get("/boom").status_code == 500
    cut_short = http.get("/stream")  # 200 headers, then the body as far as it got
    assert cut_short.status_code == 200
    # the TestClient of the oldest supported FastAPI (0.110) drops the body
    # it got when the app raises; later ones keep it
    assert cut_short.content in (b"data: 1\n\n", b"")
    assert metrics.flush(timeout=5)
    assert _requests(r, keys) == {
        'i:["t","GET","/boom","500","5xx"]': 1,
        'i:["t","GET","/stream","200","2xx"]': 1,  # what the client got
    }
