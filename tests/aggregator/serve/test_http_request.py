"""What the HTTP server makes of a request's head (aggregator/serve/http_request.py): the ASGI
scope httptools' parse gives, and peer addresses as ASGI takes them."""

from __future__ import annotations

from typing import Any

import httptools

from aggregator.serve.http_request import address, host_is_valid, http_scope


class Shared:
    def __init__(self) -> None:
        self.lifespan_state: dict[str, Any] = {"aggregator": "the app's"}


def parsed(raw: bytes) -> tuple[Any, bytes, list[tuple[bytes, bytes]]]:
    """A parser fed ``raw`` (a request's head); its target and headers as the server keeps them."""

    class Callbacks:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

    callbacks = Callbacks()
    parser = httptools.HttpRequestParser(callbacks)
    parser.feed_data(raw)
    return parser, callbacks.url, callbacks.headers


def test_the_scope_of_a_request() -> None:
    parser, url, headers = parsed(b"GET /a%20b/c?x=1 HTTP/1.1\r\nHost: localhost:9108\r\n\r\n")
    ends = (("127.0.0.1", 9108), ("127.0.0.1", 50000))
    shared = Shared()
    scope = http_scope(parser, url, headers, ends, shared)
    assert scope == {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 9108),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/a b/c",
        "raw_path": b"/a%20b/c",
        "query_string": b"x=1",
        "headers": [(b"host", b"localhost:9108")],
        "state": {"aggregator": "the app's"},
    }
    assert scope["state"] is not shared.lifespan_state  # a copy per request


def test_addresses() -> None:
    assert address(("::1", 9108, 0, 0)) == ("::1", 9108)
    assert address("/run/aggregator.sock") is None
    assert address(None) is None


def test_one_valid_host_header_is_required_none_only_for_http_1_0() -> None:
    # RFC 9112 section 3.2: 400 for an HTTP/1.1 request without Host, for more than one Host,
    # and for a Host that is not a host[:port]
    def valid(version: str, *hosts: bytes) -> bool:
        return host_is_valid(version, [(b"accept", b"*/*"), *((b"host", h) for h in hosts)])

    assert valid("1.1", b"localhost")
    assert valid("1.1", b"127.0.0.1:9108") and valid("1.1", b"[::1]:9108")
    assert valid("1.1", b"aggregator.internal.example") and valid("1.1", b"localhost ")
    assert valid("1.1", b"")  # a target without an authority
    assert valid("1.0") and valid("1.0", b"localhost")
    assert not valid("1.1")
    assert not valid("1.1", b"localhost", b"evil.example")
    assert not valid("1.1", b"evil.example", b"localhost")
    assert not valid("1.1", b"localhost", b"localhost")
    assert not valid("1.0", b"localhost", b"localhost")
    for bad in (b"a b", b"user@localhost", b"localhost/x", b"localhost:80:81", b"[::1", b'"x"'):
        assert not valid("1.1", bad), bad
