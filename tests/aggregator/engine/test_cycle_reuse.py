"""Cycles that reuse what the last one decoded and built (core/reuse.py, ``SnapshotReuse``) on a
real Redis: a provider whose data changed has new figures in the very next cycle, exactly those
a fresh aggregator computes; one whose data did not keeps the same objects; what is published
is what the snapshot is."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.core.snapshot import ProviderHealth, Snapshot, decode_published
from aggregator.engine.cycle import Aggregator
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]


def _by_name(snapshot: Snapshot | None) -> dict[str, ProviderHealth]:
    assert snapshot is not None
    return {health.provider: health for health in snapshot.providers}


def _fresh(aggregator: Aggregator, make_aggregator: MakeAggregator) -> Snapshot:
    """What an aggregator without anything to reuse computes now: it leads (``aggregator``
    hands the lease over), so it computes its snapshot rather than loading the published one."""
    aggregator.release_lease()
    fresh = make_aggregator(instance="fresh")
    snapshot = fresh.run_cycle()
    assert snapshot is not None and fresh.is_leader
    fresh.release_lease()
    return snapshot


def test_a_changed_provider_changes_in_the_next_cycle_and_an_unchanged_one_stays_identical(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    for _ in range(3):
        metrics.record("alpha", 0.2)
    metrics.record("beta", 0.3, status_code=503)
    metrics.record("gamma", 0.4)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator()
    first = _by_name(aggregator.run_cycle())
    assert first["alpha"].window_requests == 3

    metrics.record("alpha", 0.7)  # a new call in the window
    r.hset(keys.breaker("gamma"), mapping={"state": "open", "epoch": 7, "forced": 1})  # operator
    assert metrics.flush(timeout=5)
    clock.advance(5)
    second = _by_name(aggregator.run_cycle())

    alpha = second["alpha"]
    assert alpha is not first["alpha"]
    assert alpha.window_requests == 4
    assert alpha.window_by_outcome["success"] == 4
    assert alpha.requests_total["success"] == 4
    assert alpha.latency_sum_seconds == 1.3  # 3 x 0.2 + 0.7
    assert alpha.histogram_cumulative == (0, 3, 4, 4, 4, 4, 4)  # le 0.1, 0.5, 1, ...
    assert second["gamma"] is not first["gamma"]
    assert (second["gamma"].availability, second["gamma"].breaker.forced) == (0.0, True)
    assert second["beta"] is first["beta"]  # nothing of it changed: the same object
    snapshot = aggregator.snapshot
    assert snapshot is not None
    raw = r.get(keys.snapshot)
    assert isinstance(raw, bytes)
    assert decode_published(raw) == snapshot.to_json()
    assert second == _by_name(_fresh(aggregator, make_aggregator))


def test_calls_leaving_the_window_change_the_figures_without_any_write(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("alpha", 0.2, status_code=500)
    clock.advance(100)
    metrics.record("alpha", 0.2)
    metrics.record("beta", 0.2)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator()
    first = _by_name(aggregator.run_cycle())
    assert (first["alpha"].window_requests, first["alpha"].error_rate) == (2, 0.5)

    clock.advance(201)  # the failure is 301 s old: out of the window; nothing written since
    second = _by_name(aggregator.run_cycle())
    assert (second["alpha"].window_requests, second["alpha"].error_rate) == (1, 0.0)
    assert second["alpha"].requests_total["failure"] == 1  # the counters keep it
    assert second["beta"] is first["beta"]
    assert second == _by_name(_fresh(aggregator, make_aggregator))


def test_a_backend_metric_that_changed_is_served_anew_and_the_others_are_kept(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    jobs = metrics.counter("jobs_total", "Jobs", ["queue"])
    other = metrics.counter("other_total", "Other", ["queue"])
    jobs.labels("a").inc(2)
    other.labels("a").inc(5)
    metrics.record("alpha", 0.2)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator()
    aggregator.run_cycle()
    first = {family.name: family for family in aggregator.snapshot.backend}  # type: ignore[union-attr]

    jobs.labels("a").inc(3)
    assert metrics.flush(timeout=5)
    clock.advance(5)
    aggregator.run_cycle()
    second = {family.name: family for family in aggregator.snapshot.backend}  # type: ignore[union-attr]
    assert second["jobs"].samples == ((("a",), 5.0),)  # (a counter's family drops _total)
    assert second["other"] is first["other"]
    fresh = _fresh(aggregator, make_aggregator)
    assert {family.name: family for family in fresh.backend} == second


def test_values_skipped_are_counted_at_every_cycle_even_when_their_reply_is_reused(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("alpha", 0.2)
    assert metrics.flush(timeout=5)
    r.hset(keys.totals("alpha"), "n:success", "lots")
    aggregator = make_aggregator()
    for cycle in (1, 2, 3):
        assert aggregator.run_cycle() is not None
        assert aggregator.status.values_skipped.get("totals") == cycle
        clock.advance(5)
