"""Which providers this process may write: the registry in Redis holds at most ``max_providers``
names cluster-wide, so a flood of new names cannot grow Redis or /metrics without bound."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

_ASK_AGAIN_SECONDS = 60.0


class ProviderAdmission:
    """Asks Redis once per provider (a refused one again after a minute) and remembers the
    answer, in bounded memory. While Redis cannot answer, nobody is refused."""

    def __init__(
        self,
        admit: Callable[[list[str], int, float], dict[str, bool]],
        cap: int,
        clock: Callable[[], float],
    ) -> None:
        self._admit = admit
        self._cap = cap
        self._clock = clock
        self._admitted: set[str] = set()
        self._refused: dict[str, float] = {}  # provider -> monotonic time to ask again

    def refused(self, providers: set[str]) -> set[str]:
        """The providers among ``providers`` whose events must be dropped."""
        unknown = providers - self._admitted
        if not unknown:
            return set()
        now = time.monotonic()
        ask = sorted(p for p in unknown if self._refused.get(p, 0.0) <= now)
        answers: dict[str, bool] = {}
        if ask:
            try:
                answers = self._admit(ask, self._cap, self._clock())
            except (redis.RedisError, OSError):
                answers = {}
            for provider, admitted in answers.items():
                if admitted:
                    self._admitted.add(provider)
                    self._refused.pop(provider, None)
                else:
                    if len(self._refused) >= 4 * self._cap:
                        self._refused.pop(next(iter(self._refused)))  # forget the oldest
                    self._refused[provider] = now + _ASK_AGAIN_SECONDS
        return {p for p in unknown if p in self._refused or answers.get(p) is False}
