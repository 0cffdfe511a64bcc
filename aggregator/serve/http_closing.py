"""How one of the aggregator's HTTP connections ends (the base of ``http_server``'s protocol):
cut at once (``cut``), or answered and closed (``answer_and_close``: 400, 408, 431, 503). The
requests a client sent in full before what earned that answer are answered first, in order,
and the answer follows theirs on the connection: a request followed by garbage in one write
gets its own answer, then the 400, and no write ever follows the end of the output."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import deque
from typing import ClassVar

from aggregator.serve.http_cycle import RequestResponseCycle
from aggregator.serve.http_guard import LINGER_SECONDS, ConnectionGuard, FlowControlled

__all__ = ["ClosingConnection"]

_LINGER_OFF = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets and drops the buffer


class ClosingConnection(FlowControlled):
    """The requests of one connection in flight (``_running``, the ``pipeline`` queued behind
    it, ``cycle`` the newest) and how the connection ends."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.cycle: RequestResponseCycle | None = None  # the newest request parsed
        self.pipeline: deque[RequestResponseCycle] = deque()
        self._running: RequestResponseCycle | None = None
        self._reading_headers = True  # False: between a request's headers and its end
        self._discarding = False  # answered and closing: input is read and dropped
        self._closing_answer: bytes | None = None  # due once the requests read are answered
        self._peer_closed = False  # the client half-closed: close once they are answered
        self._request_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

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

    def answer_and_close(self, response: bytes) -> None:
        """Send ``response``, then read and drop input until the client closes or
        ``LINGER_SECONDS`` pass (closing with unread input would reset the connection and
        could destroy the answer before the client reads it). With requests still to answer,
        ``response`` waits for their answers (``end_after_answers``)."""
        self._discarding = True
        self._cancel_request_timer()
        transport = self.transport
        if transport.is_closing():
            return
        if self._running is not None or self.pipeline:
            self._closing_answer = response
            return
        transport.write(response)
        if self._peer_closed:  # nothing more comes in: no input to linger for
            transport.close()
            return
        if transport.can_write_eof():
            transport.write_eof()
        self.resume_reading()  # input is read and dropped
        self.guard.idle(self)  # answered and closing: the first to evict
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, transport.abort)

    def eof_received(self) -> bool:
        """The client sends nothing more (``shutdown(SHUT_WR)``: ``nc -N``, socat, a pipe's
        end): the requests it sent in full are answered, then the connection closes. True keeps
        it open for them; False (nothing to answer) lets the transport close it."""
        if self._peer_closed:
            return True  # again: reading was resumed after the end
        self._peer_closed = True
        self._cancel_request_timer()
        self.drop_unfinished()  # half a request, or a body cut short: never whole
        if self.transport.is_closing() or (self._running is None and not self.pipeline):
            return False
        last = self.cycle
        if last is not None and not last.response_started and self._closing_answer is None:
            last.keep_alive = False  # the last answer says "connection: close"
        return True

    def ends_after_answers(self) -> bool:
        """Whether the connection ends once its requests are answered (``end_after_answers``)."""
        return self._closing_answer is not None or self._peer_closed

    def end_after_answers(self) -> None:
        """The requests read are answered: the answer that waited for them follows, or (the
        client half-closed) the connection closes."""
        answer, self._closing_answer = self._closing_answer, None
        if answer is not None:
            self.answer_and_close(answer)
        else:
            self.transport.close()  # flushes what is pending first

    def drop_unfinished(self) -> None:
        """Forget the request whose body was being read (it breaks off): it is never answered.
        Queued, it leaves the queue; running, its application sees the client gone, and an
        answer it had begun is cut short by closing the connection."""
        cycle = self.cycle
        if self._reading_headers or cycle is None or cycle.response_complete:
            return
        self.cycle = None
        if cycle in self.pipeline:
            self.pipeline.remove(cycle)
            return
        cycle.disconnect()  # the newest request, hence the running one: none queued behind
        self._running = None
        if cycle.response_started:
            self._discarding = True
            self.transport.close()

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def cancel_timers(self) -> None:
        """The connection is gone: no timer of it fires."""
        timers = (self._request_timer, self._linger_timer, self._send_timer, self._keepalive_timer)
        for timer in timers:
            if timer is not None:
                timer.cancel()
        self._request_timer = self._linger_timer = self._send_timer = None
        self._keepalive_timer = None
