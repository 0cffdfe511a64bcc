"""Redis Cluster faults: a manual failover, a busy provider's slot moved under load (or held
half-moved), the master serving it killed."""

from __future__ import annotations

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
        """Ports of masters killed and not back yet."""

    def _busy(self, port: int) -> str | None:
        if port in self._down:
            return f"master {port} is down"
        if any(port in ends for ends in self._moving.values()):
            return f"master {port} is moving a slot"
        return None

    def handlers(self) -> Mapping[str, Apply]:
        return {"failover": self.failover, "reshard": self.reshard, "kill_master": self.kill_master}

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
        names = [provider_name(w.index, f) for w in dep.all_workers() for f in FLAVORS]

        def hit(tags: list[str]) -> bool:
            return any(lo <= cluster_ops.slot_of(t) <= hi for t in tags for lo, hi in ranges)

        lost = [name for name in names if hit(shard_tags(name))]
        lost += [tag for tag in ("leader", "shared", "metrics") if hit([tag])]
        record.notes.update(port=node.port, slots=ranges, data_loss="tags", lost_tags=lost)

        def heal() -> None:
            # the replica takes over first (a master back before that, empty, would keep its
            # slots and lose them all): then the old master comes back as its replica
            slot = ranges[0][0]
            promoted = wait_until(lambda: cluster.master_of_slot(slot).port != node.port, 15, 0.2)
            record.notes["promoted"] = promoted
            relaunch_node(node)
            wait_until(lambda: cluster._healthy(), 30, 0.2)
            self._down.discard(node.port)

        return heal
