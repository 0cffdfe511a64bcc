"""Long label values (issue 24 item 1): 200 model calls, each with its own 16 KB model name, booked
through ``GatewayMetrics.record_inference()`` (8 per-model series a call), then one aggregator
cycle and one /metrics render of each format in a fresh process.

Two variants in interleaved turns, medians reported side by side: ``unbounded`` (label values
bounded at 1 MiB and one batch of any size: what the client did before the bound) and
``bounded`` (the defaults: 256-byte label values, 1 MiB of increments per batch). Figures: the
Redis memory the calls added (``used_memory`` before and after; the namespace's keys by
``MEMORY USAGE``), the /metrics bodies, and the aggregator process's peak RSS (a fresh process:
its imports, one cycle, one render of each format; no HTTP server).
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import string
from typing import Any

from aggregator.engine.cycle import Aggregator
from aggregator.serve.rendering import make_registry, render
from aggregator.settings import AggregatorSettings
from bench.common import Context, Figure
from client import ClientSettings, GatewayMetrics, MetricsClient
from gatewayz_transport.connection import connect

CALLS = 200
MODEL_BYTES = 16 * 1024
VARIANTS: dict[str, dict[str, Any]] = {
    "unbounded": {"max_label_value_bytes": 1 << 20, "max_batch_bytes": 1 << 30},
    "bounded": {},  # the defaults
}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _models(seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + string.digits
    return ["".join(rng.choices(alphabet, k=MODEL_BYTES)) for _ in range(CALLS)]


def _book(ctx: Context, namespace: str, models: list[str], settings: dict[str, Any]) -> None:
    client = MetricsClient(
        settings=ClientSettings(redis_url=ctx.redis_url, namespace=namespace, **settings)
    )
    gateway = GatewayMetrics(client)
    try:
        for model in models:
            gateway.record_inference(
                "openrouter",
                model,
                0.8,
                status_code=200,
                input_tokens=120,
                output_tokens=40,
                credits=0.02,
                cost_usd=0.001,
                endpoint="/v1/chat/completions",
                ttfb_s=0.2,
                ttfc_s=0.3,
            )
        if not client.flush(timeout=120):
            raise RuntimeError(f"flush did not complete: {client.stats()}")
    finally:
        client.close()


def _aggregate(redis_url: str, namespace: str, answers: Any) -> None:
    """In a fresh process: one cycle and one render of each format; (its peak RSS and its RSS
    before the cycle, in bytes; text body bytes, OpenMetrics body bytes)."""
    connection = connect(redis_url, socket_timeout=60.0)
    aggregator = Aggregator(
        AggregatorSettings(redis_url=redis_url, namespace=namespace), connection
    )
    before = _high_water_bytes()
    if aggregator.run_cycle() is None:
        raise RuntimeError(f"cycle failed: {aggregator.status.last_error}")
    registry = make_registry(aggregator.served)
    text, _ = render(registry, None)
    openmetrics, _ = render(registry, OPENMETRICS)
    peak = _high_water_bytes()
    aggregator.release_lease()
    connection.close()
    answers.put((peak, before, len(text), len(openmetrics)))


def _high_water_bytes() -> int:
    """This process's peak RSS (VmHWM: its own since exec, unlike ``ru_maxrss``, which Linux
    carries over from the parent that forked it). Linux only."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _turn(ctx: Context, variant: str, seed: int) -> dict[str, float]:
    namespace = ctx.namespace(f"labels-{variant}")
    with ctx.connection() as connection:
        used_before = int(connection.info("memory")["used_memory"])
        _book(ctx, namespace, _models(seed), VARIANTS[variant])
        used_after = int(connection.info("memory")["used_memory"])
        names = list(connection.scan_iter(f"{namespace}:*", count=1000))
        keys_bytes = sum(int(connection.memory_usage(name, samples=0) or 0) for name in names)
        spawn = multiprocessing.get_context("spawn")
        answers = spawn.Queue()
        process = spawn.Process(target=_aggregate, args=(ctx.redis_url, namespace, answers))
        process.start()
        rss, rss_before, text_bytes, openmetrics_bytes = answers.get(timeout=600)
        process.join(timeout=60)
        for name in names:
            connection.delete(name)  # not UNLINK: freed now, not during the next turn
    return {
        "redis": used_after - used_before,
        "keys": keys_bytes,
        "text": text_bytes,
        "openmetrics": openmetrics_bytes,
        "rss": rss,
        "rss_before": rss_before,
    }


def run(ctx: Context) -> list[Figure]:
    turns: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for repeat in range(ctx.repeats):
        for variant in VARIANTS if repeat % 2 == 0 else reversed(VARIANTS):
            turns[variant].append(_turn(ctx, variant, seed=repeat))
    figures = []
    what = {
        "redis": "Redis used_memory added",
        "keys": "namespace keys (MEMORY USAGE)",
        "text": "/metrics body, text format",
        "openmetrics": "/metrics body, OpenMetrics",
        "rss": "aggregator process peak RSS",
        "rss_before": "aggregator process RSS before its cycle (imports)",
    }
    for figure, name in what.items():
        for variant in VARIANTS:
            median = statistics.median(turn[figure] for turn in turns[variant])
            figures.append(
                Figure(
                    "labels",
                    f"{name}: {CALLS} calls, 16 KB model names",
                    median / 1e6,
                    "MB",
                    peer="" if variant == "bounded" else "unbounded: as before the bound",
                    note=f"{variant}; median of {ctx.repeats} interleaved turns",
                )
            )
    return figures
