"""Serving an ASGI app on the aggregator's own HTTP server (aggregator/serve/http_serving.py):
keep-alive, request bodies (with a length and chunked), a FastAPI app's routes, and a stop that
finishes the response under way before the lifespan's shutdown runs."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from aggregator.serve.http_guard import HttpLimits
from aggregator.serve.http_serving import serve_until_stopped


@dataclass
class Running:
    port: int
    events: list[str]
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    thread: threading.Thread

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def stop_now(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=10)


@pytest.fixture
def running() -> Iterator[Running]:
    events: list[str] = []
    release = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse((await request.body()).upper())

    @app.get("/slow")
    async def slow() -> PlainTextResponse:
        await asyncio.to_thread(release.wait, 10)
        events.append("slow answered")
        return PlainTextResponse("done")

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    ports: list[int] = []

    def started(sockets: list[socket.socket]) -> None:
        ports.append(sockets[0].getsockname()[1])
        ready.set()

    def serve() -> None:
        loop.run_until_complete(
            serve_until_stopped(app, "127.0.0.1", 0, HttpLimits(), stop=stop, started=started)
        )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    server = Running(ports[0], events, loop, stop, thread)
    server.release = release  # type: ignore[attr-defined]
    yield server
    release.set()
    server.stop_now()
    loop.close()


def test_keep_alive_and_request_bodies(running: Running) -> None:
    connection = running.connection()
    for body in (b"abc", b"x" * 200_000):
        connection.request("POST", "/echo", body=body)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, body.upper())
    connection.request("POST", "/echo", body=iter([b"ch", b"unked"]), encode_chunked=True)
    assert connection.getresponse().read() == b"CHUNKED"
    connection.request("GET", "/nowhere")
    response = connection.getresponse()
    assert response.status == 404 and response.read()
    connection.close()
    assert running.events == ["startup"]


def test_a_stop_finishes_the_response_under_way_then_shuts_down(running: Running) -> None:
    connection = running.connection()
    connection.request("GET", "/slow")
    answers: list[tuple[int, bytes]] = []

    def read() -> None:
        response = connection.getresponse()
        answers.append((response.status, response.read()))

    reader = threading.Thread(target=read)
    reader.start()
    idle = running.connection()  # one answer, then idle: closed at the stop
    idle.request("POST", "/echo", body=b"a")
    assert idle.getresponse().read() == b"A"
    running.loop.call_soon_threadsafe(running.stop.set)
    running.release.set()  # type: ignore[attr-defined]
    reader.join(timeout=10)
    running.thread.join(timeout=10)
    assert answers == [(200, b"done")]
    assert running.events == ["startup", "slow answered", "shutdown"]
    assert idle.sock is not None and idle.sock.recv(1) == b""  # the idle one was closed
