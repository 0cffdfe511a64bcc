"""The ledger: what every worker process is known to have recorded, deterministically.

Call ``i`` of worker ``index`` in a run of ``seed`` is a pure function of the three
(``calls``): the checker recomputes any prefix of a worker's calls without the worker having
logged them. A worker's file (``WorkerLedger``) adds what only the run knows: how far it got and
when (progress lines), every ``flush()`` and its answer, clock changes, its end or its death.

Each worker records to providers of its own (``w<index>-ok``, ``w<index>-flaky``), so each
provider's events in Redis have one writer: a single Redis applies a flush in one transaction
and a cluster one transaction per slot (a provider's keys share one), batches in order, so
what a provider holds is a prefix of its recorded events (``ProviderProfile``).
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayz_protocol.fields import (
    COST_FIELD,
    COUNT_FIELDS,
    HISTOGRAM_FIELDS,
    LATENCY_SUM_FIELD,
    TOKENS_FIELD,
    split_amount,
)
from gatewayz_protocol.partitions import (
    BUCKET_OF_PARTITION,
    WINDOW_PARTITIONS,
    latency_partition,
    window_partition,
)

BLOCK = 1000
"""Calls drawn per generator: call ``i`` comes from the generator of block ``i // BLOCK``."""
FLAVORS = ("ok", "flaky")
LATENCIES_MS = (20, 45, 80, 150, 300, 700, 1200, 2500, 6000, 12000)
COSTS_NUSD = (0, 0, 100_000, 2_500_000, 31_000)
STATUS_CLASS = {200: 0, 201: 0, 500: 1, 503: 1, 408: 1, 429: 2, 404: 3, 400: 3}
"""The outcome code of each status a worker sends (docs "Semantics")."""
INVALID = ("invalid_latency", "invalid_status_code")
"""Causes that reject a whole call (what a health event is made of). A bad token count or cost
is left out of a call that is still booked (the client's rule since "trust boundaries"): not
drawn here, so the ledger holds under either rule."""
FIELDS = (*COUNT_FIELDS, *HISTOGRAM_FIELDS, LATENCY_SUM_FIELD, TOKENS_FIELD, COST_FIELD)
"""Every totals field a worker's events add to."""
CALLS_METRIC = "torture_calls"
COST_METRIC = "torture_cost_usd"
"""The workers' backend counters (label ``provider``): +1 and +cost per accepted call, stored
under these names and exported with ``_total``."""


def provider_name(index: int, flavor: str) -> str:
    return f"w{index}-{flavor}"


def worker_of(tag: str) -> int | None:
    """The index of the worker whose provider (or provider's shard) ``tag`` is."""
    head = tag.split("-", 1)[0]
    return int(head[1:]) if head[:1] == "w" and head[1:].isdigit() else None


def shard_count(provider: str) -> int:
    """How many slots a provider's windows and totals are split over
    (``GATEWAYZ_PROVIDER_SHARDS``): 3 for every odd worker's ``ok`` provider, else 1."""
    index, _, flavor = provider[1:].partition("-")
    return 3 if flavor == "ok" and int(index) % 2 == 1 else 1


def shard_tags(provider: str) -> list[str]:
    """The hash tags of a provider's shards (``Keys``: ``p``, ``p:1``, ``p:2``...)."""
    return [provider, *(f"{provider}:{n}" for n in range(1, shard_count(provider)))]


def merged(hashes: list[dict[str, str]]) -> dict[str, str]:
    """Shards' totals hashes as one: integer fields summed, any other value kept as is."""
    found: dict[str, str] = {}
    for one in hashes:
        for name, value in one.items():
            old = found.get(name, "0")
            both = old.lstrip("-").isdigit() and value.lstrip("-").isdigit()
            found[name] = str(int(old) + int(value)) if both else value
    return found


@dataclass(frozen=True)
class Call:
    provider: str
    latency_ms: int
    status: int
    tokens: int
    cost_nusd: int
    invalid: str | None = None
    """The rejection cause this call is built to meet (it is then no event)."""

    @property
    def outcome(self) -> int:
        return STATUS_CLASS[self.status]

    @property
    def partition(self) -> int:
        """Index of its window key (``Keys.window_keys``)."""
        return window_partition(self.outcome, latency_partition(self.latency_ms / 1000))

    def totals(self) -> dict[str, int]:
        """What this event adds to its provider's totals hash."""
        bucket = BUCKET_OF_PARTITION[latency_partition(self.latency_ms / 1000)]
        return {
            COUNT_FIELDS[self.outcome]: 1,
            HISTOGRAM_FIELDS[bucket]: 1,
            LATENCY_SUM_FIELD: self.latency_ms * 1000,
            TOKENS_FIELD: self.tokens,
            COST_FIELD: self.cost_nusd,
        }

    def cost_nanos(self) -> int:
        """The backend cost counter's increment in nano-units, as the client splits it."""
        ints, nanos = split_amount(self.cost_nusd / 1e9)
        return ints * 1_000_000_000 + nanos


def _block(seed: int, index: int, block: int) -> list[Call]:
    rng = random.Random(f"{seed}/{index}/{block}")
    failing = block % 2 == 1  # the flaky provider fails most calls in every other block
    calls = []
    for _ in range(BLOCK):
        flavor = "flaky" if rng.random() < 0.4 else "ok"
        if flavor == "flaky":
            status = 503 if rng.random() < (0.8 if failing else 0.1) else 200
        else:
            status = rng.choices(
                (200, 201, 503, 500, 408, 429, 404, 400), (80, 5, 3, 1, 1, 4, 4, 2)
            )[0]
        invalid = rng.choice(INVALID) if rng.random() < 0.02 else None
        calls.append(
            Call(
                provider_name(index, flavor),
                rng.choice(LATENCIES_MS),
                status,
                rng.randrange(0, 4000),
                rng.choice(COSTS_NUSD),
                invalid,
            )
        )
    return calls


def calls(seed: int, index: int, start: int, stop: int) -> list[Call]:
    """Calls ``start`` .. ``stop - 1`` of worker ``index`` in a run of ``seed``."""
    found: list[Call] = []
    for block in range(start // BLOCK, (stop + BLOCK - 1) // BLOCK):
        base = block * BLOCK
        found += _block(seed, index, block)[max(0, start - base) : max(0, stop - base)]
    return found


@dataclass
class ProviderProfile:
    """One provider's valid events among a worker's first calls: what any prefix of them adds
    to Redis, per totals field and per window partition."""

    provider: str
    call_index: list[int] = field(default_factory=list)
    """The worker's call index of each of the provider's events, in order."""
    events: list[Call] = field(default_factory=list)

    def prefix(self, calls_done: int) -> int:
        """How many of the provider's events are among the worker's first ``calls_done``."""
        return bisect.bisect_left(self.call_index, calls_done)

    def totals(self, count: int) -> dict[str, int]:
        """The totals hash after the first ``count`` events (fields that would be 0 omitted)."""
        sums = dict.fromkeys(FIELDS, 0)
        for event in self.events[:count]:
            for name, value in event.totals().items():
                sums[name] += value
        return {name: value for name, value in sums.items() if value}

    def cumulative(self) -> Iterator[dict[str, int]]:
        """``totals(0)``, ``totals(1)``, ... incrementally (fields that are 0 kept)."""
        sums = dict.fromkeys(FIELDS, 0)
        yield dict(sums)
        for event in self.events:
            for name, value in event.totals().items():
                sums[name] += value
            yield dict(sums)

    def partitions(self, events: list[int]) -> list[int]:
        """Count per window partition of the events at these positions."""
        counts = [0] * WINDOW_PARTITIONS
        for position in events:
            counts[self.events[position].partition] += 1
        return counts


def profiles(seed: int, index: int, calls_done: int) -> dict[str, ProviderProfile]:
    """Each of the worker's providers' events among its first ``calls_done`` calls."""
    found = {name: ProviderProfile(name) for name in (provider_name(index, f) for f in FLAVORS)}
    for i, call in enumerate(calls(seed, index, 0, calls_done)):
        if call.invalid is None:
            found[call.provider].call_index.append(i)
            found[call.provider].events.append(call)
    return found


def rejections(seed: int, index: int, calls_done: int) -> dict[str, int]:
    """Calls rejected by cause among the worker's first ``calls_done``."""
    counts: dict[str, int] = {}
    for call in calls(seed, index, 0, calls_done):
        if call.invalid is not None:
            counts[call.invalid] = counts.get(call.invalid, 0) + 1
    return counts


@dataclass
class WorkerLedger:
    """A worker's file, read back: ``index`` names its providers, ``slot`` the place in the
    schedule it filled (a killed worker's replacement takes its slot)."""

    index: int
    slot: int
    seed: int
    started: float
    progress: list[tuple[int, float]] = field(default_factory=list)
    """(calls begun, real time): the first call of a line was made at or after that time."""
    flushes: list[dict[str, Any]] = field(default_factory=list)
    clocks: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    """The clean end: calls made, final stats, close()'s answer."""
    killed_at: float | None = None
    counters: tuple[int, int] = (0, 0)
    """(calls begun, calls returned) at the end, from the worker's memory-mapped counters."""
    allows: list[dict[str, Any]] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    """record() answers that were not what the call was built to get (True for an invalid
    call, False for a valid one)."""

    @property
    def calls_made(self) -> int:
        """Calls whose record() may have run (an upper bound when the worker was killed)."""
        if self.end is not None:
            return int(self.end["calls"])
        return max(self.counters)

    @property
    def calls_returned(self) -> int:
        if self.end is not None:
            return int(self.end["calls"])
        return self.counters[1]

    def durable(self) -> int:
        """Calls known to be in Redis: the most a ``flush()`` or ``close()`` answered True
        for (their events were all there when it returned)."""
        best = max((int(f["n"]) for f in self.flushes if f["result"]), default=0)
        if self.end is not None and self.end.get("closed"):
            best = max(best, int(self.end["calls"]))
        return best

    def call_times(self) -> tuple[list[int], list[float]]:
        """Progress as two sorted lists, for ``time_bounds``."""
        points = sorted(self.progress)
        return [n for n, _ in points], [t for _, t in points]

    def time_bounds(self, call: int, marks: tuple[list[int], list[float]]) -> tuple[float, float]:
        """Real-time bounds of when call ``call`` was recorded."""
        ns, ts = marks
        at = bisect.bisect_right(ns, call) - 1
        low = ts[at] if at >= 0 else self.started
        later = bisect.bisect_right(ns, call)
        high = ts[later] if later < len(ts) else self.finished()
        return low, high

    def finished(self) -> float:
        if self.end is not None:
            return float(self.end["t"])
        if self.killed_at is not None:
            return self.killed_at
        return self.progress[-1][1] if self.progress else self.started


def read_ledger(path: Path, counters: tuple[int, int], killed_at: float | None) -> WorkerLedger:
    """A worker's JSON-lines file and its counters (``killed_at``: when the nemesis killed
    it; a torn last line of a killed worker is skipped)."""
    ledger: WorkerLedger | None = None
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        kind = entry.pop("kind")
        if kind == "start":
            ledger = WorkerLedger(entry["index"], entry["slot"], entry["seed"], entry["t"])
        elif ledger is None:
            continue
        elif kind == "progress":
            ledger.progress.append((int(entry["n"]), float(entry["t"])))
        elif kind == "flush":
            ledger.flushes.append(entry)
        elif kind == "clock":
            ledger.clocks.append(entry)
        elif kind == "allow":
            ledger.allows.append(entry)
        elif kind == "unexpected":
            ledger.unexpected.append(entry)
        elif kind == "end":
            ledger.end = entry
    if ledger is None:
        raise ValueError(f"{path}: no start line")
    ledger.counters, ledger.killed_at = counters, killed_at
    return ledger
