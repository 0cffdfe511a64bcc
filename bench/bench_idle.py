"""An idle worker's cost: CPU a process burns per second with nothing to record, without the
client (the peer), with a client that recorded once, and with one that also asked allow() (its
breaker cache is refreshed every 0.5 s, on a thread of its own); and how often its flusher wakes
and its breaker refresher reads.

Each variant runs in a spawned process that sets itself up, then measures
``time.process_time()`` (every thread) over an idle window.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.queues import Queue

from bench.common import Context, Figure

Result = tuple[float, float, float]
"""(CPU seconds per second, flusher passes per second, breaker refreshes per second)"""


def _idle(url: str, namespace: str, variant: str, seconds: float, out: Queue[Result]) -> None:
    passes = refreshes = 0.0
    if variant == "no client":
        started, cpu = time.monotonic(), time.process_time()
        time.sleep(seconds)
    else:
        from client import ClientSettings, MetricsClient

        metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace=namespace))
        metrics.record("openrouter", 0.1)
        if variant == "client, allow() used":
            metrics.allow("openrouter")
        metrics.flush(timeout=10)
        time.sleep(0.5)  # settle: the flusher goes idle
        flusher = metrics._flusher
        first_pass, first_refresh = flusher.passes, metrics._refresher.refreshes
        started, cpu = time.monotonic(), time.process_time()
        time.sleep(seconds)
        passes = (flusher.passes - first_pass) / seconds
        refreshes = (metrics._refresher.refreshes - first_refresh) / seconds
        metrics.close()
    elapsed = time.monotonic() - started
    out.put(((time.process_time() - cpu) / elapsed, passes, refreshes))


def run(ctx: Context) -> list[Figure]:
    seconds = 3.0 if ctx.quick else 10.0
    spawn = multiprocessing.get_context("spawn")
    figures = []
    for variant in ("no client", "client, recorded once", "client, allow() used"):
        out: Queue[Result] = spawn.Queue()
        process = spawn.Process(
            target=_idle,
            args=(ctx.redis_url, ctx.namespace("idle"), variant, seconds, out),
            daemon=True,
        )
        process.start()
        cpu, passes, refreshes = out.get(timeout=seconds + 60)
        process.join(timeout=10)
        figures.append(
            Figure("idle", f"idle worker CPU, {variant}", cpu * 100, "% of a core",
                   peer="" if variant != "no client" else "no client",
                   note=f"{seconds:g} s idle; flusher passes/s: {passes:.1f}; "
                        f"breaker refreshes/s: {refreshes:.1f}"),
        )  # fmt: skip
        if variant != "no client":
            figures.append(
                Figure("idle", f"flusher passes/s when idle, {variant}", passes, "passes/s",
                       target="<= 2 (was 20)", met=passes <= 2.0),
            )  # fmt: skip
    return figures
