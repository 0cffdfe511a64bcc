"""One cycle's read of the windows: the commands it sends and the reading their replies make,
written side by side (``plan.Plan``).

Never transfers window members. Round one, per provider: its breaker hash (and with counters
its transitions, and per shard its totals and exemplars), one ZCOUNT per partition that had
calls in the window at the last read, one EXISTS for all those that had none (a provider's
calls fill a few of its 24 partitions: at 1,000 providers a count of every partition was most of
a read), and, when the provider's trim is due, one ZREMRANGEBYSCORE per partition. Round two,
only when needed: the partitions found empty before that exist now, and the calls each breaker
judges where its counting starts inside the window (only in partitions with calls in it).

A reply equal to the last read's is not decoded again, and a provider whose every input equals
the last read's keeps the same reading object (``core.reuse.Reuse``), so what is built
from it downstream can be reused as well: the cost of decoding follows what changed.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from aggregator.core.health import WindowCounts
from aggregator.core.readings import (
    ProviderReading,
    Reading,
    Skips,
    newest_exemplars,
    window_counts,
)
from aggregator.core.reuse import Reuse
from aggregator.engine.plan import Plan
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.fields import Exemplar
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.partitions import WINDOW_PARTITIONS
from gatewayz_transport.raw import as_dict

Place = tuple[str, int]
"""(provider, shard)"""


class WindowRead:
    """Reads ``names``' windows as they stand at ``now``: an event counts while ``now - window <
    its time <= now + tolerance``. ``empty`` (per place, the partitions without calls at the
    last read) is what the last read's ``empty_partitions()`` returned; ``trimming`` names the
    providers whose window keys this read trims; ``counters`` False (what a breaker evaluation
    needs) leaves out each provider's totals, exemplars and transitions. ``decoded``: what the
    last read of the same kind decoded (``Reuse``), reused where a reply is unchanged;
    the caller calls its ``finish()`` once the reading is made."""

    def __init__(
        self,
        keys: Keys,
        names: Sequence[str],
        now: float,
        window: float,
        tolerance: float,
        shards: Mapping[str, int],
        empty: Mapping[Place, tuple[int, ...]],
        trimming: frozenset[str] = frozenset(),
        counters: bool = True,
        decoded: Reuse | None = None,
    ) -> None:
        self._keys = keys
        self._decoded = Reuse() if decoded is None else decoded
        self._names = list(names)
        self._start = now - window
        self._low, self._high = f"({self._start!r}", repr(now + tolerance)
        self._shards = shards
        self._empty = empty
        self._trimming = trimming
        self._counters = counters
        self.skips = Skips(keys)
        """What the replies held that no writer of this project could have written."""
        self._shared: list[dict[bytes, bytes]] = []
        self._breakers: dict[str, BreakerState] = {}
        self._transitions: dict[str, dict[str, int]] = {}
        self._totals: dict[str, list[dict[str, int]]] = {}  # per shard
        self._exemplars: dict[str, dict[int, Exemplar]] = {}
        self._windows: dict[Place, list[int]] = {}
        self._recount: dict[Place, tuple[int, ...]] = {}  # empty before, existing now
        self._since: dict[str, list[int]] = {}  # per partition, calls after counting starts

    # -- round one -----------------------------------------------------------------------------

    def first_round(self) -> Plan:
        keys = self._keys
        plan = Plan()
        shared = [("HGETALL", keys.client_stats), ("HGETALL", keys.redis_ops)]
        plan.add([*shared, ("HGETALL", keys.clock_offsets)], self._shared.extend)
        for name in self._names:
            commands: list[tuple[Any, ...]] = [("HGETALL", keys.breaker(name))]
            if self._counters:
                commands.append(("HGETALL", keys.transitions(name)))
            plan.add(commands, partial(self._decode_breaker, name))
            self._totals[name], self._exemplars[name] = [], {}
            for shard in range(self._shards.get(name, 1)):
                self._queue_shard(plan, name, shard)
        return plan

    def _decode_breaker(self, name: str, replies: list[Any]) -> None:
        keys, skips, decoded = self._keys, self.skips, self._decoded
        key = keys.breaker(name)
        self._breakers[name] = decoded.decode(
            key, replies[0], skips, lambda raw: skips.breaker(key, as_dict(raw))
        )
        if not self._counters:
            self._transitions[name] = {}
            return
        key = keys.transitions(name)
        self._transitions[name] = decoded.decode(
            key, replies[1], skips, lambda raw: skips.transitions(key, as_dict(raw))
        )

    def _queue_shard(self, plan: Plan, name: str, shard: int) -> None:
        keys, window_keys = self._keys, self._keys.window_keys(name, shard)
        commands: list[tuple[Any, ...]] = []
        if self._counters:
            commands.append(("HGETALL", keys.totals(name, shard)))
            commands.append(("HGETALL", keys.exemplars(name, shard)))
        trims = name in self._trimming
        if trims:
            below = repr(self._start)
            commands += [("ZREMRANGEBYSCORE", key, "-inf", below) for key in window_keys]
        empty = self._empty.get((name, shard), ())
        counted = _counted(empty)
        low, high = self._low, self._high
        commands += [("ZCOUNT", window_keys[i], low, high) for i in counted]
        if empty:
            commands.append(("EXISTS", *(window_keys[i] for i in empty)))
        plan.add(commands, partial(self._decode_shard, (name, shard), counted, empty, trims))

    def _decode_shard(
        self,
        place: Place,
        counted: tuple[int, ...],
        empty: tuple[int, ...],
        trims: bool,
        replies: list[Any],
    ) -> None:
        (name, shard), at = place, 0
        if self._counters:
            keys, skips, decoded = self._keys, self.skips, self._decoded
            key = keys.totals(name, shard)
            self._totals[name].append(
                decoded.decode(key, replies[0], skips, lambda raw: skips.ints(key, as_dict(raw)))
            )
            key = keys.exemplars(name, shard)
            found = decoded.decode(
                key, replies[1], skips, lambda raw: skips.exemplars(key, as_dict(raw))
            )
            known = self._exemplars[name]
            self._exemplars[name] = newest_exemplars(known, found) if known else found
            at = 2
        at += WINDOW_PARTITIONS if trims else 0
        window = [0] * WINDOW_PARTITIONS
        for index, count in zip(counted, replies[at : at + len(counted)], strict=True):
            window[index] = int(count)
        self._windows[place] = window
        if empty and int(replies[-1]):  # the EXISTS: some of the empty ones exist now
            self._recount[place] = empty

    # -- round two -----------------------------------------------------------------------------

    def second_round(self, counting_start: Callable[[str, BreakerState], float]) -> Plan | None:
        """The plan of round two, or None when nothing needs it. ``counting_start(provider,
        state)``: from when a provider's breaker judges its calls (only starts inside the
        window need a count of their own)."""
        starts = {name: counting_start(name, state) for name, state in self._breakers.items()}
        judged = {name: start for name, start in starts.items() if start > self._start}
        if not judged and not self._recount:
            return None
        plan = Plan()
        for place, indexes in self._recount.items():
            window_keys = self._keys.window_keys(*place)
            commands = [("ZCOUNT", window_keys[i], self._low, self._high) for i in indexes]
            plan.add(commands, partial(self._decode_recount, place, indexes))
        for name, since in judged.items():
            self._since[name] = [0] * WINDOW_PARTITIONS
            for shard in range(self._shards.get(name, 1)):
                window_keys = self._keys.window_keys(name, shard)
                again = self._recount.get((name, shard), ())
                window = self._windows[(name, shard)]
                judging = [i for i, count in enumerate(window) if count or i in again]
                low = f"({since!r}"
                commands = [("ZCOUNT", window_keys[i], low, self._high) for i in judging]
                plan.add(commands, partial(self._decode_since, name, judging))
        return plan

    def _decode_recount(self, place: Place, indexes: Sequence[int], replies: list[Any]) -> None:
        window = self._windows[place]
        for index, count in zip(indexes, replies, strict=True):
            window[index] = int(count)

    def _decode_since(self, name: str, indexes: Sequence[int], replies: list[Any]) -> None:
        since = self._since[name]
        for index, count in zip(indexes, replies, strict=True):
            since[index] += int(count)

    # -- what the replies made -----------------------------------------------------------------

    def reading(self) -> Reading:
        """The reading, once the rounds ran."""
        client_stats, redis_ops, clock_offsets = self._shared
        readings = []
        for name, breaker in self._breakers.items():
            shards = self._shards.get(name, 1)
            per_shard = [self._windows[(name, shard)] for shard in range(shards)]
            summed = per_shard[0] if shards == 1 else [sum(c) for c in zip(*per_shard, strict=True)]
            since = self._since.get(name)
            parts = self._totals[name]
            totals = parts[0] if len(parts) == 1 else _summed(parts) if parts else _NO_TOTALS
            transitions, exemplars = self._transitions[name], self._exemplars[name]
            inputs = (summed, since, totals, breaker, transitions, exemplars)
            build = partial(_provider_reading, name, *inputs)
            readings.append(self._decoded.reuse(("reading", name), inputs, build))
        keys, skips = self._keys, self.skips
        return Reading(
            tuple(readings),
            skips.ints(keys.client_stats, as_dict(client_stats)),
            skips.ints(keys.redis_ops, as_dict(redis_ops)),
            skips.clock_offsets(keys.clock_offsets, as_dict(clock_offsets)),
        )

    def empty_partitions(self) -> dict[Place, tuple[int, ...]]:
        """Per place, the partitions without calls in this read's window: the next read's
        ``empty``."""
        return {
            place: tuple(i for i, count in enumerate(window) if not count)
            for place, window in self._windows.items()
        }


def _provider_reading(
    name: str,
    window: list[int],
    since: list[int] | None,
    totals: dict[str, int],
    breaker: BreakerState,
    transitions: dict[str, int],
    exemplars: dict[int, Exemplar],
) -> ProviderReading:
    counts = window_counts(window)
    breaker_counts: WindowCounts = counts if since is None else window_counts(since)
    return ProviderReading(name, counts, breaker_counts, totals, breaker, transitions, exemplars)


_NO_TOTALS: dict[str, int] = {}  # a read without counters (never changed)


@functools.lru_cache(maxsize=4096)
def _counted(empty: tuple[int, ...]) -> tuple[int, ...]:
    """The partitions counted when ``empty`` are known to be empty (a provider's calls fill
    a few of the partitions: a handful of distinct sets, looked up instead of computed)."""
    return tuple(i for i in range(WINDOW_PARTITIONS) if i not in empty)


def _summed(parts: list[dict[str, int]]) -> dict[str, int]:
    """Several shards' totals added up, field by field."""
    summed: Counter[str] = Counter()
    for part in parts:
        summed.update(part)
    return dict(summed)
