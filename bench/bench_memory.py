"""Redis memory of the window: bytes per event (100,000 events of one provider spread over the
5-minute window) and bytes per provider at 100 events/s (30,000 events in the window).

Events get a realistic spread of outcomes and latencies (several window partitions populated)
and timestamps spread over 300 s through an injected clock. Sizes are ``MEMORY USAGE key
SAMPLES 0`` (every element counted), summed over the provider's keys.
"""

from __future__ import annotations

import random
import time

import redis

from bench.common import Context, Figure
from client import Keys, MetricsClient

PROVIDER = "openrouter"
WINDOW_SECONDS = 300.0
TARGET_BYTES_PER_EVENT = 100


def _calls(count: int, seed: int) -> list[tuple[float, int]]:
    """(latency s, status): 92% 200, 4% 502, 2% 429, 2% 400; log-normal latencies, median
    0.8 s, long tail (a few beyond 10 s)."""
    rng = random.Random(seed)
    statuses = rng.choices((200, 502, 429, 400), weights=(92, 4, 2, 2), k=count)
    return [(rng.lognormvariate(-0.22, 0.9), status) for status in statuses]


def _fill(ctx: Context, count: int, label: str) -> tuple[Keys, int]:
    """Record ``count`` events spread evenly over the last window; (keys, events in Redis)."""
    keys = Keys(ctx.namespace(label))
    now = [0.0]
    metrics = MetricsClient(redis_url=ctx.redis_url, namespace=keys.namespace, clock=lambda: now[0])
    start, step = time.time() - WINDOW_SECONDS, WINDOW_SECONDS / count
    try:
        for i, (latency, status) in enumerate(_calls(count, seed=count)):
            now[0] = start + i * step
            metrics.record(PROVIDER, latency, status)
        if not metrics.flush(timeout=120):
            raise RuntimeError("flush did not complete in 120 s")
    finally:
        metrics.close()
    with ctx.connection() as connection:
        stored = sum(int(connection.zcard(key)) for key in keys.window_keys(PROVIDER))
    return keys, stored


def _usage(connection: redis.Redis, names: list[str]) -> tuple[int, int, int]:
    """(bytes, keys present, of which skiplist-encoded)."""
    total = present = skiplists = 0
    for name in names:
        size = connection.memory_usage(name, samples=0)
        if size is None:
            continue
        total, present = total + int(size), present + 1
        skiplists += connection.object("encoding", name) in (b"skiplist", "skiplist")
    return total, present, skiplists


def _drop(connection: redis.Redis, keys: Keys) -> None:
    for name in connection.scan_iter(f"{keys.namespace}:*", count=1000):
        connection.unlink(name)


def run(ctx: Context) -> list[Figure]:
    figures: list[Figure] = []
    with ctx.connection() as connection:
        keys, stored = _fill(ctx, 100_000, "memory")
        window, present, skiplists = _usage(connection, list(keys.window_keys(PROVIDER)))
        per_event = window / stored
        figures.append(
            Figure(
                "memory",
                "window bytes per event (100,000 events, one provider)",
                per_event,
                "bytes",
                target=f"<= {TARGET_BYTES_PER_EVENT} bytes",
                met=per_event <= TARGET_BYTES_PER_EVENT,
                note=f"{window:,} bytes over {present} window keys ({skiplists} skiplist-encoded) "
                f"holding {stored:,} events; MEMORY USAGE SAMPLES 0",
            )
        )
        _drop(connection, keys)
        keys, stored = _fill(ctx, 30_000, "memory-100rps")
        names = [n.decode() for n in connection.scan_iter(f"{keys.namespace}:{{{PROVIDER}}}:*")]
        total, present, skiplists = _usage(connection, names)
        window_only, _, _ = _usage(connection, list(keys.window_keys(PROVIDER)))
        figures.append(
            Figure(
                "memory",
                "bytes per provider at 100 events/s (30,000 in window)",
                total,
                "bytes",
                note=f"{present} keys ({skiplists} skiplist-encoded), {stored:,} events; "
                f"{window_only / stored:.1f} window bytes per event; MEMORY USAGE SAMPLES 0",
            )
        )
        _drop(connection, keys)
    return figures
