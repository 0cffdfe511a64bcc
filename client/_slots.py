"""A flush on a Redis Cluster: one MULTI/EXEC per slot, one buffer per node, every node
written before any is read; and a retry that never applies a slot's part twice.

A batch's commands touch a few hash tags (each provider, ``{shared}``, ``{metrics}``). Each
tag's commands run as one transaction on the node serving its slot, and each transaction also
records, in that slot's ``applied`` hash, which events (or which batch) this writer applied
there. When a node fails, only its slots are sent again; a slot whose outcome is unknown (the
connection died after the transaction was sent) is first asked whether the marker says it ran.
Slots known to have run are remembered for the batch and for the halves of a batch split
because Redis was out of memory (their event ids fall inside the range already applied, until
its last half is applied, whatever is sent between the halves), and so
are the script calls such a slot ran while its node did not know their script (they did
nothing: the writer sends them again). Markers carry the time they were written; each writer
forgets the old ones of a slot (writers gone for good) with a transaction it sends there anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from client._acknowledged import IN_ORDER, AcknowledgedLog, kept_commands, marker_text
from client._applied import (
    BatchIds,
    MarkerPruning,
    covers,
    decode_marker,
    encode_marker,
    increments_field,
)
from client._batch import Batch
from client._resend import resend_on_cluster
from client._transaction import run_slot_transactions
from gatewayz_protocol.keys import Keys
from gatewayz_transport.errors import is_transient, raise_first_error
from gatewayz_transport.routing import (
    Command,
    command_key,
    execute_routed,
    read_raw,
    refresh_layout,
    slot_of,
)
from gatewayz_transport.scripts import may_run_again

_T = TypeVar("_T")


class CommandList:
    """Commands in order, as a pipeline would queue them (``ScriptCalls`` queues into it)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def execute_command(self, *args: Any) -> None:
        self.commands.append(args)

    def __len__(self) -> int:
        return len(self.commands)


def _for_good(error: BaseException | None, batch: Batch) -> bool:
    """A slot's transaction Redis will refuse again, unchanged (not a wake it refuses: the
    flusher sends the batch again without them)."""
    return error is not None and not is_transient(error) and not batch.refused_extra(error)


def group_by_slot(commands: Sequence[Command]) -> dict[int, list[int]]:
    """Command indexes per slot, in order."""
    groups: dict[int, list[int]] = {}
    for index, command in enumerate(commands):
        groups.setdefault(slot_of(command_key(command)), []).append(index)
    return groups


@dataclass
class AppliedSlots:
    """What of the batch being delivered (and of the batch it was split from) Redis applied,
    per slot: ranges of event ids, or a batch number for a batch without events."""

    lineage: tuple[int, int] = (0, 0)
    applied: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    unknown: set[int] = field(default_factory=set)
    replies: dict[int, Any] = field(default_factory=dict)
    """Replies of the commands applied on an earlier attempt, by command index."""
    missing_scripts: set[Command] = field(default_factory=set)
    """Script calls of a transaction that ran while Redis did not know their script (they did
    nothing): answered NOSCRIPT wherever the batch, or the half of it that holds them, comes
    again with their slot already applied, so the writer sends them again."""

    def covers(self, slot: int, ids: tuple[int, int]) -> bool:
        return any(lo <= ids[0] and ids[1] <= hi for lo, hi in self.applied.get(slot, ()))

    def record(self, slot: int, ids: tuple[int, int]) -> None:
        self.applied.setdefault(slot, []).append(ids)
        self.unknown.discard(slot)


MAX_SPLITS: Final = 8
"""Split batches whose progress is kept at once (one as a rule: a flush pass delivers a batch's
halves before it takes more events)."""


class ClusterWrites:
    """A writer's batches on a Redis Cluster, each slot's part applied exactly once."""

    def __init__(
        self,
        cluster: RedisCluster,
        keys: Keys,
        writer_id: str,
        retention: int,
        now: Callable[[], float] = time.time,
        batch_ids: BatchIds | None = None,
        acked: AcknowledgedLog[list[Command]] | None = None,
        load_scripts: Callable[[], object] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """``now``: the shared clock, the time markers carry; ``batch_ids``: the writer's (the
        increments' marker names the same ids); ``acked``: the writer's acknowledged
        transactions, sent again where a failover lost them (after ``load_scripts()``)."""
        self._cluster = cluster
        self._keys = keys
        self._writer_id = writer_id
        self._retention = retention
        self._now = now
        self._progress = AppliedSlots()
        self._splits: dict[tuple[int, int], AppliedSlots] = {}
        """What each batch split for lack of memory applied, until its last half is applied:
        a leftover resent between two halves must not make the second forget it."""
        self._batch: object = None
        self._batch_ids = batch_ids or BatchIds()
        self._increments = increments_field(writer_id)
        self.pruning = MarkerPruning(cluster, now, monotonic)
        self._acked: AcknowledgedLog[list[Command]] = (
            AcknowledgedLog() if acked is None else acked  # (an empty log is falsy)
        )
        self._load_scripts = load_scripts
        self._marker_of: dict[int, str] = {}  # slot -> its applied hash

    def write(self, batch: Batch, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands`` (the batch's), errors as exceptions; raises the first
        reason a slot's part is still not applied (the flusher retries the same batch)."""
        return self.refreshing_after_errors(lambda: self._write(batch, commands))

    def resend_lost(self) -> None:
        """Send again what a failover lost of the acknowledged transactions (``_resend``)."""
        self.refreshing_after_errors(
            lambda: resend_on_cluster(
                self._cluster, self._acked, self._marker_of, self._writer_id, self._load_scripts
            )
        )

    def _write(self, batch: Batch, commands: Sequence[Command]) -> list[Any]:
        ids = self._batch_ids.of(batch)
        progress = self._progress
        if batch is not self._batch:
            progress = self._progress = self._progress_of(batch, ids)
            progress.replies = {}
            self._batch = batch
        groups = group_by_slot(commands)
        pending: dict[int, list[Command]] = {}
        markers: dict[int, str] = {}  # slot -> its applied hash
        for slot, indexes in groups.items():
            if progress.covers(slot, ids):
                continue
            marker = self._keys.applied(_text(command_key(commands[indexes[0]])))
            if slot in progress.unknown and self._ran_before(
                progress, ids, slot, marker, indexes, commands
            ):
                continue
            pending[slot] = [
                *(commands[i] for i in indexes),
                *_marking(
                    marker, self._writer_id, encode_marker(ids, self._now()), self._retention
                ),
                *self.pruning.due(marker),
            ]
            markers[slot] = marker
        failure: BaseException | None = None
        refused: dict[int, BaseException] = {}
        for slot, outcome in run_slot_transactions(self._cluster, pending).items():
            if outcome.applied:
                progress.record(slot, ids)
                self._take_replies(progress, commands, groups[slot], outcome.replies)
                self._ran(slot, markers[slot], pending[slot], outcome.replies, len(groups[slot]))
                continue
            if outcome.unknown:
                progress.unknown.add(slot)
            elif _for_good(outcome.error, batch):
                refused[slot] = outcome.error  # type: ignore[assignment]
                continue
            failure = failure or outcome.error
        if failure is not None:
            raise failure
        if refused:
            self._refused_slots(progress, ids, groups, refused)
        if batch.split_from is not None and ids[1] == batch.split_from[1]:
            self._splits.pop(batch.split_from, None)  # its last half: the lineage is applied
        return self._replies(progress, commands)

    def _ran(
        self, slot: int, marker: str, commands: list[Command], replies: list[Any], at: int
    ) -> None:
        """A slot's transaction ran: kept until no failover can lose it (``_acknowledged``),
        with the marker it wrote and the one it found (read at ``at``, then written); its
        pruning, if it had one, answered."""
        self._marker_of[slot] = marker
        kept = kept_commands(commands, replies)
        size = sum(map(len, kept))
        self._acked.acknowledged(slot, commands[at + 1][3], kept, replies[at], size)
        for reply in replies[at + 3 :]:
            self.pruning.answered(marker, reply)

    def _ran_before(
        self,
        progress: AppliedSlots,
        ids: tuple[int, int],
        slot: int,
        marker: str,
        indexes: list[int],
        commands: Sequence[Command],
    ) -> bool:
        """Whether the slot's transaction whose reply was lost ran (its marker says so): then
        the slot is applied, and its transaction kept as it ran. Raises what the read met."""
        # routed: an ASK followed even to a node the layout does not show yet (a new node
        # importing the slot), where redis-py's own hget fails
        reads = [
            ("HGET", marker, self._writer_id),
            ("HGET", self._keys.applied(self._keys.metric_schema), self._increments),
        ]
        found = execute_routed(self._cluster, reads, read_raw)
        raise_first_error(found)
        named = decode_marker(found[0])
        if not covers(named, ids):
            return False
        progress.record(slot, ids)
        calls = [tuple(commands[i]) for i in indexes if commands[i][0] == "EVALSHA"]
        did_nothing = bool(calls) and not covers(decode_marker(found[1]), ids)
        if did_nothing:  # the increments' call (Redis did not know its script)
            progress.missing_scripts.update(calls)
        written = marker_text(found[0])
        if named == ids and written is not None:  # this very batch's transaction ran
            ran = [commands[i] for i in indexes]
            if did_nothing:
                ran = [command for command in ran if command[0] != "EVALSHA"]
            self._found_ran(slot, marker, ran, written)
        return True

    def _found_ran(self, slot: int, marker: str, commands: list[Command], written: str) -> None:
        """A slot's transaction whose reply was lost, found to have run (the marker it wrote,
        ``written``, read back): kept as it ran, as ``_ran`` keeps one whose reply came."""
        self._marker_of[slot] = marker
        kept = [*commands, *_marking(marker, self._writer_id, written, self._retention)]
        self._acked.acknowledged(slot, written, kept, IN_ORDER, sum(map(len, kept)))

    def _refused_slots(
        self,
        progress: AppliedSlots,
        ids: tuple[int, int],
        groups: dict[int, list[int]],
        refused: dict[int, BaseException],
    ) -> None:
        """Slots whose transaction Redis refused for good (an ACL without one of its commands):
        when other slots of the batch applied theirs, the batch is done, each refused command
        answered with the refusal, as one Redis answers a transaction that ran; the flusher
        counts as dropped exactly the events whose window write it was. Nothing applied
        anywhere: the batch is refused whole (raised)."""
        if not progress.applied:
            raise next(iter(refused.values()))
        for slot, error in refused.items():
            progress.record(slot, ids)  # done with: never sent again
            for index in groups[slot]:
                progress.replies[index] = error

    def _progress_of(self, batch: Batch, ids: tuple[int, int]) -> AppliedSlots:
        """Where a new batch's progress is kept: a half's is its lineage's (the whole batch's
        and every earlier half's, whatever was sent in between); a batch without events (a
        leftover sent again) has its own; a new batch with events starts afresh, the splits
        before it over (a flush pass delivers every half before it takes more events); the
        same events again (ids are never named twice) keep theirs."""
        if batch.split_from is not None:
            lineage = batch.split_from
            progress = self._splits.get(lineage)
            if progress is None:
                current = self._progress
                progress = current if current.lineage == lineage else AppliedSlots(lineage)
                while len(self._splits) >= MAX_SPLITS:
                    del self._splits[next(iter(self._splits))]
                self._splits[lineage] = progress
            return progress
        if batch.events:
            if self._progress.lineage == ids:
                # the same events sent again without the commands of the pass's own that
                # Redis refused (wakes: ``FlushPass._deliver``): the slots applied stay applied
                return self._progress
            self._splits.clear()
        return AppliedSlots(lineage=ids)

    def _take_replies(
        self,
        progress: AppliedSlots,
        commands: Sequence[Command],
        indexes: list[int],
        got: list[Any],
    ) -> None:
        """A slot's transaction ran: its replies and the script calls that did nothing."""
        for index, reply in zip(indexes, got, strict=False):
            progress.replies[index] = reply
            if _did_nothing(reply):
                progress.missing_scripts.add(tuple(commands[index]))

    def _replies(self, progress: AppliedSlots, commands: Sequence[Command]) -> list[Any]:
        """Every command's reply; a script call that did nothing in a slot applied by an
        earlier attempt (maybe of the batch this one is half of) is answered NOSCRIPT again."""
        replies: list[Any] = [progress.replies.get(index) for index in range(len(commands))]
        missing = progress.missing_scripts
        if missing:
            for index, reply in enumerate(replies):
                if reply is None and tuple(commands[index]) in missing:
                    replies[index] = redis.exceptions.NoScriptError("NOSCRIPT (an earlier attempt)")
            missing.difference_update(
                tuple(commands[i]) for i, reply in enumerate(replies) if _did_nothing(reply)
            )
        return replies

    def node_of(self, key: str) -> redis.Redis:
        """A client of the node serving ``key``'s slot (for commands a cluster pipeline
        refuses, such as TIME beside the keyed ones)."""
        node = self._cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
        client: redis.Redis = self._cluster.get_redis_connection(node)
        return client

    def refreshing_after_errors(self, call: Callable[[], _T]) -> _T:
        """``call()``; when it fails for a reason the cluster's layout may explain (MOVED, a
        node gone), the layout is asked for again before the error is raised."""
        try:
            return call()
        except RedisClusterException as exc:  # no node known for the slot: not a RedisError
            refresh_layout(self._cluster)
            raise redis.ConnectionError(f"Redis Cluster: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError, OSError, redis.ResponseError) as exc:
            if not isinstance(exc, redis.ResponseError) or isinstance(
                exc, redis.exceptions.MovedError | redis.exceptions.AskError
            ):
                refresh_layout(self._cluster, exc)
            raise


def _marking(marker: str, writer_id: str, written: str, retention: int) -> list[Command]:
    """What a slot's transaction writes after its commands: the writer's marker, read first
    (what the master had: ``_acknowledged``), and its hash's TTL (``ClusterWrites._ran`` reads
    their replies by place)."""
    return [
        ("HGET", marker, writer_id),
        ("HSET", marker, writer_id, written),
        ("EXPIRE", marker, retention),
    ]


def _did_nothing(reply: Any) -> bool:
    """A script call's reply saying Redis did not know the script: the call did nothing."""
    return isinstance(reply, Exception) and may_run_again(reply)


def _text(key: Any) -> str:
    return key.decode() if isinstance(key, bytes) else str(key)
