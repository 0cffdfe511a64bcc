"""The model breakers' pure decisions (aggregator.core.model_breakers): each judged by its
provider's configuration, rate-limited calls as the provider's, exported sorted with the
states the commit applied. No Redis."""

from __future__ import annotations

from aggregator.core.breaker import BreakerConfig
from aggregator.core.breaker_policy import BreakerPolicy
from aggregator.core.model_breakers import (
    ModelBreaker,
    ModelReading,
    decide_models,
    exported,
)
from aggregator.core.snapshot import HealthTargets, Snapshot
from aggregator.core.snapshot_reuse import SnapshotReuse
from gatewayz_protocol.breaker_state import CLOSED, OPEN, BreakerState

NOW = 1_000.0


def test_a_failing_model_opens_and_a_healthy_one_does_not() -> None:
    policy = BreakerPolicy(BreakerConfig(min_calls=20, failure_rate=0.5))
    failing = ModelReading("openrouter", "a", BreakerState(), successes=5, failures=20)
    healthy = ModelReading("openrouter", "b", BreakerState(), successes=60, failures=1)
    (due,) = decide_models([failing, healthy], NOW, policy)
    reading, transition = due
    assert reading is failing
    assert (transition.old.state, transition.new.state) == (CLOSED, OPEN)
    assert transition.new.open_until == NOW + 30.0
    assert transition.calls.total == 25


def test_each_model_is_judged_by_its_providers_configuration() -> None:
    strict = BreakerConfig(min_calls=5, failure_rate=0.2)
    policy = BreakerPolicy(BreakerConfig(min_calls=20), {"groq": strict})
    calls = {"successes": 6, "failures": 2}
    groq = ModelReading("groq", "llama", BreakerState(), **calls)
    other = ModelReading("openrouter", "llama", BreakerState(), **calls)
    assert [r.provider for r, _ in decide_models([groq, other], NOW, policy)] == ["groq"]


def test_rate_limited_calls_count_as_the_providers_do() -> None:
    reading = ModelReading("p", "m", BreakerState(), successes=10, failures=0, rate_limited=10)
    counted = BreakerPolicy(BreakerConfig(min_calls=20))
    assert len(decide_models([reading], NOW, counted)) == 1
    not_counted = BreakerPolicy(BreakerConfig(min_calls=20, rate_limited_is_failure=False))
    assert decide_models([reading], NOW, not_counted) == []


def test_exported_sorted_with_the_applied_states() -> None:
    opened = BreakerState(OPEN, NOW, 1, NOW + 30.0, 1)
    readings = [
        ModelReading("p", "z", BreakerState()),
        ModelReading("p", "a", BreakerState()),
        ModelReading("a", "m", BreakerState()),
    ]
    assert exported(readings, {("p", "z"): opened}) == (
        ModelBreaker("a", "m", BreakerState()),
        ModelBreaker("p", "a", BreakerState()),
        ModelBreaker("p", "z", opened),
    )


def test_a_published_snapshot_carries_the_model_breakers_to_followers() -> None:
    opened = BreakerState(OPEN, NOW, 1, NOW + 30.0, 1)
    rows = (ModelBreaker("p", "openai/gpt-4o", opened), ModelBreaker("p", 'a"b\\c'))
    snapshot = Snapshot(NOW, 7, model_breakers=rows)
    assert Snapshot.from_json(snapshot.to_json()).model_breakers == rows
    reuse = SnapshotReuse(HealthTargets(300.0, 2.0, 10.0))
    assert Snapshot.from_json(snapshot.to_json(reuse)) == snapshot
    older = Snapshot.from_json(Snapshot(NOW, 7).to_json().replace(',"model_breakers":[]', ""))
    assert older.model_breakers == ()
