"""Breaker reaction with default settings: outage start -> allow() False in every worker, and
recovery start -> breaker closed.

A real ``python -m aggregator`` (defaults: breaker every 5 s over the last 8 s, 20 calls
minimum, open 30 s; a woken breaker also judged over the last second) and 4 spawned worker
processes, each with its own MetricsClient. Every
provider gets 50 calls/s in total (12.5 per worker, spread evenly): healthy first, so the
breaker window is full of successes, then every call fails (503). Until a worker has seen
allow() return False it polls allow() every 50 ms and reports when it first does; afterwards
it asks allow() once per call slot and calls only when allowed (a True in half-open holds a
trial permit, so it always becomes a call). Once every worker has seen False the provider is
healthy again (recovery start) and the time to the breaker's transition to closed is taken from
its Redis hash (``since``). Repetitions run as separate providers in the same run, their
outages staggered across the 5 s breaker interval (the evaluation phase decides the result).
Each turn runs with wakes off (workers never wake a breaker: the cycle alone decides, as before
wakes existed) or on (the default), alternating; and counts Redis's commands per second during
the healthy stretch, where wakes must add nothing.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import statistics
import time
from multiprocessing.synchronize import Event as EventType
from typing import Any

from bench.bench_ingest import _redis_benchmark
from bench.bench_scrape import aggregator_process
from bench.common import Context, Figure
from client import ClientSettings, MetricsClient
from client._wake import WakeRule
from gatewayz_protocol.keys import Keys

WORKERS = 4
RATE = 50.0  # calls/s per provider, all workers together
POLL = 0.05  # seconds between allow() polls until a worker has seen the breaker open
BREAKER_INTERVAL = 5.0  # the aggregator's default
TARGET_MEDIAN = 2.0  # issue 27 item 4
TARGET_WORST = 5.0
IDLE_FROM = 3.0  # seconds of healthy traffic before its Redis commands are counted
OPEN_DEADLINE = 40.0  # give up on an outage not seen everywhere after this
CLOSE_DEADLINE = 120.0  # ... and on a recovery not closed after this


def _worker(index: int, redis_url: str, namespace: str, wakes: bool, providers: list[str],
            schedule: Any, reports: Any, go: EventType, stop: EventType) -> None:  # fmt: skip
    """One gateway worker. ``schedule[2k]`` = outage start and ``schedule[2k+1]`` = recovery
    start of ``providers[k]`` (unix time; inf = not yet). ``wakes``: the default; False: the
    worker never wakes a breaker (the breaker cycle alone decides, as before wakes existed)."""
    settings = ClientSettings(breaker_wake_failures=WakeRule().min_failures if wakes else 0)
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace, settings=settings)
    for provider in providers:
        metrics.allow(provider)  # learns the state (closed), starts the refreshing flusher
    reports.put(("ready", index, -1, 0.0))
    while not go.wait(0.1):
        if stop.is_set():
            return
    period = WORKERS / RATE
    start = time.time() + period * index / WORKERS
    next_call = [start] * len(providers)
    seen_open = [False] * len(providers)
    while not stop.is_set():
        now = time.time()
        for k, provider in enumerate(providers):
            due = now >= next_call[k]
            if seen_open[k] and not due:
                continue
            allowed = metrics.allow(provider)
            if not allowed and not seen_open[k] and now >= schedule[2 * k]:
                seen_open[k] = True
                reports.put(("open", index, k, time.time()))
            if due:
                next_call[k] = max(next_call[k] + period, now - 1.0)
                if allowed:
                    failing = schedule[2 * k] <= now < schedule[2 * k + 1]
                    metrics.record(provider, 0.5 if failing else 0.3, 503 if failing else 200)
        pending = min([*next_call, now + POLL] if not all(seen_open) else next_call)
        time.sleep(max(0.0, min(POLL, pending - time.time())))
    metrics.close(timeout=5.0)


def _commands_processed(connection: Any) -> int:
    return int(connection.info("stats")["total_commands_processed"])


def _drive(ctx: Context, namespace: str, wakes: bool, providers: list[str],
           healthy: float) -> dict[str, Any]:  # fmt: skip
    """Runs the workers through healthy traffic, outages and recoveries; returns the times,
    and Redis's commands per second while every call succeeded (nothing else sends any: the
    Redis is the run's own, and this driver is quiet meanwhile)."""
    mp = multiprocessing.get_context("spawn")
    schedule = mp.Array("d", [math.inf] * (2 * len(providers)), lock=False)
    reports: Any = mp.Queue()
    go, stop = mp.Event(), mp.Event()
    args = (ctx.redis_url, namespace, wakes, providers, schedule, reports, go, stop)
    workers = [mp.Process(target=_worker, args=(i, *args), daemon=True) for i in range(WORKERS)]
    connection = ctx.connection()
    keys = Keys(namespace)
    seen: list[dict[int, float]] = [{} for _ in providers]
    opened: list[float] = [math.nan] * len(providers)
    closed: list[float] = [math.nan] * len(providers)
    history: list[tuple[list[str], list[int]]] = []
    try:
        for process in workers:
            process.start()
        for _ in workers:
            reports.get(timeout=60)
        started = time.time()
        for k in range(len(providers)):  # outages spread over one breaker interval
            schedule[2 * k] = started + healthy + k * BREAKER_INTERVAL / len(providers)
        go.set()
        time.sleep(IDLE_FROM)  # healthy traffic settled in; then counted, the driver quiet
        before, counted_from = _commands_processed(connection), time.monotonic()
        time.sleep(max(1.0, healthy - IDLE_FROM - 1.0))
        after, counted_for = _commands_processed(connection), time.monotonic() - counted_from
        idle_rate = (after - before - 1) / counted_for  # less the first INFO
        deadline = schedule[2 * len(providers) - 2] + OPEN_DEADLINE + CLOSE_DEADLINE
        while time.time() < deadline and any(math.isnan(c) for c in closed):
            try:
                _, index, k, at = reports.get(timeout=0.1)
                seen[k][index] = at
                if len(seen[k]) == WORKERS:
                    schedule[2 * k + 1] = time.time()  # the provider is healthy again
            except queue.Empty:
                pass
            for k, provider in enumerate(providers):
                state, since = connection.hmget(keys.breaker(provider), ["state", "since"])
                if state == b"open" and math.isnan(opened[k]):
                    opened[k] = float(since or 0)
                recovered = state == b"closed" and float(since or 0) > schedule[2 * k + 1]
                if recovered and math.isnan(closed[k]):
                    closed[k] = float(since or 0)
            if any(time.time() > schedule[2 * k] + OPEN_DEADLINE and len(seen[k]) < WORKERS
                   for k in range(len(providers))):  # fmt: skip
                break
        for provider in providers:  # what happened, for the notes
            transitions = connection.hgetall(keys.transitions(provider))
            totals = connection.hmget(keys.totals(provider), ["n:success", "n:failure"])
            moves = sorted(f"{_text(k)} {int(v)}" for k, v in transitions.items())
            history.append((moves, [int(n or 0) for n in totals]))
    finally:
        stop.set()
        for process in (p for p in workers if p.pid is not None):  # the started ones
            process.join(timeout=15)
            if process.is_alive():
                process.terminate()
                process.join()
        connection.close()
    return {
        "outage": [schedule[2 * k] for k in range(len(providers))],
        "recovery": [schedule[2 * k + 1] for k in range(len(providers))],
        "seen": seen, "opened": opened, "closed": closed, "history": history,
        "idle_rate": idle_rate,
    }  # fmt: skip


def _turn(ctx: Context, wakes: bool, count: int, healthy: float) -> dict[str, Any]:
    """One run of the aggregator and the workers, wakes on or off."""
    namespace = ctx.namespace("breaker")
    providers = [f"outage-{k}" for k in range(count)]
    flags = ("--breaker-open-seconds", "3") if ctx.quick else ()
    with aggregator_process(ctx.redis_url, namespace, *flags):
        times = _drive(ctx, namespace, wakes, providers, healthy)
    reaction, decided, recovery = [], [], []
    for k in range(count):
        seen, outage = times["seen"][k], times["outage"][k]
        reaction.append(max(seen.values()) - outage if len(seen) == WORKERS else math.inf)
        decided.append(times["opened"][k] - outage)
        recovery.append(times["closed"][k] - times["recovery"][k])
    history = "; ".join(
        f"{providers[k]}: {', '.join(moves)}, {ok} ok / {failed} failed calls"
        for k, (moves, (ok, failed)) in enumerate(times["history"])
    )
    return {"reaction": reaction, "decided": decided, "recovery": recovery,
            "idle_rate": times["idle_rate"], "history": history}  # fmt: skip


def run(ctx: Context) -> list[Figure]:
    """Turns alternate wakes off (the peer: the breaker cycle alone, as before wakes) and on
    (the default), in the same run on the same Redis; medians over every outage of each."""
    began = time.monotonic()
    count = 1 if ctx.quick else ctx.repeats
    turns = 1 if ctx.quick else 2
    healthy = 9.0 if ctx.quick else 15.0  # longer than the 8 s breaker window either way
    # Quick mode shortens only the open time (3 s instead of 30 s) so the run fits a minute;
    # the outage reaction is measured with every default.
    open_seconds = 3.0 if ctx.quick else 30.0
    ceiling, ceiling_note = _redis_benchmark(ctx, 3, 300_000)  # how fast the machine is today
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    load = []
    for turn in range(turns):
        for wakes in (False, True) if turn % 2 == 0 else (True, False):
            load.append(os.getloadavg()[0])
            results[wakes].append(_turn(ctx, wakes, count, healthy))
    runtime = time.monotonic() - began
    spread = f" on {count} providers, staggered by {BREAKER_INTERVAL / count:g} s"
    setup = (
        f"{WORKERS} spawned workers, {RATE:g} calls/s per provider, {healthy:g} s healthy first, "
        f"default breaker settings; {count} outage(s){spread if count > 1 else ''} per turn, "
        f"{turns} turn(s) per variant, alternating; load average {min(load):.1f}-"
        f"{max(load):.1f} (2 cores); redis-benchmark ZADD {ceiling:,.0f}/s ({ceiling_note}); "
        f"benchmark ran {runtime:.0f} s"
    )
    figures = []
    for wakes in (False, True):
        name = "wakes on" if wakes else "wakes off"
        peer = "" if wakes else "wakes off: the breaker cycle alone, as before"
        turns_of = results[wakes]
        reaction = [v for t in turns_of for v in t["reaction"]]
        decided = [v for t in turns_of for v in t["decided"]]
        recovery = [v for t in turns_of for v in t["recovery"]]
        idle = statistics.median(t["idle_rate"] for t in turns_of)
        median = statistics.median(reaction)
        figures += [
            Figure("breaker", f"outage -> allow() False in every worker (median, {name})",
                   median, "s", peer=peer, target=f"<= {TARGET_MEDIAN:g} s",
                   met=median <= TARGET_MEDIAN,
                   note=f"{setup}; per outage {_join(reaction)} s; the aggregator wrote 'open' "
                   f"{_join(decided)} s after the outage started"),
            Figure("breaker", f"outage -> allow() False in every worker (worst, {name})",
                   max(reaction), "s", peer=peer, target=f"<= {TARGET_WORST:g} s",
                   met=max(reaction) <= TARGET_WORST, note=setup),
            Figure("breaker", f"recovery -> breaker closed (median, {name})",
                   statistics.median(recovery), "s", peer=peer,
                   note=f"{setup}; per recovery {_join(recovery)} s; recovery starts once every "
                   f"worker saw open (open time {open_seconds:g} s, then half-open, 5 trial "
                   f"calls, closed at the next evaluation); "
                   f"{' | '.join(t['history'] for t in turns_of)}"),
            Figure("breaker", f"Redis commands/s while every call succeeds ({name})", idle,
                   "cmd/s", peer=peer,
                   note=f"{setup}; INFO total_commands_processed over the healthy stretch "
                   f"({IDLE_FROM:g} s after the start to 1 s before the first outage), medians "
                   f"of the turns: {_join([t['idle_rate'] for t in turns_of])}"),
        ]  # fmt: skip
    return figures


def _join(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
