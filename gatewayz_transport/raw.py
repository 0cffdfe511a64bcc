"""Commands sent as they are and replies taken as Redis sent them: the aggregator's hot read."""

from __future__ import annotations

from typing import Any

import hiredis
import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA

from gatewayz_transport.connection import Connection
from gatewayz_transport.routing import Command, execute_routed


class RawCommands:
    """Commands sent as they are, replies returned as Redis sent them (no redis-py command
    layers, no reply callbacks: HGETALL is a flat list, see ``as_dict``): the aggregator's
    hot read, tens of thousands of ZCOUNTs a cycle, at about a fifth of redis-py's pipeline
    cost per command. One buffer per server; on a cluster routed per node as above."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._commands: list[Command] = []

    def add(self, *args: Any) -> None:
        self._commands.append(args)

    def __len__(self) -> int:
        return len(self._commands)

    def execute(self) -> list[Any]:
        """The replies in order; a command's error as its reply (raised by the caller)."""
        commands, self._commands = self._commands, []
        return execute_routed(self._connection, commands, _read_raw)


def _read_raw(client: redis.Redis, connection: Any, indexes: list[int]) -> list[Any]:
    """The replies as hiredis parses them, taken from redis-py's parser in one loop: its
    per-reply wrapper (``Connection.read_response``: health and error bookkeeping) cost more
    than the parsing. Another parser (redis-py without hiredis) goes through that wrapper."""
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if not isinstance(reader, hiredis.Reader):
        replies = []
        for _ in indexes:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    gets, more = reader.gets, parser.read_from_socket  # type: ignore[union-attr]
    replies = []
    append = replies.append
    for _ in indexes:
        reply = gets()
        while reply is NOT_ENOUGH_DATA:  # not all of it has arrived
            more()
            reply = gets()
        if isinstance(reply, redis.ConnectionError):
            raise reply
        append(reply)
    return replies


def as_dict(raw: Any) -> dict[bytes, bytes]:
    """A raw HGETALL reply (a flat list under RESP2, a map under RESP3) as a dict."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))
