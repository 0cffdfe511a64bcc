"""A fault schedule: a seed -> a list of timed faults, pure and deterministic.

``make_schedule(seed, duration, cluster=...)`` draws every fault from ``random.Random(seed)``
alone, so a seed printed by a failing run replays the same schedule; ``Schedule.to_json()``
and ``Schedule.from_json()`` carry it to a file (``--schedule``) and a regression test pins one
by hand. Which process a fault hits is named by role (``leader``, worker index), resolved when
the fault is applied: the run itself is real processes, not a simulation.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

Params = dict[str, Any]


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` applied at ``at`` seconds into the run, healed ``duration`` seconds
    later (0: instantaneous)."""

    at: float
    kind: str
    duration: float = 0.0
    params: Params = field(default_factory=dict)

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        span = f" for {self.duration:.1f}s" if self.duration else ""
        return f"t={self.at:5.1f}s {self.kind}{span} {extra}".rstrip()


@dataclass(frozen=True)
class Schedule:
    seed: int
    duration: float
    cluster: bool
    faults: tuple[Fault, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        data = json.loads(text)
        faults = tuple(Fault(**fault) for fault in data["faults"])
        return cls(int(data["seed"]), float(data["duration"]), bool(data["cluster"]), faults)

    def describe(self) -> str:
        mode = "cluster" if self.cluster else "single Redis"
        head = f"seed {self.seed}, {self.duration:g} s on {mode}, {len(self.faults)} faults"
        return "\n".join([head, *(f"  {fault.describe()}" for fault in self.faults)])

    def kinds(self) -> set[str]:
        return {fault.kind for fault in self.faults}


def _pick(rng: random.Random, values: Iterable[Any]) -> Any:
    return rng.choice(list(values))


def _oom(rng: random.Random, workers: int) -> tuple[float, Params]:
    headroom = _pick(rng, (0, 16_384, 262_144, 2_097_152))
    return rng.uniform(1.0, 4.0), {"headroom": headroom}


def _pause(rng: random.Random, workers: int) -> tuple[float, Params]:
    return 0.0, {"ms": _pick(rng, (300, 1500, 3000)), "mode": _pick(rng, ("WRITE", "ALL"))}


def _restart(rng: random.Random, workers: int) -> tuple[float, Params]:
    return rng.uniform(0.5, 3.0), {"signal": _pick(rng, ("KILL", "TERM"))}


def _proxy(rng: random.Random, workers: int) -> tuple[float, Params]:
    return rng.uniform(0.5, 4.0), {"target": _pick(rng, ("workers", "workers", "a1"))}


def _delay(rng: random.Random, workers: int) -> tuple[float, Params]:
    duration, params = _proxy(rng, workers)
    return duration, params | {"ms": _pick(rng, (50, 400, 2500))}


def _leader_stop(rng: random.Random, workers: int) -> tuple[float, Params]:
    return rng.uniform(2.0, 5.0), {}  # past the lease (1.5 breaker intervals of 1 s)


def _kill_worker(rng: random.Random, workers: int) -> tuple[float, Params]:
    return 0.0, {"slot": rng.randrange(workers)}


def _kill_aggregator(rng: random.Random, workers: int) -> tuple[float, Params]:
    return rng.uniform(0.5, 4.0), {"role": _pick(rng, ("leader", "follower"))}


def _clock(rng: random.Random, workers: int) -> tuple[float, Params]:
    delta = _pick(rng, (-600.0, 600.0, -600.0 * rng.random(), 600.0 * rng.random()))
    return 0.0, {"slot": rng.randrange(workers), "delta": round(delta, 3)}


def _slew(rng: random.Random, workers: int) -> tuple[float, Params]:
    _, params = _clock(rng, workers)
    return rng.uniform(2.0, 8.0), params


def _instant(rng: random.Random, workers: int) -> tuple[float, Params]:
    return 0.0, {}


def _poison(rng: random.Random, workers: int) -> tuple[float, Params]:
    return 0.0, {"slot": rng.randrange(workers), "variant": rng.randrange(1 << 16)}


def _operator(rng: random.Random, workers: int) -> tuple[float, Params]:
    action = _pick(rng, ("status", "status", "inspect", "inspect", "open", "close", "reset"))
    slot, flavor = rng.randrange(workers), _pick(rng, ("ok", "flaky"))
    return 0.0, {"action": action, "slot": slot, "flavor": flavor, "detail": rng.random() < 0.5}


def _slot_move(rng: random.Random, workers: int) -> tuple[float, Params]:
    return 0.0, {"slot": rng.randrange(workers), "flavor": _pick(rng, ("ok", "flaky"))}


def _master_down(rng: random.Random, workers: int) -> tuple[float, Params]:
    return rng.uniform(1.0, 3.0), {"slot": rng.randrange(workers), "flavor": "ok"}


def _master_stall(rng: random.Random, workers: int) -> tuple[float, Params]:
    # about the node timeout (1 s): replaced or not, resumed during the election or after it
    return rng.uniform(0.5, 3.0), {"slot": rng.randrange(workers), "flavor": "ok"}


Drawer = Callable[[random.Random, int], tuple[float, Params]]

SINGLE_ONLY: dict[str, Drawer] = {
    "restart_aof": _restart,
    "restart_empty": _restart,
    "proxy_delay": _delay,
    "proxy_drop": _proxy,
    "proxy_cut": _proxy,
}


def _reshard(rng: random.Random, workers: int) -> tuple[float, Params]:
    _, params = _slot_move(rng, workers)
    if rng.random() < 0.3:  # a slot held half-moved, as a migration of big keys does
        return rng.uniform(2.0, 4.0), params | {"stall": True}
    return 0.0, params


CLUSTER_ONLY: dict[str, Drawer] = {
    "failover": _slot_move,
    "reshard": _reshard,
    "kill_master": _master_down,
    "stop_master": _master_stall,
}
BOTH: dict[str, Drawer] = {
    "oom": _oom,
    "script_flush": _instant,
    "client_pause": _pause,
    "leader_stop": _leader_stop,
    "kill_worker": _kill_worker,
    "kill_aggregator": _kill_aggregator,
    "clock_step": _clock,
    "clock_slew": _slew,
    "poison": _poison,
    "newer_snapshot": _instant,
    "operator": _operator,
}
ALL_KINDS: tuple[str, ...] = tuple(sorted({*SINGLE_ONLY, *CLUSTER_ONLY, *BOTH}))
DATA_LOSS_KINDS = frozenset({"restart_empty", "kill_master", "stop_master"})
"""Faults after which Redis may no longer hold what it acknowledged (by design; a stopped master
only when it was replaced meanwhile)."""
WEIGHTS: Mapping[str, float] = {
    "operator": 3,
    "oom": 2,
    "script_flush": 2,
    "restart_empty": 0.5,  # suspends most exactness checks for the run: drawn less often
    "kill_master": 0.5,
    "stop_master": 0.5,
}


def kinds_for(cluster: bool, only: Iterable[str] | None = None) -> list[str]:
    """The fault kinds a run on this backend draws from (``only``: a subset, by name)."""
    table = {**BOTH, **(CLUSTER_ONLY if cluster else SINGLE_ONLY)}
    if only is None:
        return sorted(table)
    wanted = set(only)
    unknown = wanted - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)} (known: {list(ALL_KINDS)})")
    return sorted(wanted & set(table))


def make_schedule(
    seed: int,
    duration: float,
    cluster: bool = False,
    only: Iterable[str] | None = None,
    workers: int = 3,
    per_second: float = 0.35,
) -> Schedule:
    """About ``per_second`` faults a second between 1 s and ``duration`` - 2 s, each kind drawn
    (weighted) from ``kinds_for(cluster, only)``, its parameters from the same generator."""
    rng = random.Random(seed)
    kinds = kinds_for(cluster, only)
    if not kinds:
        return Schedule(seed, duration, cluster, ())
    table = {**BOTH, **CLUSTER_ONLY, **SINGLE_ONLY}
    weights = [WEIGHTS.get(kind, 1) for kind in kinds]
    count = max(1, round(per_second * max(0.0, duration - 3.0)))
    faults = []
    for _ in range(count):
        at = round(rng.uniform(1.0, max(1.5, duration - 2.0)), 2)
        kind = rng.choices(kinds, weights)[0]
        length, params = table[kind](rng, workers)
        length = round(min(length, max(0.0, duration - at)), 2)
        faults.append(Fault(at, kind, length, params))
    faults.sort(key=lambda fault: (fault.at, fault.kind))
    return Schedule(seed, duration, cluster, tuple(faults))
