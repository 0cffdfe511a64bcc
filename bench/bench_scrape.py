"""/metrics scrape latency (p50, p99) of a real ``python -m aggregator`` under concurrent scrapes.

The namespace holds 100 providers and the gateway's backend metrics (``GatewayMetrics``: a few
hundred series of counters and histograms), recorded through a MetricsClient and flushed before
the aggregator starts (``--interval 1``, so cycles keep running while it is scraped). Scrapers
are threads with one keep-alive ``http.client`` connection each, all started at once, each
sending its share of a fixed number of requests back to back; every request is timed from
sending to the last byte of the body. Percentiles are the median over ``ctx.repeats`` runs.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aggregator.engine.cycle import Aggregator
from aggregator.serve.rendering import make_registry, render
from aggregator.settings import AggregatorSettings
from bench.common import Context, Figure, percentile
from client import GatewayMetrics, MetricsClient
from devtools.processes import stop_process
from devtools.redis_server import free_port
from gatewayz_transport.connection import connect

PROVIDERS = tuple(f"provider-{i:03d}" for i in range(100))
MODELS = ("gpt-4o", "claude-opus-4.5", "llama-3.1-70b", "gemini-2.5-pro")
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/embeddings", "/health")
CONCURRENCY = 8
TARGET_P99_MS = 5.0
ROOT = Path(__file__).resolve().parents[1]
BACKEND_PREFIXES = ("fastapi_", "model_inference_", "tokens_used_", "credits_used_",
                    "database_queries_", "cache_")  # fmt: skip


def populate(redis_url: str, namespace: str) -> None:
    """100 providers' calls and the gateway's metrics, as a gateway's workers would record."""
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    gateway = GatewayMetrics(metrics, app_name="gatewayz")
    try:
        for index, provider in enumerate(PROVIDERS):
            for call in range(20):
                status = 503 if call % 10 == 0 and index % 5 == 0 else 200
                gateway.record_inference(provider, MODELS[index % len(MODELS)],
                                         0.2 + 0.15 * (call % 7), status_code=status,
                                         input_tokens=400 + call, output_tokens=150, credits=0.002,
                                         cost_usd=0.0012)  # fmt: skip
        for index, route in enumerate(ROUTES):
            for code in ("200", "429", "500"):
                labels = ("gatewayz", "POST", route, code, code[0] + "xx")
                gateway.requests.labels(*labels).inc(10 + index)
            gateway.request_duration.labels("gatewayz", "POST", route).observe(0.05 * (index + 1))
        for name in ("users", "api_keys", "pricing"):
            gateway.database_queries.labels(name, "select").inc(7)
            gateway.cache_hits.labels(name).inc(30)
            gateway.cache_misses.labels(name).inc(3)
        if not metrics.flush(timeout=60):
            raise RuntimeError("the metrics did not reach Redis within 60 s")
    finally:
        metrics.close()


def _get(port: int, path: str, gzipped: bool = False) -> tuple[int, bytes]:
    """(status, body as sent); status 0 when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "GET", path, headers={"Accept-Encoding": "gzip" if gzipped else "identity"}
        )
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


@contextmanager
def aggregator_process(redis_url: str, namespace: str, *flags: str) -> Iterator[int]:
    """A ``python -m aggregator`` on a free port, ready (/readyz 200); yields the port and
    stops the process afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "aggregator", "--redis-url", redis_url, "--namespace",
               namespace, "--port", str(port), "--log-level", "WARNING", *flags]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60
            while _get(port, "/readyz")[0] != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the aggregator did not start: {log.read()[-500:]!r}")
                time.sleep(0.1)
            yield port
        finally:
            stop_process(process, timeout=15)


def scrape_load(port: int, concurrency: int, requests: int, gzipped: bool = False) -> list[float]:
    """Seconds per request, ``requests`` in all, from ``concurrency`` keep-alive connections;
    ``gzipped`` asks for ``Accept-Encoding: gzip`` as Prometheus does (the body is received,
    not decompressed)."""
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency)

    def scraper(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        try:
            connection.connect()
            barrier.wait()
            for _ in range(count):
                started = time.perf_counter()
                connection.request("GET", "/metrics", headers=headers)
                response = connection.getresponse()
                response.read()
                mine.append(time.perf_counter() - started)
                if response.status != 200:
                    errors.append(f"status {response.status}")
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            errors.append(repr(exc))
            barrier.abort()
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    threads = [threading.Thread(target=scraper, args=(n,)) for n in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"scrapes failed: {errors[:3]}")
    return sorted(latencies)


def render_in_process(redis_url: str, namespace: str, renders: int = 20) -> float:
    """Median seconds of one render of the same data without HTTP or concurrent cycles."""
    settings = AggregatorSettings(redis_url=redis_url, namespace=namespace)
    connection = connect(redis_url, socket_timeout=10.0)
    try:
        aggregator = Aggregator(settings, connection)
        if aggregator.run_cycle() is None:
            raise RuntimeError(f"cycle failed: {aggregator.status.last_error}")
        registry = make_registry(aggregator.served)
        render(registry, None)
        timings = []
        for _ in range(renders):
            started = time.perf_counter()
            render(registry, None)
            timings.append(time.perf_counter() - started)
        aggregator.release_lease()
        return statistics.median(timings)
    finally:
        connection.close()


def run(ctx: Context) -> list[Figure]:
    namespace = ctx.namespace("scrape")
    populate(ctx.redis_url, namespace)
    counts = {1: 30, CONCURRENCY: 64} if ctx.quick else {1: 48, CONCURRENCY: 160}
    loads = [(c, gzipped) for gzipped in (False, True) for c in counts]
    results: dict[tuple[int, bool], list[tuple[float, float]]] = {load: [] for load in loads}
    with aggregator_process(ctx.redis_url, namespace, "--interval", "1") as port:
        status, body = _get(port, "/metrics")
        text = body.decode()
        providers = text.count("\nprovider_availability{")
        if status != 200 or providers != len(PROVIDERS) or "model_inference" not in text:
            raise RuntimeError(f"/metrics answered {status} with {providers} providers")
        compressed = len(_get(port, "/metrics", gzipped=True)[1])
        scrape_load(port, CONCURRENCY, 2 * CONCURRENCY)  # warm-up
        for _ in range(ctx.repeats):
            for concurrency, gzipped in loads:
                samples = scrape_load(port, concurrency, counts[concurrency], gzipped)
                quantiles = (percentile(samples, 0.5), percentile(samples, 0.99))
                results[(concurrency, gzipped)].append(quantiles)
    rendered = render_in_process(ctx.redis_url, namespace) * 1000
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    backend = [line for line in lines if line.startswith(BACKEND_PREFIXES)]
    series = sum(1 for line in backend if "_bucket{" not in line and "_sum{" not in line)
    what = (
        f"{len(PROVIDERS)} providers + {series} backend series: {len(lines):,} samples "
        f"({len(backend):,} backend), {len(body) / 1024:.0f} KiB of text 0.0.4, "
        f"{compressed / 1024:.0f} KiB gzipped"
    )
    figures = []
    for (concurrency, gzipped), runs in results.items():
        encoding = "gzip (as Prometheus asks)" if gzipped else "uncompressed"
        for index, quantile in enumerate(("p50", "p99")):
            value = statistics.median(run[index] for run in runs) * 1000
            targeted = quantile == "p99" and concurrency == CONCURRENCY and gzipped
            figures.append(
                Figure("scrape",
                       f"/metrics {quantile}, {concurrency} concurrent scraper(s), {encoding}",
                       value, "ms", target=f"< {TARGET_P99_MS:g} ms" if targeted else "",
                       met=value < TARGET_P99_MS if targeted else None,
                       note=f"{what}; {counts[concurrency]} requests over {concurrency} "
                       f"keep-alive connection(s) per run; median of {ctx.repeats} runs; "
                       "aggregator --interval 1")
            )  # fmt: skip
    figures.append(
        Figure("scrape", "render() of the same snapshot in-process (no HTTP)", rendered, "ms",
               note=f"{what}; median of 20 renders (collect + text encoding), no cycle running")
    )  # fmt: skip
    return figures
