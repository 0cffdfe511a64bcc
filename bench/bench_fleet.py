"""A large fleet: the aggregation cycle at 1,000 providers with traffic and 10,000 backend series,
alone and beside 2,000 idle names registered within the 7-day retention (a churn of provider
names): the cycle must follow the active providers, not every name seen; and the published
snapshot's size.

Cycles run back to back on a clock that advances one breaker interval (5 s) per cycle, as the
reads of a running aggregator do: each trims the window keys of the providers whose trim is due
(once per ``TRIM_SHARE`` of the window, spread over the reads), not every key.
"""

from __future__ import annotations

import statistics
import time

import redis

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from bench.common import Context, Figure
from client import ClientSettings, MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect

ACTIVE = 1000
IDLE = 2000
BACKEND_METRICS = 10  # counters of 1,000 label sets each (the per-metric series cap)
SERIES_PER_METRIC = 1000
TARGET_MS = 250.0


def load_fleet(url: str, namespace: str, idle: int) -> None:
    """ACTIVE providers with 30 calls each in the window; ``idle`` more names, last seen two
    hours ago (as if they had had traffic then)."""
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=url, namespace=namespace, max_providers=ACTIVE + 1)
    )
    for i in range(ACTIVE * 30):
        metrics.record(f"p{i % ACTIVE}", 0.1 + (i % 7) / 10, status_code=200 if i % 9 else 500)
    for m in range(BACKEND_METRICS):
        counter = metrics.counter(f"fleet_{m}_total", "a backend counter", ["key"])
        for i in range(SERIES_PER_METRIC):
            counter.labels(f"k{i}").inc(i)
    metrics.flush(timeout=120)
    metrics.close()
    if idle:
        with redis.Redis.from_url(url) as connection:
            seen = time.time() - 2 * 3600
            connection.zadd(Keys(namespace).providers, {f"idle{i}": seen for i in range(idle)})


def _cycles(url: str, namespace: str, runs: int) -> tuple[float, int]:
    """Median cycle seconds, and the published snapshot's bytes."""
    settings = AggregatorSettings(redis_url=url, namespace=namespace)
    clock = [time.time()]
    aggregator = Aggregator(settings, connect(url, socket_timeout=30.0), clock=lambda: clock[0])
    aggregator.run_cycle()  # warm: the lease, the scripts; trims every key
    durations = []
    for _ in range(runs):
        clock[0] += settings.breaker_interval_seconds
        started = time.perf_counter()
        if aggregator.run_cycle() is None:
            raise RuntimeError(f"cycle failed: {aggregator.status.last_error}")
        durations.append(time.perf_counter() - started)
    aggregator.release_lease()
    with redis.Redis.from_url(url) as connection:
        published = int(connection.strlen(Keys(namespace).snapshot))
    return statistics.median(durations), published


def run(ctx: Context) -> list[Figure]:
    runs = 3 if ctx.quick else 7
    plain, churned = ctx.namespace("fleet"), ctx.namespace("fleet-churn")
    load_fleet(ctx.redis_url, plain, 0)
    load_fleet(ctx.redis_url, churned, IDLE)
    alone, published = _cycles(ctx.redis_url, plain, runs)
    beside, _ = _cycles(ctx.redis_url, churned, runs)
    return [
        Figure("fleet", f"cycle, {ACTIVE:,} providers with traffic, "
               f"{BACKEND_METRICS * SERIES_PER_METRIC:,} backend series", alone * 1000, "ms",
               target=f"<= {TARGET_MS:.0f} ms", met=alone * 1000 <= TARGET_MS,
               note=f"median of {runs}"),
        Figure("fleet", f"cycle, the same beside {IDLE:,} idle names", beside * 1000, "ms",
               peer="without them", note=f"{beside / alone:.2f}x; median of {runs}"),
        Figure("fleet", f"published snapshot, {ACTIVE:,} providers", published / 1000, "KB",
               note="zlib level 1: what a follower fetches per cycle"),
    ]  # fmt: skip
