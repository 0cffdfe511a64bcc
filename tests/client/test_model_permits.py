"""A provider's and a model's breaker asked together (``breaker_models``) against a real Redis:
a half-open permit of one breaker is never taken for a call the other refuses, so workers asking
about an open provider cannot use up a half-open model's trial permits (nor the reverse) without
a single trial call. Each case starts a fresh client: a new worker process, nothing cached."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis

from aggregator.engine.writer import PlannedWrite, StateWriter
from client import CircuitOpenError, MetricsClient
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
P, M = "openrouter", "openai/gpt-4o"
LISTED = {"breaker_models": (P,)}


def set_breaker(
    r: redis.Redis, keys: Keys, state: str, model: str | None = None, permits: int = 5
) -> None:
    """What the aggregator's transition writes, for the provider's breaker or a model's."""
    writer = StateWriter(r, keys, 3600, permits=permits, permit_seconds=60)
    key = keys.breaker(P) if model is None else keys.model_breaker(P, model)
    epoch = int(r.hget(key, "epoch") or 0)
    new = BreakerState(state, 1.0, epoch + 1, 0.0 if state != "open" else 9e9, 1)
    write = PlannedWrite(P, epoch, new, f"test>{state}", model)
    assert writer.begin(None).transitions([write]).send().results == [1]


def taken(r: redis.Redis, keys: Keys) -> tuple[int, int]:
    """The live permits: (the provider's, the model's)."""
    return r.zcard(keys.permits(P)), r.zcard(keys.model_permits(P, M))


def asked_every_way(make_client: MakeClient, clock: FakeClock) -> list[bool]:
    """allow(), admit(), their async twins and track(guard=True), each by a fresh worker."""
    answers = [make_client(clock=clock, **LISTED).allow(P, M)]
    answers.append(bool(make_client(clock=clock, **LISTED).admit(P, M)))
    answers.append(asyncio.run(make_client(clock=clock, **LISTED).allow_async(P, M)))
    answers.append(bool(asyncio.run(make_client(clock=clock, **LISTED).admit_async(P, M))))
    try:
        with make_client(clock=clock, **LISTED).track(P, guard=True, model=M):
            answers.append(True)
    except CircuitOpenError:
        answers.append(False)
    return answers


def test_an_open_provider_takes_no_permit_of_its_half_open_model(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "open")
    set_breaker(r, keys, "half_open", M)
    assert asked_every_way(make_client, clock) == [False] * 5
    assert taken(r, keys) == (0, 0)
    refused = make_client(clock=clock, **LISTED).admit(P, M)
    assert (refused.provider, refused.state) == (P, "open")  # the breaker that refused


def test_an_open_model_takes_no_permit_of_its_half_open_provider(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "half_open")
    set_breaker(r, keys, "open", M)
    assert asked_every_way(make_client, clock) == [False] * 5
    assert taken(r, keys) == (0, 0)
    refused = make_client(clock=clock, **LISTED).admit(P, M)
    assert (refused.provider, refused.state) == (f"{P}/{M}", "open")


def test_both_half_open_take_one_permit_each(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "half_open", permits=10)
    set_breaker(r, keys, "half_open", M, permits=10)
    assert make_client(clock=clock, **LISTED).allow(P, M) is True
    assert taken(r, keys) == (1, 1)
    assert asked_every_way(make_client, clock) == [True] * 5
    assert taken(r, keys) == (6, 6)


def test_a_provider_out_of_permits_takes_none_of_the_model(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    set_breaker(r, keys, "half_open", permits=1)
    set_breaker(r, keys, "half_open", M)
    assert make_client(clock=clock, **LISTED).allow(P, "llama-3") is True  # another model's trial
    assert [make_client(clock=clock, **LISTED).allow(P, M) for _ in range(5)] == [False] * 5
    assert taken(r, keys) == (1, 0)


def test_a_model_out_of_permits_costs_the_provider_one_per_worker_until_it_learns(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    """The case left: both half-open, the provider's permit is taken first; when the model's is
    then denied, the provider's was taken for nothing (it expires after the permit period, or
    goes with the next transition: no worker can give one back). A worker remembers the denial
    until its next refresh, so it takes no more meanwhile."""
    set_breaker(r, keys, "half_open")
    set_breaker(r, keys, "half_open", M, permits=1)
    assert make_client(clock=clock, **LISTED).allow(P, M) is True
    assert taken(r, keys) == (1, 1)
    worker = make_client(clock=clock, **LISTED)
    assert [worker.allow(P, M) for _ in range(5)] == [False] * 5
    assert taken(r, keys) == (2, 1)
