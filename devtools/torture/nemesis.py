"""The nemesis: each fault of a schedule applied to the run's real processes, and healed.

``Nemesis.run(schedule, t0)`` applies the faults at their times (and their heals ``duration``
later) from the calling thread; operator commands run in threads of their own, as an operator's
shell would. Every fault becomes a record of what was done to which process and when (real
time), which the checker reads: which invariants a fault makes impossible (``data_loss``), where
lost replies may have applied a batch twice (``proxy``), who was paused or killed.
``heal_all()`` ends every fault still in force: the run then quiesces.
"""

from __future__ import annotations

import signal
import time

from devtools.torture.deployment import relaunch_node
from devtools.torture.faults import FaultRecord, Heal, ProcessFaults, RedisFaults
from devtools.torture.faults_more import ClusterFaults, DataFaults
from devtools.torture.schedule import Fault, Schedule


class Nemesis(RedisFaults, ProcessFaults, DataFaults, ClusterFaults):
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
