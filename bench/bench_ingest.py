"""Sustained ingest: events per second that reach Redis from 1 and from 4 worker processes, and
as a share of ``redis-benchmark -P 16 -t zadd`` against the same server.

Each worker (a spawned process) records as fast as it can for a fixed time, then ``flush()``es;
while its buffer holds more than two batches it waits for its flusher (closed loop: the figure is
what the pipeline sustains, not the CPU a worker burns recording events a full buffer drops).
What reached Redis is the sum of the ``n:*`` fields of the provider's totals hash; the rate is
that over the wall time from the common start until the last worker's flush completed.
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from urllib.parse import urlparse

import redis

from bench.common import Context, Figure
from client import ClientSettings, Keys, MetricsClient
from devtools.redis_cluster import node_urls
from gatewayz_protocol.fields import COUNT_FIELDS

PROVIDER = "openrouter"
LATENCIES = (0.05, 0.3, 0.42, 0.8, 1.5, 3.0, 7.0, 12.0) * 125  # 1,000 calls per deadline check
Result = tuple[float, float, int, int, bool, float]
"""started, flushed, recorded, dropped, flush ok, redis-server CPU seconds at the start."""


def _worker(
    url: str, namespace: str, seconds: float, ready: Barrier, out: Queue[Result], shards: str = ""
) -> None:
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=url, namespace=namespace, provider_shards=shards)
    )
    record, latencies, recorded = metrics.record, LATENCIES, 0
    server_cpu = _redis_cpu(url)
    ready.wait(timeout=120)  # every worker is set up: start together
    started = time.monotonic()
    deadline = started + seconds
    backlog = 2 * metrics.settings.max_batch
    while time.monotonic() < deadline:
        for latency in latencies:
            record(PROVIDER, latency, 200)
        recorded += len(latencies)
        # Closed loop: a worker ahead of its flusher by two batches waits for it, so the run
        # measures what reaches Redis, not CPU spent recording events a full buffer drops.
        while metrics.stats()["buffered"] > backlog and time.monotonic() < deadline:
            time.sleep(0.001)
    flushed_ok = metrics.flush(timeout=300)
    flushed = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes on Linux
    dropped = int(metrics.stats()["dropped"])
    metrics.close()
    out.put((started, flushed, recorded, dropped, flushed_ok, server_cpu))


def _redis_cpu(url: str) -> float:
    """CPU seconds redis-server has used so far (every node of a ``redis+cluster://`` URL that
    lists them all)."""
    total = 0.0
    for node_url in node_urls(url):
        with redis.Redis.from_url(node_url) as connection:
            cpu = connection.info("cpu")
        total += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return total


def _collect(processes: Sequence[BaseProcess], out: Queue[Result]) -> list[Result]:
    results: list[Result] = []
    while len(results) < len(processes):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"ingest worker exited with {failed}") from None
    return results


def ingest(
    ctx: Context, workers: int, seconds: float, url: str = "", shards: int = 1
) -> tuple[float, float, str, float]:
    """(events/s that reached Redis, Redis CPU seconds per million events, note, the busiest
    node's share of the events) for one run of ``workers`` processes against ``url`` (default:
    the context's Redis), the provider split over ``shards``."""
    url = url or ctx.redis_url
    namespace = ctx.namespace(f"ingest{workers}")
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Barrier(workers)
    out: Queue[Result] = spawn.Queue()
    args = (url, namespace, seconds, ready, out, f"{PROVIDER}:{shards}" if shards > 1 else "")
    processes = [spawn.Process(target=_worker, args=args, daemon=True) for _ in range(workers)]
    for process in processes:
        process.start()
    try:
        results = _collect(processes, out)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    started = min(r[0] for r in results)
    wall = max(r[1] for r in results) - started
    server_cpu = _redis_cpu(url) - min(r[5] for r in results)
    keys, per_node = Keys(namespace), []
    totals_keys = {keys.totals(PROVIDER, shard) for shard in range(shards)}
    for node_url in node_urls(url):
        reached_here = 0
        with redis.Redis.from_url(node_url) as connection:
            for key in connection.scan_iter(f"{namespace}:*", count=1000):
                if key.decode() in totals_keys:
                    counts = connection.hmget(key, list(COUNT_FIELDS))
                    reached_here += sum(int(c) for c in counts if c is not None)
                connection.unlink(key)
        per_node.append(reached_here)
    reached = sum(per_node)
    recorded, dropped = sum(r[2] for r in results), sum(r[3] for r in results)
    note = (
        f"{reached:,} of {recorded:,} recorded reached Redis ({dropped:,} dropped by full "
        f"buffers) in {wall:.2f} s, flush ok: {all(r[4] for r in results)}; redis-server "
        f"busy {server_cpu / wall:.0%} of one core"
    )
    if len(per_node) > 1:
        note += f"; per node: {' / '.join(f'{n:,}' for n in per_node)}"
    busiest = max(per_node) / max(reached, 1)
    return reached / wall, server_cpu / max(reached, 1) * 1e6, note, busiest


def _redis_benchmark(ctx: Context, runs: int, requests: int, *extra: str) -> tuple[float, str]:
    """Median requests/s of ``runs`` runs of redis-benchmark ZADD, and its command."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan"), "redis-benchmark not on PATH"
    url = urlparse(ctx.redis_url)
    command = [binary, "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 6379)]
    command += ["-P", "16", "-t", "zadd", "-n", str(requests), "-q", *extra]
    rates = []
    for _ in range(runs):
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        found = re.findall(r"ZADD: ([\d.]+) requests per second", done.stdout.replace("\r", "\n"))
        rates.append(float(found[-1]))
        with ctx.connection() as connection:
            connection.delete("myzset")  # redis-benchmark's key
    note = (
        f"median of {runs} run(s) of redis-benchmark {' '.join(command[1:])} (50 clients), "
        f"{min(rates):,.0f}..{max(rates):,.0f}/s"
    )
    return statistics.median(rates), note


def run(ctx: Context) -> list[Figure]:
    seconds = 1.5 if ctx.quick else 5.0
    repeats = 1 if ctx.quick else ctx.repeats
    ceiling, ceiling_note = _redis_benchmark(
        ctx, 3 if ctx.quick else 5, 300_000 if ctx.quick else 1_000_000
    )
    inserts, inserts_note = _redis_benchmark(
        ctx, 1 if ctx.quick else 3, 100_000 if ctx.quick else 500_000, "-r", "100000000"
    )
    figures = [
        Figure("ingest", "redis-benchmark ZADD", ceiling, "requests/s", "redis-benchmark",
               note=f"{ceiling_note}; one member, always the same one"),
        Figure("ingest", "redis-benchmark ZADD, random members", inserts, "requests/s",
               "redis-benchmark -r", note=f"{inserts_note}; one new member per ZADD"),
    ]  # fmt: skip
    for workers in (1, 4):
        runs = [ingest(ctx, workers, seconds) for _ in range(repeats)]
        rate = statistics.median(r[0] for r in runs)
        share = rate / ceiling
        note = f"median of {repeats} run(s) of {seconds:g} s then flush(); last: {runs[-1][2]}"
        name = f"{workers} worker process{'es' if workers > 1 else ''}"
        figures.append(
            Figure(
                "ingest",
                f"events/s reaching Redis, {name}",
                rate,
                "events/s",
                target=">= 100,000 events/s" if workers == 1 else "",
                met=rate >= 100_000 if workers == 1 else None,
                note=note,
            )
        )
        figures.append(
            Figure(
                "ingest",
                f"{name} / redis-benchmark ZADD",
                share,
                "ratio",
                "redis-benchmark -P 16 -t zadd",
                target=">= 0.5" if workers == 4 else "",
                met=share >= 0.5 if workers == 4 else None,
                note=f"{rate:,.0f} events/s / {ceiling:,.0f} ZADD/s",
            )
        )
    return figures
