"""Workers whose clocks are 10 minutes off, against a 300 s window: real processes (each with its
own skewed clock), the real Redis, the aggregator on the shared clock."""

from __future__ import annotations

import multiprocessing
import socket
import time
from collections.abc import Callable

import redis

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.scrape import samples, scrape

CALLS = 200
SKEWS = {"behind": -600.0, "exact": 0.0, "ahead": 600.0}


def _skewed_worker(redis_url: str, namespace: str, skew: float, provider: str) -> None:
    real = time.time
    time.time = lambda: real() + skew  # this process's clock is off by ``skew`` seconds
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for _ in range(CALLS):
        metrics.record(provider, 0.2, status_code=200)
    metrics.gauge("queue_depth", "Jobs waiting", combine="latest").set(skew)
    if not metrics.close(timeout=10):
        raise SystemExit(1)


def _run(redis_url: str, namespace: str, provider: str) -> int:
    process = multiprocessing.get_context("spawn").Process(
        target=_skewed_worker, args=(redis_url, namespace, SKEWS[provider], provider)
    )
    process.start()
    process.join(timeout=60)
    return process.exitcode if process.exitcode is not None else -1


def test_skewed_workers_count_in_the_window_on_the_shared_clock(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    # The fast clock first, the exact one last: "latest" must be the last one written.
    for provider in ("ahead", "behind", "exact"):
        assert _run(redis_url, namespace, provider) == 0
    redis_now = float(r.time()[0])
    for provider in SKEWS:  # every event scored on Redis's clock, whatever its host said
        scores = [
            score
            for key in keys.window_keys(provider)
            for _, score in r.zrange(key, 0, -1, withscores=True)
        ]
        assert len(scores) == CALLS
        assert all(redis_now - 60 < score <= redis_now + 1 for score in scores), provider

    settings = AggregatorSettings(redis_url=redis_url, namespace=namespace, window_seconds=300)
    aggregator = Aggregator(settings, connect(redis_url, socket_timeout=2.0))  # shared clock
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    window = {p.provider: p.window_requests for p in snapshot.providers}
    assert window == dict.fromkeys(SKEWS, CALLS)  # the one 10 min behind too
    (depth,) = [f for f in snapshot.backend if f.name == "queue_depth"]
    assert depth.samples == (((), 0.0),)  # the exact worker wrote last, not the fast clock

    s = samples(scrape(aggregator))
    offsets = {
        dict(labels)["writer"]: value
        for (name, labels), value in s.items()
        if name == "gatewayz_client_clock_offset_seconds"
    }
    host = socket.gethostname()
    assert len(offsets) == 3 and all(w.startswith(f"{host}:") for w in offsets)
    assert sorted(round(offset) for offset in offsets.values()) == [-600, 0, 600]
    assert abs(s[("gatewayz_aggregator_clock_offset_seconds", ())]) < 1.0


def test_the_window_counts_no_event_from_the_future(
    make_client: Callable[..., MetricsClient],
    redis_url: str,
    namespace: str,
    r: redis.Redis,
    keys: Keys,
) -> None:
    # A writer that bypasses the shared clock (an injected one, 10 minutes fast) cannot keep
    # events in the window for longer than it lasts: they count from "now + 10 s" on only.
    fast = make_client(clock=lambda: time.time() + 600)
    for _ in range(50):
        fast.record("future", 0.2, status_code=503)
    assert fast.flush(timeout=5)
    settings = AggregatorSettings(redis_url=redis_url, namespace=namespace)
    aggregator = Aggregator(settings, connect(redis_url, socket_timeout=2.0))
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    (future,) = [p for p in snapshot.providers if p.provider == "future"]
    assert future.window_requests == 0
    assert future.breaker.state == "closed"  # future failures open nothing
    assert future.requests_total["failure"] == 50  # the counters have them
