"""How a connection of the aggregator's HTTP server ends (aggregator/serve/http_closing.py),
in process on asyncio's loop and uvloop's: what follows whole requests (garbage, a pipelined
malformed request, headers too large, a body that breaks off) is answered after them, and
nothing is written after the end of the output (which raised in the application and logged a
traceback per connection)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aggregator.serve.http_guard import HttpLimits
from tests.support.http_local import BAD, GET, LOOPS, Local, serving


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
