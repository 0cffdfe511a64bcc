"""``inspect``'s read: every key of some providers, counted per interval of the window, with
their hashes, live permits and TTLs; the commands and how their replies decode, side by side
(``plan.Plan``). Reads only (ZCOUNT, HGETALL, ZRANGEBYSCORE, PTTL)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from aggregator.core.readings import ProviderInspection, int_hash, text_hash, window_counts
from aggregator.engine.plan import Plan
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import WINDOW_PARTITIONS
from gatewayz_transport.raw import as_dict, as_scored, as_text


class InspectRead:
    """Reads providers at ``now``, their windows split at ``edges`` (the first interval excludes
    its start, the last includes its end, the others are ``[a, b)``)."""

    def __init__(
        self, keys: Keys, now: float, edges: Sequence[float], shards: Mapping[str, int]
    ) -> None:
        self._keys = keys
        self._now = now
        self._spans = len(edges) - 1
        last = self._spans - 1
        self._bounds = [
            (f"({a!r}" if i == 0 else repr(a), repr(b) if i == last else f"({b!r}")
            for i, (a, b) in enumerate(itertools.pairwise(edges))
        ]
        self._shards = shards
        self.found: list[ProviderInspection] = []
        """What the plan's replies made, in the order of the providers asked for."""

    def plan(self, providers: Sequence[str]) -> Plan:
        plan = Plan()
        for name in providers:
            shards = self._shards.get(name, 1)
            plan.add(self._commands(name, shards), partial(self._decode, name, shards))
        return plan

    def _commands(self, name: str, shards: int) -> list[tuple[Any, ...]]:
        keys = self._keys
        commands: list[tuple[Any, ...]] = []
        for shard in range(shards):
            for key in keys.window_keys(name, shard):
                commands += [("ZCOUNT", key, low, high) for low, high in self._bounds]
            commands.append(("HGETALL", keys.totals(name, shard)))
        live = f"({self._now * 1000!r}"
        commands += [
            ("HGETALL", keys.breaker(name)),
            ("HGETALL", keys.transitions(name)),
            ("ZRANGEBYSCORE", keys.permits(name), live, "+inf", "WITHSCORES"),
        ]
        commands += [("PTTL", key) for key in keys.provider_keys(name, shards)]
        return commands

    def _decode(self, name: str, shards: int, replies: list[Any]) -> None:
        spans = self._spans
        zcounts = [0] * (WINDOW_PARTITIONS * spans)
        totals: Counter[str] = Counter()
        per_shard, at = WINDOW_PARTITIONS * spans + 1, 0
        for _ in range(shards):
            chunk = replies[at : at + per_shard]
            at += per_shard
            zcounts = [a + int(b) for a, b in zip(zcounts, chunk[:-1], strict=True)]
            totals.update(int_hash(as_dict(chunk[-1])))
        breaker, transitions, permits = replies[at : at + 3]
        ttls = [int(ttl) for ttl in replies[at + 3 :]]
        names = self._keys.provider_keys(name, shards)
        self.found.append(
            ProviderInspection(
                provider=name,
                spans=[window_counts(zcounts[i::spans]) for i in range(spans)],
                totals=dict(totals),
                breaker=text_hash(as_dict(breaker)),
                transitions=int_hash(as_dict(transitions)),
                permits=[(as_text(m), s / 1000) for m, s in as_scored(permits)],
                ttl_ms=dict(zip(names, ttls, strict=True)),
            )
        )
