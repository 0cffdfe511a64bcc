"""Serving an ASGI application on the aggregator's guarded HTTP/1.1 connections: listen, run
the application's lifespan around serving, stop on SIGTERM or SIGINT (``serve_http``).

At a stop: no new connection is accepted, idle connections are closed, a response under way is
finished (for at most ``SHUTDOWN_GRACE_SECONDS``, then its connection is cut), and then the
lifespan's shutdown runs (the scheduler stops, the leader lease is released).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from aggregator.serve.http_cycle import ASGIApp, Lifespan
from aggregator.serve.http_guard import HttpLimits
from aggregator.serve.http_server import ServerState, guarded_protocol

log = logging.getLogger("gatewayz.aggregator.http")

SHUTDOWN_GRACE_SECONDS = 5.0
BACKLOG = 2048


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (the aggregator's extra installs it on Linux
    and macOS: /metrics latency about 40% lower), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def serve_http(app: ASGIApp, host: str, port: int, limits: HttpLimits) -> None:
    """Serve ``app`` on ``host``:``port`` until SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_until_stopped(app, host, port, limits))


async def serve_until_stopped(
    app: ASGIApp,
    host: str,
    port: int,
    limits: HttpLimits,
    stop: asyncio.Event | None = None,
    started: Callable[[list[socket.socket]], None] = lambda sockets: None,
) -> None:
    """Serve until ``stop`` is set (default: an event set by SIGTERM or SIGINT). ``started``
    gets the listening sockets once they accept."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    state = ServerState(app)
    lifespan = Lifespan(app, state.lifespan_state)
    await lifespan.startup()
    protocol = guarded_protocol(limits)
    server = await loop.create_server(
        lambda: protocol(state), host=host, port=port, backlog=BACKLOG, reuse_address=True
    )
    sockets = list(server.sockets)
    log.info("HTTP listening on %s", ", ".join(_name(s) for s in sockets))
    started(sockets)
    try:
        await stop.wait()
    finally:
        server.close()
        await _close_connections(state)
        await lifespan.shutdown()


async def _close_connections(state: ServerState) -> None:
    state.stopping = True
    for connection in list(state.connections):
        connection.shutdown()
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while state.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(state.connections):
        connection.transport.abort()
    await asyncio.sleep(0)  # the aborted connections' connection_lost


def _name(sock: socket.socket) -> str:
    address: Any = sock.getsockname()
    if isinstance(address, tuple):
        host = f"[{address[0]}]" if ":" in str(address[0]) else str(address[0])
        return f"http://{host}:{address[1]}"
    return str(address)
