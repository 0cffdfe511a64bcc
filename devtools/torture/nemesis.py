"""The nemesis: each fault of a schedule applied to the run's real processes, and healed.

``Nemesis.run(schedule, t0)`` applies the faults at their times (and their heals ``duration``
later) from the calling thread; operator commands run in threads of their own, as an operator's
shell would. Every fault becomes a record of what was done to which process and when (real
time), which the checker reads: which invariants a fault makes impossible (``data_loss``), where
lost replies may have applied a batch twice (``proxy``), who was paused or killed.
``heal_all()`` ends every fault still in force: the run then quiesces.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from devtools.torture import cluster_ops, tampering
from devtools.torture.deployment import (
    ROOT,
    Deployment,
    plain_redis,
    relaunch_node,
    text,
    wait_until,
)
from devtools.torture.ledger import FLAVORS, provider_name, shard_tags
from devtools.torture.schedule import Fault, Schedule
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect

Heal = Callable[[], None]


@dataclass
class FaultRecord:
    kind: str
    params: dict[str, Any]
    at: float
    start: float
    end: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class OperatorRun:
    action: str
    provider: str | None
    argv: list[str]
    start: float
    end: float = 0.0
    returncode: int | None = None
    output: str = ""
    sent: list[list[str]] = field(default_factory=list)


class Nemesis:
    def __init__(self, deployment: Deployment) -> None:
        self.dep = deployment
        self.keys = Keys(deployment.namespace)
        self.records: list[FaultRecord] = []
        self.operator_runs: list[OperatorRun] = []
        self._heals: list[tuple[float, FaultRecord, Heal]] = []
        self._threads: list[threading.Thread] = []
        self._latest: dict[str, int] = {}
        """The newest fault of each overlapping kind (OOM, each proxy's mode)."""
        self.started = 0.0
        """Real time the schedule began."""

    # -- driving -------------------------------------------------------------------------------

    def run(self, schedule: Schedule, t0: float) -> None:
        for fault in schedule.faults:
            self._heal_due(t0 + fault.at)
            wait = t0 + fault.at - time.time()
            if wait > 0:
                time.sleep(wait)
            self.apply(fault, t0)
        self._heal_due(t0 + schedule.duration)
        time.sleep(max(0.0, t0 + schedule.duration - time.time()))

    def _heal_due(self, until: float) -> None:
        while True:
            due = sorted((h for h in self._heals if h[0] <= until), key=lambda h: h[0])
            if not due:
                return
            when, record, heal = due[0]
            time.sleep(max(0.0, when - time.time()))
            self._heals.remove(due[0])
            self._run_heal(record, heal)

    def _run_heal(self, record: FaultRecord, heal: Heal) -> None:
        try:
            heal()
        except Exception as exc:
            record.error = f"heal: {type(exc).__name__}: {exc}"
        record.end = time.time()

    def apply(self, fault: Fault, t0: float) -> FaultRecord:
        record = FaultRecord(fault.kind, dict(fault.params), fault.at, time.time())
        self.records.append(record)
        try:
            heal = getattr(self, f"_{fault.kind}")(fault, record)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            record.end = time.time()
            return record
        if heal is None:
            record.end = record.end or time.time()
        else:
            after = float(record.notes.pop("heal_after", fault.duration))
            self._heals.append((record.start + after, record, heal))
        return record

    def heal_all(self) -> None:
        self._each_node(lambda node: node.config_set("maxmemory", 0))  # before other heals
        for _, record, heal in sorted(self._heals, key=lambda h: h[0]):
            self._run_heal(record, heal)
        self._heals.clear()
        for thread in self._threads:
            thread.join(60)
        dep = self.dep
        for agg in dep.aggregators:
            agg.signal(signal.SIGCONT)
            if not agg.alive():
                agg.start()
        for proxy in dep.proxies.values():
            proxy.set_mode("pass")
        if dep.redis is not None and not dep.redis.alive():
            dep.redis.start(keep=True)
        if dep.cluster is not None:
            for node in dep.cluster.nodes:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGCONT)
                else:
                    relaunch_node(node)
            dep.cluster.wait_healthy(60)
        self._each_node(lambda node: node.config_set("maxmemory", 0))

    # -- helpers -------------------------------------------------------------------------------

    def _each_node(self, action: Callable[[redis.Redis], Any]) -> list[str]:
        errors = []
        if self.dep.cluster is not None:
            nodes = cluster_ops.all_nodes(self.dep.cluster)
        else:
            assert self.dep.redis is not None
            nodes = [plain_redis(self.dep.redis.port)]
        for node in nodes:
            try:
                action(node)
            except redis.RedisError as exc:
                errors.append(str(exc))
            finally:
                node.close()
        return errors

    def _next(self, what: str) -> int:
        self._latest[what] = self._latest.get(what, 0) + 1
        return self._latest[what]

    def _leader(self) -> str | None:
        connection = connect(self.dep.direct_url, 2.0)
        try:
            raw = connection.get(self.keys.leader_lease)
        finally:
            connection.close()
        return text(raw).split("|")[0] if raw else None

    def _provider(self, fault: Fault) -> str:
        worker = self.dep.workers[int(fault.params["slot"])]
        return provider_name(worker.index, str(fault.params.get("flavor", "ok")))

    # -- Redis ---------------------------------------------------------------------------------

    def _oom(self, fault: Fault, record: FaultRecord) -> Heal:
        def lower(node: redis.Redis) -> None:
            used = int(node.info("memory")["used_memory"])
            node.config_set("maxmemory", used + int(fault.params["headroom"]))

        record.notes["errors"] = self._each_node(lower)
        generation = self._next("oom")

        def heal() -> None:  # a later OOM still in force keeps its limit
            if self._latest["oom"] == generation:
                unset = self._each_node(lambda n: n.config_set("maxmemory", 0))
                record.notes["heal_errors"] = unset

        return heal

    def _script_flush(self, fault: Fault, record: FaultRecord) -> None:
        record.notes["errors"] = self._each_node(lambda node: node.script_flush())

    def _client_pause(self, fault: Fault, record: FaultRecord) -> None:
        ms, mode = int(fault.params["ms"]), str(fault.params["mode"])
        record.notes["errors"] = self._each_node(
            lambda node: node.execute_command("CLIENT", "PAUSE", ms, mode)  # type: ignore[no-untyped-call]
        )
        record.end = record.start + ms / 1000

    def _restart(self, fault: Fault, record: FaultRecord, keep: bool) -> Heal:
        server = self.dep.redis
        assert server is not None
        began = time.time()
        server.kill(signal.SIGKILL if fault.params["signal"] == "KILL" else signal.SIGTERM)
        record.notes["killed_at"] = time.time()
        record.notes["kill_seconds"] = round(record.notes["killed_at"] - began, 3)

        def restart() -> None:
            began = time.time()
            server.start(keep=keep)
            record.notes["restarted_at"] = time.time()
            record.notes["start_seconds"] = round(time.time() - began, 3)
            if not keep:
                record.notes["data_loss"] = "all"

        return restart

    def _restart_aof(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._restart(fault, record, keep=True)

    def _restart_empty(self, fault: Fault, record: FaultRecord) -> Heal:
        record.notes["data_loss"] = "all"
        return self._restart(fault, record, keep=False)

    # -- the network ---------------------------------------------------------------------------

    def _proxy(self, fault: Fault, record: FaultRecord, mode: str) -> Heal:
        proxy = self.dep.proxies[str(fault.params["target"])]
        proxy.set_mode(mode, int(fault.params.get("ms", 0)))
        record.notes["incidents_before"] = proxy.incidents
        generation = self._next(proxy.name)

        def heal() -> None:  # a later mode on this proxy stays until its own heal
            if self._latest[proxy.name] == generation:
                proxy.set_mode("pass")
            record.notes["incidents_after"] = proxy.incidents

        return heal

    def _proxy_delay(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._proxy(fault, record, "delay")

    def _proxy_drop(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._proxy(fault, record, "drop")

    def _proxy_cut(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._proxy(fault, record, "cut")

    # -- processes -----------------------------------------------------------------------------

    def _aggregator(self, name: str | None) -> Any:
        return next((a for a in self.dep.aggregators if a.name == name), None)

    def _leader_stop(self, fault: Fault, record: FaultRecord) -> Heal | None:
        target = self._aggregator(self._leader())
        if target is None or not target.alive():
            record.notes["skipped"] = "no live leader"
            return None
        target.signal(signal.SIGSTOP)
        record.notes["target"] = target.name
        return lambda: target.signal(signal.SIGCONT)

    def _kill_aggregator(self, fault: Fault, record: FaultRecord) -> Heal | None:
        leader = self._leader()
        if fault.params["role"] == "leader":
            target = self._aggregator(leader)
        else:
            target = next((a for a in self.dep.aggregators if a.name != leader), None)
        if target is None or not target.alive():
            record.notes["skipped"] = "no such replica alive"
            return None
        target.kill()
        record.notes["target"] = target.name
        return target.start  # type: ignore[no-any-return]

    def _kill_worker(self, fault: Fault, record: FaultRecord) -> None:
        slot = int(fault.params["slot"])
        worker = self.dep.workers[slot]
        worker.kill()
        self.dep.retired.append(worker)
        replacement = self.dep.add_worker(slot)
        record.notes.update(index=worker.index, replacement=replacement.index)

    def _clock(self, fault: Fault, record: FaultRecord, seconds: float) -> None:
        worker = self.dep.workers[int(fault.params["slot"])]
        target = worker.clock_target + float(fault.params["delta"])
        worker.set_clock(target, seconds)
        record.notes.update(index=worker.index, target=target, seconds=seconds)

    def _clock_step(self, fault: Fault, record: FaultRecord) -> None:
        self._clock(fault, record, 0.0)

    def _clock_slew(self, fault: Fault, record: FaultRecord) -> None:
        self._clock(fault, record, max(fault.duration, 0.1))

    # -- foreign data --------------------------------------------------------------------------

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

    # -- Redis Cluster -------------------------------------------------------------------------

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
