"""Faults of the run's processes: the leader stopped past its lease, workers and aggregators
killed, a worker's clock stepped or slewed."""

from __future__ import annotations

import signal
from collections.abc import Mapping

from devtools.torture.deployment import AggregatorProcess
from devtools.torture.faults import Apply, FaultRecord, Heal, Targets
from devtools.torture.schedule import Fault


class ProcessFaults:
    """What is done to aggregators and workers; ``restore()`` continues every stopped
    aggregator and starts every dead one again."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets

    def handlers(self) -> Mapping[str, Apply]:
        return {
            "leader_stop": self.leader_stop,
            "kill_aggregator": self.kill_aggregator,
            "kill_worker": self.kill_worker,
            "clock_step": self.clock_step,
            "clock_slew": self.clock_slew,
        }

    def _aggregator(self, name: str | None) -> AggregatorProcess | None:
        return next((a for a in self.targets.dep.aggregators if a.name == name), None)

    def leader_stop(self, fault: Fault, record: FaultRecord) -> Heal | None:
        target = self._aggregator(self.targets.leader())
        if target is None or not target.alive():
            record.notes["skipped"] = "no live leader"
            return None
        target.signal(signal.SIGSTOP)
        record.notes["target"] = target.name
        return lambda: target.signal(signal.SIGCONT)

    def kill_aggregator(self, fault: Fault, record: FaultRecord) -> Heal | None:
        leader = self.targets.leader()
        if fault.params["role"] == "leader":
            target = self._aggregator(leader)
        else:
            target = next((a for a in self.targets.dep.aggregators if a.name != leader), None)
        if target is None or not target.alive():
            record.notes["skipped"] = "no such replica alive"
            return None
        target.kill()
        record.notes["target"] = target.name
        return target.start

    def kill_worker(self, fault: Fault, record: FaultRecord) -> None:
        dep = self.targets.dep
        slot = int(fault.params["slot"])
        worker = dep.workers[slot]
        worker.kill()
        dep.retired.append(worker)
        replacement = dep.add_worker(slot)
        record.notes.update(index=worker.index, replacement=replacement.index)

    def _clock(self, fault: Fault, record: FaultRecord, seconds: float) -> None:
        worker = self.targets.dep.workers[int(fault.params["slot"])]
        target = worker.clock_target + float(fault.params["delta"])
        worker.set_clock(target, seconds)
        record.notes.update(index=worker.index, target=target, seconds=seconds)

    def clock_step(self, fault: Fault, record: FaultRecord) -> None:
        self._clock(fault, record, 0.0)

    def clock_slew(self, fault: Fault, record: FaultRecord) -> None:
        self._clock(fault, record, max(fault.duration, 0.1))

    def restore(self) -> None:
        for agg in self.targets.dep.aggregators:
            agg.signal(signal.SIGCONT)
            if not agg.alive():
                agg.start()
