"""The key schema (gatewayz_protocol.keys): every key format of the docstring's table, checked
by hand. Pure, no Redis. (The name rules are gatewayz_protocol.names': test_names.py.)"""

from __future__ import annotations

import pytest

from gatewayz_protocol.keys import Keys


def test_window_keys_format() -> None:
    keys = Keys("ns").window_keys("openrouter")
    # 20 finite latency partitions + +Inf = 21 ok keys, then fail, rl, ce
    assert len(keys) == 24
    assert keys[0] == "ns:{openrouter}:w:ok:0"
    assert keys[20] == "ns:{openrouter}:w:ok:20"
    assert keys[21:] == ("ns:{openrouter}:w:fail", "ns:{openrouter}:w:rl", "ns:{openrouter}:w:ce")
    assert keys[:21] == tuple(f"ns:{{openrouter}}:w:ok:{i}" for i in range(21))


def test_totals_and_breaker_format() -> None:
    keys = Keys("ns")
    assert keys.totals("openrouter") == "ns:{openrouter}:totals"
    assert keys.breaker("openrouter") == "ns:{openrouter}:breaker"


def test_provider_keys_share_hash_tag_and_namespace() -> None:
    keys = Keys("ns")
    provider = "fireworks.ai"
    all_keys = [*keys.window_keys(provider), keys.totals(provider), keys.breaker(provider)]
    for key in all_keys:
        assert key.startswith("ns:")
        assert "{fireworks.ai}" in key
        # exactly one hash tag, so Redis Cluster hashes on the provider name only
        assert key.count("{") == 1
        assert key.count("}") == 1


def test_default_namespace() -> None:
    assert Keys().totals("a") == "gatewayz:{a}:totals"


@pytest.mark.parametrize("provider", ["", "bad name", "x}y", "a" * 65, "-a"])
def test_keys_reject_invalid_provider(provider: str) -> None:
    keys = Keys("ns")
    with pytest.raises(ValueError):
        keys.window_keys(provider)
    with pytest.raises(ValueError):
        keys.totals(provider)
    with pytest.raises(ValueError):
        keys.breaker(provider)


@pytest.mark.parametrize("namespace", ["", "a:b", "{ns}", "-ns", "n s", "a" * 65, "ns\n"])
def test_keys_reject_invalid_namespace(namespace: str) -> None:
    with pytest.raises(ValueError):
        Keys(namespace)


def test_every_key_of_the_table() -> None:
    keys = Keys()  # namespace gatewayz
    assert keys.providers == "gatewayz:{shared}:providers"
    assert keys.exemplars("openrouter") == "gatewayz:{openrouter}:exemplars"
    assert keys.shards == "gatewayz:{shared}:shards"
    assert keys.permits("openrouter") == "gatewayz:{openrouter}:permits"
    assert keys.transitions("openrouter") == "gatewayz:{openrouter}:transitions"
    assert keys.history("openrouter") == "gatewayz:{openrouter}:history"
    assert keys.leader_lease == "gatewayz:{leader}:lease"
    assert keys.leader_token == "gatewayz:{leader}:token"
    assert keys.snapshot_cycle == "gatewayz:{leader}:cycle"
    assert keys.snapshot == "gatewayz:{leader}:snapshot"
    assert keys.event_ids == "gatewayz:{shared}:event_ids"
    assert keys.metric_schema == "gatewayz:{metrics}:schema"
    assert keys.metric_series("queue_depth") == "gatewayz:{metrics}:series:queue_depth"
    assert keys.metric_data("queue_depth") == "gatewayz:{metrics}:data:queue_depth"
    assert keys.metric_exemplars("queue_depth") == "gatewayz:{metrics}:exemplars:queue_depth"
    assert keys.gauge_values("host-1:4242") == "gatewayz:{metrics}:gauges:host-1:4242"
    assert keys.gauge_writers == "gatewayz:{metrics}:gauge_writers"
    assert keys.client_stats == "gatewayz:{shared}:stats:clients"
    assert keys.redis_ops == "gatewayz:{shared}:stats:redis_ops"
    assert keys.clock_offsets == "gatewayz:{shared}:stats:clock"
    assert keys.pattern() == "gatewayz:*"


def test_a_shard_of_a_provider_is_its_own_hash_tag() -> None:
    keys = Keys("ns")
    assert keys.totals("p", 0) == "ns:{p}:totals"
    assert keys.totals("p", 2) == "ns:{p:2}:totals"
    assert keys.exemplars("p", 1) == "ns:{p:1}:exemplars"
    assert keys.window_keys("p", 3)[0] == "ns:{p:3}:w:ok:0"
    assert keys.window_keys("p", 3)[-1] == "ns:{p:3}:w:ce"
    with pytest.raises(ValueError):
        keys.totals("bad name", 1)


@pytest.mark.parametrize(
    ("key", "marker"),
    [
        ("ns:{openrouter}:w:ok:3", "ns:{openrouter}:applied"),
        ("ns:{openrouter:2}:totals", "ns:{openrouter:2}:applied"),
        ("ns:{shared}:stats:clients", "ns:{shared}:applied"),
        ("ns:{metrics}:data:m", "ns:{metrics}:applied"),
    ],
)
def test_the_applied_marker_lives_in_the_slot_of_the_key(key: str, marker: str) -> None:
    assert Keys("ns").applied(key) == marker


def _one_provider_by_hand(namespace: str, tag: str) -> list[str]:
    base = f"{namespace}:{{{tag}}}"
    return [
        *(f"{base}:w:ok:{i}" for i in range(21)),
        f"{base}:w:fail",
        f"{base}:w:rl",
        f"{base}:w:ce",
        f"{base}:totals",
        f"{base}:exemplars",
    ]


def test_provider_keys_of_one_shard() -> None:
    assert Keys("ns").provider_keys("openrouter") == (
        *_one_provider_by_hand("ns", "openrouter"),
        "ns:{openrouter}:breaker",
        "ns:{openrouter}:permits",
        "ns:{openrouter}:transitions",
    )


def test_provider_keys_of_every_shard_and_not_the_history() -> None:
    got = Keys("ns").provider_keys("p", shards=3)
    assert got == (
        *_one_provider_by_hand("ns", "p"),
        *_one_provider_by_hand("ns", "p:1"),
        *_one_provider_by_hand("ns", "p:2"),
        "ns:{p}:breaker",
        "ns:{p}:permits",
        "ns:{p}:transitions",
    )
    assert len(got) == 3 * 26 + 3 == len(set(got))
    assert "ns:{p}:history" not in got


def test_provider_keys_validate_the_name() -> None:
    with pytest.raises(ValueError):
        Keys("ns").provider_keys("x}y")


def test_every_key_carries_exactly_one_hash_tag_in_its_namespace() -> None:
    keys = Keys("ns")
    every = [
        *keys.provider_keys("openrouter", shards=2),
        keys.history("openrouter"),
        keys.providers,
        keys.shards,
        keys.leader_lease,
        keys.leader_token,
        keys.snapshot_cycle,
        keys.snapshot,
        keys.event_ids,
        keys.metric_schema,
        keys.metric_series("m"),
        keys.metric_data("m"),
        keys.metric_exemplars("m"),
        keys.gauge_values("host:1"),
        keys.gauge_writers,
        keys.client_stats,
        keys.redis_ops,
        keys.clock_offsets,
        keys.applied("ns:{openrouter}:totals"),
    ]
    for key in every:
        assert key.startswith("ns:{"), key
        assert key.count("{") == 1 and key.count("}") == 1, key
        assert key.index("{") < key.index("}"), key


def test_every_key_has_a_kind_for_reports() -> None:
    keys = Keys("g")
    kinds = {
        keys.breaker("p"): "breaker",
        keys.totals("p", 2): "totals",
        keys.window_keys("p")[0]: "window",
        keys.exemplars("p"): "exemplars",
        keys.transitions("p"): "transitions",
        keys.client_stats: "client stats",
        keys.redis_ops: "redis operations",
        keys.clock_offsets: "clock offsets",
        keys.providers: "registry",
        keys.metric_schema: "schema",
        keys.metric_series("m"): "metric series",
        keys.metric_data("m"): "metric data",
        keys.metric_exemplars("m"): "metric exemplars",
        keys.gauge_values("w"): "gauge values",
    }
    assert {key: keys.kind(key) for key in kinds} == kinds
