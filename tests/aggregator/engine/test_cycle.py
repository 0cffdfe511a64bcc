"""Aggregation cycles on a real Redis: exact counts from several processes, the histogram,
window expiry, formulas end to end, breaker transitions with an injected clock, and replicas:
which snapshot is newest, and a deposed leader publishes nothing."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import aggregator.engine.reader as reader_module
import aggregator.engine.writer as writer_module
from aggregator.core.breaker import BreakerConfig
from aggregator.core.snapshot import ProviderHealth, Snapshot, decode_published, encode_published
from aggregator.core.snapshot_rules import published_bytes
from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_server import RedisProcess
from gatewayz_protocol.keys import Keys
from gatewayz_transport import routing
from gatewayz_transport.connection import Connection, connect
from tests.support.backends import AUTH_HINT, BOTH_BACKENDS, password_redis
from tests.support.clock import FakeClock
from tests.support.processes import wait_for
from tests.support.scrape import scrape

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]

# Per worker process: (provider, latency, status code, repeat)
WORKER_TRAFFIC = [
    ("openrouter", 0.2, 200, 40),
    ("openrouter", 0.7, 200, 10),
    ("openrouter", 1.5, 503, 5),
    ("openrouter", 0.1, 429, 3),
    ("openrouter", 0.1, 400, 2),
    ("anthropic", 3.0, 200, 7),
    ("anthropic", 12.0, 504, 1),
]


def _worker(redis_url: str, namespace: str) -> None:
    metrics = MetricsClient(redis_url=redis_url, namespace=namespace)
    for provider, latency, status, repeat in WORKER_TRAFFIC:
        for _ in range(repeat):
            metrics.record(provider, latency, status_code=status, tokens=10, cost_usd=0.001)
    if not metrics.close(timeout=10):
        raise SystemExit(1)


def _one(snapshot: Snapshot | None, provider: str) -> ProviderHealth:
    assert snapshot is not None
    (found,) = [p for p in snapshot.providers if p.provider == provider]
    return found


def test_exact_counts_from_several_processes(
    redis_url: str, namespace: str, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    processes = 4
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(redis_url, namespace)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    clock.now = time.time()  # the workers stamped events with the real clock
    snapshot = make_aggregator().run_cycle()
    openrouter = _one(snapshot, "openrouter")
    assert openrouter.requests_total == {
        "success": 50 * processes,
        "failure": 5 * processes,
        "rate_limited": 3 * processes,
        "caller_error": 2 * processes,
    }
    assert openrouter.window_requests == 60 * processes
    assert openrouter.error_rate == 5 / 55  # failures / (successes + failures)
    assert openrouter.cost_usd == 60 * processes * 0.001
    assert openrouter.tokens_total == 60 * 10 * processes
    # le 0.1: 5 (429 + 400); 0.5: +40; 1: +10; 2: +5; rest 0
    assert openrouter.histogram_cumulative == tuple(
        n * processes for n in (5, 45, 55, 60, 60, 60, 60)
    )
    anthropic = _one(snapshot, "anthropic")
    assert anthropic.error_rate == 1 / 8
    assert anthropic.histogram_cumulative == tuple(n * processes for n in (0, 0, 0, 0, 7, 7, 8))
    assert anthropic.latency_sum_seconds == (7 * 3.0 + 12.0) * processes


def test_histogram_is_cumulative_with_exact_sum(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    latencies = [0.05, 0.1, 0.3, 0.5, 0.7, 1.5, 3.0, 7.0, 12.0]
    for latency in latencies:
        metrics.record("openrouter", latency)
    assert metrics.flush(timeout=5)
    health = _one(make_aggregator().run_cycle(), "openrouter")
    # le=0.1: 0.05, 0.1 | 0.5: +0.3, 0.5 | 1: +0.7 | 2: +1.5 | 5: +3 | 10: +7 | +Inf: +12
    assert health.histogram_cumulative == (2, 4, 5, 6, 7, 8, 9)
    assert health.latency_sum_seconds == 25.15


def test_events_leave_the_window_but_stay_in_the_counters(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    start = clock.now
    for _ in range(10):
        metrics.record("openrouter", 0.2, status_code=500)
    clock.advance(200)
    for _ in range(5):
        metrics.record("openrouter", 0.2)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator()

    clock.now = start + 299
    health = _one(aggregator.run_cycle(), "openrouter")
    assert health.window_by_outcome == {
        "success": 5,
        "failure": 10,
        "rate_limited": 0,
        "caller_error": 0,
    }
    assert health.error_rate == 10 / 15

    clock.now = start + 300  # the first events are now exactly window-old: out
    health = _one(aggregator.run_cycle(), "openrouter")
    assert health.window_requests == 5
    assert health.error_rate == 0.0
    assert health.requests_total["failure"] == 10
    assert health.requests_total["success"] == 5

    clock.now = start + 200 + 301  # more than TRIM_SHARE of the window later: trimmed too
    health = _one(aggregator.run_cycle(), "openrouter")
    assert sum(r.zcard(key) for key in keys.window_keys("openrouter")) == 0
    assert health.window_requests == 0
    assert health.latency_p95_seconds is None
    assert health.health_score == 1.0  # no traffic in the window: seed defaults
    assert health.requests_total["success"] == 5


def test_latency_score_and_health_score_from_the_window(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    for _ in range(20):
        metrics.record("slowai", 2.8)  # partition (2.5, 3.0]
    assert metrics.flush(timeout=5)
    health = _one(make_aggregator().run_cycle(), "slowai")
    # p95 rank = 0.95 * 20 = 19 inside the only partition: 2.5 + 0.5 * 19 / 20
    assert health.latency_p95_seconds == 2.975
    # linear between the 2 s target and 10 s ceiling: (10 - 2.975) / 8
    assert health.latency_score == 0.878125
    assert health.health_score == 0.4 * 1 + 0.3 * 1 + 0.3 * 0.878125


def test_configured_providers_without_traffic_get_seed_defaults(
    make_aggregator: MakeAggregator,
) -> None:
    health = _one(make_aggregator(providers=("idle",)).run_cycle(), "idle")
    assert (health.availability, health.error_rate, health.health_score) == (1.0, 0.0, 1.0)
    assert health.breaker.state == "closed"
    assert health.window_requests == 0
    assert health.histogram_cumulative == (0,) * 7


def test_breaker_opens_recovers_and_does_not_reopen_on_old_failures(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    aggregator = make_aggregator(breaker=BreakerConfig(min_calls=20, open_seconds=30))
    for _ in range(25):
        metrics.record("flaky", 1.0, status_code=503)
    assert metrics.flush(timeout=5)

    clock.advance(1)
    health = _one(aggregator.run_cycle(), "flaky")
    assert health.breaker.state == "open"
    assert health.availability == 0.0
    opened_at = clock.now
    assert health.breaker.open_until == opened_at + 30
    assert r.hget(keys.breaker("flaky"), "state") == b"open"

    clock.advance(29)
    assert _one(aggregator.run_cycle(), "flaky").breaker.state == "open"
    clock.advance(1)
    health = _one(aggregator.run_cycle(), "flaky")
    assert health.breaker.state == "half_open"
    assert health.availability == 0.0

    clock.advance(1)
    for _ in range(5):  # trial calls after the half-open transition, all successful
        metrics.record("flaky", 0.3)
    assert metrics.flush(timeout=5)
    clock.advance(1)
    health = _one(aggregator.run_cycle(), "flaky")
    assert health.breaker.state == "closed"
    assert health.breaker.epoch == 3  # closed->open->half_open->closed
    assert health.error_rate == 25 / 30  # the old failures are still in the window...
    for _ in range(5):  # ...but the breaker only counts calls since it closed
        clock.advance(30)
        health = _one(aggregator.run_cycle(), "flaky")
        assert health.breaker.state == "closed"
        assert health.availability == 1.0


class Interposed:
    """Runs ``before_next_pipeline`` once, right before the next pipeline the aggregator's
    reader or writer sends on ``connection`` (one Redis or a cluster): a way to let another
    replica act in the middle of a cycle."""

    def __init__(self, connection: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.before_next_pipeline: Callable[[], None] | None = None

        def hooked_pipeline(on: Connection) -> Any:
            pipe = routing.pipeline(on)
            hook, self.before_next_pipeline = self.before_next_pipeline, None
            if hook is not None and on is connection:
                execute = pipe.execute

                def hooked(*args: Any, **kwargs: Any) -> Any:
                    hook()
                    return execute(*args, **kwargs)

                pipe.execute = hooked  # type: ignore[method-assign]
            elif hook is not None:
                self.before_next_pipeline = hook  # another connection's: keep waiting
            return pipe

        for module in (reader_module, writer_module):
            monkeypatch.setattr(module, "pipeline", hooked_pipeline)


def test_a_leader_deposed_during_its_cycle_publishes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    redis_url: str,
    namespace: str,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=5)
    connection = connect(redis_url, socket_timeout=2.0)
    interposed = Interposed(connection, monkeypatch)
    first = Aggregator(
        AggregatorSettings(redis_url=redis_url, namespace=namespace, instance="first"),
        connection,
        clock=clock,
    )
    second = make_aggregator(instance="second")
    published = first.run_cycle()
    assert published is not None and first.is_leader
    assert Snapshot.from_json(decode_published(r.get(keys.snapshot))) == published

    def take_over() -> None:  # the lease expired during a pause; another replica took it
        r.delete(keys.leader_lease)
        assert second.tick_lease()

    interposed.before_next_pipeline = take_over
    clock.advance(30)
    metrics.record("openrouter", 0.3, status_code=200)
    assert metrics.flush(timeout=5)
    assert first.run_cycle() == published  # it learns it was deposed and follows
    assert not first.is_leader
    assert Snapshot.from_json(decode_published(r.get(keys.snapshot))) == published  # untouched
    newer = second.run_cycle()
    assert newer is not None and newer.cycle == published.cycle + 1
    assert first.run_cycle() == newer
    connection.close()


def test_snapshots_are_numbered_by_all_replicas_together(
    make_aggregator: MakeAggregator, clock: FakeClock, r: redis.Redis, keys: Keys
) -> None:
    leader, follower = make_aggregator(instance="a"), make_aggregator(instance="b")
    for _ in range(5):
        clock.advance(30)
        leader.run_cycle()
    assert follower.run_cycle() == leader.snapshot
    assert follower.snapshot is not None and follower.snapshot.cycle == 5
    leader.release_lease()  # a clean shutdown
    newcomer = make_aggregator(instance="c")  # a replica with no snapshot of its own
    clock.advance(30)
    taken_over = newcomer.run_cycle()
    assert taken_over is not None and taken_over.cycle == 6
    follower.run_cycle()
    assert follower.snapshot == taken_over  # served at once, not after 5 more cycles

    for key in r.scan_iter(keys.pattern()):  # Redis emptied: no counter, no lease
        r.delete(key)
    clock.advance(30)
    after = newcomer.run_cycle()
    assert after is not None and after.cycle == 7  # never below what the leader knew
    newcomer.release_lease()
    stranger = make_aggregator(instance="d")
    clock.advance(30)
    fresh = stranger.run_cycle()
    assert fresh is not None and fresh.cycle == 8  # the counter survived in Redis
    for key in r.scan_iter(keys.pattern()):
        r.delete(key)
    stranger.release_lease()
    restarted = make_aggregator(instance="e")  # nothing in Redis, nothing of its own
    clock.advance(30)
    first_again = restarted.run_cycle()
    assert first_again is not None and first_again.cycle == 1
    follower.run_cycle()
    assert follower.snapshot == first_again  # a different number is a newer snapshot


def _short_lived_worker(redis_url: str, namespace: str, index: int) -> None:
    settings = ClientSettings(redis_url=redis_url, namespace=namespace, gauge_ttl_seconds=1.0)
    metrics = MetricsClient(settings=settings)
    metrics.gauge("inflight", "In flight").set(index)
    if not metrics.close(timeout=10):
        raise SystemExit(1)


def test_dead_gauge_writers_are_forgotten(
    clock: FakeClock,
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    redis_url: str,
    namespace: str,
    r: redis.Redis,
    keys: Keys,
) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_short_lived_worker, args=(redis_url, namespace, i))
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    alive = make_client(clock=clock, gauge_ttl_seconds=60.0)
    alive.gauge("inflight", "In flight").set(100)
    assert alive.flush(timeout=5)
    assert r.zcard(keys.gauge_writers) == 4
    # the dead workers' values expire after their TTL (1 s); the live one's do not
    wait_for(lambda: len(list(r.scan_iter(keys.gauge_values("*")))) == 1, timeout=10)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    assert r.zcard(keys.gauge_writers) == 1  # only the live process is still looked up
    aggregator.run_cycle()
    (family,) = [f for f in aggregator.snapshot.backend if f.name == "inflight"]  # type: ignore[union-attr]
    assert family.samples == (((), 100.0),)


def _publish(r: redis.Redis, keys: Keys, document: dict[str, Any]) -> None:
    """Stands in for another leader's publication (a rolling upgrade: another version)."""
    r.set(keys.snapshot, encode_published(json.dumps(document)))


def test_a_follower_serves_what_it_knows_of_a_newer_leaders_snapshot(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    leader = make_aggregator(instance="leader")
    follower = make_aggregator(instance="follower")
    published = leader.run_cycle()
    assert published is not None and not follower.tick_lease()
    document = json.loads(published.to_json())
    document.update(cycle=published.cycle + 1, version=99, added_later={"x": [1]})
    document["providers"] = [
        {"provider": "newer", "window_requests": 7, "added_later": True},  # fields missing too
    ]
    _publish(r, keys, document)
    served = follower.run_cycle()
    assert served is not None and served.cycle == published.cycle + 1 and served.version == 99
    (health,) = served.providers
    assert (health.provider, health.window_requests, health.availability) == ("newer", 7, 1.0)
    assert health.requests_total == {
        "success": 0,
        "failure": 0,
        "rate_limited": 0,
        "caller_error": 0,
    }
    assert follower.status.cycles_failed == 0
    assert "snapshot version 99, this replica knows" in caplog.text


def _following(
    make_aggregator: MakeAggregator, **settings: Any
) -> tuple[Aggregator, Snapshot, dict[str, Any]]:
    """A follower serving the leader's first snapshot: the follower, that snapshot, and its
    published document (to change and publish as another leader would). ``settings``: both
    replicas'."""
    leader = make_aggregator(instance="leader", **settings)
    follower = make_aggregator(instance="follower", **settings)
    published = leader.run_cycle()
    assert published is not None and follower.run_cycle() == published
    return follower, published, json.loads(published.to_json())


def test_a_follower_serves_a_new_snapshot_under_a_number_it_served_before(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    # Redis lost its data (the cycle counter with it) while the follower could not read it;
    # the new leader, restarted too, counted up to the number the follower still served. Before:
    # the follower kept its old snapshot under that number, and two replicas served one number
    # with different series (torture seed 190001, `replicas_agree`).
    follower, published, document = _following(make_aggregator)
    document.update(taken_at=published.taken_at + 30.0)
    document["providers"] = [{"provider": "after-the-loss", "window_requests": 3}]
    _publish(r, keys, document)
    served = follower.run_cycle()
    assert served is not None and served.cycle == published.cycle
    assert [p.provider for p in served.providers] == ["after-the-loss"]
    assert follower.run_cycle() is served  # the same snapshot again: the same object


def test_a_snapshot_a_follower_cannot_serve_fails_its_cycle_by_name(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    follower, published, document = _following(make_aggregator)
    document.update(cycle=published.cycle + 1)
    document["providers"] = [{"provider": "p", "histogram_cumulative": [1, 2, 3]}]  # other bounds
    _publish(r, keys, document)
    assert follower.run_cycle() is None
    assert follower.status.cycles_failed == 1
    assert follower.status.last_error is not None
    assert follower.status.last_error.startswith(
        "UnusableSnapshot: the published snapshot cannot be served"
    )
    assert "p: 3 histogram buckets for 6 bounds" in follower.status.last_error
    assert follower.snapshot == published  # the last one it could serve stays
    r.set(keys.snapshot, b"z1:not zlib at all")
    assert follower.run_cycle() is None and follower.status.cycles_failed == 2


SPOILED_SNAPSHOTS = {
    # what each made a follower serve before: an exposition Prometheus refuses, or a 500
    "a provider named as markup": (
        lambda d: d["providers"][0].update(provider="<b>"),  # /health/history: 500
        "provider '<b>': not a provider name",
    ),
    "a negative counter": (
        lambda d: d["providers"][0]["requests_total"].update(success=-5),  # OpenMetrics
        "provider 'openrouter': a negative count",
    ),
    "a provider twice": (
        lambda d: d["providers"].append(dict(d["providers"][0])),  # OpenMetrics
        "provider 'openrouter' twice",
    ),
    "taken in year 33658": (
        lambda d: d.update(taken_at=1e12),  # /health/dashboard: 500; never stale
        "taken_at 1000000000000.0: not a time up to now (18000000",  # (now)
    ),
}


@pytest.mark.parametrize("spoiling", SPOILED_SNAPSHOTS)
def test_a_snapshot_with_a_value_no_leader_publishes_is_refused_whole(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    spoiling: str,
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=5)
    follower, published, document = _following(make_aggregator)
    spoil, problem = SPOILED_SNAPSHOTS[spoiling]
    spoil(document)
    document.update(cycle=published.cycle + 1)
    _publish(r, keys, document)
    assert follower.run_cycle() is None
    assert follower.status.cycles_failed == 1 and follower.snapshot == published
    error = f"UnusableSnapshot: the published snapshot cannot be served: {problem}"
    assert (follower.status.last_error or "").startswith(error)
    scrape(follower)  # what it serves parses, in both formats
    clock.advance(91)  # past /readyz's 3 intervals of 30 s
    assert follower.run_cycle() is None  # the same value: refused again
    last = follower.status.last_error
    assert last is not None and last.startswith(error)
    assert follower.ready() == (
        False,
        f"snapshot is 91.0s old (max 90.0s); last cycle failed: {last}",
    )


def test_a_snapshot_over_the_followers_bound_is_refused_without_inflating_it(
    make_aggregator: MakeAggregator, r: redis.Redis, keys: Keys
) -> None:
    # Before: a follower inflated whatever {leader}:snapshot held: 1 MB of zlib made 1 GB of
    # JSON (2 GB at its peak, a 3 s cycle), and a valid snapshot padded so was served.
    settings = {
        "max_providers": 2,
        "max_series_per_metric": 1,
        "max_metric_families": 64,
        "max_label_value_bytes": 64,
    }
    follower, published, document = _following(make_aggregator, **settings)
    bound = published_bytes(follower.settings)
    assert bound == (
        64 * 1024 + 1000 * 300 + 3 * 65 * 100  # the bounded counts and clock offsets
        + 2 * 36 * 1024  # 2 providers at their largest
        + 64 * 1 * (768 + 64)  # 64 families of 1 series, a 64-byte label value each
    )  # fmt: skip
    document.update(cycle=published.cycle + 1, padding="a" * (64 << 20))  # 64 MB of JSON
    bomb = zlib.compress(json.dumps(document).encode(), 9)
    assert len(bomb) < bound < 64 << 20  # a value under the bound inflating far over it
    r.set(keys.snapshot, b"z1:" + bomb)
    tracemalloc.start()
    try:
        assert follower.run_cycle() is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * bound  # inflated no further than the bound
    assert follower.status.cycles_failed == 1 and follower.snapshot == published
    assert follower.status.last_error == (
        "UnusableSnapshot: the published snapshot cannot be served: published snapshot: "
        f"over {bound} bytes of JSON, this replica's bound"
    )
    document.update(padding="a" * (bound // 2))  # a snapshot under the bound is served
    _publish(r, keys, document)
    served = follower.run_cycle()
    assert served is not None and served.cycle == published.cycle + 1


def test_a_leader_raises_every_breakers_fence_as_it_takes_over(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
) -> None:
    metrics = make_client(clock=clock)
    for provider in ("a", "b"):
        metrics.record(provider, 0.1, status_code=200)
    assert metrics.flush(timeout=5)
    first = make_aggregator(instance="first")
    assert first.run_breaker_cycle() == []
    assert {r.hget(keys.breaker(p), "fence") for p in ("a", "b")} == {b"1"}
    first.release_lease()
    second = make_aggregator(instance="second")
    assert second.run_cycle() is not None
    assert {r.hget(keys.breaker(p), "fence") for p in ("a", "b")} == {b"2"}
    r.hset(keys.breaker("a"), "fence", 1)  # (as if lowered) a renewal raises nothing again
    second.run_cycle()
    assert r.hget(keys.breaker("a"), "fence") == b"1"


def test_malformed_values_are_skipped_counted_and_named_and_never_stop_a_breaker(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = make_client(clock=clock)
    for _ in range(60):
        metrics.record("failing", 0.3, status_code=503)
    metrics.record("healthy", 0.1, status_code=200)
    assert metrics.flush(timeout=5)
    r.hset(keys.client_stats, "rejected:x", "notanint")
    r.hset(keys.clock_offsets, b"\xff\xfe", b"0.1|1.0")
    r.hset(keys.breaker("failing"), mapping={"epoch": "abc", "fence": "xyz"})
    r.hset(keys.totals("healthy"), "n:success", "1.5e3")
    r.hset(keys.redis_ops, "zadd", "lots")
    r.set(keys.breaker("healthy"), "not a hash")  # a whole key of another type
    aggregator = make_aggregator(breaker=BreakerConfig(min_calls=20))
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        assert aggregator.run_breaker_cycle() != []
        snapshot = aggregator.run_cycle()
        assert aggregator.run_cycle() is not None  # again: still no failure
    assert snapshot is not None and aggregator.status.cycles_failed == 0
    assert _one(snapshot, "failing").breaker.state == "open"  # repaired by its transition
    assert r.hget(keys.breaker("failing"), "epoch") == b"1"
    assert _one(snapshot, "healthy").requests_total["success"] == 0  # the bad total skipped
    # counted at every read (the breaker cycle's, then two cycles'); totals: the cycles' only
    assert aggregator.status.values_skipped == {
        "client stats": 3,
        "clock offsets": 3,
        "redis operations": 3,
        # once each: failing's epoch (its transition rewrote it), healthy's string (the fences
        # raised as the leader took over replaced it with a hash)
        "breaker": 2,
        "totals": 2,
    }
    named = [m.getMessage() for m in caplog.records if "no writer of this" in m.getMessage()]
    assert len(named) == 6  # each key named once, whatever the reads
    assert any(repr(keys.breaker("failing")) in m and "'epoch'" in m for m in named)
    ready, reason = aggregator.ready()
    assert ready, reason


def test_transition_counts_of_no_transition_are_skipped_counted_and_never_published(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
) -> None:
    # A follower refuses a snapshot with a transition between states that are not states: the
    # leader leaves out what no aggregator counts (it published every field before).
    metrics = make_client(clock=clock)
    metrics.record("p", 0.1, status_code=200)
    assert metrics.flush(timeout=5)
    spoiled = {"closed>bogus": 4, "zz": 1, "open>open": 2}  # open>open: an operator's
    r.hset(keys.transitions("p"), mapping=spoiled)
    leader, follower = make_aggregator(instance="leader"), make_aggregator(instance="follower")
    published = leader.run_cycle()
    assert published is not None and follower.run_cycle() == published
    assert _one(published, "p").transitions == {"open>open": 2}
    assert leader.status.values_skipped == {"transitions": 2}


def test_gauge_values_another_writer_spoiled_are_skipped_and_never_fail_a_cycle(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
) -> None:
    # Before: float() of a value no client writes raised in the cycle, which then failed every
    # time while the hash was there (served: the last snapshot; /readyz: 503 once it aged).
    metrics = make_client(clock=clock)
    metrics.gauge("queue_depth", "Jobs waiting", ["queue"], combine="max").labels("a").set(4)
    assert metrics.flush(timeout=5)
    r.zadd(keys.gauge_writers, {"intruder": clock.now})
    r.hset(
        keys.gauge_values("intruder"),
        mapping={
            'queue_depth|["a"]': "not a number|1.0",  # spoiled value
            'queue_depth|["b"]': "nan|1.0",  # not finite: no client writes it
            'queue_depth|["c"]': "9.0|inf",  # not a finite time
            'queue_depth|["d"]': "7.0|1.0",  # a good one, served
            "~max_series": "²",  # not a cap
            "stray": "1.0|1.0",  # neither a gauge's field nor the cap
        },
    )
    r.hset(keys.gauge_values("spoiled-only"), "queue_depth|[]", "x|y")
    r.zadd(keys.gauge_writers, {"spoiled-only": clock.now})
    aggregator = make_aggregator()
    snapshot = aggregator.run_cycle()
    assert snapshot is not None and aggregator.status.cycles_failed == 0
    (family,) = [f for f in snapshot.backend if f.name == "queue_depth"]
    assert family.samples == ((("a",), 4.0), (("d",), 7.0))
    assert aggregator.status.values_skipped == {"gauge values": 6}
    assert r.exists(keys.gauge_values("spoiled-only"))  # skipped, not forgotten as expired


def test_out_of_memory_stays_visible_while_any_writer_is_refused(
    private_redis: redis.Redis, clock: FakeClock
) -> None:
    """A worker's batch too big for the memory left is refused (and retried) while the
    aggregator's own small writes still fit: Redis's count of OOM refusals says so."""
    port = private_redis.connection_pool.connection_kwargs["port"]
    url, namespace = f"redis://127.0.0.1:{port}/0", "oom"  # a server of its own
    settings = AggregatorSettings(redis_url=url, namespace=namespace, instance="oom")
    aggregator = Aggregator(settings, connect(url, 2.0), clock=clock)
    assert aggregator.run_cycle() is not None  # the baseline of the refusals count
    assert aggregator.ready() == (True, "ok")
    used = int(private_redis.info("memory")["used_memory"])
    private_redis.config_set("maxmemory", used + 300_000)
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=url, namespace=namespace, max_batch=10_000),
        clock=clock,
    )
    try:
        for _ in range(8_000):  # about a megabyte of window members in one batch: refused
            metrics.record("openrouter", 0.2, status_code=200)
        assert metrics.flush(timeout=1.0) is False
        clock.advance(1)
        assert aggregator.run_cycle() is not None
        assert aggregator.status.redis_out_of_memory is True
        ready, reason = aggregator.ready()
        assert not ready and reason.startswith("redis is out of memory: it refuses writes")
    finally:
        private_redis.config_set("maxmemory", 0)
        metrics.close(timeout=2.0)
    for _ in range(2):  # the first sees the refusals made since its last reading
        clock.advance(1)
        assert aggregator.run_cycle() is not None
    assert aggregator.status.redis_out_of_memory is False  # nobody refused since
    assert aggregator.ready() == (True, "ok")


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisProcess]:
    yield from password_redis()


@pytest.mark.parametrize(
    ("password", "refusal"),
    [
        # NOAUTH: redis-py 5.1+ opens with HELLO, refused so; 5.0 sends PING, refused with
        # NOAUTH, which it words "Authentication required."
        (None, ("HELLO must be called with the client already authenticated", "Authentication")),
        ("wrong", ("invalid username-password pair or user is disabled",)),  # WRONGPASS
    ],
)
def test_a_redis_refusing_the_credentials_is_said_so_with_what_to_do(
    secured: RedisProcess,
    password: str | None,
    refusal: tuple[str, ...],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not "redis unreachable" (redis-py's AuthenticationError is a ConnectionError): the
    cycle's error, its log line and /readyz's reason say Redis refused the credentials, and
    where to put them."""
    url = secured.url if password is None else f"redis://:{password}@127.0.0.1:{secured.port}/0"
    with connect(url, 2.0) as probe, pytest.raises(redis.AuthenticationError) as raised:
        probe.ping()
    text = str(raised.value)
    assert text.startswith(refusal)
    said = f"AuthenticationError: {text.rstrip('. ')} ({AUTH_HINT})"
    settings = AggregatorSettings(redis_url=url, namespace="refused-credentials")
    with connect(url, 2.0) as connection:
        aggregator = Aggregator(settings, connection, clock=clock)
        assert aggregator.run_cycle() is None
        assert aggregator.status.last_error == said
        assert aggregator.ready() == (False, f"redis authentication failed: {said}")
    assert f"aggregation cycle failed, serving no snapshot yet: {said}" in caplog.messages
