"""A hot provider split over shards (``client/_sharding.py``): the plan's rules, and end to end
on both backends: the events spread over the shards' slots, the aggregator sums them exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot

from aggregator.engine.cycle import Aggregator
from client import MetricsClient
from client._sharding import ShardPlan
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]


def test_the_plan_reads_one_count_or_counts_per_provider() -> None:
    assert ShardPlan.parse("").count("openrouter") == 1
    assert ShardPlan.parse("8").count("anything") == 8
    plan = ShardPlan.parse("openrouter:8, groq:2")
    assert (plan.count("openrouter"), plan.count("groq"), plan.count("other")) == (8, 2, 1)
    for bad in ("0", "65", "openrouter", "openrouter:x", "bad name:2", ":3", "a:2,b"):
        with pytest.raises(ValueError, match="provider shards"):
            ShardPlan.parse(bad)


def test_a_batch_keeps_its_shard_and_batches_spread_over_all() -> None:
    plan = ShardPlan.parse("openrouter:4")
    assert {plan.shard("openrouter", 1000) for _ in range(5)} == {plan.shard("openrouter", 1000)}
    assert {plan.shard("openrouter", first) for first in range(0, 100_000, 500)} == {0, 1, 2, 3}
    assert {plan.shard("groq", first) for first in range(0, 100_000, 500)} == {0}


def test_a_client_setting_rejects_a_bad_plan(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="provider shards"):
        make_client(provider_shards="openrouter:0")


@BOTH_BACKENDS
def test_a_sharded_provider_is_summed_exactly(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
) -> None:
    metrics = make_client(clock=clock, provider_shards="openrouter:4")
    for _ in range(40):  # one batch each: their first ids pick the shards
        for i in range(25):
            metrics.record("openrouter", 0.2, status_code=500 if i % 5 == 0 else 200, tokens=3)
        metrics.record("groq", 0.1, status_code=200)
        assert metrics.flush(timeout=5)
    used = [shard for shard in range(4) if r.exists(keys.totals("openrouter", shard))]
    assert len(used) >= 3  # spread (40 batches over 4 shards)
    assert r.zscore(keys.shards, "openrouter") == 4.0 and r.zscore(keys.shards, "groq") is None
    slots = {key_slot(keys.totals("openrouter", shard).encode()) for shard in range(4)}
    assert len(slots) == 4
    per_shard = [int(r.hget(keys.totals("openrouter", s), "n:success") or 0) for s in range(4)]
    assert sum(per_shard) == 800

    snapshot = make_aggregator().run_cycle()
    assert snapshot is not None
    by_name = {p.provider: p for p in snapshot.providers}
    openrouter = by_name["openrouter"]
    assert openrouter.window_requests == 1000
    assert openrouter.window_by_outcome == {
        "success": 800, "failure": 200, "rate_limited": 0, "caller_error": 0,
    }  # fmt: skip
    assert openrouter.requests_total["success"] == 800
    assert openrouter.tokens_total == 3000
    assert by_name["groq"].window_requests == 40


@BOTH_BACKENDS
def test_workers_with_different_shard_settings_still_count_exactly(
    make_client: MakeClient, make_aggregator: MakeAggregator, clock: FakeClock
) -> None:
    # scaling-out.md: the aggregator sums the shards, so workers sharding a provider and
    # workers that do not (a rolling change of the setting) count exactly together
    wide = make_client(clock=clock, provider_shards="openrouter:4")
    narrow = make_client(clock=clock)  # one shard: the unsharded keys
    for _ in range(20):
        for _ in range(10):
            wide.record("openrouter", 0.2, status_code=200)
        assert wide.flush(timeout=5)
    for _ in range(30):
        narrow.record("openrouter", 0.2, status_code=503)
    assert narrow.flush(timeout=5)
    snapshot = make_aggregator().run_cycle()
    assert snapshot is not None
    (openrouter,) = snapshot.providers
    assert openrouter.window_requests == 230
    assert openrouter.window_by_outcome == {
        "success": 200, "failure": 30, "rate_limited": 0, "caller_error": 0,
    }  # fmt: skip
    assert (openrouter.requests_total["success"], openrouter.requests_total["failure"]) == (200, 30)
