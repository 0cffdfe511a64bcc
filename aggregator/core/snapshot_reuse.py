"""Building each cycle's snapshot from what the last one built (``SnapshotReuse``): the health
figures of a provider whose inputs are all equal to the last cycle's are the same object, and
so is the JSON text of an object published before. Pure memoization: every value is the one
computing it again gives (the tests compare)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from aggregator.core.backend import BackendFamily, families_of
from aggregator.core.model_breakers import ModelBreaker
from aggregator.core.readings import BackendReading, Reading
from aggregator.core.reuse import Reuse
from aggregator.core.snapshot import (
    HealthTargets,
    ProviderHealth,
    Snapshot,
    build_snapshot,
    fields_of,
)
from gatewayz_protocol.breaker_state import BreakerState


class SnapshotReuse:
    """What the last snapshot built per provider, reused by the next one where its inputs are
    the same: the health figures of a provider whose window, counters, transitions, exemplars,
    breaker state, suppression and targets are equal; and the JSON text of a health object or
    backend family published before (the snapshot holds the same objects while they are
    unchanged). Pure memoization: every value is the one computing it again gives. Holds the
    last snapshot's providers only."""

    def __init__(self, targets: HealthTargets) -> None:
        self._targets = targets
        self._health: dict[str, tuple[tuple[Any, ...], ProviderHealth]] = {}
        self._health_next: dict[str, tuple[tuple[Any, ...], ProviderHealth]] = {}
        self._json: dict[int, tuple[object, str]] = {}
        self._json_next: dict[int, tuple[object, str]] = {}
        self._reused = 0
        self.reused = 0
        """Providers whose health the last ``build_snapshot`` reused."""
        self._families = Reuse()

    def build(
        self,
        reading: Reading,
        states: Mapping[str, BreakerState],
        now: float,
        cycle: int,
        open_suppressed: frozenset[str] = frozenset(),
        model_breakers: tuple[ModelBreaker, ...] = (),
    ) -> Snapshot:
        """``build_snapshot`` against the targets given, reusing what the last one built."""
        built = build_snapshot(reading, states, now, cycle, self._targets, open_suppressed, self)
        return replace(built, model_breakers=model_breakers) if model_breakers else built

    def with_backend(
        self, snapshot: Snapshot, reading: BackendReading, max_series: int, max_label_bytes: int
    ) -> Snapshot:
        """``snapshot`` with the workers' families (``families_of``): those whose metric's
        data is unchanged since the last snapshot are its objects."""
        families = families_of(reading, max_series, max_label_bytes, self._families)
        return replace(snapshot, backend=families)

    def health(
        self, provider: str, inputs: tuple[Any, ...], build: Callable[[], ProviderHealth]
    ) -> ProviderHealth:
        """``build()``, or the health built last time for ``provider`` from equal ``inputs``
        (the reader's decoded values stay the same objects while unchanged: most of the
        comparison is by identity)."""
        last = self._health.get(provider)
        if last is not None and last[0] == inputs:
            health = last[1]
            self._reused += 1
        else:
            health = build()
        self._health_next[provider] = (inputs, health)
        return health

    def built(self) -> None:
        """A snapshot is built: the next reuses its providers' health, and nothing else."""
        self._health, self._health_next = self._health_next, {}
        self.reused, self._reused = self._reused, 0

    def json_of(self, item: ProviderHealth | BackendFamily) -> str:
        """The JSON of a provider's health or a backend family, as written last time for the
        same object."""
        last = self._json.get(id(item))
        text = (
            last[1]
            if last is not None and last[0] is item
            else json.dumps(item, default=fields_of, separators=(",", ":"))
        )
        self._json_next[id(item)] = (item, text)
        return text

    def finish(self) -> None:
        """A snapshot's JSON is written: the next reuses its providers' text only."""
        self._json, self._json_next = self._json_next, {}
