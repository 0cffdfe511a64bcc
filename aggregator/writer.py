"""The aggregator's only Redis writer: breaker transitions (compare-and-set, fenced), the leader
lease, snapshot cycle numbers and the published snapshot (fenced), and the shared op counter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aggregator.history import HISTORY_POINTS, HISTORY_TTL_SECONDS, HistoryPoint
from aggregator.snapshot import encode_published
from gatewayz_protocol import scripts
from gatewayz_protocol.breaker_state import BreakerState, encode_breaker
from gatewayz_protocol.fields import LOG_RECORDS_DROPPED_FIELD
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import Connection
from gatewayz_transport.errors import is_out_of_memory, raise_first_error
from gatewayz_transport.routing import pipeline
from gatewayz_transport.scripts import ScriptCalls, register

FENCED = -1
"""What a fenced script answers to a writer that does not hold the lease (under its token)."""


@dataclass(frozen=True)
class PlannedWrite:
    provider: str
    expected_epoch: int
    new: BreakerState
    counter_field: str  # "closed>open"


@dataclass(frozen=True)
class Committed:
    results: list[int]
    """Per write: 1 applied, 0 the epoch moved on, -1 a newer leader's token is there."""
    cycle: int | None = None
    """The snapshot cycle reserved, when one was asked for; FENCED when not the lease holder."""
    out_of_memory: bool = False
    """Redis refused a plain write for lack of memory (the breaker's scripts still run)."""


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
        self._keys = keys
        self._retention = int(retention_seconds)
        self._permits = permits
        self._permit_seconds = permit_seconds
        self._transition = register(connection, scripts.TRANSITION)
        self._lease = register(connection, scripts.LEASE)
        self._release = register(connection, scripts.RELEASE)
        self._reserve_cycle = register(connection, scripts.RESERVE_CYCLE)
        self._publish = register(connection, scripts.PUBLISH_SNAPSHOT)
        self._prune_writers = register(connection, scripts.PRUNE_GAUGE_WRITERS)
        self._unreported_ops: Counter[str] = Counter()
        self._unreported_log_drops = 0

    def commit(
        self,
        writes: Sequence[PlannedWrite],
        ops: Counter[str],
        fence: int | None,
        reserve_cycle_above: int | None = None,
        keep_registered: Sequence[str] = (),
        now: float = 0.0,
        forget_clocks: Sequence[str] = (),
        log_records_dropped: int = 0,
        history: Mapping[str, HistoryPoint] | None = None,
    ) -> Committed:
        """Apply transitions, reserve the next snapshot cycle (above ``reserve_cycle_above``,
        when given: leader only), mark ``keep_registered`` providers as seen ``now`` (their
        breaker still acts: they must not leave the registry; ZADD GT adds a missing one and
        only ever moves a time forward) and add ``ops`` (plus this writer's own commands) to the
        shared op counter, forget the clock offsets of ``forget_clocks`` writers and count this
        process's ``log_records_dropped`` with the clients', in one round trip. ``fence`` None
        means an operator command. The bookkeeping may wait for a later commit while Redis is
        out of memory; transitions and cycle numbers run by scripts that Redis lets write even
        then. ``history`` (leader only): one point per provider for the dashboard, replacing
        that minute's point, keeping the last ``HISTORY_POINTS`` (bookkeeping too)."""
        ops = Counter(ops)
        keys = self._keys
        pipe = pipeline(self._redis)
        calls = ScriptCalls(pipe)
        for write in writes:
            ttl = 0 if write.new.forced else self._retention
            calls.queue(
                self._transition,
                [
                    keys.breaker(write.provider),
                    keys.permits(write.provider),
                    keys.transitions(write.provider),
                ],
                [
                    write.expected_epoch,
                    "" if fence is None else fence,
                    ttl,
                    write.counter_field,
                    *encode_breaker(write.new, self._permits, self._permit_seconds),
                ],
            )
            ops["evalsha"] += 1
        cycle_index = None
        if reserve_cycle_above is not None and fence:
            cycle_index = calls.queue(
                self._reserve_cycle,
                [keys.leader_lease, keys.snapshot_cycle],
                [fence, reserve_cycle_above],
            )
            ops["evalsha"] += 1
        bookkeeping = len(pipe)  # from here on: what may wait for a later commit
        if keep_registered:
            pipe.zadd(keys.providers, dict.fromkeys(keep_registered, now), gt=True)
            pipe.expire(keys.providers, self._retention)
            ops.update({"zadd": 1, "expire": 1})
        for provider, point in (history or {}).items():
            key = keys.history(provider)
            pipe.zremrangebyscore(key, point.minute_start, point.minute_start)
            pipe.zadd(key, {point.encode(): point.minute_start})
            pipe.zremrangebyrank(key, 0, -HISTORY_POINTS - 1)
            pipe.expire(key, HISTORY_TTL_SECONDS)
            ops.update({"zremrangebyscore": 1, "zadd": 1, "zremrangebyrank": 1, "expire": 1})
        if forget_clocks:
            pipe.hdel(keys.clock_offsets, *forget_clocks)
            ops["hdel"] += 1
        log_index = None
        log_records_dropped += self._unreported_log_drops
        self._unreported_log_drops = 0
        if log_records_dropped:
            log_index = len(pipe)
            pipe.hincrby(keys.client_stats, LOG_RECORDS_DROPPED_FIELD, log_records_dropped)
            ops["hincrby"] += 1
        ops.update(self._unreported_ops)
        self._unreported_ops.clear()
        counted: dict[int, str] = {}  # reply index -> operation
        for operation, count in ops.items():
            if count:
                counted[len(pipe)] = operation
                pipe.hincrby(keys.redis_ops, operation, count)
        replies = calls.rerun_missing(pipe.execute(raise_on_error=False))
        raise_first_error(replies[:bookkeeping])  # transitions and cycle numbers must land
        refused = [reply for reply in replies[bookkeeping:] if isinstance(reply, Exception)]
        for index, operation in counted.items():
            if isinstance(replies[index], Exception):  # out of memory: count them later
                self._unreported_ops[operation] += ops[operation]
        if log_index is not None and isinstance(replies[log_index], Exception):
            self._unreported_log_drops += log_records_dropped
        cycle = None
        if reserve_cycle_above is not None:
            cycle = FENCED if cycle_index is None else int(replies[cycle_index])
        return Committed(
            [int(r) for r in replies[: len(writes)]],
            cycle,
            out_of_memory=any(is_out_of_memory(reply) for reply in refused),
        )

    def publish(self, snapshot_json: str, fence: int, ttl_seconds: float) -> bool:
        """Publish the snapshot for followers: False (nothing written) when this replica no
        longer holds the lease under ``fence``."""
        published = self._publish(
            keys=[self._keys.leader_lease, self._keys.snapshot],
            args=[fence, max(1, int(ttl_seconds * 1000)), encode_published(snapshot_json)],
        )
        self._unreported_ops["evalsha"] += 1
        return int(published) == 1

    def forget_gauge_writers(self, writers: Sequence[str]) -> int:
        """Drop dead processes (their gauge values expired) from the gauge writers; a process
        that wrote again meanwhile stays. Returns how many were dropped."""
        keys = self._keys
        pruned = self._prune_writers(
            keys=[keys.gauge_writers, *(keys.gauge_values(w) for w in writers)], args=list(writers)
        )
        self._unreported_ops["evalsha"] += 1
        return int(pruned)

    def hold_lease(self, instance: str, ttl_seconds: float) -> int:
        """Acquire or renew the leader lease: the fencing token, or 0 when another holds it."""
        token = self._lease(
            keys=[self._keys.leader_lease, self._keys.leader_token],
            args=[instance, max(1, int(ttl_seconds * 1000))],
        )
        self._unreported_ops["evalsha"] += 1
        return int(token)

    def release_lease(self, instance: str) -> None:
        self._release(keys=[self._keys.leader_lease], args=[instance])
