"""More faults: foreign data (poisoned fields, a newer leader's snapshot), operator commands run
in the middle, and the Redis Cluster's (a manual failover, a slot moved, a master killed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from devtools.torture import cluster_ops, tampering
from devtools.torture.deployment import (
    ROOT,
    plain_redis,
    relaunch_node,
    wait_until,
)
from devtools.torture.faults import FaultContext, FaultRecord, Heal, OperatorRun
from devtools.torture.ledger import FLAVORS, provider_name, shard_tags
from devtools.torture.schedule import Fault
from gatewayz_transport.connection import connect


class DataFaults(FaultContext):
    def _poison(self, fault: Fault, record: FaultRecord) -> None:
        provider = self._provider(fault)
        cluster = self.dep.cluster is not None
        commands = tampering.poison_commands(
            self.keys, provider, int(fault.params["variant"]), cluster
        )
        connection = connect(self.dep.direct_url, 5.0)
        try:
            record.notes["errors"] = tampering.poison(connection, commands)
        finally:
            connection.close()
        record.notes["written"] = [repr(c[:3]) for c in commands]

    def _newer_snapshot(self, fault: Fault, record: FaultRecord) -> None:
        connection = connect(self.dep.direct_url, 5.0)
        try:
            node = tampering.leader_node(
                connection,
                self.keys,
                lambda: plain_redis(self.dep.redis.port),  # type: ignore[union-attr]
            )
            record.notes.update(tampering.publish_newer(node, self.keys))
            node.close()
        finally:
            connection.close()

    def _operator(self, fault: Fault, record: FaultRecord) -> None:
        action, detail = str(fault.params["action"]), bool(fault.params["detail"])
        provider = self._provider(fault)
        if action == "inspect":
            argv = ["inspect", *([provider] if detail else [])]
        elif action == "status":
            argv = ["breaker", "status", *([provider] if detail else [])]
        else:
            argv = ["breaker", action, provider, "--create"]
        argv += ["--redis-url", self.dep.direct_url, "--namespace", self.dep.namespace]
        named = provider if action not in ("inspect", "status") or detail else None
        run = OperatorRun(action, named, argv, time.time())
        self.operator_runs.append(run)
        record.notes["provider"] = named
        thread = threading.Thread(target=self._operate, args=(run, len(self.operator_runs)))
        thread.start()
        self._threads.append(thread)

    def _operate(self, run: OperatorRun, number: int) -> None:
        log = Path(self.dep.directory) / f"operator-{number}.json"
        command = [sys.executable, "-m", "devtools.torture.opcmd", str(log), "--", *run.argv]
        run.start = time.time()
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
            run.returncode, run.output = done.returncode, (done.stdout + done.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            run.output = "timed out"
        run.end = time.time()
        try:
            run.sent = json.loads(log.read_text())
        except (OSError, ValueError):
            run.sent = [["UNLOGGED"]]


class ClusterFaults(FaultContext):
    def _failover(self, fault: Fault, record: FaultRecord) -> None:
        assert self.dep.cluster is not None
        record.notes.update(cluster_ops.failover(self.dep.cluster, self._provider(fault)))

    def _reshard(self, fault: Fault, record: FaultRecord) -> Heal | None:
        """The slot of a busy provider moved under load; with ``stall``, held half-moved (one
        key on the target, clients redirected with ASK) for the fault's duration first."""
        assert self.dep.cluster is not None
        migration = cluster_ops.Migration(self.dep.cluster, self._provider(fault))
        if not migration.begin():
            record.notes["skipped"] = "one master"
            return None
        try:
            migration.move(1 if fault.params.get("stall") else None)
            if not fault.params.get("stall"):
                migration.finish()
                record.notes.update(migration.notes())
                return None
        except redis.RedisError as exc:  # its target out of memory: finished when healed
            record.notes["interrupted"] = f"{type(exc).__name__}: {exc}"
            record.notes["heal_after"] = 5.0

        def finish() -> None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    migration.finish()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            record.notes.update(migration.notes())

        return finish

    def _kill_master(self, fault: Fault, record: FaultRecord) -> Heal:
        cluster = self.dep.cluster
        assert cluster is not None
        node, ranges = cluster_ops.kill_master(cluster, self._provider(fault))
        names = [provider_name(w.index, f) for w in self.dep.all_workers() for f in FLAVORS]

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

        return heal
