"""Which providers this process may write: the registry in Redis holds at most ``max_providers``
names cluster-wide, so a flood of new names cannot grow Redis or /metrics without bound."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis

from gatewayz_protocol import scripts
from gatewayz_protocol.keys import DEFAULT_EXPORT_HORIZON_SECONDS, Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.scripts import register

ASK_AGAIN_SECONDS = 60.0
"""How long a refusal is remembered before the registry is asked again."""
REMEMBER_ADMITTED_SECONDS = 600.0
"""How long an admission is remembered: the registry forgets providers idle for the retention
period, and a remembered admission must not outlive that by much."""


class Registry(Protocol):
    def admit(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        """Which providers the registry holds or takes in (while it has fewer than ``cap``);
        raises redis.RedisError or OSError when Redis cannot answer."""
        ...


class RedisRegistry:
    """The registry's Redis I/O: one script call admits a batch's new names."""

    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        horizon_seconds: float = DEFAULT_EXPORT_HORIZON_SECONDS,
        key: str | None = None,
    ) -> None:
        """``horizon_seconds``: names without an event for this long are idle and do not
        count against the cap. ``key``: another registry than the providers' (a provider's
        model registry)."""
        self._admit = register(connection, scripts.ADMIT)
        self._key = keys.providers if key is None else key
        self._horizon = horizon_seconds

    def admit(self, providers: list[str], cap: int, now: float) -> dict[str, bool]:
        flags = self._admit(keys=[self._key], args=[cap, now, now - self._horizon, *providers])
        return {p: bool(f) for p, f in zip(providers, flags, strict=True)}


class ProviderAdmission:
    """Asks the registry once per provider and remembers the answer for a while, in memory
    bounded by the cap. While Redis cannot answer, nobody is refused: a refusal is only ever a
    recent answer of the registry."""

    def __init__(
        self,
        registry: Registry,
        cap: int,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._cap = cap
        self._clock = clock
        self._monotonic = monotonic
        self._size = 2 * cap
        # provider -> monotonic time to ask again, oldest answer first
        self._admitted: OrderedDict[str, float] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        """Answers remembered (at most twice the cap of each kind)."""
        return len(self._admitted) + len(self._refused)

    def refused(self, providers: set[str]) -> set[str]:
        """The providers among ``providers`` whose events must be dropped."""
        now = self._monotonic()
        refused: set[str] = set()
        ask: list[str] = []
        for provider in providers:
            admitted = self._recall(provider, now)
            if admitted is None:
                ask.append(provider)
            elif not admitted:
                refused.add(provider)
        if ask:
            try:
                answers = self._registry.admit(sorted(ask), self._cap, self._clock())
            except (redis.RedisError, OSError):
                answers = {}
            for provider, admitted in answers.items():
                if admitted:
                    _remember(self._admitted, provider, now + REMEMBER_ADMITTED_SECONDS, self._size)
                else:
                    _remember(self._refused, provider, now + ASK_AGAIN_SECONDS, self._size)
                    refused.add(provider)
        return refused

    def _recall(self, provider: str, now: float) -> bool | None:
        """The registry's remembered answer about ``provider`` (expired ones are forgotten)."""
        for answers, admitted in ((self._admitted, True), (self._refused, False)):
            until = answers.get(provider)
            if until is not None:
                if now < until:
                    return admitted
                del answers[provider]
        return None


def _remember(answers: OrderedDict[str, float], provider: str, until: float, size: int) -> None:
    answers[provider] = until
    answers.move_to_end(provider)
    while len(answers) > size:
        answers.popitem(last=False)  # forget the oldest answer: it is asked again if needed
