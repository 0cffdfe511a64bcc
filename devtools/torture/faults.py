"""The faults themselves: what each kind of fault does to the run's processes, and its heal.

``FaultContext`` holds what every fault needs (the deployment, the key names, the records, the
helpers); ``RedisFaults`` (out of memory, SCRIPT FLUSH, CLIENT PAUSE, restarts, the proxies) and
``ProcessFaults`` (the leader stopped, workers and aggregators killed, worker clocks) are its
kinds here, ``faults_more`` has the foreign data, operator commands and Redis Cluster ones. A
fault method returns its heal (or None when there is nothing to heal).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from devtools.torture import cluster_ops
from devtools.torture.deployment import (
    Deployment,
    plain_redis,
    text,
)
from devtools.torture.ledger import provider_name
from devtools.torture.schedule import Fault
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


class FaultContext:
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


class RedisFaults(FaultContext):
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
            if not keep:  # what Redis held until now (an AOF restart meanwhile too) is gone
                record.notes["emptied_at"] = began
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


class ProcessFaults(FaultContext):
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
