"""Transactions a master acknowledged and a failover may still lose, kept to be sent again.

Replication is asynchronous: a master acknowledges a transaction before its replica has it. A
master killed, or stalled past a Redis Cluster's node timeout (then resumed, still taking
writes until it learns it was replaced), loses what it acknowledged last; so does a Redis
restarted from a snapshot or an append-only file behind its last writes. Every transaction a
writer sends also writes its marker (``_applied``), and a replica promoted has a prefix of its
master's transactions, markers included: the marker it holds names the last of this writer's
transactions it has. So a writer keeps each acknowledged transaction, with the marker it
wrote, for ``KEEP_SECONDS`` (and while its round trips fail, whatever their age), and finds out
what a master lacks two ways:

- each transaction reads the marker before it writes its own: a master that held an earlier
  one than the writer's last lacks the transactions in between, whether or not a round trip
  failed on the way (a connection redis-py opened again without a word, a master restarted on
  the same address);
- after a failed round trip, before its next transaction, the writer reads its marker.

Either way the transactions kept after the one the marker names are sent again, in order, each
as it was first sent, its own marker with it, so a send that fails half way resumes from the
marker and is never applied twice.

Only a marker naming a kept transaction other than the last sends anything: no marker (an
emptied Redis, a writer whose first transactions never reached the replica), or one naming
something not kept (a transaction whose reply was lost, or one older than everything kept),
sends nothing: what cannot be told apart from applied is never sent twice.

One unit per marker: on one Redis (or a Sentinel-managed one) the writer's marker; on a
cluster, each slot's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, NamedTuple, TypeVar

from gatewayz_transport.scripts import may_run_again

KEEP_SECONDS: Final = 5.0
"""How long an acknowledged transaction is kept while round trips succeed: a failover's loss
shows as a failed round trip within a second or two of the last write it lost (the old master
refuses writes once it knows it was replaced; a dead one does not answer)."""
MAX_KEPT: Final = 512
"""Transactions kept per unit at most (about 25 s of flush passes at the default interval):
the oldest go first, so a worker's memory stays bounded through a long outage."""

_P = TypeVar("_P")

IN_ORDER: Final = object()
"""The ``previous`` marker of a transaction that did not read it: sent on the connection the
last went on, to the server that applied the last (a server that changed fails the
connection)."""
Command = tuple[Any, ...]


class Kept(NamedTuple, Generic[_P]):
    marker: str
    """The marker value the transaction wrote."""
    payload: _P
    """What sends it again."""
    at: float
    """When it was acknowledged (monotonic)."""


class AcknowledgedLog(Generic[_P]):
    """Acknowledged transactions per unit, newest last, and whether a round trip failed since
    they were last checked against the markers (pure: no Redis, an injected clock)."""

    def __init__(
        self,
        keep_seconds: float = KEEP_SECONDS,
        max_kept: int = MAX_KEPT,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep_seconds = keep_seconds
        self._max_kept = max_kept
        self._monotonic = monotonic
        self._units: dict[Any, deque[Kept[_P]]] = {}
        self._swept_at = monotonic()  # when units written no more were last forgotten
        self.suspect = False
        """A round trip failed since the markers were last read: a failover may have lost
        some of what is kept."""

    def acknowledged(self, unit: Any, marker: str, payload: _P, previous: Any = None) -> None:
        """A transaction of ``unit`` was acknowledged; ``previous``: the marker the master held
        when it ran it (read in the same transaction, before it wrote ``marker``), or
        ``IN_ORDER``. When that
        names a kept transaction other than the last, the master lacks the ones after it (it
        is not the one that acknowledged them): they are to be sent again, after this one,
        which the log now holds before them, as the master applied it. Old ones are forgotten
        unless a round trip failed since (then they may be what was lost)."""
        now = self._monotonic()
        entry = Kept(marker, payload, now)
        kept = self._units.get(unit)
        if not kept:
            self._units[unit] = deque([entry])
        elif previous is IN_ORDER or _text(previous) == kept[-1].marker:
            kept.append(entry)
            if len(kept) > self._max_kept:
                kept.popleft()
            if not self.suspect:  # this unit's old ones (the others': ``_forget_older_than``)
                cutoff = now - self._keep_seconds
                while kept[0].at < cutoff:
                    kept.popleft()
        else:
            lost = self.lost(unit, previous)
            self._units[unit] = deque([entry, *lost])
            if lost:
                self.suspect = True  # the next transaction reads the marker: this one's
        if not self.suspect and now - self._swept_at >= self._keep_seconds:
            self._forget_older_than(now - self._keep_seconds)

    def _forget_older_than(self, cutoff: float) -> None:
        """Every unit's transactions acknowledged before ``cutoff`` (each unit's own go as it
        is written; this, every ``keep_seconds`` at most, takes the units no longer written)."""
        self._swept_at = self._monotonic()
        for unit in list(self._units):
            kept = self._units[unit]
            while kept and kept[0].at < cutoff:
                kept.popleft()
            if not kept:
                del self._units[unit]

    def failed(self) -> None:
        """A round trip failed (maybe a failover): check the markers before the next
        transaction."""
        self.suspect = True

    @property
    def to_check(self) -> list[Any]:
        """The units whose markers to read before the next transaction (none unless a round
        trip failed)."""
        return list(self._units) if self.suspect else []

    def lost(self, unit: Any, marker: Any) -> list[Kept[_P]]:
        """The kept transactions of ``unit`` after the one ``marker`` (as read from Redis:
        bytes, str or None) names, in order: the ones the master serving now lacks. What the
        master has is forgotten; a marker naming nothing kept forgets the unit's all."""
        kept = self._units.get(unit)
        if not kept:
            return []
        text = _text(marker)
        for index, entry in enumerate(kept):
            if entry.marker == text:
                for _ in range(index + 1):
                    kept.popleft()
                return list(kept)
        del self._units[unit]
        return []

    def checked(self) -> None:
        """Every unit's marker was read and what it lacked sent again."""
        self.suspect = False
        self._forget_older_than(self._monotonic() - self._keep_seconds)

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._units.values())


def _text(marker: Any) -> str | None:
    """A marker as read from Redis (bytes, str or None) as the text it was written as."""
    return marker.decode("utf-8", "replace") if isinstance(marker, bytes) else marker


def kept_commands(commands: list[Command], replies: Sequence[Any]) -> list[Command]:
    """What sends a transaction again: its commands (the list itself: a transaction's list is
    built for it and never changed after) but the script calls that did nothing (Redis did not
    know their script: what they carried went again on its own, and sending them with the rest
    would apply it twice)."""
    for reply in replies:
        if isinstance(reply, Exception) and may_run_again(reply):
            return [
                command
                for command, reply in zip(commands, replies, strict=False)
                if not (isinstance(reply, Exception) and may_run_again(reply))
            ]
    return commands
