"""Redis Cluster next to one Redis, in the same run: ingest of one hot provider from 4 worker
processes (one Redis; a local 3-master cluster; the same cluster with the provider split over 8
shards), interleaved A B C A B C..., with events/s, Redis CPU per event (all nodes) and events
per node; and an aggregation cycle over 200 providers on each.

On a 2-core machine the cluster cannot be faster: its three redis-servers, the workers and the
benchmark share the same two cores. What transfers to real hosts is the CPU per event and how
the load spreads over the nodes.
"""

from __future__ import annotations

import statistics
import time

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from bench.bench_ingest import ingest
from bench.common import Context, Figure
from client import ClientSettings, MetricsClient
from devtools.redis_cluster import node_urls, start_cluster, tools_present
from gatewayz_transport.connection import connect

WORKERS = 4
SHARDS = 8
CYCLE_PROVIDERS = 200


def _cycle_seconds(url: str, namespace: str, runs: int) -> float:
    """Median duration of the aggregator's cycle over CYCLE_PROVIDERS providers with traffic."""
    metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace=namespace))
    for i in range(CYCLE_PROVIDERS * 50):
        metrics.record(f"p{i % CYCLE_PROVIDERS}", 0.1 + (i % 7) / 10, status_code=200)
    metrics.flush(timeout=60)
    metrics.close()
    settings = AggregatorSettings(redis_url=url, namespace=namespace)
    aggregator = Aggregator(settings, connect(url, socket_timeout=5.0))
    aggregator.run_cycle()  # warm: scripts loaded, layout known
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        aggregator.run_cycle()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def run(ctx: Context) -> list[Figure]:
    if not tools_present():
        return [Figure("cluster", "skipped: redis-server/redis-cli not on PATH", float("nan"), "")]
    seconds = 1.5 if ctx.quick else 4.0
    rounds = 1 if ctx.quick else 3
    cluster = start_cluster(masters=3)
    try:
        variants = {
            "one Redis": (ctx.redis_url, 1),
            "3-master cluster": (cluster.url, 1),
            f"3-master cluster, provider over {SHARDS} shards": (cluster.url, SHARDS),
        }
        results: dict[str, list[tuple[float, float, str, float]]] = {n: [] for n in variants}
        for _ in range(rounds):  # interleaved: A B C A B C ...
            for name, (url, shards) in variants.items():
                results[name].append(ingest(ctx, WORKERS, seconds, url=url, shards=shards))
        figures = []
        for name, (url, _) in variants.items():
            rate = statistics.median(r[0] for r in results[name])
            cpu = statistics.median(r[1] for r in results[name])
            busiest = statistics.median(r[3] for r in results[name])
            nodes = len(node_urls(url))
            figures += [
                Figure("cluster", f"ingest events/s, {WORKERS} workers, {name}", rate,
                       "events/s", note=f"median of {rounds}; last: {results[name][-1][2]}"),
                Figure("cluster", f"Redis CPU per million events, {name}", cpu, "CPU s",
                       note=f"summed over {nodes} redis-server(s)"),
                Figure("cluster", f"busiest node's share of the hot provider, {name}", busiest,
                       "ratio", note=f"{nodes} node(s)"),
            ]  # fmt: skip
        runs = 3 if ctx.quick else 10
        single = _cycle_seconds(ctx.redis_url, ctx.namespace("cycle-single"), runs)
        clustered = _cycle_seconds(cluster.url, ctx.namespace("cycle-cluster"), runs)
        figures += [
            Figure("cluster", f"cycle, {CYCLE_PROVIDERS} providers, one Redis", single * 1000,
                   "ms", note=f"median of {runs}"),
            Figure("cluster", f"cycle, {CYCLE_PROVIDERS} providers, 3-master cluster",
                   clustered * 1000, "ms", peer="one Redis, same run",
                   note=f"median of {runs}; {clustered / single:.2f}x one Redis"),
        ]  # fmt: skip
        return figures
    finally:
        cluster.stop()
