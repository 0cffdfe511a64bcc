"""The breaker cycle's read of the optional model breakers (``gatewayz_protocol.model_scopes``):
only for the providers of ``breaker_models`` (none: no command at all).

Round one, per listed provider: its model registry's most recently seen models (at most
``max_models_per_provider``, seen within the export horizon), and the removal of those older
than the retention period. Round two, per model: its breaker hash, the trim of each of its three
window sets to what a breaker judges (``model_horizon_seconds``), and a ZCOUNT of each from the
start of a closed breaker's window. Round three, only for a breaker whose counting starts later
(a recent transition, open or half-open): the three ZCOUNTs from that start.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.model_breakers import ModelReading, model_counting_start
from aggregator.core.readings import Skip, Skips
from aggregator.engine.reader import FUTURE_TOLERANCE_SECONDS
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.model_scopes import model_horizon_seconds, read_model_name
from gatewayz_transport.connection import Connection
from gatewayz_transport.raw import as_dict, execute_raw

Command = tuple[Any, ...]


class Sink(Protocol):
    """Counts a read's commands and keeps what it skipped (``WindowReader`` is one)."""

    ops: Counter[str]
    skipped: list[Skip]


class _OwnSink:
    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.skipped: list[Skip] = []


_NOTHING: tuple[Any, ...] = (0,)
"""What an unreadable set reads as: ZCOUNT and ZREMRANGEBYSCORE 0 (ZREVRANGEBYSCORE: none)."""


class ModelBreakerReader:
    """Reads the model breakers of ``providers`` (``breaker_models``) each breaker cycle."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        providers: Sequence[str],
        max_models: int,
        max_name_bytes: int,
        tolerance_seconds: float,
        export_horizon_seconds: float,
        retention_seconds: float,
        sink: Sink | None = None,
    ) -> None:
        """``sink``: where the commands issued and the values skipped are counted (the
        cycle's window reader, whose counts the cycle reports); None: a sink of its own."""
        self._redis = connection
        self._keys = keys
        self.providers = tuple(providers)
        self._max_models = max_models
        self._max_bytes = max_name_bytes
        self._tolerance = tolerance_seconds
        self._horizon = export_horizon_seconds
        self._retention = retention_seconds
        self._sink: Sink = sink if sink is not None else _OwnSink()

    @classmethod
    def of(
        cls, settings: AggregatorSettings, connection: Connection, keys: Keys, sink: Sink
    ) -> ModelBreakerReader:
        """The reader an aggregator configured by ``settings`` uses."""
        return cls(
            connection,
            keys,
            settings.breaker_models,
            settings.max_models_per_provider,
            settings.max_label_value_bytes,
            FUTURE_TOLERANCE_SECONDS,
            settings.export_horizon_seconds,
            settings.retention_seconds,
            sink,
        )

    def _send(self, commands: list[Command], skips: Skips) -> list[Any]:
        """The replies; a command's error reply (a key of another type: a foreign or
        hand-written value) is noted as skipped and read as nothing (an empty hash or set), so
        it never stops a cycle."""
        if not commands:
            return []
        replies = execute_raw(self._redis, commands)
        self._sink.ops.update(str(command[0]).lower() for command in commands)
        for index, reply in enumerate(replies):
            if isinstance(reply, Exception):
                if not isinstance(reply, redis.ResponseError):
                    raise reply
                skips.note(str(commands[index][1]), (str(commands[index][0]).lower(),))
                replies[index] = {} if commands[index][0] == "HGETALL" else _NOTHING[0]
        return replies

    def read(self, now: float, policy: BreakerPolicy) -> list[ModelReading]:
        """Every listed provider's model breakers as they stand at ``now`` (an event counts
        while its time is after the breaker's counting start and at most ``now`` plus the
        tolerance)."""
        if not self.providers:
            return []
        skips = Skips(self._keys)
        scopes = self._scopes(now, skips)
        high = repr(now + self._tolerance)
        states, counts, again = self._breakers(scopes, now, high, policy, skips)
        commands: list[Command] = []
        for number, start in again:  # round three: counting from a later start
            windows = self._keys.model_window_keys(*scopes[number])
            commands += [("ZCOUNT", key, f"({start!r}", high) for key in windows]
        replies = self._send(commands, skips)
        for position, (number, _) in enumerate(again):
            counts[number] = [int(count) for count in replies[3 * position : 3 * position + 3]]
        self._sink.skipped += skips.found
        return [
            ModelReading(provider, model, state, *count)
            for (provider, model), state, count in zip(scopes, states, counts, strict=True)
        ]

    def _scopes(self, now: float, skips: Skips) -> list[tuple[str, str]]:
        """Round one: the (provider, model) pairs to read, the most recently seen first."""
        keys, commands = self._keys, list[Command]()
        for provider in self.providers:
            registry = keys.models(provider)
            commands.append(("ZREMRANGEBYSCORE", registry, "-inf", f"({now - self._retention!r}"))
            commands.append(
                (
                    "ZREVRANGEBYSCORE", registry, "+inf", repr(now - self._horizon),
                    "LIMIT", 0, self._max_models,
                )
            )  # fmt: skip
        replies = self._send(commands, skips)
        scopes: list[tuple[str, str]] = []
        for number, provider in enumerate(self.providers):
            members = replies[2 * number + 1]
            for raw in members if isinstance(members, list) else ():
                model = read_model_name(raw, self._max_bytes)
                if model is None:
                    skips.note(keys.models(provider), ("member",))
                else:
                    scopes.append((provider, model))
        return scopes

    def _breakers(
        self,
        scopes: list[tuple[str, str]],
        now: float,
        high: str,
        policy: BreakerPolicy,
        skips: Skips,
    ) -> tuple[list[BreakerState], list[list[int]], list[tuple[int, float]]]:
        """Round two: each breaker, its windows trimmed and counted over a closed breaker's
        window; the states, the counts, and (index, start) of those counting from later."""
        keys, commands = self._keys, list[Command]()
        for provider, model in scopes:
            config = policy.config(provider)
            windows = keys.model_window_keys(provider, model)
            below = repr(now - model_horizon_seconds(
                config.window_seconds, config.recent_window_seconds,
                config.half_open_timeout_seconds,
            ))  # fmt: skip
            low = f"({now - config.window_seconds!r}"
            commands.append(("HGETALL", keys.model_breaker(provider, model)))
            commands += [("ZREMRANGEBYSCORE", key, "-inf", f"({below}") for key in windows]
            commands += [("ZCOUNT", key, low, high) for key in windows]
        replies = self._send(commands, skips)
        states: list[BreakerState] = []
        counts: list[list[int]] = []
        again: list[tuple[int, float]] = []
        for number, (provider, model) in enumerate(scopes):
            at = 7 * number
            key = keys.model_breaker(provider, model)
            state = skips.breaker(key, as_dict(replies[at]))
            states.append(state)
            counts.append([int(count) for count in replies[at + 4 : at + 7]])
            config = policy.config(provider)
            start = model_counting_start(state, now, config)
            if start != now - config.window_seconds:
                again.append((number, start))
        return states, counts, again
