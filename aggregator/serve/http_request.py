"""What the aggregator's HTTP server makes of a request's head (``http_server``): whether its
Host header is one RFC 9112 accepts, its ASGI scope, and the peer addresses in the form ASGI
takes them."""

from __future__ import annotations

import re
from collections.abc import MutableMapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote

import httptools

__all__ = ["ServerShared", "address", "host_is_valid", "http_scope"]

_HOST = re.compile(rb"(\[[0-9A-Za-z:._~!$&'()*+,;=%-]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]*)(:[0-9]*)?")
"""RFC 3986's host (an IP literal in brackets, or a name or IPv4 address) and optional port."""


def host_is_valid(http_version: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request's Host header is as RFC 9112 (3.2) requires, which says to answer
    400 otherwise: exactly one (none only in HTTP/1.0), its value a host and optional port.
    With two, the first served (Starlette's trusted-host check reads that one) while a proxy
    in front may have judged the request by the other. ``headers``: names in lower case."""
    hosts = [value for name, value in headers if name == b"host"]
    if not hosts:
        return http_version == "1.0"
    return len(hosts) == 1 and _HOST.fullmatch(hosts[0].strip(b" \t")) is not None


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
