"""How long the run's processes waited for a CPU, so that a deadline on a process's progress is
judged on the time it could have run, not on a shared machine's wall clock.

On a loaded machine a process that is ready to run waits in the kernel's run queue: a 1 s
aggregator cycle can take 5 s of wall time without anything being wrong with it. Linux counts
that wait per thread (``/proc/<pid>/task/<tid>/schedstat``, second field, ns). ``WaitRecorder``
samples it every 0.2 s for every process of the run (its most delayed thread), by role
(``a0``, ``a1``, ``w<index>``, ``redis``: the busiest server, ``harness``: this process, which
also runs the fault proxies);
``effective_clock`` (pure) turns the samples into a clock that stands still while the named
roles waited: a deadline measured on it cannot be missed because of the machine's load alone.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Json = dict[str, Any]
PERIOD = 0.2


def run_queue_waits(pid: int) -> dict[int, float] | None:
    """Seconds each live thread of ``pid`` has spent ready to run but waiting for a CPU, by
    thread id; None when the process is gone or the kernel does not say (no schedstat)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    found: dict[int, float] = {}
    for task in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()
            found[int(task)] = int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return found or None


class WaitRecorder:
    """Every ``PERIOD`` s, each role's cumulative wait since the recorder began: ``samples`` of
    ``{"t": time, "w": {role: seconds}}``. A role's wait grows by the most any one thread of its
    processes waited since the last sample (threads wait side by side: their sum would count
    the same delay several times); a new process or thread counts from its first sample."""

    def __init__(self, roles: Callable[[], dict[str, list[int]]]) -> None:
        self.roles = roles
        self.samples: list[Json] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="cpu-wait")
        self._last: dict[tuple[int, int], float] = {}
        self._total: dict[str, float] = {}

    def run(self) -> None:
        while not self.stop.wait(PERIOD):
            self.sample()

    def sample(self) -> None:
        try:
            roles = self.roles()
        except Exception:  # the deployment changing under the read: the next sample
            return
        for role, pids in roles.items():
            grown = 0.0
            for pid in pids:
                for tid, now in (run_queue_waits(pid) or {}).items():
                    grown = max(grown, now - self._last.get((pid, tid), now))
                    self._last[(pid, tid)] = now
            self._total[role] = self._total.get(role, 0.0) + max(0.0, grown)
        totals = {role: round(seconds, 4) for role, seconds in self._total.items()}
        self.samples.append({"t": time.time(), "w": totals})


def effective_clock(samples: list[Json], roles: Iterable[str]) -> Callable[[float], float]:
    """Real time minus what ``roles`` waited for a CPU until then (their waits added: each one
    delays the chain a cycle goes through; between two samples at most the time between them,
    spread evenly). Without samples, real time itself."""
    names = list(roles)
    times, waited = [], []
    last_t, last_w, total = None, dict.fromkeys(names, 0.0), 0.0
    for sample in sorted(samples, key=lambda s: s["t"]):
        now = {n: float(sample["w"].get(n, last_w[n])) for n in names}
        if last_t is not None:
            grown = sum(max(0.0, now[n] - last_w[n]) for n in names)
            total += min(sample["t"] - last_t, grown)
        times.append(float(sample["t"]))
        waited.append(total)
        last_t, last_w = float(sample["t"]), now

    def clock(at: float) -> float:
        i = bisect.bisect_right(times, at)
        if i == 0:
            return at
        if i == len(times):
            return at - waited[-1]
        t0, t1 = times[i - 1], times[i]
        share = (at - t0) / (t1 - t0) if t1 > t0 else 1.0
        return at - (waited[i - 1] + share * (waited[i] - waited[i - 1]))

    return clock


def total_waited(samples: list[Json], role: str) -> float:
    """What ``role`` waited for a CPU over the whole run, in seconds."""
    return max((float(s["w"].get(role, 0.0)) for s in samples), default=0.0)
