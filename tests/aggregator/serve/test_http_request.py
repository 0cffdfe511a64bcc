"""What the HTTP server makes of a request's head (aggregator/serve/http_request.py): the ASGI
scope httptools' parse gives, and peer addresses as ASGI takes them."""

from __future__ import annotations

from typing import Any

import httptools

from aggregator.serve.http_request import address, http_scope


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
