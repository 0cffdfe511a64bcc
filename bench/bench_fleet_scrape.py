"""/metrics at fleet scale: 1,000 providers with traffic and 10,000 backend series, scraped by 4
and 8 concurrent scrapers of a real ``python -m aggregator`` whose metrics and breaker cycles run
every second, so scrapes land during and right after cycles and renders.

Each scraper is its own process with one keep-alive connection, asking for gzip as Prometheus
does, ten times a second on a fixed schedule (open loop: 40-80 scrapes/s, far above what
Prometheus servers ask, yet not a saturating flood, whose latency would be queueing). A scrape is
timed from its scheduled start to the last byte of the body, so a scrape delayed behind a slow
one counts its wait too. p50, p99 and the maximum are over all scrapes of a run, the median
over runs.
"""

from __future__ import annotations

import http.client
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection

from bench.bench_fleet import ACTIVE, BACKEND_METRICS, SERIES_PER_METRIC, load_fleet
from bench.bench_scrape import _get, aggregator_process
from bench.common import Context, Figure, percentile

TARGET_P99_MS = 10.0
TARGET_MAX_MS = 50.0
SCRAPERS = (4, 8)
PERIOD_SECONDS = 0.1


def _scrape_on_schedule(port: int, phase: float, count: int, pipe: Connection) -> None:
    """Connects, says so, waits for the start time, then scrapes ``count`` times on schedule
    and sends back the seconds from each scheduled start to the body's last byte."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    try:
        connection.connect()
        pipe.send("ready")
        start = pipe.recv() + phase
        for index in range(count):
            scheduled = start + index * PERIOD_SECONDS
            time.sleep(max(0.0, scheduled - time.time()))
            connection.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/metrics answered {response.status}")
            latencies.append(time.time() - scheduled)
    finally:
        connection.close()
        pipe.send(latencies)


def paced_scrapes(port: int, scrapers: int, seconds: float) -> list[float]:
    """Sorted latencies of ``scrapers`` processes scraping every PERIOD_SECONDS, phases spread,
    started together once all of them are connected."""
    count = int(seconds / PERIOD_SECONDS)
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for index in range(scrapers):
        ours, theirs = context.Pipe()
        phase = index * PERIOD_SECONDS / scrapers
        process = context.Process(target=_scrape_on_schedule, args=(port, phase, count, theirs))
        process.start()
        pipes.append(ours)
        processes.append(process)
    for pipe in pipes:
        if pipe.recv() != "ready":
            raise RuntimeError("a scraper did not connect")
    start = time.time() + 0.2
    for pipe in pipes:
        pipe.send(start)
    latencies = [latency for pipe in pipes for latency in pipe.recv()]
    for process in processes:
        process.join(timeout=30)
    if len(latencies) != scrapers * count:
        raise RuntimeError(f"{scrapers * count - len(latencies)} scrapes failed")
    return sorted(latencies)


def run(ctx: Context) -> list[Figure]:
    namespace = ctx.namespace("fleet-scrape")
    load_fleet(ctx.redis_url, namespace, 0)
    seconds = 8.0 if ctx.quick else 20.0
    runs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in SCRAPERS}
    flags = ("--interval", "1", "--breaker-interval", "1")
    with aggregator_process(ctx.redis_url, namespace, *flags) as port:
        status, body = _get(port, "/metrics")
        compressed = len(_get(port, "/metrics", gzipped=True)[1])
        if status != 200 or body.count(b"\nprovider_availability{") != ACTIVE:
            raise RuntimeError(f"/metrics answered {status} without the {ACTIVE} providers")
        for _ in range(ctx.repeats):
            for scrapers in SCRAPERS:
                samples = paced_scrapes(port, scrapers, seconds)
                runs[scrapers].append(
                    (percentile(samples, 0.5), percentile(samples, 0.99), samples[-1])
                )
    what = (
        f"{ACTIVE:,} providers + {BACKEND_METRICS * SERIES_PER_METRIC:,} backend series, "
        f"{len(body) / 1e6:.1f} MB of text, {compressed / 1e3:.0f} KB gzipped; cycles every "
        f"second; each scraper 10/s for {seconds:g} s; median of {ctx.repeats} runs"
    )
    figures = []
    for scrapers, measured in runs.items():
        p50, p99, worst = (statistics.median(m[i] for m in measured) * 1000 for i in range(3))
        figures += [
            Figure("fleet-scrape", f"/metrics p99, {scrapers} scrapers, {ACTIVE:,} providers",
                   p99, "ms", target=f"<= {TARGET_P99_MS:g} ms", met=p99 <= TARGET_P99_MS,
                   note=f"p50 {p50:.2f} ms; {what}"),
            Figure("fleet-scrape", f"/metrics max, {scrapers} scrapers, {ACTIVE:,} providers",
                   worst, "ms", target=f"<= {TARGET_MAX_MS:g} ms", met=worst <= TARGET_MAX_MS,
                   note=what),
        ]  # fmt: skip
    return figures
