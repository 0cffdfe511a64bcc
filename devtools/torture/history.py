"""Everything a run recorded, as plain data: what the checker reads, and what ``--keep`` saves
(``history.json``) so a failing run can be checked again without running it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from devtools.torture.ledger import FLAVORS, WorkerLedger, provider_name

Json = dict[str, Any]


@dataclass
class History:
    seed: int
    cluster: bool
    namespace: str
    window: float
    max_batch: int
    t0: float
    """Real time the schedule started."""
    schedule: str
    """The schedule as JSON (``Schedule.to_json``)."""
    workers: list[WorkerLedger] = field(default_factory=list)
    faults: list[Json] = field(default_factory=list)
    """What the nemesis did: kind, params, start/end (real time), notes (data_loss...)."""
    operators: list[Json] = field(default_factory=list)
    """Operator commands: action, provider, start/end, return code, the Redis commands sent."""
    command_flags: dict[str, list[str]] = field(default_factory=dict)
    samples: list[Json] = field(default_factory=list)
    scrapes: list[Json] = field(default_factory=list)
    waits: list[Json] = field(default_factory=list)
    """What each process waited for a CPU, cumulative, by role (``cpu_wait.WaitRecorder``)."""
    incidents: dict[str, int] = field(default_factory=dict)
    """Connections per proxy that lost a reply (a request may have run unacknowledged)."""
    redis: Json = field(default_factory=dict)
    """The final Redis state (``final.read_redis``)."""
    replicas: list[Json] = field(default_factory=list)
    """Each replica's final exports and readiness (``final.read_replica``)."""
    quiesced_at: float = 0.0
    written_at: float = 0.0
    """Real time the last worker had closed its client (every write done)."""
    problems: list[str] = field(default_factory=list)
    """What went wrong in the run itself: a worker that would not stop, a replica that never
    served a fresh snapshot, a process that died on its own, an uncaught traceback."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> History:
        data = json.loads(text)
        workers = []
        for raw in data.pop("workers"):
            raw["progress"] = [tuple(point) for point in raw["progress"]]
            raw["counters"] = tuple(raw["counters"])
            workers.append(WorkerLedger(**raw))
        return cls(workers=workers, **data)

    def providers(self) -> dict[str, WorkerLedger]:
        """Every provider of the run -> the worker that wrote it."""
        return {provider_name(w.index, f): w for w in self.workers for f in FLAVORS}
