"""What the connections of one aggregator HTTP server share (``ConnectionGuard``), the bounds
they keep (``HttpLimits``), and the answers that end a connection. See ``http_server``."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

log = logging.getLogger("gatewayz.aggregator.http")

MAX_PIPELINED = 8
"""Requests a connection may queue behind the one running; more closes it. uvicorn queues them
without bound: 270 KB of pipelined GETs that are never read cost ~19 MB of request objects."""

LINGER_SECONDS = 1.0
"""After a 4xx/503 that ends a connection, how long the rest of what the client sends is read
and dropped, so the answer is not lost to a TCP reset; then the connection is cut."""

REPORT_EVERY_SECONDS = 10.0


def _close_response(status: int, reason: str) -> bytes:
    body = f"{reason}\n".encode("ascii")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


TOO_LARGE = _close_response(431, "Request Header Fields Too Large")
TIMED_OUT = _close_response(408, "Request Timeout")
FULL = _close_response(503, "Service Unavailable")
BAD_REQUEST = _close_response(400, "Bad Request")


@dataclass
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
        self.waiting: dict[Any, None] = {}  # insertion order = waiting since
        self.refused_lingering = 0
        self.cut: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()
        self._last_report = -math.inf
        self._report_timer: asyncio.TimerHandle | None = None

    def admit(self, connection: Any) -> bool:
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

    def release(self, connection: Any) -> None:
        """Count ``connection`` out (idempotent)."""
        if connection.admitted:
            connection.admitted = False
            self.open -= 1
            self.waiting.pop(connection, None)

    def busy(self, connection: Any) -> None:
        """``connection`` has a request in progress: not to be evicted."""
        self.waiting.pop(connection, None)

    def idle(self, connection: Any) -> None:
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


class FlowControlled(asyncio.Protocol):
    """A connection's flow control: reading paused and resumed, writes waiting while the
    client reads nothing, and a client that reads nothing of a pending response for the send
    timeout cut (``cut``: the subclass's)."""

    guard: ClassVar[ConnectionGuard]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        self._writable = asyncio.Event()
        self._writable.set()
        self._read_paused = False
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_pending = 0
        self._keepalive_timer: asyncio.TimerHandle | None = None

    def _cancel_keepalive_timer(self) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
            self._keepalive_timer = None

    def cut(self, reason: str, reset: bool = False) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        if not self._read_paused and not self.transport.is_closing():
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and not self.transport.is_closing():
            self._read_paused = False
            self.transport.resume_reading()

    async def drain(self) -> None:
        await self._writable.wait()

    def pause_writing(self) -> None:
        self._writable.clear()
        self._watch_send()

    def resume_writing(self) -> None:
        self._writable.set()
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
