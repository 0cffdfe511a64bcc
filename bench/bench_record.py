"""Request-path cost: ns per ``record()`` call (p50, p99) next to prometheus_client (single
process and multiprocess mode) and prometheus-redis-client, same labels, buckets and latencies.
Every call is timed on its own (``perf_counter_ns``), minus the median of an empty timed loop;
each percentile is the median over ``ctx.repeats`` runs. The paced runs sleep 1 ms before each
call, as a worker calls once per request: the figure then includes cold caches. Multiprocess
mode is chosen when prometheus_client is imported, so that peer runs in a subprocess with
PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from time import perf_counter_ns, sleep

import redis

from bench.common import Context, Figure, percentile
from client import MetricsClient

PROVIDER = "openrouter"
BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
LATENCIES = (0.05, 0.3, 0.42, 0.8, 1.5, 3.0, 7.0, 12.0)  # one in each bucket, and +Inf
ROOT = Path(__file__).resolve().parents[1]
PAUSE = 0.001  # seconds slept before each call of the paced runs

Timings = dict[str, float]  # p50, p99, overhead (ns)
Loop = Callable[[int], list[float]]


def _empty_loop(calls: int) -> list[float]:
    ns, latencies, count = perf_counter_ns, LATENCIES, len(LATENCIES)
    samples: list[float] = [0.0] * calls
    for i in range(calls):
        value = latencies[i % count]  # noqa: F841 (the same work as the measured loops)
        started = ns()
        samples[i] = ns() - started
    return samples


def _summarise(loop: Loop, calls: int, repeats: int, between: Callable[[], object]) -> Timings:
    p50s, p99s, overheads = [], [], []
    for _ in range(repeats):
        overheads.append(statistics.median(_empty_loop(calls)))
        samples = sorted(loop(calls))
        p50s.append(percentile(samples, 0.50))
        p99s.append(percentile(samples, 0.99))
        between()
    overhead = statistics.median(overheads)
    return {
        "p50": max(0.0, statistics.median(p50s) - overhead),
        "p99": max(0.0, statistics.median(p99s) - overhead),
        "overhead": overhead,
    }


def _record_loop(metrics: MetricsClient, pause: float = 0.0) -> Loop:
    record = metrics.record

    def loop(calls: int) -> list[float]:
        ns, latencies, count = perf_counter_ns, LATENCIES, len(LATENCIES)
        samples: list[float] = [0.0] * calls
        for i in range(calls):
            value = latencies[i % count]
            if pause:
                sleep(pause)
            started = ns()
            record(PROVIDER, value, 200)
            samples[i] = ns() - started
        return samples

    return loop


def _prometheus_loop(pause: float = 0.0) -> Loop:
    """Histogram.observe() + Counter.inc(), each through labels(), on a private registry."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    labels = ["provider"]
    histogram = Histogram("latency_seconds", "", labels, buckets=BUCKETS, registry=registry)
    counter = Counter("requests_total", "", labels, registry=registry)

    def loop(calls: int) -> list[float]:
        ns, latencies, count = perf_counter_ns, LATENCIES, len(LATENCIES)
        samples: list[float] = [0.0] * calls
        for i in range(calls):
            value = latencies[i % count]
            if pause:
                sleep(pause)
            started = ns()
            histogram.labels(provider=PROVIDER).observe(value)
            counter.labels(provider=PROVIDER).inc()
            samples[i] = ns() - started
        return samples

    return loop


def prometheus_child() -> None:
    """The multiprocess-mode subprocess: [calls, repeats, pause] JSON in argv, timings out."""
    calls, repeats, pause = json.loads(sys.argv[1])
    from prometheus_client import values

    timings = _summarise(_prometheus_loop(pause), calls, repeats, lambda: None)
    sys.stdout.write(json.dumps({**timings, "value_class": values.ValueClass.__name__}))


def _prometheus_multiprocess(calls: int, repeats: int, pause: float = 0.0) -> tuple[Timings, str]:
    code = "import bench.bench_record as b; b.prometheus_child()"
    with tempfile.TemporaryDirectory(prefix="bench-prom-mp-") as directory:
        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps([calls, repeats, pause])],
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
    result = json.loads(done.stdout)
    return {k: float(result[k]) for k in ("p50", "p99", "overhead")}, str(result["value_class"])


def _redis_peer_loop(connection: redis.Redis, namespace: str) -> Loop:
    """prometheus-redis-client's Histogram.observe(): one MULTI/EXEC round trip per call."""
    from prometheus_redis_client import Histogram, Registry

    name = namespace.replace("-", "_") + "_latency_seconds"
    registry = Registry(redis=connection)
    histogram = Histogram(name, "", ["provider"], buckets=list(BUCKETS), registry=registry)

    def loop(calls: int) -> list[float]:
        ns, latencies, count = perf_counter_ns, LATENCIES, len(LATENCIES)
        samples: list[float] = [0.0] * calls
        for i in range(calls):
            value = latencies[i % count]
            started = ns()
            histogram.observe(value, labels={"provider": PROVIDER})  # it mutates the dict
            samples[i] = ns() - started
        return samples

    return loop


def run(ctx: Context) -> list[Figure]:
    calls = 20_000 if ctx.quick else 200_000
    paced_calls = 300 if ctx.quick else 2_000
    redis_calls = 500 if ctx.quick else 2_000
    metrics = MetricsClient(redis_url=ctx.redis_url, namespace=ctx.namespace("record"))
    try:
        _record_loop(metrics)(1_000)  # starts the flusher, which connects
        metrics.flush(timeout=30)
        ours = _summarise(_record_loop(metrics), calls, ctx.repeats, lambda: metrics.flush(60))
        paced = _summarise(_record_loop(metrics, PAUSE), paced_calls, ctx.repeats, lambda: None)
        dropped = metrics.stats()["dropped"]
    finally:
        metrics.close()
    single = _summarise(_prometheus_loop(), calls, ctx.repeats, lambda: None)
    multi, value_class = _prometheus_multiprocess(calls, ctx.repeats)
    multi_paced, _ = _prometheus_multiprocess(paced_calls, ctx.repeats, PAUSE)
    connection = ctx.connection()
    try:
        loop = _redis_peer_loop(connection, ctx.namespace("record-peer"))
        loop(50)  # connects
        remote = _summarise(loop, redis_calls, ctx.repeats, lambda: None)
    finally:
        connection.close()
    runs = f"median of {ctx.repeats} runs"

    def pair(
        what: str, t: Timings, peer: str, note: str, p50: int = 0, p99: int = 0
    ) -> list[Figure]:
        return [
            Figure(
                "record",
                f"{what} {q} per call",
                t[q],
                "ns",
                peer,
                target=f"<= {target:,} ns" if target else "",
                met=t[q] <= target if target else None,
                note=f"{note}; {runs}; empty timed loop ({t['overhead']:.0f} ns) subtracted",
            )
            for q, target in (("p50", p50), ("p99", p99))
        ]

    def ratio(peer: Timings, name: str, target: str = "") -> Figure:
        value = peer["p50"] / ours["p50"] if ours["p50"] else float("inf")
        note = f"{peer['p50']:.0f} ns / {ours['p50']:.0f} ns"
        met = value >= 3 if target else None
        return Figure("record", f"{name} p50 / record() p50", value, "x", name, target, met, note)

    ours_note = f"{calls:,} calls, the flusher writing to Redis meanwhile ({dropped} dropped)"
    mp_note = f"{calls:,} calls in a subprocess with PROMETHEUS_MULTIPROC_DIR ({value_class})"
    redis_note = f"{redis_calls:,} calls, one synchronous MULTI/EXEC round trip each"
    paced_note = (
        f"{paced_calls:,} calls, each after a 1 ms sleep, as a gateway calls once per request: "
        "caches are cold"
    )
    return [
        *pair("record()", ours, "", ours_note, p50=2_000, p99=20_000),
        *pair("single-process observe()+inc()", single, "prometheus_client", f"{calls:,} calls"),
        *pair("multiprocess observe()+inc()", multi, "prometheus_client multiprocess", mp_note),
        *pair("redis-client observe()", remote, "prometheus-redis-client", redis_note),
        ratio(multi, "prometheus_client multiprocess", ">= 3x"),
        ratio(single, "prometheus_client"),
        *pair("record() after a 1 ms pause", paced, "", paced_note),
        *pair("multiprocess observe()+inc() after a 1 ms pause", multi_paced,
              "prometheus_client multiprocess", paced_note),
    ]  # fmt: skip
