"""Sending again the acknowledged transactions a failover lost (``_acknowledged``): the markers
read on the master serving now, then what each lacks, in order, each transaction as it was
first sent (its own marker with it, so a send cut off half way resumes from the marker)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster

from client._acknowledged import AcknowledgedLog, Kept
from client._transaction import Transactions, pack_transaction, run_slot_transactions
from gatewayz_transport.errors import explained, is_out_of_memory, is_transient, raise_first_error
from gatewayz_transport.routing import Command, execute_routed, read_raw

log = logging.getLogger("gatewayz.metrics.client")

_T = TypeVar("_T")

RESENT = (
    "a failover or restart lost %d transactions of this writer that Redis had acknowledged "
    "(%d commands; their markers are missing on the master serving now): sent again"
)

LOST_FOR_GOOD = (
    "a failover or restart lost %d transactions of this writer that Redis had acknowledged and "
    "that were no longer kept (older than the keep, or past its size budget): lost for good"
)


class Resends:
    """When a writer sends again what a failover lost (``resend``): before its next transaction
    once a round trip failed, and right after a transaction that found its master lacking
    earlier ones (there may be no next one soon)."""

    def __init__(self, acked: AcknowledgedLog[list[Command]], resend: Callable[[], None]) -> None:
        self._acked = acked
        self._resend = resend

    def around(self, transaction: Callable[[], _T]) -> _T:
        """``transaction()``, what a failover lost sent again before it when a round trip
        failed, and after it when it found its master lacking earlier ones. Raises what the
        transaction, or the resend before it, raised (the log then stays suspect)."""
        try:
            if self._acked.suspect:
                self._resend()
            result = transaction()
        except BaseException:
            self._acked.failed()
            raise
        if self._acked.suspect:  # after it: if this fails, the next transaction tries first
            with contextlib.suppress(redis.RedisError, OSError):
                self._resend()
        return result

    def round_trip(self, call: Callable[[], _T]) -> _T:
        """``call()``, a round trip of the writer's own (an id reservation): when it fails, a
        failover may be why, and the next transaction reads the markers first."""
        try:
            return call()
        except BaseException:
            self._acked.failed()
            raise


def _for_now(exc: BaseException) -> BaseException:
    """What to raise for a resend Redis refused for now (the batch behind it waits for it): the
    refusal itself, but for lack of memory, which would have the flush pass split its batch
    (not the resend): a plain retry."""
    if not is_out_of_memory(exc):
        return exc
    error = redis.ConnectionError(f"sending again what a failover lost: {explained(exc)}")
    error.__cause__ = exc
    return error


def _report_lost_for_good(acked: AcknowledgedLog[list[Command]]) -> None:
    if acked.lost_for_good:
        log.error(LOST_FOR_GOOD, acked.lost_for_good)
        acked.lost_for_good = 0


def _gave_up(count: int, exc: BaseException) -> None:
    log.error(
        "Redis refused the %d transactions a failover lost when they were sent again: "
        "given up on (%s)",
        count,
        explained(exc),
    )


def resend_on_one_redis(
    transactions: Transactions,
    acked: AcknowledgedLog[list[Command]],
    marker: tuple[str, str],
    load_scripts: Callable[[], Any],
) -> None:
    """On one Redis (or a Sentinel-managed one), once a round trip failed or a transaction
    found its master lacking earlier ones: the writer's ``marker`` (applied hash, field) read,
    and the kept transactions after the one it names sent again. Raises redis.RedisError
    while Redis cannot take them (the log stays suspect)."""
    if not acked.to_check:
        acked.checked()
        return
    lost = acked.lost(0, transactions.read("HGET", *marker))
    if lost:
        load_scripts()  # the new master may not know them
        for done, entry in enumerate(lost):
            try:
                transactions.run(pack_transaction(entry.payload), len(entry.payload))
            except redis.ResponseError as exc:
                if is_transient(exc):
                    raise _for_now(exc) from exc
                _gave_up(len(lost) - done, exc)
                lost = lost[:done]
                break
        if lost:
            log.warning(RESENT, len(lost), sum(len(entry.payload) for entry in lost))
    _report_lost_for_good(acked)
    acked.checked()


def resend_on_cluster(
    cluster: RedisCluster,
    acked: AcknowledgedLog[list[Command]],
    marker_of: dict[int, str],
    writer_id: str,
    load_scripts: Callable[[], Any],
) -> None:
    """On a Redis Cluster, once a round trip failed or a transaction found its master lacking
    earlier ones: each kept slot's marker (this writer's field of ``marker_of[slot]``, its
    applied hash) read where the slot is served now, and what each slot lacks sent again, the
    slots' n-th transactions side by side. Raises redis.RedisError while a node cannot take
    them (the log stays suspect)."""
    slots = acked.to_check
    if not slots:
        acked.checked()
        return
    reads = [("HGET", marker_of[slot], writer_id) for slot in slots]
    found = execute_routed(cluster, reads, read_raw)
    raise_first_error(found)
    lost: dict[int, list[Kept[list[Command]]]] = {}
    for slot, raw in zip(slots, found, strict=True):
        if entries := acked.lost(slot, raw):
            lost[slot] = entries
    if lost:
        load_scripts()
        for round_ in range(max(len(entries) for entries in lost.values())):
            groups = {s: e[round_].payload for s, e in lost.items() if round_ < len(e)}
            for slot, outcome in run_slot_transactions(cluster, groups).items():
                if outcome.applied:
                    continue
                error = outcome.error or redis.ConnectionError("no reply")
                if outcome.unknown or isinstance(error, redis.ConnectionError | OSError):
                    raise error
                if is_transient(error):
                    raise _for_now(error)
                _gave_up(len(lost[slot]) - round_, error)
                lost[slot] = lost[slot][:round_]  # the slot's rest is given up on
        sent = [entry for entries in lost.values() for entry in entries]
        if sent:
            log.warning(RESENT, len(sent), sum(len(entry.payload) for entry in sent))
    _report_lost_for_good(acked)
    acked.checked()
