"""Pure checks over what the run sampled: counters never going backwards, who changed a breaker,
what operator commands sent, and how the run ended.

Sampled, not logged: a change first seen in a sample happened after the previous sample's read
began (``t0``) and before this one's ended (``t1``); the lease with token F surely ended before
the first sample that saw the lease not held under F (or held under a larger token). A breaker
change whose fence is F and which happened after that is a deposed leader's write.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from devtools.torture.cpu_wait import effective_clock
from devtools.torture.final import exported
from gatewayz_protocol.keys import Keys

if TYPE_CHECKING:
    from devtools.torture.checker import Verdict
    from devtools.torture.history import History

PER_PROCESS = (
    "gatewayz_aggregator_cycles_total",
    "gatewayz_aggregator_cycles_failed_total",
    "gatewayz_aggregator_breaker_cycles_failed_total",  # "cycles this replica ran"
    "gatewayz_redis_values_skipped_total",  # "skipped by this replica"
)
"""Counters of one aggregator process (docs "Metrics"): they start again at 0 when it is
restarted."""
PER_REDIS_PROCESS = ("gatewayz_redis_evicted_keys_total",)
"""Redis's own count since it started: it starts again at 0 when Redis is restarted."""
SCRIPTS = frozenset({"EVAL", "EVALSHA", "FCALL"})


def _loss_times(history: History) -> list[float]:
    """When Redis lost data: an empty restart began (a restart with AOF in the meantime may
    have brought everything back until then), a cluster master was killed."""
    times = []
    for fault in history.faults:
        notes = fault.get("notes", {})
        if notes.get("data_loss"):
            times.append(float(notes.get("emptied_at", notes.get("killed_at", fault["start"]))))
    return sorted(times)


def _restart_times(history: History) -> list[float]:
    return sorted(
        float(f["notes"]["restarted_at"]) for f in history.faults if "restarted_at" in f["notes"]
    )


def check_monotonic(history: History, verdict: Verdict) -> None:
    """Per replica, per series: each value at least the last one, but where a reset is by
    design: a per-process counter after that process was restarted, Redis's eviction count
    after a Redis restart, anything after Redis lost its data (once per loss)."""
    losses, restarts = _loss_times(history), _restart_times(history)
    if losses:
        verdict.suspend(
            "counters_monotonic",
            f"Redis lost its data {len(losses)} time(s): counters may restart from 0 once after "
            "each (docs 'Metrics'); checked elsewhere",
        )
    last: dict[tuple[str, str], tuple[float, int, float]] = {}
    resets: dict[tuple[str, str], int] = {}
    for scrape in sorted(history.scrapes, key=lambda s: s["t0"]):
        replica, generation = scrape["replica"], scrape["generation"]
        for series, value in scrape["values"].items():
            key = (replica, series)
            verdict.count("counter values scraped")
            if key in last and value < last[key][0]:
                _, old_generation, old_t = last[key]
                name = series.split("{")[0]
                by_design = (name in PER_PROCESS and generation != old_generation) or (
                    name in PER_REDIS_PROCESS and any(old_t < t <= scrape["t1"] for t in restarts)
                )
                allowed = sum(1 for t in losses if t <= scrape["t1"])
                if not by_design and resets.get(key, 0) < allowed:
                    # one reset per loss, counted: a replica down across two losses shows the
                    # first reset only after the second (seed 190004)
                    resets[key] = resets.get(key, 0) + 1
                    by_design = True
                if not by_design:
                    verdict.fail(
                        "counters_monotonic",
                        f"{replica}: {series} went from {last[key][0]:g} to {value:g} at "
                        f"t={scrape['t1'] - history.t0:.1f}s",
                    )
            last[key] = (value, generation, scrape["t1"])


SAME_CYCLE_SPAN = 5.0
"""Seconds within which two replicas serving one snapshot number must serve one snapshot: a
number seen again much later may be a new one (after Redis lost its counter and every replica
that knew the old number was restarted, numbering starts again lower)."""


def check_same_cycle(history: History, verdict: Verdict) -> None:
    """Two replicas serving the same snapshot number (within ``SAME_CYCLE_SPAN``) serve the same
    provider series (docs "Two replicas": identical series from the same cycle). A snapshot a
    replica began serving before Redis lost its data is left out after the loss: the lost cycle
    counter restarts above the number the new leader knew, which may be one still served."""
    losses = _loss_times(history)
    served: dict[tuple[str, str], dict[str, float]] = {}
    serving_since: dict[str, tuple[float, float]] = {}
    recent: dict[float, list[dict[str, Any]]] = {}
    for scrape in sorted(history.scrapes, key=lambda s: s["t0"]):
        if "served" in scrape:
            served[(scrape["replica"], scrape["digest"])] = scrape["served"]
        if scrape.get("cycle") is None:
            continue
        since = serving_since.get(scrape["replica"])
        if since is None or since[0] != scrape["cycle"]:
            since = serving_since[scrape["replica"]] = (scrape["cycle"], float(scrape["t0"]))
        if any(since[1] < t <= scrape["t0"] for t in losses):
            continue
        near = recent.setdefault(float(scrape["cycle"]), [])
        near[:] = [
            s
            for s in near
            if scrape["t0"] - s["t0"] <= SAME_CYCLE_SPAN
            and not any(s["t0"] < t <= scrape["t0"] for t in losses)
        ]
        other = next(
            (
                s
                for s in near
                if s["replica"] != scrape["replica"]
                and s["digest"] != scrape["digest"]
                and s.get("code") == scrape.get("code")  # not two versions of the code
            ),
            None,
        )
        near.append(scrape)
        if other is None:
            continue
        one = served.get((other["replica"], other["digest"]), {})
        two = served.get((scrape["replica"], scrape["digest"]), {})
        differ = sorted(k for k in one.keys() | two.keys() if one.get(k) != two.get(k))
        example = [(k, one.get(k), two.get(k)) for k in differ[:2]]
        verdict.fail(
            "replicas_agree",
            f"cycle {scrape['cycle']:g}: {other['replica']} and {scrape['replica']} serve "
            f"different provider series at t={scrape['t1'] - history.t0:.1f}s "
            f"({len(differ)} differ, e.g. {example})",
        )
        near.clear()


STALL_LIMIT = 5.0
"""Seconds a replica may serve one snapshot (1 s cycles) while nothing excuses it."""
EXCUSES = {
    "restart_aof": 5.0, "restart_empty": 5.0, "client_pause": 5.0, "leader_stop": 5.0,
    "kill_aggregator": 5.0, "kill_master": 8.0, "stop_master": 8.0, "failover": 8.0,
}  # fmt: skip
"""Faults that stop every replica's cycles, and for how long after they end (docs: a
failed cycle, a takeover within 2 breaker intervals, a failover detected in about 2 s)."""


STARVED = 1.0
"""Seconds a 50 ms read of the sampler may take, or pass between two of them, before the
machine counts as starved there (every process of the run waits for a core)."""


def starved_windows(history: History) -> list[tuple[float, float]]:
    """When the harness's own sampler stalled (a read over ``STARVED`` s, or that long between
    two): the machine, shared by every process of the run and others', was starved, and no
    deadline on a process's progress can be judged there (widened by 1 s before, 3 s after)."""
    samples = sorted(history.samples, key=lambda s: s["t0"])
    windows = [(s["t0"] - 1.0, s["t1"] + 3.0) for s in samples if s["t1"] - s["t0"] > STARVED]
    for one, two in itertools.pairwise(samples):
        if two["t0"] - one["t1"] > STARVED:
            windows.append((one["t1"] - 1.0, two["t0"] + 3.0))
    return sorted(windows)


def _excused(history: History, replica: str) -> list[tuple[float, float]]:
    windows = starved_windows(history)
    for fault in history.faults:
        grace = EXCUSES.get(fault["kind"])
        if grace is None and fault["params"].get("target") == replica:
            grace = 5.0  # a proxy fault between this replica and Redis
        if grace is None and (fault.get("notes") or {}).get("interrupted"):
            # a slot move left half done until its heal: Redis answers TRYAGAIN to the
            # multi-key commands of that slot (a cycle's scripts and transactions) meanwhile
            grace = 3.0
        if grace is not None:
            end = float(fault.get("end") or fault["start"])
            windows.append((float(fault["start"]), end + grace))
    return windows


def _longest_unexcused(low: float, high: float, windows: list[tuple[float, float]]) -> float:
    longest, at = 0.0, low
    for start, end in sorted(windows):
        if end <= at or start >= high:
            continue
        longest = max(longest, min(start, high) - at)
        at = max(at, end)
    return max(longest, high - at)


def check_snapshots_advance(history: History, verdict: Verdict) -> None:
    """Each replica serves a newer snapshot every few seconds unless a fault stops its cycles
    (Redis down or paused, the replica stopped, killed, cut off, a master failing over).

    Measured on the replica's effective clock (``cpu_wait``): the seconds it, Redis or the
    harness (its proxy, its scrapes) waited for a CPU do not count, so a loaded machine alone
    cannot make a cycle late, while a cycle that is stuck or failing still is."""
    for replica in sorted({s["replica"] for s in history.scrapes}):
        scrapes = [s for s in history.scrapes if s["replica"] == replica and s.get("cycle")]
        clock = effective_clock(history.waits, (replica, "redis", "harness"))
        windows = [(clock(low), clock(high)) for low, high in _excused(history, replica)]
        changed_at, last = None, None
        for scrape in sorted(scrapes, key=lambda s: s["t0"]):
            if scrape["cycle"] != last or scrape is scrapes[-1]:
                if changed_at is not None:
                    stall = _longest_unexcused(clock(changed_at), clock(scrape["t0"]), windows)
                    if stall > STALL_LIMIT:
                        span = clock(scrape["t0"]) - clock(changed_at)
                        waited = scrape["t0"] - changed_at - span
                        verdict.fail(
                            "snapshots_advance",
                            f"{replica} served cycle {last:g} for {stall:.1f} s with no fault to "
                            f"excuse it (until t={scrape['t0'] - history.t0:.1f}s; "
                            f"{waited:.1f} s waiting for a CPU left out)",
                        )
                changed_at, last = float(scrape["t0"]), scrape["cycle"]


def _token(lease: str | None) -> int | None:
    if not lease or "|" not in lease:
        return None
    try:
        return int(lease.rsplit("|", 1)[1])
    except ValueError:
        return None


def _segments(history: History) -> Iterator[list[dict[str, Any]]]:
    """The samples between two data losses (tokens and epochs start again after one)."""
    losses = _loss_times(history)
    samples = sorted((s for s in history.samples if "error" not in s), key=lambda s: s["t0"])
    bounds = [-math.inf, *losses, math.inf]
    for low, high in itertools.pairwise(bounds):  # a sample read across a loss belongs to none
        yield [s for s in samples if low <= s["t0"] and s["t1"] < high]


def lease_over(samples: list[dict[str, Any]], token: int) -> float | None:
    """The end (``t1``) of the first sample showing the lease of ``token`` over: held under
    another token after it was seen, or under a larger token at all."""
    seen = False
    for sample in samples:
        holder = _token(sample["lease"])
        if holder == token:
            seen = True
        elif (seen or (holder is not None and holder > token)) and holder != token:
            return float(sample["t1"])
    return None


def _operator_windows(history: History, provider: str) -> list[tuple[float, float]]:
    return [
        (float(run["start"]), float(run["end"] or math.inf))
        for run in history.operators
        if run["provider"] == provider and run["action"] in ("open", "close", "reset")
    ]


def check_breakers(history: History, verdict: Verdict) -> None:
    for samples in _segments(history):
        providers = sorted({p for s in samples for p in s["breakers"]})
        for provider in providers:
            windows = _operator_windows(history, provider)
            previous: dict[str, Any] | None = None
            for sample in samples:
                state = sample["breakers"].get(provider)
                if state is None:
                    continue
                if previous is not None:
                    _judge(history, samples, provider, previous, sample, windows, verdict)
                previous = sample


def _judge(
    history: History,
    samples: list[dict[str, Any]],
    provider: str,
    before: dict[str, Any],
    after: dict[str, Any],
    windows: list[tuple[float, float]],
    verdict: Verdict,
) -> None:
    old, new = before["breakers"][provider], after["breakers"][provider]
    if old.get("epoch", "0") == new.get("epoch", "0"):
        return
    verdict.count("breaker changes")
    if any(start <= after["t1"] and end >= before["t0"] for start, end in windows):
        verdict.count("breaker changes by an operator")
        return  # an operator's command ran meanwhile
    at = f"t={after['t1'] - history.t0:.1f}s"
    change = (
        f"{provider}: epoch {old.get('epoch', '0')}->{new.get('epoch', '0')} {new.get('state')}"
    )
    if old.get("forced") == "1":
        verdict.fail("breaker_authority", f"{change}: a forced state changed, no operator ({at})")
        return
    fence = int(new.get("fence", "0") or 0)
    if not fence:
        verdict.fail("breaker_authority", f"{change}: unfenced, no operator ({at})")
        return
    over = lease_over(samples, fence)
    if over is not None and before["t0"] >= over:
        seen, after_t = over - history.t0, before["t0"] - history.t0
        verdict.fail(
            "breaker_authority",
            f"{change} written under token {fence} after its lease was over "
            f"(seen over at t={seen:.1f}s, written after t={after_t:.1f}s)",
        )


def check_operators(history: History, verdict: Verdict) -> None:
    keys = Keys(history.namespace)
    for run in history.operators:
        action, provider, sent = run["action"], run["provider"], run["sent"]
        if sent == [["UNLOGGED"]]:
            verdict.notes.append(f"operator {action}: no command log (rc {run['returncode']})")
            continue
        verdict.count("operator commands", 1)
        verdict.count("Redis commands they sent", len(sent))
        writes = [
            command
            for command in sent
            if command[0] in SCRIPTS
            or command[0] == "UNPARSED"
            or "write" in history.command_flags.get(command[0], ["unknown"])
        ]
        if action in ("status", "inspect"):
            for command in writes:
                verdict.fail(
                    "readonly_commands", f"{' '.join(run['argv'][:3])} sent {' '.join(command)}"
                )
            continue
        allowed = {keys.providers, keys.redis_ops}  # "Redis commands issued by all clients"
        if provider:
            allowed |= {keys.breaker(provider), keys.permits(provider), keys.transitions(provider)}
        for command in writes:
            outside = [key for key in command[1:] if key not in allowed]
            if outside:
                verdict.fail(
                    "readonly_commands",
                    f"breaker {action} {provider} wrote beyond its breaker: {' '.join(command)}",
                )


def check_recovery(history: History, verdict: Verdict) -> None:
    for problem in history.problems:
        verdict.fail("recovery", problem)
    leaders = []
    for replica in history.replicas:
        ready = replica.get("readyz")
        if not ready or ready[0] != 200:
            verdict.fail("recovery", f"{replica['name']}: /readyz {ready} after the faults healed")
        if exported(replica, "gatewayz_aggregator_leader", replica=replica["name"]) == 1:
            leaders.append(replica["name"])
    if len(leaders) != 1:
        verdict.fail("recovery", f"{len(leaders)} replicas say they lead: {leaders}")
    for ledger in history.workers:
        if ledger.killed_at is None and (ledger.end is None or not ledger.end.get("closed")):
            verdict.fail("recovery", f"worker {ledger.index}: close() did not answer True")
