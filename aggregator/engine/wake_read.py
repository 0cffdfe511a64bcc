"""The read a woken breaker is evaluated on: per provider its breaker hash and shard count (round
one), then the calls the breaker judges since its counting start and since its recent start
(round two: one ZCOUNT per judged partition and start, per shard). Reads only: no trim, no
registration (the cycles maintain the keys); its own state, so it never disturbs the cycle's
reader."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from aggregator.core.breaker import BreakerCalls, counting_start, recent_start
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.decisions import breaker_calls
from aggregator.core.readings import Skips, window_counts
from aggregator.engine.plan import Plan
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import CALLER_ERROR, LATENCY_PARTITIONS, WINDOW_PARTITIONS
from gatewayz_transport.connection import Connection
from gatewayz_transport.raw import as_dict

JUDGED = tuple(i for i in range(WINDOW_PARTITIONS) if i != LATENCY_PARTITIONS - 1 + CALLER_ERROR)
"""The partitions a breaker counts (caller errors never)."""
MAX_SHARDS = 64
"""A shard count read from Redis above this is taken as 1 (another writer's value)."""


@dataclass(frozen=True)
class WokenReading:
    provider: str
    breaker: BreakerState
    calls: BreakerCalls
    """Calls made after ``counting_start``."""
    recent: BreakerCalls
    """Calls made after ``recent_start``."""


def read_woken(
    connection: Connection,
    keys: Keys,
    providers: Sequence[str],
    now: float,
    policy: BreakerPolicy,
    tolerance: float,
    ops: Counter[str],
) -> tuple[list[WokenReading], Skips]:
    """Two round trips for every provider of ``providers`` together; ``ops`` counts the
    commands sent, and the returned ``Skips`` what could not be read."""
    skips = Skips(keys)
    states: dict[str, BreakerState] = {}
    shards: dict[str, int] = {}
    first = Plan()
    for name in providers:
        commands = [("HGETALL", keys.breaker(name)), ("ZSCORE", keys.shards, name)]
        first.add(commands, partial(_decode_first, skips, keys, name, states, shards))
    ops.update(first.run(connection))
    high = repr(now + tolerance)
    counts: dict[tuple[str, str], list[int]] = {}
    second = Plan()
    for name in providers:
        state, config = states[name], policy.config(name)
        starts = {
            "calls": counting_start(state, now, config),
            "recent": recent_start(state, now, config),
        }
        for label, start in starts.items():
            window = counts[(name, label)] = [0] * WINDOW_PARTITIONS
            for shard in range(shards[name]):
                window_keys = keys.window_keys(name, shard)
                commands = [("ZCOUNT", window_keys[i], f"({start!r}", high) for i in JUDGED]
                second.add(commands, partial(_add, window))
    ops.update(second.run(connection))

    def judged(name: str, label: str) -> BreakerCalls:
        return breaker_calls(window_counts(counts[(name, label)]), policy.config(name))

    readings = [
        WokenReading(name, states[name], judged(name, "calls"), judged(name, "recent"))
        for name in providers
    ]
    return readings, skips


def _decode_first(
    skips: Skips,
    keys: Keys,
    name: str,
    states: dict[str, BreakerState],
    shards: dict[str, int],
    replies: list[Any],
) -> None:
    states[name] = skips.breaker(keys.breaker(name), as_dict(replies[0]))
    shards[name] = _shard_count(replies[1])


def _shard_count(raw: object) -> int:
    try:
        count = int(float(raw))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 1
    return count if 1 <= count <= MAX_SHARDS else 1


def _add(window: list[int], replies: list[Any]) -> None:
    for index, count in zip(JUDGED, replies, strict=True):
        window[index] += int(count)
