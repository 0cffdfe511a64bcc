"""The cycle's evaluate step: the breakers' decisions (``core.decisions``) as writes, and what
the commit made of them: the states after it, logged, and the transition counts after it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from aggregator.core.breaker import BreakerConfig, Transition
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.decisions import Decisions, decide
from aggregator.core.model_breakers import ModelBreaker, ModelReading, decide_models, exported
from aggregator.core.readings import Reading
from aggregator.core.snapshot import Snapshot
from aggregator.core.times import human
from aggregator.engine.model_read import ModelBreakerReader, Sink
from aggregator.engine.writer import FENCED, Committed, PlannedWrite
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.breaker_state import HALF_OPEN, OPEN, BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection

log = logging.getLogger("gatewayz.aggregator")


class BreakerStep:
    """Decides the breakers each cycle and remembers which openings the max-open-share guard
    held back (the snapshot exports them as ``open_suppressed``)."""

    def __init__(
        self, config: BreakerConfig | BreakerPolicy, models: ModelBreakerStep | None = None
    ) -> None:
        """``models``: the model breakers, decided with the providers' (none: no model)."""
        self._policy = config if isinstance(config, BreakerPolicy) else BreakerPolicy(config)
        self._config = self._policy.default
        self.suppressed: frozenset[str] = frozenset()
        self.models = models

    @classmethod
    def of(
        cls, settings: AggregatorSettings, connection: Connection, keys: Keys, sink: Sink
    ) -> BreakerStep:
        """A cycle's step: the providers' breakers, and the model breakers of
        ``breaker_models`` (read by a reader counting into ``sink``)."""
        reader = ModelBreakerReader.of(settings, connection, keys, sink)
        models = ModelBreakerStep(reader, keys) if settings.breaker_models else None
        return cls(settings.breaker_policy, models)

    def fences(self, reading: Reading) -> tuple[list[str], list[str]]:
        """The providers, and the model breakers' hashes, a new leader raises fences on."""
        models = self.models.breakers() if self.models is not None else []
        return [item.provider for item in reading.providers], models

    def shown(self) -> tuple[frozenset[str], tuple[ModelBreaker, ...]]:
        """What a snapshot shows of the breakers beside their states: the openings the guard
        held back, and the model breakers."""
        return self.suppressed, self.models.exported if self.models is not None else ()

    def decide(self, reading: Reading, last: Snapshot | None, now: float) -> Decisions:
        """Every breaker's decision; the model breakers' read and judged too (I/O)."""
        decisions = decide(reading.providers, last, now, self._policy)
        if self.models is not None:
            decisions = replace(decisions, models=self.models.decide(now, self._policy))
        for name, transition in decisions.suppressed:
            log.warning(
                "breaker %s: would open (%s) but %.0f%% of providers are already open",
                name,
                transition.reason,
                self._config.max_open_share * 100,
            )
        self.suppressed = frozenset(name for name, _ in decisions.suppressed)
        return decisions

    @staticmethod
    def writes(decisions: Decisions) -> list[PlannedWrite]:
        """The transitions, compare-and-set on the epoch read, then the restores (epoch 0: only
        where the state is still missing)."""
        writes = [
            PlannedWrite(name, t.old.epoch, t.new, counter_field(t))
            for name, t in decisions.transitions
        ]
        writes += [PlannedWrite(name, 0, s, "") for name, s in decisions.restores.items()]
        return writes + [
            PlannedWrite(m.provider, t.old.epoch, t.new, counter_field(t), m.model)
            for m, t in decisions.models
        ]

    def settle(
        self, decisions: Decisions, committed: Committed, states: dict[str, BreakerState]
    ) -> list[Transition]:
        """Apply to ``states`` what the commit wrote; the transitions applied. (A result of
        ``FENCED``: a newer leader exists, the caller steps down.)"""
        kept = len(decisions.transitions)
        models_at = kept + len(decisions.restores)
        if self.models is not None:
            self.models.settle(decisions.models, committed.results[models_at:])
        for (name, state), result in zip(
            decisions.restores.items(), committed.results[kept:models_at], strict=True
        ):
            if result == 1:
                states[name] = state
                log.warning(
                    "breaker %s: its state vanished from Redis (evicted?); restored %s from the "
                    "last snapshot",
                    name,
                    "forced " + state.state if state.forced else state.state,
                )
        applied = []
        for (name, transition), result in zip(
            decisions.transitions, committed.results[:kept], strict=True
        ):
            if result == 1:
                states[name] = transition.new
                applied.append(transition)
                self._log_applied(name, transition)
            elif result != FENCED:
                log.warning("breaker %s: epoch moved on before our write; re-read next cycle", name)
        return applied

    def _log_applied(self, name: str, transition: Transition) -> None:
        log.info(
            "breaker %s: %s -> %s (%s); epoch %d, calls counted %d, next deadline %s",
            name,
            transition.old.state,
            transition.new.state,
            transition.reason,
            transition.new.epoch,
            transition.calls.total,
            _deadline(transition.new, self._policy.config(name)),
        )


def counter_field(transition: Transition) -> str:
    """The field of the transitions hash that counts ``transition`` (``from>to``)."""
    return f"{transition.old.state}>{transition.new.state}"


def counted(reading: Reading, decisions: Decisions, committed: Committed) -> Reading:
    """``reading`` with the providers' transitions the commit applied counted, as its script
    counted each in Redis with the transition: the reading was taken before the commit, so a
    snapshot built from it showed a count one cycle after the state it led to. A provider
    without one keeps its reading, the same object (``SnapshotReuse`` compares them)."""
    kept = decisions.transitions
    added: dict[str, list[str]] = {}
    for (name, transition), result in zip(kept, committed.results[: len(kept)], strict=True):
        if result == 1:
            added.setdefault(name, []).append(counter_field(transition))
    if not added:
        return reading
    providers = []
    for item in reading.providers:
        counts = dict(item.transitions)
        for field in added.get(item.provider, ()):
            counts[field] = counts.get(field, 0) + 1
        providers.append(replace(item, transitions=counts) if item.provider in added else item)
    return replace(reading, providers=tuple(providers))


def _deadline(state: BreakerState, config: BreakerConfig) -> str:
    """When the state is next decided, as people read it (the transition's time is "now")."""
    if state.forced:
        return "none (forced)"
    if state.state == OPEN:
        return f"half_open at {human(state.open_until, state.since)}"
    if state.state == HALF_OPEN:
        timeout_at = state.since + config.half_open_timeout_seconds
        return (
            f"decide after {config.half_open_calls} trial calls or at "
            f"{human(timeout_at, state.since)}"
        )
    return "none"


class ModelBreakerStep:
    """The model breakers' part of a cycle (``breaker_models``): ``decide()`` reads and judges
    them, ``settle()`` takes the commit's results; ``exported`` is what the snapshot shows."""

    def __init__(self, reader: ModelBreakerReader, keys: Keys) -> None:
        self.reader = reader
        self._keys = keys
        self.exported: tuple[ModelBreaker, ...] = ()
        self._read: list[ModelReading] = []
        self._deciding = False
        """A ``decide()`` awaits its ``settle()`` (a woken provider's commit settles none)."""

    def decide(
        self, now: float, policy: BreakerPolicy
    ) -> tuple[tuple[ModelReading, Transition], ...]:
        """Read every model breaker; the transitions due."""
        self._read = self.reader.read(now, policy)
        self._deciding = True
        return tuple(decide_models(self._read, now, policy))

    def breakers(self) -> list[str]:
        """The breaker hashes of the last read (for a new leader's fences)."""
        return [self._keys.model_breaker(m.provider, m.model) for m in self._read]

    def settle(
        self, due: Sequence[tuple[ModelReading, Transition]], results: Sequence[int]
    ) -> None:
        """Take the results of ``due``'s writes (those of the last ``decide()``; a commit
        without it changes nothing): the transitions that landed logged, ``exported``
        updated."""
        if not self._deciding:
            return
        self._deciding = False
        applied: dict[tuple[str, str], BreakerState] = {}
        for (model, transition), result in zip(due, results, strict=True):
            if result == 1:
                applied[(model.provider, model.model)] = transition.new
                log.info(
                    "breaker %s model %r: %s -> %s (%s); epoch %d",
                    model.provider,
                    model.model,
                    transition.old.state,
                    transition.new.state,
                    transition.reason,
                    transition.new.epoch,
                )
        self.exported = exported(self._read, applied)
