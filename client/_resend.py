"""Sending again the acknowledged transactions a failover lost (``_acknowledged``): the markers
read on the master serving now, then what each lacks, in order, each transaction as it was
first sent (its own marker with it, so a send cut off half way resumes from the marker)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

from client._acknowledged import AcknowledgedLog, Kept
from client._transaction import Transactions, pack_transaction, run_slot_transactions
from gatewayz_transport.errors import explained, is_out_of_memory, is_transient, raise_first_error
from gatewayz_transport.routing import Command, execute_routed, read_raw
from gatewayz_transport.scripts import may_run_again

log = logging.getLogger("gatewayz.metrics.client")

RESENT = (
    "a failover or restart lost %d transactions of this writer that Redis had acknowledged "
    "(%d commands; their markers are missing on the master serving now): sent again"
)


def kept_commands(commands: Sequence[Command], replies: Sequence[Any]) -> list[Command]:
    """What sends a transaction again: its commands but the script calls that did nothing
    (Redis did not know their script: what they carried went again on its own, and sending them
    with the rest would apply it twice)."""
    if not any(isinstance(reply, Exception) and may_run_again(reply) for reply in replies):
        return list(commands)
    return [
        command
        for command, reply in zip(commands, replies, strict=False)
        if not (isinstance(reply, Exception) and may_run_again(reply))
    ]


def _for_now(exc: BaseException) -> BaseException:
    """What to raise for a resend Redis refused for now (the batch behind it waits for it): the
    refusal itself, but for lack of memory, which would have the flush pass split its batch
    (not the resend): a plain retry."""
    if not is_out_of_memory(exc):
        return exc
    error = redis.ConnectionError(f"sending again what a failover lost: {explained(exc)}")
    error.__cause__ = exc
    return error


def _gave_up(count: int, exc: BaseException) -> None:
    log.error(
        "Redis refused %d transactions lost by a failover, sent again: not sent (%s)",
        count,
        explained(exc),
    )


def resend_on_one_redis(
    client: redis.Redis,
    transactions: Transactions,
    acked: AcknowledgedLog[list[Command]],
    marker: tuple[str, str],
    load_scripts: Callable[[], Any],
) -> None:
    """On one Redis (or a Sentinel-managed one), after a failed round trip: the writer's
    ``marker`` (applied hash, field) read, and the kept transactions after the one it names sent
    again. Raises redis.RedisError while Redis cannot take them (the log stays suspect)."""
    if not acked.to_check:
        acked.checked()
        return
    lost = acked.lost(0, client.hget(*marker))
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
    acked.checked()


def resend_on_cluster(
    cluster: RedisCluster,
    acked: AcknowledgedLog[list[Command]],
    marker_of: dict[int, str],
    writer_id: str,
    load_scripts: Callable[[], Any],
) -> None:
    """On a Redis Cluster, after a failed round trip: each kept slot's marker (this writer's
    field of ``marker_of[slot]``, its applied hash) read where the slot is served now, and what
    each slot lacks sent again, the slots' n-th transactions side by side. Raises
    redis.RedisError while a node cannot take them (the log stays suspect)."""
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
    acked.checked()
