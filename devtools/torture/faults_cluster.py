"""Redis Cluster faults: a manual failover, a busy provider's slot moved under load (or held
half-moved), the master serving it killed or stopped (SIGSTOP) for about the node timeout."""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping

import redis

from devtools.torture import cluster_ops
from devtools.torture.deployment import relaunch_node, wait_until
from devtools.torture.faults import Apply, FaultRecord, Heal, HealLater, Targets
from devtools.torture.ledger import FLAVORS, provider_name, shard_tags
from devtools.torture.schedule import Fault


class ClusterFaults:
    """What is done to a Redis Cluster's topology (the run's cluster: ``Targets.dep.cluster``).

    A master that takes part in a slot move held half-way is neither failed over nor killed,
    and no slot moves from or to a master that is down: the node importing the slot would keep
    importing from a node that no longer serves it, mark the slot unserved and answer
    CLUSTERDOWN, and only an operator's ``redis-cli --cluster fix`` (not modelled here) would
    end it (cluster seed 58: the run never became healthy again)."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self._moving: dict[int, tuple[int, int]] = {}
        """Slot held half-moved -> (source port, target port), until its move is finished."""
        self._down: set[int] = set()
        """Ports of masters killed or stopped and not back yet."""

    def _busy(self, port: int) -> str | None:
        if port in self._down:
            return f"master {port} is down"
        if any(port in ends for ends in self._moving.values()):
            return f"master {port} is moving a slot"
        return None

    def handlers(self) -> Mapping[str, Apply]:
        return {
            "failover": self.failover,
            "reshard": self.reshard,
            "kill_master": self.kill_master,
            "stop_master": self.stop_master,
        }

    def failover(self, fault: Fault, record: FaultRecord) -> None:
        cluster = self.targets.dep.cluster
        assert cluster is not None
        tag = self.targets.provider(fault)
        busy = self._busy(cluster.master_of_slot(cluster_ops.slot_of(tag)).port)
        if busy is not None:
            record.notes["skipped"] = busy
            return
        record.notes.update(cluster_ops.failover(cluster, tag))

    def reshard(self, fault: Fault, record: FaultRecord) -> Heal | None:
        """The slot of a busy provider moved under load; with ``stall``, held half-moved (one
        key on the target, clients redirected with ASK) for the fault's duration first."""
        cluster = self.targets.dep.cluster
        assert cluster is not None
        migration = cluster_ops.Migration(cluster, self.targets.provider(fault))
        busy = self._busy(migration.source) or self._busy(migration.target)
        if busy is not None or migration.slot in self._moving:
            record.notes["skipped"] = busy or f"slot {migration.slot} is moving already"
            return None
        if not migration.begin():
            record.notes["skipped"] = "one master"
            return None
        self._moving[migration.slot] = (migration.source, migration.target)
        try:
            migration.move(1 if fault.params.get("stall") else None)
            if not fault.params.get("stall"):
                migration.finish()
                del self._moving[migration.slot]
                record.notes.update(migration.notes())
                return None
        except redis.RedisError as exc:  # its target out of memory: finished when healed
            record.notes["interrupted"] = f"{type(exc).__name__}: {exc}"
            record.notes["heal_after"] = 5.0

        def finish() -> None:
            # not waiting here: the OOM keeping the target full is healed by a later heal, which
            # could not run while this one waited (cluster seed 290002: the slot stayed half-moved)
            try:
                migration.finish()
            except redis.RedisError as exc:
                raise HealLater(0.5, f"slot {migration.slot}: {type(exc).__name__}: {exc}") from exc
            del self._moving[migration.slot]
            record.notes.update(migration.notes())

        return finish

    def kill_master(self, fault: Fault, record: FaultRecord) -> Heal | None:
        dep = self.targets.dep
        cluster = dep.cluster
        assert cluster is not None
        tag = self.targets.provider(fault)
        busy = self._busy(cluster.master_of_slot(cluster_ops.slot_of(tag)).port)
        if busy is not None:
            record.notes["skipped"] = busy
            return None
        node, ranges = cluster_ops.kill_master(cluster, tag)
        self._down.add(node.port)
        lost = self._tags_in(ranges)
        record.notes.update(port=node.port, slots=ranges, data_loss="tags", lost_tags=lost)

        def heal() -> None:
            # the replica takes over first (a master back before that, empty, would keep its
            # slots and lose them all): then the old master comes back as its replica
            slot = ranges[0][0]
            promoted = wait_until(lambda: cluster.master_of_slot(slot).port != node.port, 15, 0.2)
            record.notes["promoted"] = promoted
            if promoted:
                _declare_resent(record, lost)
            relaunch_node(node)
            wait_until(cluster.healthy, 30, 0.2)
            record.notes["settled_at"] = time.time()
            self._down.discard(node.port)

        return heal

    def stop_master(self, fault: Fault, record: FaultRecord) -> Heal | None:
        """The master serving a busy provider stopped (SIGSTOP: a stall, a paused VM) for the
        fault's duration, about the node timeout, then resumed. Its replica may take over
        meanwhile, and the old master, resumed, takes writes until it learns it was replaced,
        then drops them: only then may its slots have lost data, and only the keys workers do
        not send again (``NOT_RESENT``: declared once the cluster has settled). Stopped for
        less, or not replaced, it loses nothing."""
        cluster = self.targets.dep.cluster
        assert cluster is not None
        node = cluster.master_of_slot(cluster_ops.slot_of(self.targets.provider(fault)))
        busy = self._busy(node.port)
        if busy is not None:
            record.notes["skipped"] = busy
            return None
        ranges = [list(pair) for pair in cluster.slots_of(node.port)]
        data_set = cluster_ops.replication_id(node.port)
        node.process.send_signal(signal.SIGSTOP)
        self._down.add(node.port)
        record.notes.update(port=node.port, slots=ranges)

        def heal() -> None:
            node.process.send_signal(signal.SIGCONT)  # (again when tried again: no harm)
            # not waiting here: another master stopped meanwhile keeps the cluster from
            # settling until its own heal resumes it (cluster seed 171000 waited on it for good)
            if not cluster.healthy():
                raise HealLater(0.5, f"the cluster has not settled since {node.port} resumed")
            # by its data set, not by who serves the slot now: a later failover fault may have
            # made it the master again
            replaced = cluster_ops.replication_id(node.port) != data_set
            record.notes["replaced"] = replaced
            if replaced:
                record.notes["data_loss"] = "tags"
                _declare_resent(record, self._tags_in(ranges))
                record.notes["settled_at"] = time.time()
            self._down.discard(node.port)

        return heal

    def _tags_in(self, ranges: list[list[int]]) -> list[str]:
        """The shard tags (providers', and the leader's, shared and metrics keys') whose slots
        are in ``ranges``: what a master serving them may lose."""
        names = [provider_name(w.index, f) for w in self.targets.dep.all_workers() for f in FLAVORS]

        def hit(tags: list[str]) -> bool:
            return any(lo <= cluster_ops.slot_of(t) <= hi for t in tags for lo, hi in ranges)

        lost = [name for name in names if hit(shard_tags(name))]
        return lost + [tag for tag in ("leader", "shared", "metrics") if hit([tag])]


NOT_RESENT = ("leader", "shared", "metrics")
"""Tags whose keys a master that fails over may lose for good: the aggregator's own (``leader``),
and those a worker writes outside the transactions it keeps (the event-id counter, the provider
registry, its stats, the backend metrics' declarations). A worker's provider keys are written
by its kept transactions only, sent again where a promoted replica lacks them
(``client._acknowledged``): no loss is declared for them."""


def _declare_resent(record: FaultRecord, tags: list[str]) -> None:
    """A master whose replica took over: only ``NOT_RESENT`` tags are lost; the workers' send
    again what the replica lacks (``resent_tags``), unless a worker dies before it has (the
    checker's ``lost_tags``)."""
    record.notes["lost_tags"] = [tag for tag in tags if tag in NOT_RESENT]
    record.notes["resent_tags"] = [tag for tag in tags if tag not in NOT_RESENT]
