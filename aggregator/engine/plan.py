"""A read plan: Redis commands queued together with what decodes their replies.

Whoever queues a group of commands gives, in the same place, the function that reads their
replies, so issuing and decoding cannot fall out of step; and what a plan costs Redis (its
operations, by command) is counted from the commands it holds, never from a formula written
beside them. Every read of the aggregator goes through one: the cycle's window read
(``window_read``), the registry, the backend metrics, the dashboard's history and ``inspect``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import redis

from gatewayz_transport.connection import Connection
from gatewayz_transport.errors import raise_first_error
from gatewayz_transport.raw import as_text, execute_raw
from gatewayz_transport.routing import Command

Decode = Callable[[list[Any]], None]
"""Takes the replies of the commands queued with it, in order, as Redis sent them."""

_first = itemgetter(0)
_ABSENT: dict[str, Any] = {
    "GET": None,
    "ZSCORE": None,
    "ZCOUNT": 0,
    "ZCARD": 0,
    "ZREMRANGEBYSCORE": 0,
    "ZREMRANGEBYRANK": 0,
    "ZREM": 0,
}
"""What a command answers about a missing key, where that is not an empty list."""


class Plan:
    """Commands and their decoders, run in one round trip (one per node on a Cluster)."""

    def __init__(self) -> None:
        self._commands: list[Command] = []
        self._parts: list[tuple[int, int, Decode]] = []
        self.wrong_type: list[str] = []
        """Keys a command found holding another type (another writer's, a hand edit): read as
        absent, never a reason to stop the read; set by ``decode``."""

    def add(self, commands: Sequence[Command], decode: Decode) -> None:
        """Queue ``commands``; ``decode`` gets their replies, in order, when the plan runs."""
        start = len(self._commands)
        self._commands.extend(commands)
        self._parts.append((start, len(self._commands), decode))

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def commands(self) -> list[Command]:
        """The commands queued, in the order they are sent."""
        return list(self._commands)

    def operations(self) -> Counter[str]:
        """The commands queued, by operation (``zcount``, ``hgetall``...): what running the
        plan costs Redis, for ``gatewayz_redis_operations_total``."""
        by_name = Counter(map(_first, self._commands))
        return Counter({str(name).lower(): count for name, count in by_name.items()})

    def run(self, connection: Connection) -> Counter[str]:
        """Send every command and ``decode`` the replies. Returns ``operations()``."""
        self.decode(execute_raw(connection, self._commands) if self._commands else [])
        return self.operations()

    def decode(self, replies: list[Any]) -> None:
        """Hand each group its replies (one per command, in order, as Redis sent them), after
        raising the first error reply: a read is never half-decoded."""
        if len(replies) != len(self._commands):
            raise ValueError(f"{len(replies)} replies to {len(self._commands)} commands")
        replies = [self._absent_if_wrong_type(i, reply) for i, reply in enumerate(replies)]
        raise_first_error(replies)
        for start, end, decode in self._parts:
            decode(replies[start:end])

    def _absent_if_wrong_type(self, index: int, reply: Any) -> Any:
        if not (isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE")):
            return reply
        command = self._commands[index]
        self.wrong_type.append(as_text(command[1]))
        name = str(command[0]).upper()
        return [None] * (len(command) - 2) if name == "HMGET" else _ABSENT.get(name, [])
