"""One request's ASGI cycle (aggregator/serve/http_cycle.py) over a fake connection: bodies in
and out, chunked when no length is set, no body for HEAD, 100-continue, a 500 for an
application that fails before answering; and the ASGI lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from aggregator.serve.http_cycle import Lifespan, RequestResponseCycle, status_line


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    def __init__(self) -> None:
        self.transport: Any = FakeTransport()
        self.completed = 0
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    async def drain(self) -> None:
        return None

    def on_response_complete(self) -> None:
        self.completed += 1


def scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": method, "http_version": "1.1", "headers": headers or []}


async def echo(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message["body"], message["more_body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"!"})


def test_a_response_without_length_is_chunked_and_the_body_comes_in_pieces() -> None:
    async def run() -> bytes:
        connection = FakeConnection()
        cycle = RequestResponseCycle(scope("POST"), connection, keep_alive=True)
        task = asyncio.ensure_future(cycle.run(echo))
        cycle.feed_body(b"ab")
        await asyncio.sleep(0)
        cycle.feed_body(b"c")
        cycle.body_complete()
        await task
        assert connection.completed == 1 and cycle.keep_alive
        return bytes(connection.transport.written)

    written = asyncio.run(run())
    assert written.startswith(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    assert written.endswith(b"3\r\nabc\r\n1\r\n!\r\n0\r\n\r\n")


def test_head_has_no_body_and_a_failure_before_the_answer_is_a_500() -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("boom")

    async def run() -> tuple[bytes, bytes, bool]:
        head = FakeConnection()
        cycle = RequestResponseCycle(scope("HEAD"), head, keep_alive=True)
        cycle.body_complete()
        await cycle.run(echo)
        failed = FakeConnection()
        broken = RequestResponseCycle(scope(), failed, keep_alive=True)
        await broken.run(fails)
        return head.transport.written, failed.transport.written, broken.keep_alive

    head, failed, keep_alive = asyncio.run(run())
    assert head == b"HTTP/1.1 200 OK\r\n\r\n"
    assert failed.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"connection: close" in failed and not keep_alive


def test_expect_100_continue_is_answered_when_the_body_is_asked_for() -> None:
    async def run() -> bytes:
        connection = FakeConnection()
        headers = [(b"expect", b"100-continue")]
        cycle = RequestResponseCycle(scope("POST", headers), connection, keep_alive=False)
        task = asyncio.ensure_future(cycle.run(echo))
        await asyncio.sleep(0)
        assert connection.transport.written == b"HTTP/1.1 100 Continue\r\n\r\n"
        cycle.body_complete()
        await task
        return bytes(connection.transport.written)

    assert b"connection: close\r\n" in asyncio.run(run())


def test_a_request_dropped_before_its_application_reads_writes_nothing() -> None:
    # A body that breaks off: the server answers 400 and ends its output; the application,
    # run after that, must write no 100 Continue nor answer (a write after the end raised).
    async def run() -> bytes:
        connection = FakeConnection()
        headers = [(b"expect", b"100-continue")]
        cycle = RequestResponseCycle(scope("POST", headers), connection, keep_alive=True)
        cycle.disconnect()
        await cycle.run(echo)
        assert connection.completed == 0
        return bytes(connection.transport.written)

    assert asyncio.run(run()) == b""


def test_status_lines() -> None:
    assert status_line(431) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    assert status_line(599) == b"HTTP/1.1 599 \r\n"


def test_the_lifespan_runs_around_serving_and_a_failed_startup_raises() -> None:
    events: list[str] = []

    def app(fail: bool) -> Any:
        async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
            assert scope["type"] == "lifespan"
            await receive()
            events.append("startup")
            if fail:
                await send({"type": "lifespan.startup.failed", "message": "no"})
                return
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})

        return lifespan_app

    async def run() -> None:
        lifespan = Lifespan(app(False), {})
        await lifespan.startup()
        await lifespan.shutdown()
        with pytest.raises(RuntimeError, match="startup failed"):
            await Lifespan(app(True), {}).startup()

    asyncio.run(run())
    assert events == ["startup", "shutdown", "startup"]
