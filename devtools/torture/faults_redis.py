"""Faults of the Redis server (out of memory, SCRIPT FLUSH, CLIENT PAUSE, restarts with and
without its append-only file) and of the network in front of it (the fault proxies)."""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping

import redis

from devtools.torture.deployment import Deployment, relaunch_node
from devtools.torture.faults import Apply, FaultRecord, Generations, Heal, Targets
from devtools.torture.schedule import Fault


class RedisFaults:
    """What is done to the Redis servers themselves; ``lift_limits()`` and ``restore()`` bring
    every server back (running, answering, no memory limit) when the run quiesces."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.generations = Generations()

    def handlers(self) -> Mapping[str, Apply]:
        return {
            "oom": self.oom,
            "script_flush": self.script_flush,
            "client_pause": self.client_pause,
            "restart_aof": self.restart_aof,
            "restart_empty": self.restart_empty,
        }

    def oom(self, fault: Fault, record: FaultRecord) -> Heal:
        def lower(node: redis.Redis) -> None:
            used = int(node.info("memory")["used_memory"])
            node.config_set("maxmemory", used + int(fault.params["headroom"]))

        record.notes["errors"] = self.targets.each_node(lower)
        generation = self.generations.next("oom")

        def heal() -> None:  # a later OOM still in force keeps its limit
            if self.generations.is_latest("oom", generation):
                unset = self.targets.each_node(lambda n: n.config_set("maxmemory", 0))
                record.notes["heal_errors"] = unset

        return heal

    def script_flush(self, fault: Fault, record: FaultRecord) -> None:
        record.notes["errors"] = self.targets.each_node(lambda node: node.script_flush())

    def client_pause(self, fault: Fault, record: FaultRecord) -> None:
        ms, mode = int(fault.params["ms"]), str(fault.params["mode"])
        record.notes["errors"] = self.targets.each_node(
            lambda node: node.execute_command("CLIENT", "PAUSE", ms, mode)  # type: ignore[no-untyped-call]
        )
        record.end = record.start + ms / 1000

    def _restart(self, fault: Fault, record: FaultRecord, keep: bool) -> Heal:
        server = self.targets.dep.redis
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

    def restart_aof(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._restart(fault, record, keep=True)

    def restart_empty(self, fault: Fault, record: FaultRecord) -> Heal:
        record.notes["data_loss"] = "all"
        return self._restart(fault, record, keep=False)

    def lift_limits(self) -> None:
        """No memory limit on any server (before other heals: they may need to write)."""
        self.targets.each_node(lambda node: node.config_set("maxmemory", 0))

    def restore(self) -> None:
        """Every server running (continued, or started again), the cluster healthy, no limit."""
        dep = self.targets.dep
        if dep.redis is not None and not dep.redis.alive():
            dep.redis.start(keep=True)
        if dep.cluster is not None:
            for node in dep.cluster.nodes:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGCONT)
                else:
                    relaunch_node(node)
            dep.cluster.wait_healthy(60)
        self.lift_limits()


class NetworkFaults:
    """The fault proxies between the processes and a single Redis: replies delayed, dropped
    (the connection kept) or cut (the connection closed); ``restore()`` passes everything."""

    def __init__(self, deployment: Deployment) -> None:
        self.dep = deployment
        self.generations = Generations()

    def handlers(self) -> Mapping[str, Apply]:
        return {
            "proxy_delay": self.proxy_delay,
            "proxy_drop": self.proxy_drop,
            "proxy_cut": self.proxy_cut,
        }

    def _proxy(self, fault: Fault, record: FaultRecord, mode: str) -> Heal:
        proxy = self.dep.proxies[str(fault.params["target"])]
        proxy.set_mode(mode, int(fault.params.get("ms", 0)))
        record.notes["incidents_before"] = proxy.incidents
        generation = self.generations.next(proxy.name)

        def heal() -> None:  # a later mode on this proxy stays until its own heal
            if self.generations.is_latest(proxy.name, generation):
                proxy.set_mode("pass")
            record.notes["incidents_after"] = proxy.incidents

        return heal

    def proxy_delay(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._proxy(fault, record, "delay")

    def proxy_drop(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._proxy(fault, record, "drop")

    def proxy_cut(self, fault: Fault, record: FaultRecord) -> Heal:
        return self._proxy(fault, record, "cut")

    def restore(self) -> None:
        for proxy in self.dep.proxies.values():
            proxy.set_mode("pass")
