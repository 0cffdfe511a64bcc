"""A batch: everything one flush writes, built once from the taken events (pure), so a retry
re-sends the very same members."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from client._events import Event
from client._instruments import Drained
from client._ledger import Notes
from gatewayz_protocol.event_ids import event_members
from gatewayz_protocol.fields import Exemplar, encode_totals
from gatewayz_protocol.model_scopes import MODEL_WINDOW_OF_OUTCOME
from gatewayz_protocol.partitions import (
    BUCKET_OF_PARTITION,
    LATENCY_PARTITIONS,
    OUTCOMES,
    latency_partition,
    window_partition,
)


@dataclass(frozen=True)
class ProviderBatch:
    partitions: dict[int, list[str]]
    """window partition -> flat ZADD arguments: score (unix time, ms), member, score..."""
    totals: dict[str, int]
    """increments of the provider's ``totals`` hash"""
    last_seen: float
    """time of its last event (the registry keeps the largest: ZADD GT)"""
    exemplars: dict[int, Exemplar] = field(default_factory=dict)
    """histogram bucket -> the latest exemplar of the batch in it"""
    unwindowed: int = 0
    """its events without a window member: cancelled calls, usage added to a booked call"""
    models: dict[str, dict[int, list[str]]] = field(default_factory=dict)
    """model -> model window (``MODEL_WINDOW_NAMES``) -> flat ZADD arguments: the members of
    its calls' provider windows again (``breaker_models`` providers only)"""

    @property
    def events(self) -> int:
        return sum(len(flat) for flat in self.partitions.values()) // 2 + self.unwindowed


@dataclass(frozen=True)
class Batch:
    providers: dict[str, ProviderBatch]
    notes: Notes
    instruments: Drained | None = None
    offset: float = 0.0
    """what was added to the events' times (to the shared clock)"""
    first_id: int = 0
    """the first event's id: the events are ``first_id``, ``first_id + 1``..."""
    split_from: tuple[int, int] | None = None
    """the event ids (first, end) of the batch this one is half of (split for lack of memory)"""
    extra: tuple[tuple[Any, ...], ...] = ()
    """commands of the flush pass's own that ride in the batch's round trip (keyed, so a
    Redis Cluster routes them); their replies come back in ``WriteReport.extra_replies``"""

    @property
    def lineage(self) -> tuple[int, int]:
        """The ids of the batch as first built: this one's, or the one it was split from."""
        return self.split_from or (self.first_id, self.first_id + self.events)

    @property
    def events(self) -> int:
        return sum(p.events for p in self.providers.values())

    def refused_extra(self, exc: BaseException) -> bool:
        """Redis refused a command of the pass's own in this batch (its error names the
        command): the batch can go again without them. Not any refusal: one of MULTI leaves the
        commands after it applied, outside a transaction, where sending them again would apply
        them twice."""
        if not self.extra or not isinstance(exc, redis.RedisError):
            return False
        text = str(exc).lower()
        return any(f"'{str(command[0]).lower()}'" in text for command in self.extra)

    @property
    def empty(self) -> bool:
        return not (
            self.providers
            or not self.notes.empty
            or (self.instruments is not None and not self.instruments.empty)
        )


def build_batch(
    events: list[Event],
    first_id: int,
    notes: Notes,
    instruments: Drained | None = None,
    offset: float = 0.0,
    split_from: tuple[int, int] | None = None,
) -> Batch:
    """Group events per provider: one window member each (named by the ids ``first_id``,
    ``first_id + 1``... reserved in Redis), scored with its time plus ``offset`` (to the shared
    clock), counters pre-aggregated. This is the flusher's per-event cost, so the loop does the
    least it can: one partition lookup, one append."""
    grouped: dict[str, tuple[dict[int, list[float | str]], list[float]]] = {}
    exemplars: dict[str, dict[int, Exemplar]] = {}
    models: dict[str, dict[str, dict[int, list[float | str]]]] = {}
    named = zip(events, event_members(first_id, len(events)), strict=True)
    for event, member in named:
        if len(event) == 7:
            provider, ts, latency_s, outcome, tokens, cost_nusd, exemplar = event
        else:  # a call of a provider with model breakers: its model scope too
            provider, ts, latency_s, outcome, tokens, cost_nusd, exemplar, model = event
            index = MODEL_WINDOW_OF_OUTCOME.get(outcome)
            if index is not None:
                scopes = models.setdefault(provider, {}).setdefault(model, {})
                scopes.setdefault(index, []).extend((ts + offset, member))
        entry = grouped.get(provider)
        if entry is None:
            entry = grouped[provider] = ({}, [0.0, 0, 0, 0.0])
        groups, sums = entry
        # one group per (outcome, latency partition): its length is the tally
        key = outcome * LATENCY_PARTITIONS + latency_partition(latency_s)
        flat = groups.get(key)
        if flat is None:
            flat = groups[key] = []
        flat.append(ts + offset)
        flat.append(member)
        sums[0] += latency_s  # rounded to whole microseconds once per batch
        sums[3] = ts + offset  # events are in arrival order
        if tokens:
            sums[1] += tokens
        if cost_nusd:
            sums[2] += cost_nusd
        if exemplar is not None:  # rare: only calls timed inside a trace
            bucket = BUCKET_OF_PARTITION[key % LATENCY_PARTITIONS]
            exemplars.setdefault(provider, {})[bucket] = (exemplar, latency_s, ts + offset)
    providers = {
        provider: _provider_batch(
            groups, sums, exemplars.get(provider, {}), _model_windows(models.get(provider))
        )
        for provider, (groups, sums) in grouped.items()
    }
    return Batch(providers, notes, instruments, offset, first_id, split_from)


def _provider_batch(
    groups: dict[int, list[float | str]],
    sums: list[float],
    exemplars: dict[int, Exemplar],
    models: dict[str, dict[int, list[str]]],
) -> ProviderBatch:
    """One provider's part of a batch, from its events grouped by (outcome, partition)."""
    latency_sum, tokens_sum, cost_sum, last_seen = sums
    partitions: dict[int, list[str]] = {}
    tally: dict[tuple[int, int], int] = {}
    unwindowed = 0
    for key, flat in groups.items():
        outcome, latency_part = divmod(key, LATENCY_PARTITIONS)
        tally[(outcome, latency_part)] = len(flat) // 2
        if outcome >= len(OUTCOMES):  # CANCELLED, USAGE: counters only, no member
            unwindowed += len(flat) // 2
            continue
        flat[0::2] = _scores(flat[0::2])
        partition = window_partition(outcome, latency_part)
        merged = partitions.get(partition)
        if merged is None:
            partitions[partition] = flat  # type: ignore[assignment]  # all str now
        else:
            merged += flat  # type: ignore[arg-type]
    totals = encode_totals(tally, latency_sum, int(tokens_sum), int(cost_sum))
    return ProviderBatch(partitions, totals, last_seen, exemplars, unwindowed, models)


def _model_windows(
    models: dict[str, dict[int, list[float | str]]] | None,
) -> dict[str, dict[int, list[str]]]:
    """A provider's model windows with their scores formatted as the provider's."""
    if not models:
        return {}
    for windows in models.values():
        for flat in windows.values():
            flat[0::2] = _scores(flat[0::2])
    return models  # type: ignore[return-value]  # all str now


def _scores(times: list[float | str]) -> list[str]:
    """Event times as ZADD scores, to the millisecond: one C-level formatting of the whole list.
    A float argument costs redis-py its shortest repr, about twice as much per event."""
    return ("%.3f\n" * len(times) % tuple(times)).split("\n")[:-1]
