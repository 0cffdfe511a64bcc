"""The aggregator's HTTP/1.1 connections, bounded against hostile or broken clients.

The aggregator serves HTTP itself: httptools parses (its public parser API), ``http_cycle``
runs the ASGI application, ``http_serving`` listens. It did extend uvicorn's httptools protocol,
whose internals are no API (and pinned uvicorn to one minor release, moving a gateway's own
uvicorn). No server's public options give these bounds: uvicorn reads a request's headers
without a size limit or a deadline (httptools accumulates every header in memory; the
keep-alive timer only runs between requests), queues any number of pipelined requests, and its
``limit_concurrency`` counts idle connections too, so whoever holds enough of them gets every
scrape a 503. Here, per connection, before any route or bearer token is looked at:

- a header limit: a request line plus headers beyond ``max_header_bytes`` gets 431, and at
  most one read more of them is ever held;
- a request deadline: a request must arrive in full within ``header_timeout_seconds`` of its
  first byte (a new connection: of its opening), else 408 (a silent connection is just closed);
- a keep-alive timeout between requests (uvicorn's own timer, with this duration);
- a send deadline: a client that reads nothing of a pending response for
  ``send_timeout_seconds`` is cut;
- at most ``MAX_PIPELINED`` requests queued behind the running one;
- exactly one valid Host header (none only in HTTP/1.0), as RFC 9112 requires, else 400;
- at most ``max_connections`` open connections. A new connection beyond them evicts the one
  that has waited longest without a request in progress (reading headers, idle, lingering):
  nginx drains its "reusable" connections the same way. Only when every connection has a request
  in progress is the new one answered 503. So connections held open by a slow client cannot
  lock Prometheus out: its connection pushes the oldest of them out and is served at once.

A request that cannot be parsed (or whose headers are too large) is answered 400 (431) after
the requests read in full before it on the connection, which are answered first
(``http_closing``); a client sending garbage costs the log one counted line per 10 s at most.
A client that half-closes after its requests gets their answers, then the close.

The per-request cost is a byte counter and one timer; everything else runs when a limit is hit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httptools

from aggregator.serve.http_closing import ClosingConnection
from aggregator.serve.http_cycle import ASGIApp, RequestResponseCycle
from aggregator.serve.http_guard import (
    BAD_REQUEST,
    FULL,
    MAX_PIPELINED,
    TIMED_OUT,
    TOO_LARGE,
    ConnectionGuard,
    HttpLimits,
)
from aggregator.serve.http_request import address, host_is_valid, http_scope

__all__ = [
    "ConnectionGuard",
    "GuardedHttpProtocol",
    "HttpLimits",
    "ServerState",
    "guarded_protocol",
]


@dataclass
class ServerState:
    """What one server's connections share besides the guard: the application, the
    lifespan's state, and the open connections (to close them at shutdown)."""

    app: ASGIApp
    lifespan_state: dict[str, Any] = field(default_factory=dict)
    connections: set[GuardedHttpProtocol] = field(default_factory=set)
    stopping: bool = False
    """Set when the server stops: a connection accepted after it is closed at once."""


class _PipelineTooDeep(Exception):
    """Raised from a parser callback: the only way to stop httptools in the middle of a read."""


class _InvalidHost(Exception):
    """Raised from a parser callback: a request without exactly one valid Host header (400)."""


class GuardedHttpProtocol(ClosingConnection):
    """One HTTP/1.1 connection with the bounds of ``guard.limits`` (module docstring). Use
    ``guarded_protocol(limits)``, which binds a guard shared by one server's connections."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, state: ServerState) -> None:
        super().__init__()
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.admitted = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._refused = False
        self._overflowed = False
        self._header_bytes = 0
        self._headers_done = 0

    # connection life

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.server = address(transport.get_extra_info("sockname"))
        self.client = address(transport.get_extra_info("peername"))
        if self.state.stopping:
            transport.close()
            return
        self.state.connections.add(self)
        if self.guard.admit(self):
            self._arm_request_timer()
            return
        self._refused = True
        if self.guard.refused_lingering >= self.guard.limits.max_connections:
            self.cut("refused")  # a flood of refusals: no answer and linger for each of them
            return
        self.guard.count("refused")
        self.guard.refused_lingering += 1
        self.answer_and_close(FULL)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        self.state.connections.discard(self)
        for cycle in {self._running, self.cycle, *self.pipeline} - {None}:
            if cycle is not None and not cycle.response_complete:
                cycle.disconnect()  # the running one and any queued behind it
        self.pipeline.clear()
        if self._refused and self._linger_timer is not None:
            self.guard.refused_lingering -= 1
        self.cancel_timers()
        self._writable.set()  # a send waiting for the client to read: it is gone

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
            self.answer_and_close(TOO_LARGE)
            return
        self.data_received(data[allowed:])

    def _feed(self, data: bytes) -> None:
        self._cancel_keepalive_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # no upgrade here: the request is served, then closed
            if self.cycle is not None:
                self.cycle.keep_alive = False
        except httptools.HttpParserError:
            if self._overflowed:
                if not self._discarding:
                    self.cut("pipeline_too_deep")
                return
            self.guard.count("bad_request")
            self.drop_unfinished()
            self.answer_and_close(BAD_REQUEST)

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._overflowed = True
            raise _PipelineTooDeep
        if not host_is_valid(self.parser.get_http_version(), self._headers):
            raise _InvalidHost  # answered 400 after the requests before it
        self._reading_headers = False
        self._headers_done += 1
        self.guard.busy(self)
        scope = http_scope(
            self.parser, self._url, self._headers, (self.server, self.client), self.state
        )
        cycle = RequestResponseCycle(scope, self, keep_alive=self.parser.should_keep_alive())
        running = self.cycle is not None and not self.cycle.response_complete
        self.cycle = cycle
        if running or self.pipeline:
            self.pipeline.append(cycle)  # served when the one before it is answered
            self.pause_reading()
        else:
            self._start(cycle)

    def on_body(self, body: bytes) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.feed_body(body)

    def on_message_complete(self) -> None:
        if self.cycle is not None:
            self.cycle.body_complete()
        self._reading_headers = True
        self._header_bytes = 0
        self._cancel_request_timer()

    def _arm_request_timer(self) -> None:
        self._request_timer = self.loop.call_later(
            self.guard.limits.header_timeout_seconds, self._request_timed_out
        )

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._discarding or self.transport.is_closing():
            return
        started = self._header_bytes > 0 or not self._reading_headers
        if self._in_progress() or not started:
            self.cut("header_timeout")  # silent, or an answer is under way: just close
            return
        self.guard.count("header_timeout")
        self.answer_and_close(TIMED_OUT)

    def _start(self, cycle: RequestResponseCycle) -> None:
        self._running = cycle
        self.loop.create_task(cycle.run(self.state.app))

    def _in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    # answering

    def on_response_complete(self) -> None:
        """The running request is answered: the next queued one starts, or the connection
        waits for one (the keep-alive timeout), or it closes."""
        finished = self._running
        self._running = None
        if self.transport.is_closing():
            pass
        elif finished is not None and not finished.keep_alive:
            self.transport.close()  # flushes what is pending first
        elif self.pipeline:
            self._start(self.pipeline.popleft())
            if not self.pipeline:
                self.resume_reading()
        elif self.ends_after_answers():
            self.end_after_answers()
        else:
            self.resume_reading()
            self._keepalive_timer = self.loop.call_later(
                self.guard.limits.keepalive_timeout_seconds, self._keepalive_expired
            )
        if not self._in_progress() and not self.pipeline:
            self.guard.idle(self)
        if self.transport.is_closing() and self.transport.get_write_buffer_size():
            self._watch_send()  # "connection: close" to a client that does not read

    def _keepalive_expired(self) -> None:
        self._keepalive_timer = None
        if self.transport.is_closing() or self._in_progress():
            return
        self.transport.close()  # flushes what is pending first
        if self.transport.get_write_buffer_size():
            self._watch_send()

    def shutdown(self) -> None:
        """The server stops: close now when idle, else after the running response."""
        if self._running is None or self._running.response_complete:
            self.transport.close()
            return
        self._running.keep_alive = False
        self.pipeline.clear()


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpProtocol]:
    """A protocol class whose connections share one guard (``http_serving.serve_http``)."""

    class Guarded(GuardedHttpProtocol):
        guard = ConnectionGuard(limits)

    return Guarded
