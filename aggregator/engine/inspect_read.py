"""``inspect``'s read: every key of some providers, counted per interval of the window, with
their hashes, live permits and TTLs; the commands and how their replies decode, side by side
(``plan.Plan``). Reads only (ZCOUNT, HGETALL, ZRANGEBYSCORE, PTTL)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from aggregator.core.readings import ProviderInspection, window_counts
from aggregator.engine.plan import Plan
from gatewayz_protocol.breaker_state import read_breaker
from gatewayz_protocol.fields import int_fields, text_fields
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import WINDOW_PARTITIONS
from gatewayz_transport.raw import as_dict, as_scored, as_text

SHOWN_CHARACTERS = 120
"""A value no writer of this project writes is shown up to this many characters (then its
size): enough to recognise it, not a screenful of another writer's 100 KB."""
_BREAKER_COUNTS = ("permits", "permit_ms")
"""Breaker fields the permit script reads as counts (``read_breaker`` checks the others)."""


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
        spans, keys = self._spans, self._keys
        zcounts = [0] * (WINDOW_PARTITIONS * spans)
        totals: Counter[str] = Counter()
        bad: dict[str, dict[str, str]] = {}
        per_shard, at = WINDOW_PARTITIONS * spans + 1, 0
        for shard in range(shards):
            chunk = replies[at : at + per_shard]
            at += per_shard
            zcounts = [a + int(b) for a, b in zip(zcounts, chunk[:-1], strict=True)]
            totals.update(_counts(keys.totals(name, shard), as_dict(chunk[-1]), bad))
        breaker, transitions, permits = replies[at : at + 3]
        ttls = [int(ttl) for ttl in replies[at + 3 :]]
        names = keys.provider_keys(name, shards)
        self.found.append(
            ProviderInspection(
                provider=name,
                spans=[window_counts(zcounts[i::spans]) for i in range(spans)],
                totals=dict(totals),
                breaker=_breaker(keys.breaker(name), as_dict(breaker), bad),
                transitions=_counts(keys.transitions(name), as_dict(transitions), bad),
                permits=[(as_text(m), s / 1000) for m, s in as_scored(permits)],
                ttl_ms=dict(zip(names, ttls, strict=True)),
                bad=bad,
            )
        )


def _counts(key: str, raw: dict[bytes, bytes], bad: dict[str, dict[str, str]]) -> dict[str, int]:
    """A hash of counts: the fields that are one; the others noted in ``bad`` under ``key``."""
    found, _ = int_fields(raw)
    _note(key, raw, found, bad)
    return found


def _breaker(key: str, raw: dict[bytes, bytes], bad: dict[str, dict[str, str]]) -> dict[str, str]:
    """A breaker hash, every field as stored but those the aggregator would not take
    (``read_breaker``: its state, times and counts) and permit counts that are not counts,
    noted in ``bad`` under ``key``."""
    fields, _ = text_fields(raw)
    _, wrong = read_breaker(raw)
    wrong += [f for f in _BREAKER_COUNTS if f in fields and not _is_count(fields[f])]
    found = {name: value for name, value in fields.items() if name not in wrong}
    _note(key, raw, found, bad)
    return found


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 19


def _note(
    key: str, raw: dict[bytes, bytes], kept: Mapping[str, object], bad: dict[str, dict[str, str]]
) -> None:
    """The fields of ``raw`` not ``kept``, as text, under ``key`` in ``bad``."""
    left_out = {
        as_text(name): _shown(value) for name, value in raw.items() if as_text(name) not in kept
    }
    if left_out:
        bad[key] = left_out


def _shown(value: bytes) -> str:
    text = as_text(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... ({len(value)} bytes)"
