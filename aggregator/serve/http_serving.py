"""Serving an ASGI application on the aggregator's guarded HTTP/1.1 connections: listen
(``listen``, before anything else starts), run the application's lifespan around serving, stop
on SIGTERM or SIGINT (``serve_http``).

At a stop: no new connection is accepted, idle connections are closed, a response under way is
finished (for at most ``SHUTDOWN_GRACE_SECONDS``, then its connection is cut), and then the
lifespan's shutdown runs (the scheduler stops, the leader lease is released).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
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


class ListenError(OSError):
    """``host``:``port`` cannot be listened on; the message is one line for the operator.
    ``in_use``: something else listens there (the caller may say which setting moves it)."""

    def __init__(self, message: str, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets listening on every address ``host`` resolves to ("": all interfaces), bound as
    asyncio's ``create_server`` binds them. Called before the lifespan starts: a port in use or
    a name that does not resolve is found before any Redis work or leader lease, and the very
    sockets are served (``serve_sockets``), so nothing can take the port in between. Connections
    arriving meanwhile wait in the backlog. ListenError when no address can be listened on."""
    shown = host or "*"  # "": every interface
    where = f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        raise ListenError(f"cannot listen on {where}: {_reason(exc)}") from None
    sockets: list[socket.socket] = []
    skipped: OSError | None = None
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # deduplicated, in order
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:
                continue  # a family this host lacks (asyncio skips it too)
            sockets.append(sock)
            _configure(sock, family)
            try:
                sock.bind(address)
                # listen now, not when serving starts: on Linux two sockets with SO_REUSEADDR
                # may both bind a port while neither listens, so only listen() claims it
                sock.listen(BACKLOG)
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    in_use = exc.errno == errno.EADDRINUSE
                    message = f"cannot listen on {where}: {_reason(exc)}"
                    raise ListenError(message, in_use) from None
                sockets.pop().close()  # that family not enabled (asyncio: bpo-30945)
                skipped = exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        reason = _reason(skipped) if skipped is not None else "no address to bind"
        raise ListenError(f"cannot listen on {where}: {reason}")
    return sockets


def _configure(sock: socket.socket, family: int) -> None:
    """The options asyncio's ``create_server`` sets (``reuse_address=True`` as before)."""
    if os.name == "posix":  # a restart binds at once past connections in TIME_WAIT; on Windows
        # SO_REUSEADDR would let two processes share the port, so it is left off there
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
        # no dual stack: "::" would otherwise clash with the IPv4 socket of the same host
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def _reason(exc: BaseException) -> str:
    """``exc`` as the end of a one-line error: "address already in use" (asyncio's style)."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def serve_http(app: ASGIApp, sockets: Sequence[socket.socket], limits: HttpLimits) -> None:
    """Serve ``app`` on ``sockets`` (``listen``'s) until SIGTERM or SIGINT."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve_sockets(app, sockets, limits))


async def serve_until_stopped(
    app: ASGIApp,
    host: str,
    port: int,
    limits: HttpLimits,
    stop: asyncio.Event | None = None,
    started: Callable[[list[socket.socket]], None] = lambda sockets: None,
) -> None:
    """``serve_sockets`` on ``host``:``port``, listened on here."""
    await serve_sockets(app, listen(host, port), limits, stop, started)


async def serve_sockets(
    app: ASGIApp,
    sockets: Sequence[socket.socket],
    limits: HttpLimits,
    stop: asyncio.Event | None = None,
    started: Callable[[list[socket.socket]], None] = lambda sockets: None,
) -> None:
    """Serve on ``sockets`` (listening) until ``stop`` is set (default: an event set by SIGTERM
    or SIGINT); they are closed when it returns. ``started`` gets the sockets once they accept."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    state = ServerState(app)
    lifespan = Lifespan(app, state.lifespan_state)
    servers: list[asyncio.Server] = []
    try:
        await lifespan.startup()
        protocol = guarded_protocol(limits)
        # one server per socket: create_server takes one ready socket (sock=), not several
        for sock in sockets:
            servers.append(
                await loop.create_server(lambda: protocol(state), sock=sock, backlog=BACKLOG)
            )
    except BaseException:
        for server in servers:
            server.close()
        for sock in sockets[len(servers) :]:
            sock.close()  # not handed to a server: nothing else closes it
        raise
    listening = [s for server in servers for s in server.sockets]
    log.info("HTTP listening on %s", ", ".join(_name(s) for s in listening))
    started(listening)
    try:
        await stop.wait()
    finally:
        for server in servers:
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
