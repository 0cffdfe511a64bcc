"""One HTTP/1.1 request and its response, as the ASGI 3 application sees them (``receive`` and
``send``), for the aggregator's own connection protocol (``http_server``); and the ASGI
lifespan (``Lifespan``) around serving.

What the ASGI specification asks of a server for HTTP, and no more: the request body in
``http.request`` messages, ``http.disconnect`` once the client is gone or the response is sent,
a response with its ``content-length`` as the application set it or chunked, no body for HEAD,
``Expect: 100-continue`` answered when the body is first asked for, writes that wait while the
client reads nothing (the transport's flow control), and a 500 for an application that fails
before it starts its response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

log = logging.getLogger("gatewayz.aggregator.http")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
BODY_HIGH_WATER = 65536
"""Request body bytes held before the connection stops reading, until the application asks."""


def status_line(status: int) -> bytes:
    from http import HTTPStatus

    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = _REASONS.get(status, "")
    return f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")


class Connection(Protocol):
    """What a cycle needs of its connection (``http_server.GuardedHttpProtocol``)."""

    transport: asyncio.Transport

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    async def drain(self) -> None: ...
    def on_response_complete(self) -> None: ...


class RequestResponseCycle:
    """One request's ASGI ``receive`` and ``send`` over ``connection``."""

    def __init__(
        self, scope: MutableMapping[str, Any], connection: Connection, keep_alive: bool
    ) -> None:
        self.scope = scope
        self.connection = connection
        self.keep_alive = keep_alive
        self.expect_100 = any(
            name == b"expect" and value.lower() == b"100-continue"
            for name, value in scope["headers"]
        )
        self.body = b""
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.message_event = asyncio.Event()
        self._chunked = False
        self._head = scope["method"] == "HEAD"

    # the request

    def feed_body(self, data: bytes) -> None:
        self.body += data
        if len(self.body) > BODY_HIGH_WATER:
            self.connection.pause_reading()
        self.message_event.set()

    def body_complete(self) -> None:
        self.more_body = False
        self.message_event.set()

    def disconnect(self) -> None:
        self.disconnected = True
        self.message_event.set()

    async def receive(self) -> Message:
        transport = self.connection.transport
        if self.expect_100 and not self.disconnected and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.expect_100 = False
        if not self.disconnected and not self.response_complete:
            self.connection.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": self.body, "more_body": self.more_body}
        self.body = b""
        return message

    # the response

    async def send(self, message: Message) -> None:
        if self.disconnected:
            return  # the client is gone: what the application sends goes nowhere
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self._start(message)
            return
        if self.response_complete or kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        transport = self.connection.transport
        if not self._head:
            if self._chunked:
                if body:
                    transport.write(b"%x\r\n%b\r\n" % (len(body), body))
                if not more:
                    transport.write(b"0\r\n\r\n")
            elif body:
                transport.write(body)
        await self.connection.drain()
        if not more:
            self.response_complete = True
            self.message_event.set()
            self.connection.on_response_complete()

    def _start(self, message: Message) -> None:
        self.response_started = True
        headers = [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers", ())]
        names = {name for name, _ in headers}
        if any(n == b"connection" and v.lower() == b"close" for n, v in headers):
            self.keep_alive = False
        lines = [status_line(message["status"])]
        lines += [b"%b: %b\r\n" % (name, value) for name, value in headers]
        if b"content-length" not in names and b"transfer-encoding" not in names:
            if self._head:
                pass
            elif self.scope["http_version"] == "1.1":
                self._chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # HTTP/1.0 without a length: the close ends it
        if not self.keep_alive and b"connection" not in names:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.connection.transport.write(b"".join(lines))

    async def run(self, app: ASGIApp) -> None:
        """The application on this request; a failure before the response started is a 500,
        after it the connection is closed (the response cannot be finished)."""
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("error in the ASGI application", exc_info=exc)
            self._failed()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.response_complete and not self.disconnected:
                log.error("the ASGI application returned without completing its response")
                self._failed()

    def _failed(self) -> None:
        if self.disconnected or self.response_complete:
            return
        if self.response_started:
            self.connection.transport.close()
            return
        self.keep_alive = False
        body = b"Internal Server Error"
        self.connection.transport.write(
            status_line(500) + b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)
        )
        self.response_started = self.response_complete = True
        self.connection.on_response_complete()


class Lifespan:
    """The ASGI lifespan of ``app``: ``startup()`` before serving, ``shutdown()`` after (an
    application without lifespan support is served all the same)."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self._app = app
        self._state = state
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._started = asyncio.Event()
        self._ended = asyncio.Event()
        self._failed: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        """RuntimeError when the application says its startup failed."""
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._queue.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failed is not None:
            raise RuntimeError(f"the application's startup failed: {self._failed}")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._queue.put({"type": "lifespan.shutdown"})
        await self._ended.wait()
        if self._failed is not None:
            log.error("the application's shutdown failed: %s", self._failed)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}
        try:
            await self._app(scope, self._queue.get, self._send)
        except BaseException as exc:
            if not self._started.is_set():  # no lifespan support, or its startup raised
                log.info("lifespan: %r", exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                self._failed = repr(exc)
        finally:
            self._started.set()
            self._ended.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            self._failed = message.get("message", "") or kind
        if kind.startswith("lifespan.startup."):
            self._started.set()
        elif kind.startswith("lifespan.shutdown."):
            self._ended.set()
