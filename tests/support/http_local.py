"""The aggregator's HTTP server (``aggregator.serve.http_serving``) in this process, on a thread
of its own, with an ASGI application that answers each request with its path: what one
connection answers to raw bytes, on asyncio's loop or uvloop's (the aggregator's)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvloop

from aggregator.serve.http_guard import HttpLimits
from aggregator.serve.http_serving import serve_until_stopped

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
GET = b"GET /%b HTTP/1.1\r\nHost: localhost\r\n\r\n"
BAD = (400, b"Bad Request\n")


async def echo_path(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """200 with the request's path as the body; no lifespan (served all the same)."""
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")
    body = scope["path"].encode()
    headers = [(b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Local:
    port: int

    def exchange(self, raw: bytes, half_close: bool = False) -> list[tuple[int, bytes]]:
        """Send ``raw`` on a new connection (then shut its sending side when ``half_close``)
        and read until the server closes it: the (status, body) of each response."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return parse_responses(data)


def parse_responses(data: bytes) -> list[tuple[int, bytes]]:
    """Each whole response in ``data`` (Content-Length bodies), in order."""
    answers = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").lower().split("\r\n")
        length = next(int(h.split(":")[1]) for h in lines if h.startswith("content-length:"))
        answers.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return answers


@contextmanager
def serving(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
    app: Callable[..., Any] = echo_path,
    limits: HttpLimits | None = None,
) -> Iterator[Local]:
    """``app`` served on 127.0.0.1 (a free port) until the block ends."""
    loop = loop_factory()
    stop = asyncio.Event()
    ports: list[int] = []
    ready = threading.Event()

    def started(sockets: list[socket.socket]) -> None:
        ports.append(sockets[0].getsockname()[1])
        ready.set()

    def serve() -> None:
        loop.run_until_complete(
            serve_until_stopped(
                app, "127.0.0.1", 0, limits or HttpLimits(), stop=stop, started=started
            )
        )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        yield Local(ports[0])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
