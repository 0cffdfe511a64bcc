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

- a transaction that may reach another server than the last (on a cluster each, since
  redis-py may open a pooled connection again without a word; on one Redis the first on a new
  connection) reads the marker before it writes its own: a master that held an earlier one
  than the writer's last lacks the transactions in between, whether or not a round trip failed
  on the way (a master restarted on the same address);
- after a failed round trip, before its next transaction, the writer reads its marker.

Either way the transactions kept after the one the marker names are sent again, in order, each
as it was first sent, its own marker with it, so a send that fails half way resumes from the
marker and is never applied twice.

A marker naming a kept transaction other than the last sends the ones after it. One naming a
transaction the log kept and has forgotten since (applied as a marker showed, or past the keep
or the budget) sends every one still kept: the log forgets from its oldest, so all it still
keeps came after that one, and the master lacks them (what was forgotten between is lost for
good). Anything else sends nothing: no marker (an emptied Redis, a writer whose first
transactions never reached the replica), or one naming a transaction never kept (its reply was
lost): what cannot be told apart from applied is never sent twice.

One unit per marker: on one Redis (or a Sentinel-managed one) the writer's marker; on a
cluster, each slot's.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, NamedTuple, TypeVar

from gatewayz_transport.scripts import may_run_again

KEEP_SECONDS: Final = 30.0
"""How long an acknowledged transaction is kept while round trips succeed. A failover's loss
shows within seconds as a failed round trip or an older marker, but a stalled master that
resumes keeps taking writes until it is told it was replaced: Sentinel does that at its next
look at it, up to about 10 s later, then drops those writes with the rest."""
MAX_KEPT: Final = 4096
"""Transactions kept per unit at most (the oldest go first)."""
MAX_KEPT_SIZE: Final = 200_000
"""Command arguments kept in all (about 100,000 events, about 13 MB), the oldest transactions
going first: a worker flat out keeps less than ``KEEP_SECONDS``, its memory bounded."""

MAX_FORGOTTEN: Final = 16_384
"""Markers of forgotten transactions remembered at most (the oldest go first): about 1 MB."""

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
    seq: int
    """Its place in the order of the whole log."""
    size: int
    """Its share of ``MAX_KEPT_SIZE``."""


class AcknowledgedLog(Generic[_P]):
    """Acknowledged transactions per unit, newest last, and whether a round trip failed since
    they were last checked against the markers (pure: no Redis, an injected clock)."""

    def __init__(
        self,
        keep_seconds: float = KEEP_SECONDS,
        max_kept: int = MAX_KEPT,
        monotonic: Callable[[], float] = time.monotonic,
        max_size: int = MAX_KEPT_SIZE,
    ) -> None:
        self._keep_seconds = keep_seconds
        self._max_kept = max_kept
        self._max_size = max_size
        self._monotonic = monotonic
        self._units: dict[Any, deque[Kept[_P]]] = {}
        self._order: deque[tuple[int, Any]] = deque()  # (seq, unit), oldest first; some gone
        self._seq = 0
        self._size = 0
        self._swept_at = monotonic()  # when units written no more were last forgotten
        # (unit, marker), oldest first: an OrderedDict, as a plain dict's first key is found
        # by skipping every key deleted before it (7 us a transaction, not 0.2, when full)
        self._forgotten: OrderedDict[tuple[Any, str], None] = OrderedDict()
        self.suspect = False
        """A round trip failed since the markers were last read: a failover may have lost
        some of what is kept."""
        self.lost_for_good = 0
        """Transactions a master was found to lack that were no longer kept, so not sent
        again (the caller reports and resets it)."""

    def acknowledged(
        self, unit: Any, marker: str, payload: _P, previous: Any = None, size: int = 1
    ) -> None:
        """A transaction of ``unit`` was acknowledged; ``previous``: the marker the master held
        when it ran it (read in the same transaction, before it wrote ``marker``), or
        ``IN_ORDER``. When that names a kept transaction other than the last, the master lacks
        the ones after it (it is not the one that acknowledged them): they are to be sent
        again, after this one, which the log now holds before them, as the master applied it.
        Old ones are forgotten unless a round trip failed since (then they may be what was
        lost); the oldest go first past ``max_size`` (``size``: this one's share)."""
        now = self._monotonic()
        kept = self._units.get(unit)
        if not kept:
            self._append(unit, marker, payload, now, size)
        elif previous is IN_ORDER or marker_text(previous) == kept[-1].marker:
            self._append(unit, marker, payload, now, size)
            if len(kept) > self._max_kept:
                self._pop_head(unit)
            if not self.suspect:  # this unit's old ones (the others': ``_forget_older_than``)
                cutoff = now - self._keep_seconds
                while kept[0].at < cutoff:
                    self._pop_head(unit)
        else:
            lost = self.lost(unit, previous)
            self._drop_unit(unit)
            self._append(unit, marker, payload, now, size)
            for entry in lost:  # after this one now, as the master will have applied them
                self._append(unit, entry.marker, entry.payload, entry.at, entry.size)
            if lost:
                self.suspect = True  # the next transaction reads the marker: this one's
        while self._size > self._max_size:
            seq, oldest = self._order[0]
            if self._live(seq, oldest):
                self._pop_head(oldest)
            self._order.popleft()
        if not self.suspect and now - self._swept_at >= self._keep_seconds:
            self._forget_older_than(now - self._keep_seconds)

    def _append(self, unit: Any, marker: str, payload: _P, at: float, size: int) -> None:
        self._seq += 1
        self._units.setdefault(unit, deque()).append(Kept(marker, payload, at, self._seq, size))
        self._order.append((self._seq, unit))
        self._size += size
        while self._order and not self._live(*self._order[0]):
            self._order.popleft()  # what went another way (its unit's oldest gone before)

    def _live(self, seq: int, unit: Any) -> bool:
        """Whether the log's oldest reference still names its unit's oldest transaction."""
        kept = self._units.get(unit)
        return kept is not None and kept[0].seq == seq  # (a unit's log is never left empty)

    def _pop_head(self, unit: Any) -> None:
        kept = self._units[unit]
        head = kept.popleft()
        self._size -= head.size
        if not kept:
            del self._units[unit]
        self._forgotten[(unit, head.marker)] = None
        if len(self._forgotten) > MAX_FORGOTTEN:
            self._forgotten.popitem(last=False)

    def _drop_unit(self, unit: Any) -> None:
        kept = self._units.pop(unit, None)
        if kept:
            self._size -= sum(entry.size for entry in kept)

    def _forget_older_than(self, cutoff: float) -> None:
        """Every unit's transactions acknowledged before ``cutoff`` (each unit's own go as it
        is written; this, every ``keep_seconds`` at most, takes the units no longer written)."""
        self._swept_at = self._monotonic()
        for unit in list(self._units):
            kept = self._units[unit]
            while unit in self._units and kept[0].at < cutoff:
                self._pop_head(unit)

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
        bytes, str or None) names, in order: the ones the master serving now lacks; all kept
        when it names one forgotten since (all kept came after it). What the master has is
        forgotten; a marker naming nothing kept or forgotten (one whose reply was lost, or
        none) has the unit's all forgotten: taken as applied, never sent twice."""
        kept = self._units.get(unit)
        if not kept:
            return []
        text = marker_text(marker)
        for index, entry in enumerate(kept):
            if entry.marker == text:
                for _ in range(index + 1):
                    self._pop_head(unit)
                return list(kept)
        if text is not None and (unit, text) in self._forgotten:
            self.lost_for_good += self._forgotten_after(unit, text)
            return list(kept)
        while unit in self._units:  # taken as applied (a lost reply's ran after them)
            self._pop_head(unit)
        return []

    def _forgotten_after(self, unit: Any, marker: str) -> int:
        """How many of ``unit``'s transactions were forgotten after the one ``marker`` names."""
        later = itertools.dropwhile(lambda key: key != (unit, marker), self._forgotten)
        return sum(1 for key in later if key[0] == unit) - 1

    def checked(self) -> None:
        """Every unit's marker was read and what it lacked sent again."""
        self.suspect = False
        self._forget_older_than(self._monotonic() - self._keep_seconds)

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._units.values())

    @property
    def size(self) -> int:
        """The share of ``max_size`` taken."""
        return self._size


def marker_text(marker: Any) -> str | None:
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
