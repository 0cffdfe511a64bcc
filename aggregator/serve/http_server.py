"""The aggregator's HTTP/1.1 connections, bounded against hostile or broken clients.

uvicorn's httptools protocol reads a request's headers without a size limit or a deadline
(httptools accumulates every header in memory; the keep-alive timer only runs between
requests), queues any number of pipelined requests, and ``limit_concurrency`` counts idle
connections too, so whoever holds enough of them gets every scrape a 503. This subclass adds,
per connection, before any route or bearer token is looked at:

- a header limit: a request line plus headers beyond ``max_header_bytes`` gets 431, and at
  most one read more of them is ever held;
- a request deadline: a request must arrive in full within ``header_timeout_seconds`` of its
  first byte (a new connection: of its opening), else 408 (a silent connection is just closed);
- a keep-alive timeout between requests (uvicorn's own timer, with this duration);
- a send deadline: a client that reads nothing of a pending response for
  ``send_timeout_seconds`` is cut;
- at most ``MAX_PIPELINED`` requests queued behind the running one;
- at most ``max_connections`` open connections. A new connection beyond them evicts the one
  that has waited longest without a request in progress (reading headers, idle, lingering):
  nginx drains its "reusable" connections the same way. Only when every connection has a request
  in progress is the new one answered 503. So connections held open by a slow client cannot
  lock Prometheus out: its connection pushes the oldest of them out and is served at once.

The per-request cost is a byte counter and one timer; everything else runs when a limit is hit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

log = logging.getLogger("gatewayz.aggregator.http")

MAX_PIPELINED = 8
"""Requests a connection may queue behind the one running; more closes it. uvicorn queues them
without bound: 270 KB of pipelined GETs that are never read cost ~19 MB of request objects."""

LINGER_SECONDS = 1.0
"""After a 4xx/503 that ends a connection, how long the rest of what the client sends is read
and dropped, so the answer is not lost to a TCP reset; then the connection is cut."""

REPORT_EVERY_SECONDS = 10.0

_LINGER_OFF = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets and drops the buffer


def _close_response(status: int, reason: str) -> bytes:
    body = f"{reason}\n".encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TOO_LARGE = _close_response(431, "Request Header Fields Too Large")
_TIMEOUT = _close_response(408, "Request Timeout")
_FULL = _close_response(503, "Service Unavailable")


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on every HTTP connection (defaults: see README, Configuration)."""

    max_header_bytes: int = 8192
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 5.0
    send_timeout_seconds: float = 10.0
    max_connections: int = 100


class ConnectionGuard:
    """What the connections of one server share: the count of open connections, those without a
    request in progress (oldest first: the eviction order), and counts of connections cut,
    logged at most every ``REPORT_EVERY_SECONDS``."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open = 0
        self.waiting: dict[GuardedHttpProtocol, None] = {}  # insertion order = waiting since
        self.refused_lingering = 0
        self.cut: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()
        self._last_report = -math.inf
        self._report_timer: asyncio.TimerHandle | None = None

    def admit(self, connection: GuardedHttpProtocol) -> bool:
        """Count ``connection`` in, evicting the longest-waiting one when at the cap; False
        (not admitted) when every open connection has a request in progress."""
        if self.open >= self.limits.max_connections:
            if not self.waiting:
                return False
            victim = next(iter(self.waiting))
            self.release(victim)
            victim.cut("evicted")
        self.open += 1
        connection.admitted = True
        self.waiting[connection] = None
        return True

    def release(self, connection: GuardedHttpProtocol) -> None:
        """Count ``connection`` out (idempotent)."""
        if connection.admitted:
            connection.admitted = False
            self.open -= 1
            self.waiting.pop(connection, None)

    def busy(self, connection: GuardedHttpProtocol) -> None:
        """``connection`` has a request in progress: not to be evicted."""
        self.waiting.pop(connection, None)

    def idle(self, connection: GuardedHttpProtocol) -> None:
        """``connection`` has no request in progress (again): evictable, as the newest."""
        if connection.admitted:
            self.waiting.pop(connection, None)
            self.waiting[connection] = None

    def count(self, reason: str) -> None:
        """Count a connection cut for ``reason``. The counts are logged in one line at most
        every ``REPORT_EVERY_SECONDS`` (an attack must not flood the log), the first at once."""
        self.cut[reason] += 1
        if self._report_timer is None:
            delay = max(0.0, self._last_report + REPORT_EVERY_SECONDS - time.monotonic())
            self._report_timer = asyncio.get_running_loop().call_later(delay, self._report)

    def _report(self) -> None:
        self._report_timer = None
        self._last_report = time.monotonic()
        recent = self.cut - self._reported
        self._reported = self.cut.copy()
        log.warning(
            "HTTP connections cut since the last report (%d open of %d): %s",
            self.open,
            self.limits.max_connections,
            ", ".join(f"{name} {n}" for name, n in sorted(recent.items())),
        )


class _PipelineTooDeep(Exception):
    """Raised from a parser callback: the only way to stop httptools in the middle of a read."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of ``guard.limits`` (module docstring).
    Use ``guarded_protocol(limits)``, which binds a guard shared by one server's connections."""

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.guard.limits
        # uvicorn declares it int; call_later takes any number of seconds.
        self.timeout_keep_alive = limits.keepalive_timeout_seconds  # type: ignore[assignment]
        self.admitted = False
        self._refused = False
        self._discarding = False  # answered and closing: input is read and dropped
        self._overflowed = False
        self._reading_headers = True
        self._header_bytes = 0
        self._headers_done = 0
        self._request_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_pending = 0
        self._running: RequestResponseCycle | None = None

    # connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.guard.admit(self):
            self._arm_request_timer()
            return
        self._refused = True
        if self.guard.refused_lingering >= self.guard.limits.max_connections:
            self.cut("refused")  # a flood of refusals: no answer and linger for each of them
            return
        self.guard.count("refused")
        self.guard.refused_lingering += 1
        self._answer_and_close(_FULL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        running = self._running
        if running is not None and not running.response_complete:
            # uvicorn marks only the newest parsed cycle disconnected; when pipelined requests
            # queue behind it, the running one would write to the closed transport and log an
            # error with a traceback for every connection cut while it waits to send.
            running.disconnected = True
            running.message_event.set()
        if self._refused and self._linger_timer is not None:
            self.guard.refused_lingering -= 1
        for timer in (self._request_timer, self._linger_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._linger_timer = self._send_timer = None
        super().connection_lost(exc)

    def cut(self, reason: str, reset: bool = False) -> None:
        """Close the connection at once, dropping anything unsent, and count why. ``reset``:
        drop what the kernel still holds for the client, too (a TCP reset): a peer that reads
        nothing would otherwise keep up to megabytes of socket buffer alive after the close."""
        self._discarding = True
        self.guard.count(reason)
        if reset:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
        self.transport.abort()

    def _answer_and_close(self, response: bytes) -> None:
        """Send ``response``, then read and drop input until the client closes or
        ``LINGER_SECONDS`` pass (closing with unread input would reset the connection and
        could destroy the answer before the client reads it)."""
        self._discarding = True
        self._cancel_request_timer()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, transport.abort)

    # reading a request

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._request_timer is None:  # the first bytes of a request on a kept-alive connection
            self._arm_request_timer()
        if not self._reading_headers:
            self._feed(data)
            return
        self._header_bytes += len(data)
        over = self._header_bytes - self.guard.limits.max_header_bytes
        if over <= 0:
            self._feed(data)
            return
        # Beyond the limit, unless the headers end within it and what follows is a body or the
        # next request: feed up to the limit and look.
        headers_done = self._headers_done
        allowed = len(data) - over
        if allowed > 0:
            self._feed(data[:allowed])
        if self._discarding or self.transport.is_closing():
            return
        if self._headers_done == headers_done:
            self.guard.count("header_too_large")
            self._answer_and_close(_TOO_LARGE)
            return
        self.data_received(data[allowed:])

    def _feed(self, data: bytes) -> None:
        super().data_received(data)
        if self._overflowed and not self._discarding:
            self.cut("pipeline_too_deep")  # uvicorn has answered 400; nothing more is sent

    def on_headers_complete(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._overflowed = True
            raise _PipelineTooDeep
        self._reading_headers = False
        self._headers_done += 1
        self.guard.busy(self)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_headers = True
        self._header_bytes = 0
        self._cancel_request_timer()

    def _arm_request_timer(self) -> None:
        self._request_timer = self.loop.call_later(
            self.guard.limits.header_timeout_seconds, self._request_timed_out
        )

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._discarding or self.transport.is_closing():
            return
        started = self._header_bytes > 0 or not self._reading_headers
        if self._in_progress() or not started:
            self.cut("header_timeout")  # silent, or an answer is under way: just close
            return
        self.guard.count("header_timeout")
        self._answer_and_close(_TIMEOUT)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def _in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    # answering

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_progress() and not self.pipeline:
            self.guard.idle(self)
        if self.transport.is_closing() and self.transport.get_write_buffer_size():
            self._watch_send()  # "connection: close" to a client that does not read

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()  # close(): flushes what is pending first
        if self.transport.get_write_buffer_size():
            self._watch_send()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_send()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:  # the client read down to the low-water mark
            self._send_timer.cancel()
            self._send_timer = None

    def _watch_send(self) -> None:
        """Cut the connection if its pending output does not shrink within the send timeout.
        Armed only while nothing more is written (writing paused, or closing), so a pending
        size that did not shrink means the client read nothing."""
        if self._send_timer is None:
            self._send_pending = self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(
                self.guard.limits.send_timeout_seconds, self._check_send
            )

    def _check_send(self) -> None:
        self._send_timer = None
        pending = self.transport.get_write_buffer_size()
        if not pending:
            return
        if pending < self._send_pending:
            self._watch_send()  # slow, but reading
            return
        self.cut("send_stalled", reset=True)


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` whose connections share one guard."""

    class Guarded(GuardedHttpProtocol):
        guard = ConnectionGuard(limits)

    return Guarded
