"""Commands sent as they are and replies taken as Redis sent them: the aggregator's hot read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatewayz_transport.connection import Connection
from gatewayz_transport.routing import Command, execute_routed, read_raw


def execute_raw(connection: Connection, commands: Sequence[Command]) -> list[Any]:
    """``commands`` sent as they are, their replies returned as Redis sent them, in order (no
    redis-py command layers, no reply callbacks: HGETALL is a flat list under RESP2, a map
    under RESP3, see ``as_dict``); a command's error is its reply (the caller raises it). The
    aggregator's hot read, tens of thousands of ZCOUNTs a cycle, at about a third of
    redis-py's pipeline cost per command. One buffer per server; on a cluster routed per node
    (``routing``)."""
    return execute_routed(connection, commands, read_raw)


def as_dict(raw: Any) -> dict[bytes, bytes]:
    """A raw HGETALL reply (a flat list under RESP2, a map under RESP3) as a dict."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def as_text(raw: Any) -> str:
    """A raw bulk string as text (bytes that are not UTF-8 replaced, never an error)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def as_scored(raw: Any) -> list[tuple[bytes, float]]:
    """A raw ``... WITHSCORES`` reply (a flat member, score list under RESP2, pairs under
    RESP3) as (member, score) pairs."""
    if raw and isinstance(raw[0], list):
        return [(member, float(score)) for member, score in raw]
    return [(member, float(score)) for member, score in zip(raw[::2], raw[1::2], strict=True)]
