"""The aggregator's only Redis writer: breaker transitions (compare-and-set, fenced), the leader
lease, snapshot cycle numbers and the published snapshot (fenced), and the cycle's bookkeeping
(the registry, the dashboard's history, clock offsets, the shared op counter).

A cycle's writes go in one round trip, assembled step by step on a ``Commit``
(``StateWriter.begin``): one method per kind of write. What must land (transitions, the cycle
number: scripts Redis runs even while out of memory) is sent first; the bookkeeping after it may
wait for a later commit while Redis refuses plain writes. The operations counted are the
commands sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aggregator.core.history import HISTORY_POINTS, HISTORY_TTL_SECONDS, HistoryPoint
from aggregator.core.snapshot import encode_published
from gatewayz_protocol import leader_scripts, scripts
from gatewayz_protocol.breaker_state import BreakerState, encode_breaker
from gatewayz_protocol.fields import LOG_RECORDS_DROPPED_FIELD
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.errors import is_out_of_memory, raise_first_error
from gatewayz_transport.routing import pipeline
from gatewayz_transport.scripts import FlaggedScript, ScriptCalls, register

FENCED = -1
"""What a fenced script answers to a writer that does not hold the lease (under its token)."""


@dataclass(frozen=True)
class PlannedWrite:
    provider: str
    expected_epoch: int
    new: BreakerState
    counter_field: str  # "closed>open"
    model: str | None = None
    """A model breaker of ``provider`` (``gatewayz_protocol.model_scopes``); None: its own."""


@dataclass(frozen=True)
class Committed:
    results: list[int]
    """Per write: 1 applied, 0 the epoch moved on, -1 a newer leader's token is there."""
    cycle: int | None = None
    """The snapshot cycle reserved, when one was asked for; FENCED when not the lease holder."""
    out_of_memory: bool = False
    """Redis refused a plain write for lack of memory (the breaker's scripts still run)."""


class Commit:
    """One round trip of writes (``StateWriter.begin``). Each method queues one kind of write
    and returns the commit; ``send()`` sends them all."""

    def __init__(self, writer: StateWriter, fence: int | None, valid_until_ms: int | None) -> None:
        self._writer = writer
        self._fence = fence
        self._valid_until = "" if valid_until_ms is None else valid_until_ms
        self._scripts: list[tuple[FlaggedScript, list[Any], list[Any]]] = []
        self._transitions: list[int] = []  # indexes of the transitions among the scripts
        self._reserves_cycle = False
        self._cycle_index: int | None = None
        self._plain: list[tuple[Any, ...]] = []  # bookkeeping: may wait while out of memory
        self._log_drops = 0

    def raise_fences(self, providers: Sequence[str], breakers: Sequence[str] = ()) -> Commit:
        """Raise these breakers' fences to this commit's token (a leader that just took over:
        whatever a deposed leader sends them later is refused); ``breakers``: more breaker
        hashes (model breakers')."""
        breakers = [*(self._writer.keys.breaker(p) for p in providers), *breakers]
        if self._fence:
            script, ttl = self._writer.raise_fence_script, self._writer.retention
            for key in breakers:
                self._scripts.append((script, [key], [self._fence, ttl]))
        return self

    def transitions(self, writes: Sequence[PlannedWrite]) -> Commit:
        """Breaker transitions, compare-and-set on the state epoch and fenced by the token and
        the lease's end (by the Redis server's clock)."""
        keys, writer = self._writer.keys, self._writer
        for write in writes:
            ttl = 0 if write.new.forced else writer.retention
            self._transitions.append(len(self._scripts))
            self._scripts.append(
                (
                    writer.transition_script,
                    _breaker_keys(keys, write),
                    [
                        write.expected_epoch,
                        "" if self._fence is None else self._fence,
                        ttl,
                        write.counter_field,
                        "" if self._fence is None else self._valid_until,
                        *encode_breaker(write.new, writer.permits, writer.permit_seconds),
                    ],
                )
            )
        return self

    def reserve_cycle(self, above: int) -> Commit:
        """The next snapshot cycle number above ``above`` (leader only: FENCED without a fence
        or under a newer leader's)."""
        self._reserves_cycle = True
        if self._fence:
            self._cycle_index = len(self._scripts)
            keys = self._writer.keys
            self._scripts.append(
                (
                    self._writer.reserve_cycle_script,
                    [keys.leader_lease, keys.snapshot_cycle],
                    [self._fence, above],
                )
            )
        return self

    def keep_registered(self, providers: Sequence[str], now: float) -> Commit:
        """Mark ``providers`` as seen ``now`` (their breaker acts: they must not leave the
        registry). ZADD GT adds a missing one and only ever moves a time forward."""
        if providers:
            registry = self._writer.keys.providers
            members = [part for name in providers for part in (repr(now), name)]
            self._plain.append(("ZADD", registry, "GT", *members))
            self._plain.append(("EXPIRE", registry, self._writer.retention))
        return self

    def history(self, points: Mapping[str, HistoryPoint]) -> Commit:
        """One dashboard point per provider, replacing that minute's, keeping the last
        ``HISTORY_POINTS``."""
        for provider, point in points.items():
            key = self._writer.keys.history(provider)
            minute = point.minute_start
            self._plain += [
                ("ZREMRANGEBYSCORE", key, minute, minute),
                ("ZADD", key, minute, point.encode()),
                ("ZREMRANGEBYRANK", key, 0, -HISTORY_POINTS - 1),
                ("EXPIRE", key, HISTORY_TTL_SECONDS),
            ]
        return self

    def forget_clocks(self, writers: Sequence[str]) -> Commit:
        """Drop the clock offsets of writers gone silent."""
        if writers:
            self._plain.append(("HDEL", self._writer.keys.clock_offsets, *writers))
        return self

    def log_drops(self, count: int) -> Commit:
        """Count this process's log records given up on with the clients'."""
        self._log_drops += count
        return self

    def send(self, operations: Counter[str] | None = None) -> Committed:
        """Everything queued, in one round trip, with ``operations`` (the reads' commands, to
        add to the shared op counter). Raises when a transition or the cycle number could not
        be sent; bookkeeping refused for lack of memory is kept for the next commit."""
        return self._writer.send(self, Counter(operations or ()))

    # -- for StateWriter.send ------------------------------------------------------------------

    def queue(self, calls: ScriptCalls) -> tuple[int, list[tuple[Any, ...]]]:
        """Queue the scripts on ``calls``; returns how many replies must land and the plain
        commands to queue after them."""
        for script, keys, args in self._scripts:
            calls.queue(script, keys, args)
        return len(self._scripts), list(self._plain)

    def results(self, replies: Sequence[Any]) -> tuple[list[int], int | None]:
        """The transitions' results and the cycle reserved, from the replies."""
        cycle = None
        if self._reserves_cycle:
            cycle = FENCED if self._cycle_index is None else int(replies[self._cycle_index])
        return [int(replies[index]) for index in self._transitions], cycle

    @property
    def log_drops_count(self) -> int:
        return self._log_drops


def _breaker_keys(keys: Keys, write: PlannedWrite) -> list[str]:
    """The breaker, permits and transitions keys a write's TRANSITION call names."""
    provider, model = write.provider, write.model
    if model is None:
        return [keys.breaker(provider), keys.permits(provider), keys.transitions(provider)]
    return [
        keys.model_breaker(provider, model),
        keys.model_permits(provider, model),
        keys.model_transitions(provider, model),
    ]


class StateWriter:
    def __init__(
        self,
        connection: Connection,
        keys: Keys,
        retention_seconds: float,
        permits: int = 5,
        permit_seconds: float = 30.0,
    ):
        self._redis = connection
        self.keys = keys
        self.retention = int(retention_seconds)
        self.permits = permits
        self.permit_seconds = permit_seconds
        self.transition_script = register(connection, scripts.TRANSITION)
        self.reserve_cycle_script = register(connection, leader_scripts.RESERVE_CYCLE)
        self.raise_fence_script = register(connection, leader_scripts.RAISE_FENCE)
        self._lease = register(connection, leader_scripts.LEASE)
        self._release = register(connection, leader_scripts.RELEASE)
        self._publish = register(connection, leader_scripts.PUBLISH_SNAPSHOT)
        self._prune_writers = register(connection, scripts.PRUNE_GAUGE_WRITERS)
        self._unreported_ops: Counter[str] = Counter()
        self._unreported_log_drops = 0

    def begin(self, fence: int | None, valid_until_ms: int | None = None) -> Commit:
        """A commit under ``fence`` (the lease's token; None: an operator command), whose
        transitions Redis refuses after ``valid_until_ms`` by its own clock (the lease's end)."""
        return Commit(self, fence, valid_until_ms)

    def send(self, commit: Commit, ops: Counter[str]) -> Committed:
        """``commit.send()``: its writes, the log drops and op counts not reported yet, in one
        round trip."""
        pipe = pipeline(self._redis)
        calls = ScriptCalls(pipe)
        must_land, plain = commit.queue(calls)
        log_drops = commit.log_drops_count + self._unreported_log_drops
        self._unreported_log_drops = 0
        if log_drops:
            plain.append(("HINCRBY", self.keys.client_stats, LOG_RECORDS_DROPPED_FIELD, log_drops))
        ops["evalsha"] += must_land
        ops.update(str(command[0]).lower() for command in plain)
        ops.update(self._unreported_ops)
        self._unreported_ops.clear()
        counted = [(name, count) for name, count in ops.items() if count]
        for command in plain:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        for name, count in counted:
            pipe.hincrby(self.keys.redis_ops, name, count)
        replies = calls.rerun_missing(pipe.execute(raise_on_error=False))
        raise_first_error(replies[:must_land])  # transitions and cycle numbers must land
        bookkeeping = replies[must_land:]
        refused = [reply for reply in bookkeeping if isinstance(reply, Exception)]
        for (name, count), reply in zip(counted, bookkeeping[len(plain) :], strict=True):
            if isinstance(reply, Exception):  # out of memory: count them later
                self._unreported_ops[name] += count
        if log_drops and isinstance(bookkeeping[len(plain) - 1], Exception):
            self._unreported_log_drops += log_drops
        results, cycle = commit.results(replies)
        return Committed(results, cycle, any(is_out_of_memory(reply) for reply in refused))

    def publish(self, snapshot_json: str, fence: int, ttl_seconds: float) -> bool:
        """Publish the snapshot for followers: False (nothing written) when this replica no
        longer holds the lease under ``fence``."""
        published = self._publish(
            keys=[self.keys.leader_lease, self.keys.snapshot],
            args=[fence, max(1, int(ttl_seconds * 1000)), encode_published(snapshot_json)],
        )
        self._unreported_ops["evalsha"] += 1
        return int(published) == 1

    def forget_gauge_writers(self, writers: Sequence[str]) -> int:
        """Drop dead processes (their gauge values expired) from the gauge writers; a process
        that wrote again meanwhile stays. Returns how many were dropped."""
        keys = self.keys
        pruned = self._prune_writers(
            keys=[keys.gauge_writers, *(keys.gauge_values(w) for w in writers)], args=list(writers)
        )
        self._unreported_ops["evalsha"] += 1
        return int(pruned)

    def hold_lease(self, instance: str, ttl_seconds: float, refused: int = 0) -> tuple[int, int]:
        """Acquire or renew the leader lease: (the fencing token, Redis time in ms until which
        the lease holds), or (0, 0) when another holds it. ``refused``: a token of ours a fence
        refused: a lease still held under it is taken again under a new token above it."""
        token, until_ms = self._lease(
            keys=[self.keys.leader_lease, self.keys.leader_token],
            args=[instance, max(1, int(ttl_seconds * 1000)), refused],
        )
        self._unreported_ops["evalsha"] += 1
        return int(token), int(until_ms)

    def release_lease(self, instance: str) -> None:
        self._release(keys=[self.keys.leader_lease], args=[instance])
