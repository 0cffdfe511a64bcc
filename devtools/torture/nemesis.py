"""The nemesis: each fault of a schedule applied to the run's real processes, and healed.

``Nemesis.run(schedule, t0)`` applies the faults at their times (and their heals ``duration``
later) from the calling thread; operator commands run in threads of their own, as an operator's
shell would. Every fault becomes a record of what was done to which process and when (real
time), which the checker reads: which invariants a fault makes impossible (``data_loss``), where
lost replies may have applied a batch twice (``proxy``), who was paused or killed.
``heal_all()`` ends every fault still in force: the run then quiesces.

The nemesis holds one object per fault family (``faults_*``), each knowing only its own kinds
(``handlers()``), and keeps the schedule's state itself: the records, the heals due.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from devtools.torture.deployment import Deployment
from devtools.torture.faults import Apply, FaultFamily, FaultRecord, Heal, HealLater, Targets
from devtools.torture.faults_cluster import ClusterFaults
from devtools.torture.faults_data import DataFaults, OperatorFaults, OperatorRun
from devtools.torture.faults_process import ProcessFaults
from devtools.torture.faults_redis import NetworkFaults, RedisFaults
from devtools.torture.schedule import Fault, Schedule

FINAL_HEAL_SECONDS = 30.0
"""How long ``heal_all`` keeps retrying a heal that asks to be run later (every limit lifted)."""


def dispatch(families: tuple[FaultFamily, ...]) -> dict[str, Apply]:
    """Every family's handlers by kind; a kind claimed twice is a programming error."""
    table: dict[str, Apply] = {}
    for family in families:
        for kind, handler in family.handlers().items():
            if kind in table:
                raise ValueError(f"fault kind {kind!r} claimed by two families")
            table[kind] = handler
    return table


class Nemesis:
    def __init__(self, deployment: Deployment) -> None:
        targets = Targets(deployment)
        self.redis = RedisFaults(targets)
        self.network = NetworkFaults(deployment)
        self.processes = ProcessFaults(targets)
        self.data = DataFaults(targets)
        self.operators = OperatorFaults(targets)
        self.cluster = ClusterFaults(targets)
        families = (self.redis, self.network, self.processes, self.data, self.operators)
        self.handlers: Mapping[str, Apply] = dispatch((*families, self.cluster))
        self.records: list[FaultRecord] = []
        self._heals: list[tuple[float, FaultRecord, Heal]] = []
        self.started = 0.0
        """Real time the schedule began."""

    @property
    def operator_runs(self) -> list[OperatorRun]:
        return self.operators.runs

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

    def _run_heal(self, record: FaultRecord, heal: Heal, *, final: bool = False) -> None:
        deadline = time.monotonic() + FINAL_HEAL_SECONDS
        while True:
            try:
                heal()
            except HealLater as later:
                if not final:
                    self._heals.append((time.time() + later.after, record, heal))
                    return
                if time.monotonic() < deadline:
                    time.sleep(later.after)
                    continue
                record.error = f"heal: not done after {FINAL_HEAL_SECONDS:g} s: {later}"
            except Exception as exc:
                record.error = f"heal: {type(exc).__name__}: {exc}"
            record.end = time.time()
            return

    def apply(self, fault: Fault, t0: float) -> FaultRecord:
        record = FaultRecord(fault.kind, dict(fault.params), fault.at, time.time())
        self.records.append(record)
        try:
            handler = self.handlers.get(fault.kind)
            if handler is None:
                raise LookupError(f"no fault family applies {fault.kind!r}")
            heal = handler(fault, record)
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
        self.redis.lift_limits()  # before other heals: they may need to write
        # every heal once before any waits for its turn to finish: one that cannot yet (a
        # cluster node resumed while another is still stopped) waits for the heals after it
        pending, self._heals = sorted(self._heals, key=lambda h: h[0]), []
        for _, record, heal in pending:
            self._run_heal(record, heal)
        for _, record, heal in sorted(self._heals, key=lambda h: h[0]):
            self._run_heal(record, heal, final=True)
        self._heals.clear()
        self.operators.restore()
        self.processes.restore()
        self.network.restore()
        self.redis.restore()
