"""What the aggregator's HTTP server makes of a request's head (``http_server``): its ASGI
scope, and the peer addresses in the form ASGI takes them."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol
from urllib.parse import unquote

import httptools

__all__ = ["ServerShared", "address", "http_scope"]


class ServerShared(Protocol):
    """What a scope takes from the server (``http_server.ServerState``)."""

    lifespan_state: dict[str, Any]


def http_scope(
    parser: Any,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    ends: tuple[tuple[str, int] | None, tuple[str, int] | None],
    state: ServerShared,
) -> MutableMapping[str, Any]:
    """The ASGI scope of the request ``parser`` has just read the headers of."""
    parsed = httptools.parse_url(url)
    raw_path = parsed.path or b"/"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": parser.get_http_version(),
        "server": ends[0],
        "client": ends[1],
        "scheme": "http",
        "method": parser.get_method().decode("ascii"),
        "root_path": "",
        "path": unquote(raw_path.decode("ascii", "replace")),
        "raw_path": raw_path,
        "query_string": parsed.query or b"",
        "headers": headers,
        "state": state.lifespan_state.copy(),
    }


def address(raw: Any) -> tuple[str, int] | None:
    """A socket address as ASGI's ``server``/``client``: (host, port), None for others."""
    return (str(raw[0]), int(raw[1])) if isinstance(raw, tuple) and len(raw) >= 2 else None
