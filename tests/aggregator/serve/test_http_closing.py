"""How a connection of the aggregator's HTTP server ends (aggregator/serve/http_closing.py),
in process on asyncio's loop and uvloop's: what follows whole requests (garbage, a pipelined
malformed request, headers too large, a body that breaks off) is answered after them, and
nothing is written after the end of the output (which raised in the application and logged a
traceback per connection)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from aggregator.serve.http_guard import HttpLimits
from aggregator.serve.http_server import ServerState, guarded_protocol
from tests.support.http_local import BAD, GET, LOOPS, Local, echo_path, parse_responses, serving


@pytest.fixture(params=sorted(LOOPS))
def local(request: pytest.FixtureRequest) -> Iterator[Local]:
    with serving(LOOPS[request.param], limits=HttpLimits(max_header_bytes=1024)) as served:
        yield served


def test_what_follows_a_request_is_answered_400_after_it_and_logs_no_error(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gatewayz.aggregator.http")
    for _ in range(20):
        assert local.exchange(GET % b"first" + b"\xff\xfe") == [(200, b"/first"), BAD]
    pipelined = GET % b"a" + GET % b"b" + b"NOT HTTP\r\n\r\n"
    assert local.exchange(pipelined) == [(200, b"/a"), (200, b"/b"), BAD]
    too_large = GET % b"a" + b"GET /b HTTP/1.1\r\nX-Big: " + b"x" * 3000
    assert local.exchange(too_large) == [(200, b"/a"), (431, b"Request Header Fields Too Large\n")]
    # a body that breaks off (a chunk size that is none): that request is not answered
    chunked = b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    assert local.exchange(GET % b"a" + chunked) == [(200, b"/a"), BAD]
    assert local.exchange(chunked) == [BAD]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # at most the guard's one line per 10 s, however many connections sent garbage
    assert len([r for r in caplog.records if r.name == "gatewayz.aggregator.http"]) <= 1


def test_a_client_that_half_closes_after_its_requests_gets_their_answers(local: Local) -> None:
    # shutdown(SHUT_WR) after the request, as `nc -N`, socat and `printf ... | socat` do: the
    # transport closed itself at the end of the input, before the application answered
    assert local.exchange(GET % b"healthz", half_close=True) == [(200, b"/healthz")]
    assert local.exchange(GET % b"a" + GET % b"b", half_close=True) == [(200, b"/a"), (200, b"/b")]
    assert local.exchange(GET % b"a" + b"\xff", half_close=True) == [(200, b"/a"), BAD]
    assert local.exchange(b"", half_close=True) == []


class FakeTransport:
    """A transport that records what is written and, as asyncio's and uvloop's do, raises on a
    write after ``write_eof`` (or, here, after ``close``)."""

    def __init__(self) -> None:
        self.written = b""
        self.eof = self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        ends = {"sockname": ("127.0.0.1", 9108), "peername": ("127.0.0.1", 50000)}
        return ends.get(name, default)

    def write(self, data: bytes) -> None:
        if self.eof or self.closed:
            raise RuntimeError("write after the end")
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def half_closed(*reads: bytes) -> tuple[bool, list[tuple[int, bytes]], bool]:
    """A connection given ``reads``, then the end of its input at once (before any application
    ran): whether it stays open for its answers, the answers, and whether it is closed once the
    applications are done."""

    async def run() -> tuple[bool, list[tuple[int, bytes]], bool]:
        protocol = guarded_protocol(HttpLimits())(ServerState(echo_path))
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        for data in reads:
            protocol.data_received(data)
        stays_open = bool(protocol.eof_received())
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
        closed = transport.closed
        protocol.connection_lost(None)
        return stays_open, parse_responses(transport.written), closed

    return asyncio.run(run())


def test_the_end_of_the_input_waits_for_the_answers_to_the_requests_read() -> None:
    assert half_closed(GET % b"a") == (True, [(200, b"/a")], True)
    assert half_closed(GET % b"a" + GET % b"b") == (True, [(200, b"/a"), (200, b"/b")], True)
    assert half_closed(GET % b"a", GET % b"b") == (True, [(200, b"/a"), (200, b"/b")], True)
    assert half_closed(GET % b"a" + b"\xff") == (True, [(200, b"/a"), BAD], True)
    # what is not whole at the end (half a request, a body cut short) is not answered
    assert half_closed(GET % b"a" + b"GET /b HTTP/1.1\r\n") == (True, [(200, b"/a")], True)
    cut_short = b"POST /c HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc"
    assert half_closed(cut_short) == (False, [], False)  # False: the transport closes it
    assert half_closed(GET % b"a" + cut_short) == (True, [(200, b"/a")], True)
    assert half_closed() == (False, [], False)
