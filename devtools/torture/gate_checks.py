"""What a worker's ``allow()`` promises, against the breaker as sampled and what Redis counted
(pure): answers that follow the breaker, at most the trial permits per half-open period across
all workers, and every refusal counted in ``gatewayz_circuit_breaker_rejected_calls_total``."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devtools.torture.authority import starved_windows
from devtools.torture.cpu_wait import effective_clock
from devtools.torture.history import History
from gatewayz_protocol.breaker_state import STATES

if TYPE_CHECKING:
    from devtools.torture.checker import Verdict

HALF_OPEN_CALLS = 5
"""``--breaker-half-open-calls`` (the default; the run's aggregators use it)."""
PERMIT_LAG = 0.0
"""Seconds after a half-open period begins in which a True may come from a cached state and
take no permit: none, since half-open follows an open state (at least 2 s) whose cached answer
is False; a worker that cannot reach Redis keeps an older state, and is left out."""


ALLOW_LAG = 1.5
"""Seconds an allow() answer may lag the breaker: the 0.5 s cache refresh (its own thread), the
sample period, a refresh that waits for a core on this loaded machine. Measured on the worker's
CPU-wait-free clock (``cpu_wait``), as the other deadlines on progress are: what the worker,
the proxy in the harness or Redis waited for a CPU does not count (CI's seed 1425 on a loaded
2-core machine: 31 answers refused breakers closed up to 5.3 s before, the cache answering from
the last state it read while its 0.25 s reads through the starved proxy timed out; from the
close at t=52.9 s to t=58.2 s the worker, the harness and Redis together waited for a CPU all
but 0.04 s)."""


def _epoch(breaker: dict[str, str]) -> int | None:
    raw = breaker.get("epoch", "0")
    return int(raw) if raw.isdigit() else None


def lag_start(clock: Callable[[float], float], at: float, first: float) -> float:
    """The real time from which an answer at ``at`` is judged: ``ALLOW_LAG`` before it on
    ``clock`` (a CPU-wait-free clock, never faster than real time, so at most ``at -
    ALLOW_LAG``), not before ``first``."""
    target, low, high = clock(at) - ALLOW_LAG, first, at - ALLOW_LAG
    if high <= low or clock(low) >= target:
        return min(low, high)
    for _ in range(40):  # bisection: the clock is continuous and never goes back
        middle = (low + high) / 2
        low, high = (middle, high) if clock(middle) < target else (low, middle)
    return low


def _states_near(samples: list[dict[str, Any]], provider: str, at: float, since: float) -> set[str]:
    """The states the breaker was seen in from ``since`` (``lag_start``) to the first sample
    after ``at``; every state when, between two of those samples, its epoch moved by more than
    one (a state no sample saw: a half-open period shorter than a slow read, cluster seed
    200009)."""
    seen = [s for s in samples if provider in s["breakers"] and since <= s["t1"]]
    # and the first sample that began after ``at``: a change the worker saw just before ``at``
    # may have landed after the previous sample read this breaker (cluster seed 210000)
    until = next((i for i, s in enumerate(seen) if s["t0"] > at + 0.1), len(seen) - 1)
    near = [s["breakers"][provider] for s in seen[: until + 1]]
    states = {breaker.get("state", "closed") for breaker in near}
    for one, two in itertools.pairwise(near):
        first, second = _epoch(one), _epoch(two)
        if first is None or second is None or second - first > 1:
            return states | set(STATES)
    return states


def check_allow(history: History, verdict: Verdict, troubled: Any) -> None:
    """allow() True only for a closed or half-open breaker, False only for an open or half-open
    one (its trial permits taken), as the breaker was within ``ALLOW_LAG`` seconds of the
    worker's CPU-wait-free clock (``lag_start``); skipped
    where Redis was out of the worker's reach for reads (it then answers from the last state
    it knew), judged where Redis only refused writes (out of memory, a write pause)."""
    samples = sorted((s for s in history.samples if "error" not in s), key=lambda s: s["t0"])
    if not samples:
        return
    sampled_from = float(samples[0]["t0"]) + ALLOW_LAG  # the lag window is sampled from here
    starved = starved_windows(history)
    wrong: dict[str, int] = {}
    example: dict[str, str] = {}
    for ledger in history.workers:
        # the chain a refresh goes through: the worker, the proxy in the harness, Redis
        clock = effective_clock(history.waits, (f"w{ledger.index}", "redis", "harness"))
        first: dict[str, float] = {}
        for answer in ledger.allows:
            at, provider = float(answer["t"]), answer["p"]
            # until its first read of a state succeeds (0.25 s, then every 0.5 s) a worker
            # fails open: its first 1.5 s of answers about a provider are left out
            if at < first.setdefault(provider, at) + ALLOW_LAG or at < sampled_from:
                continue
            since = lag_start(clock, at, float(samples[0]["t0"]))
            states = _states_near(samples, provider, at, since)
            if not states or troubled(history, at):
                continue
            if any(low <= at <= high + ALLOW_LAG for low, high in starved):
                continue  # the worker's cache refresh waited for a core too
            verdict.count("allow() answers judged")
            fits = {"closed", "half_open"} if answer["allowed"] else {"open", "half_open"}
            if not states & fits:
                wrong[provider] = wrong.get(provider, 0) + 1
                example.setdefault(
                    provider,
                    f"allow({provider}) {answer['allowed']} at t={at - history.t0:.1f}s while "
                    f"the breaker was {sorted(states)} (since t={since - history.t0:.1f}s)",
                )
    for provider, count in wrong.items():
        verdict.fail("allow_follows_breaker", f"{count} answers, e.g. {example[provider]}")


def half_open_periods(samples: list[dict[str, Any]], provider: str) -> list[tuple[float, float]]:
    """(from, to): times the breaker was surely half-open under one epoch (from the end of the
    first sample that saw it to the start of the last one that did)."""
    periods: list[tuple[float, float]] = []
    current: tuple[str, float, float] | None = None
    for sample in samples:
        state = sample["breakers"].get(provider)
        if state is None:
            continue
        epoch, half = state.get("epoch", "0"), state.get("state") == "half_open"
        if current is not None and (not half or epoch != current[0]):
            periods.append((current[1], current[2]))
            current = None
        if half:
            if current is None:
                current = (epoch, float(sample["t1"]), float(sample["t0"]))
            else:
                current = (epoch, current[1], float(sample["t0"]))
    if current is not None:
        periods.append((current[1], current[2]))
    return periods


def check_permits(history: History, verdict: Verdict, troubled: Any) -> None:
    """At most ``HALF_OPEN_CALLS`` allow() True answers, all workers together, within one
    half-open period."""
    samples = sorted((s for s in history.samples if "error" not in s), key=lambda s: s["t0"])
    # where the machine starved, a worker may answer from a state its refresh (the refresher's
    # thread) has not replaced yet, e.g. closed from before the breaker opened (seed 100005)
    starved = starved_windows(history)
    answers = [
        a
        for w in history.workers
        for a in w.allows
        if a["allowed"]
        and not troubled(history, float(a["t"]))
        and not any(low <= float(a["t"]) <= high + ALLOW_LAG for low, high in starved)
    ]
    for provider in sorted({a["p"] for a in answers}):
        times = sorted(float(a["t"]) for a in answers if a["p"] == provider)
        for start, end in half_open_periods(samples, provider):
            inside = [t for t in times if start + PERMIT_LAG <= t <= end]
            verdict.count("half-open periods")
            if len(inside) > HALF_OPEN_CALLS:
                verdict.fail(
                    "half_open_permits",
                    f"{provider}: {len(inside)} calls allowed within one half-open period "
                    f"(t={start - history.t0:.1f}..{end - history.t0:.1f}s), at most "
                    f"{HALF_OPEN_CALLS} trial permits",
                )


def check_rejections_counted(history: History, verdict: Verdict, exact: bool) -> None:
    """Redis's ``breaker_rejected`` of each provider: every False answer of a worker that
    closed, at most every False answer (a killed worker's last counts may not have shipped);
    exactly when every worker closed and no reply was lost (``exact``)."""
    low: dict[str, int] = {}
    high: dict[str, int] = {}
    for ledger in history.workers:
        closed = ledger.end is not None and bool(ledger.end.get("closed"))
        for answer in ledger.allows:
            if not answer["allowed"]:
                high[answer["p"]] = high.get(answer["p"], 0) + 1
                if closed:
                    low[answer["p"]] = low.get(answer["p"], 0) + 1
    providers = history.redis.get("providers", {})
    for provider in sorted(set(high) | set(providers)):
        raw = providers.get(provider, {}).get("totals", {}).get("breaker_rejected", "0")
        seen = int(raw) if raw.isdigit() else -1
        lo, hi = low.get(provider, 0), high.get(provider, 0)
        if seen < lo or (seen > hi if exact else False) or (exact and seen != hi):
            verdict.fail(
                "breaker_rejections_counted",
                f"{provider}: Redis counts {seen} calls turned away, the workers {lo}..{hi}",
            )
