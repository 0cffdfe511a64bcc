"""Model breakers (``breaker_models``) on a real Redis and a Redis Cluster, injected clocks: a
failing model opens its own breaker while the provider's other models and the provider stay
allowed; a provider not listed writes no model key; the model name bound and the cap per
provider hold, what is refused counted."""

from __future__ import annotations

from collections.abc import Callable

import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from aggregator.serve.rendering import make_registry, render
from client import MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.model_scopes import model_key_part
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
MakeAggregator = Callable[..., Aggregator]
LISTED = {"breaker_models": ("openrouter",)}


def _book(metrics: MetricsClient, model: str, status: int, count: int) -> None:
    for _ in range(count):
        assert metrics.record("openrouter", 0.3, status_code=status, model=model)


def _namespace_keys(r: redis.Redis, keys: Keys) -> list[str]:
    return sorted(k.decode() for k in r.scan_iter(match=keys.pattern(), count=1000))


def test_a_failing_model_opens_its_own_breaker_only(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock, **LISTED)
    aggregator = make_aggregator(breaker=BreakerConfig(min_calls=20), **LISTED)
    _book(metrics, "openai/gpt-4o", 503, 25)
    _book(metrics, "llama-3", 200, 60)
    assert metrics.flush(timeout=5)
    clock.advance(1)
    assert aggregator.run_breaker_cycle() == []  # the provider: 25 of 85 calls failed

    state = r.hget(keys.model_breaker("openrouter", "openai/gpt-4o"), "state")
    assert state == b"open"
    assert r.hget(keys.model_transitions("openrouter", "openai/gpt-4o"), "closed>open") == b"1"
    assert r.hget(keys.model_breaker("openrouter", "llama-3"), "state") in (None, b"closed")
    assert r.hget(keys.breaker("openrouter"), "state") in (None, b"closed")

    worker = make_client(**LISTED)
    assert worker.allow("openrouter") is True
    assert worker.allow("openrouter", "llama-3") is True
    assert worker.allow("openrouter", "openai/gpt-4o") is False
    refused = worker.admit("openrouter", model="openai/gpt-4o")
    assert not refused and refused.provider == "openrouter/openai/gpt-4o"
    assert refused.state == "open" and refused.retry_after_s is not None
    assert worker.breaker("openrouter", "openai/gpt-4o").state == "open"
    assert worker.breaker("openrouter", "llama-3").allowed

    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    rows = {(m.provider, m.model): m.breaker.state for m in snapshot.model_breakers}
    assert rows == {("openrouter", "llama-3"): "closed", ("openrouter", "openai/gpt-4o"): "open"}
    (provider,) = [p for p in snapshot.providers if p.provider == "openrouter"]
    assert provider.breaker.state == "closed"
    body, _ = render(make_registry(aggregator.served), None)
    text = body.decode()
    line = 'gatewayz_model_circuit_breaker_state{model="openai/gpt-4o",provider="openrouter",'
    assert line + 'state="open"} 1.0' in text
    assert 'model="llama-3",provider="openrouter",state="closed"} 1.0' in text

    # the model's windows hold what a breaker judges only: trimmed past the half-open timeout
    window = keys.model_window_keys("openrouter", "openai/gpt-4o")[1]
    assert r.zcard(window) == 25
    clock.advance(61)
    aggregator.run_breaker_cycle()
    assert r.zcard(window) == 0


def test_a_provider_not_listed_writes_no_model_key(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    metrics = make_client(clock=clock, **LISTED)
    for _ in range(30):
        assert metrics.record("groq", 0.3, status_code=503, model="llama-3")
    assert metrics.allow("groq", "llama-3") is True
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(**LISTED)
    clock.advance(1)
    aggregator.run_breaker_cycle()
    found = _namespace_keys(r, keys)
    assert any(key.endswith(":{groq}:w:fail") for key in found)
    assert [key for key in found if ":m:" in key or key.endswith(":models")] == []
    assert metrics.stats()["rejected"].get("invalid_model", 0) == 0


def test_the_bound_and_the_cap_on_models_hold(
    make_client: MakeClient,
    make_aggregator: MakeAggregator,
    clock: FakeClock,
    r: redis.Redis,
    keys: Keys,
) -> None:
    limits = {**LISTED, "max_models_per_provider": 3, "max_label_value_bytes": 64}
    metrics = make_client(clock=clock, **limits)
    long = "vendor/" + "x" * 500
    models = [long, "m1", "m2", "m3", "m4"]
    for model in models:
        _book(metrics, model, 503, 2)
    assert metrics.record("openrouter", 0.3, status_code=503, model="")  # left out: counted
    assert metrics.flush(timeout=5)
    held = [m.decode() for m in r.zrange(keys.models("openrouter"), 0, -1)]
    assert len(held) == 3
    assert all(len(m.encode()) <= 64 for m in held)
    found = _namespace_keys(r, keys)
    model_keys = [key for key in found if ":w:m:" in key]
    assert {key.split(":w:m:")[1].rsplit(":", 1)[0] for key in model_keys} == {
        model_key_part(m) for m in held
    }
    rejected = metrics.stats()["rejected"]
    assert rejected["too_many_models"] == 4  # two calls each of the two models refused
    assert rejected["invalid_model"] == 1
    # every call still counts for the provider
    assert sum(r.zcard(k) for k in keys.window_keys("openrouter")) == 11

    aggregator = make_aggregator(**limits)
    clock.advance(1)
    aggregator.run_breaker_cycle()
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    assert sorted(m.model for m in snapshot.model_breakers) == sorted(held)
