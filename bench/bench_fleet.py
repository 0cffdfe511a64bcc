"""A large fleet: the aggregation cycle at 1,000 providers with traffic, alone and beside 2,000
idle names registered within the 7-day retention (a churn of provider names): the cycle must
follow the active providers, not every name seen; and the published snapshot's size.
"""

from __future__ import annotations

import statistics
import time

import redis

from aggregator.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from bench.common import Context, Figure
from client import ClientSettings, MetricsClient
from protocol.connection import connect
from protocol.keys import Keys

ACTIVE = 1000
IDLE = 2000
TARGET_MS = 250.0


def _load(url: str, namespace: str, idle: int) -> None:
    """ACTIVE providers with 30 calls each in the window; ``idle`` more names, last seen two
    hours ago (as if they had had traffic then)."""
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=url, namespace=namespace, max_providers=ACTIVE + 1)
    )
    for i in range(ACTIVE * 30):
        metrics.record(f"p{i % ACTIVE}", 0.1 + (i % 7) / 10, status_code=200 if i % 9 else 500)
    metrics.flush(timeout=120)
    metrics.close()
    if idle:
        with redis.Redis.from_url(url) as connection:
            seen = time.time() - 2 * 3600
            connection.zadd(Keys(namespace).providers, {f"idle{i}": seen for i in range(idle)})


def _cycles(url: str, namespace: str, runs: int) -> tuple[float, int]:
    """Median cycle seconds, and the published snapshot's bytes."""
    aggregator = Aggregator(
        AggregatorSettings(redis_url=url, namespace=namespace), connect(url, socket_timeout=30.0)
    )
    aggregator.run_cycle()  # warm: the lease, the scripts
    durations = []
    for _ in range(runs):
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
    _load(ctx.redis_url, plain, 0)
    _load(ctx.redis_url, churned, IDLE)
    alone, published = _cycles(ctx.redis_url, plain, runs)
    beside, _ = _cycles(ctx.redis_url, churned, runs)
    return [
        Figure("fleet", f"cycle, {ACTIVE:,} providers with traffic", alone * 1000, "ms",
               target=f"<= {TARGET_MS:.0f} ms", met=alone * 1000 <= TARGET_MS,
               note=f"median of {runs}"),
        Figure("fleet", f"cycle, the same beside {IDLE:,} idle names", beside * 1000, "ms",
               peer="without them", note=f"{beside / alone:.2f}x; median of {runs}"),
        Figure("fleet", f"published snapshot, {ACTIVE:,} providers", published / 1000, "KB",
               note="zlib level 1: what a follower fetches per cycle"),
    ]  # fmt: skip
