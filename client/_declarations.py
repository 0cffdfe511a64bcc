"""What one process declared, and whether Redis agrees: one declaration per metric name across
the fleet, the first one written (``HSETNX``) wins.

A metric's values are written only once Redis has answered that it holds a compatible declaration
(``MetricSpec.compatible``: the same type, label names, buckets, combine mode and unit); until
then they wait in the process. A process whose declaration conflicts with the one in Redis has
its updates refused and counted (``gatewayz_metrics_conflicting_updates_total``), never raised:
they would corrupt the values another declaration shaped (other buckets, other labels). Every
declaration is sent again every ``REDECLARE_SECONDS`` (and checked again), and the declaration
of a metric a batch carries values of at most ``REASSERT_SECONDS`` after it was last sent: a
schema Redis lost (a restart without data, a failover) is declared again within a second of the
next value, at no cost to an idle process, and the answer follows what Redis holds now. Not
thread-safe: the instrument store's lock guards it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable

from gatewayz_protocol.specs import MetricSpec

log = logging.getLogger("gatewayz.metrics.client")

REDECLARE_SECONDS = 60.0
"""How often a process sends every declaration again (and learns whether Redis still agrees)."""

REASSERT_SECONDS = 1.0
"""A metric whose values a batch carries has its declaration in that batch when it was last
sent this long ago or more: its values never sit in Redis for longer without a declaration
(without one the aggregator exports none of them)."""

PENDING = "pending"
CONFIRMED = "confirmed"
REFUSED = "refused"


class Declarations:
    """The specs one process declared and, per metric, what Redis answered about them."""

    def __init__(self, clock: Callable[[], float], checked: bool = True) -> None:
        """``clock``: seconds (any origin) for the re-declaration schedule. ``checked``: values
        wait for Redis's answer; else a declaration is writable at once (a sink that answers
        nothing, in tests of the flusher)."""
        self._clock = clock
        self._first = PENDING if checked else CONFIRMED
        self.specs: dict[str, MetricSpec] = {}
        self._state: dict[str, str] = {}
        self._next_redeclare = -math.inf
        self._sent_at: dict[str, float] = {}
        self._logged: set[str] = set()

    def declare(self, spec: MetricSpec) -> MetricSpec | None:
        """``spec`` as this process declared it first (the same, or one compatible with it),
        or None when it conflicts with this process's earlier declaration of the name."""
        existing = self.specs.get(spec.name)
        if existing is None:
            self.specs[spec.name] = spec
            self._state[spec.name] = self._first
            return spec
        return existing if existing.compatible(spec) else None

    def writable(self, name: str) -> bool:
        """Whether Redis agreed with this process's declaration of ``name``."""
        return self._state.get(name) == CONFIRMED

    def refused(self, name: str) -> bool:
        return self._state.get(name) == REFUSED

    def to_send(self, carrying: Iterable[str] = ()) -> list[MetricSpec]:
        """The declarations a batch carries: every one each ``REDECLARE_SECONDS``; else those
        Redis has not answered about yet and those of the metrics whose values it carries
        (``carrying``), each last sent ``REASSERT_SECONDS`` ago or more (never sent: at once). A
        declaration Redis keeps refusing (an ACL without HSETNX) is so sent once a second, not
        with every batch, nor in a batch of its own every flush interval."""
        now = self._clock()
        if now >= self._next_redeclare:
            self._next_redeclare = now + REDECLARE_SECONDS
            sending = list(self.specs.values())
        else:
            stale, carried = now - REASSERT_SECONDS, set(carrying)
            sending = [
                spec
                for name, spec in self.specs.items()
                if (self._state[name] == PENDING or name in carried)
                and self._sent_at.get(name, -math.inf) <= stale
            ]
        for spec in sending:
            self._sent_at[spec.name] = now
        return sending

    def answered(self, stored: Iterable[tuple[str, str | None]]) -> bool:
        """What Redis holds for the declarations a batch carried (its spec JSON, or None when it
        held none): each metric becomes writable or refused. True when one became writable."""
        unblocked = False
        for name, text in stored:
            mine = self.specs.get(name)
            if mine is None or text is None:
                continue  # not declared here (a fork's parent's?), or nothing read: ask again
            theirs = _spec(text)
            if theirs is not None and theirs.compatible(mine):
                unblocked |= self._state[name] != CONFIRMED
                self._state[name] = CONFIRMED
                continue
            self._state[name] = REFUSED
            self.log_conflict(name, mine, text)
        return unblocked

    def log_conflict(self, name: str, mine: MetricSpec, theirs: str) -> None:
        """Once per metric: updates of ``name`` are refused, and why."""
        if name in self._logged:
            return
        self._logged.add(name)
        with contextlib.suppress(Exception):  # logging misconfigured, interpreter shutting down
            log.error(
                "metric %r is declared otherwise elsewhere (%.300s); this declaration (%.300s) "
                "is refused: its updates are counted in gatewayz_metrics_conflicting_updates_total "
                "and never written",
                name,
                theirs,
                mine.to_json(),
            )

    def reset_after_fork(self) -> None:
        """A forked child declares everything again at its first batch (what Redis answered its
        parent still holds until then)."""
        self._next_redeclare = -math.inf


def _spec(text: str) -> MetricSpec | None:
    try:
        return MetricSpec.from_json(text)
    except (ValueError, KeyError, TypeError):
        return None
