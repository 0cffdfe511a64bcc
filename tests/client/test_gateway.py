"""GatewayMetrics.record_inference: one rule with record(). A call is booked everywhere (the
provider's window and totals, and every per-model metric) or rejected everywhere, counted once.
Checked in Redis, field by field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from client import GatewayMetrics, MetricsClient
from client._gateway import ORIGIN_BUCKETS
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.labels import bounded_label_value
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]


def _data(r: redis.Redis, keys: Keys, metric: str) -> dict[str, int]:
    raw = r.hgetall(keys.metric_data(metric))
    return {k.decode(): int(v) for k, v in raw.items()}


def _window_events(r: redis.Redis, keys: Keys, provider: str) -> int:
    return sum(int(r.zcard(key)) for key in keys.window_keys(provider))


def test_a_valid_call_is_booked_everywhere(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    gateway.record_inference(
        "openrouter",
        "gpt",
        0.75,
        status_code=200,
        input_tokens=100,
        output_tokens=40,
        credits=0.5,
        cost_usd=0.25,
        endpoint="/v1/chat",
        ttfb_s=0.1,
        ttfc_s=0.2,
    )
    gateway.record_inference("openrouter", "gpt", 0.3, outcome="rate_limited")
    gateway.record_inference("openrouter", "gpt", 9.0, status_code=503)
    assert metrics.flush(timeout=5)
    assert _window_events(r, keys, "openrouter") == 3
    totals = {k.decode(): int(v) for k, v in r.hgetall(keys.totals("openrouter")).items()}
    assert (totals["tokens"], totals["cost_nusd"]) == (140, 250_000_000)
    assert (totals["n:success"], totals["n:rate_limited"], totals["n:failure"]) == (1, 1, 1)
    requests = _data(r, keys, "model_inference_requests")
    assert requests == {
        'i:["openrouter","gpt","success"]': 1,
        'i:["openrouter","gpt","rate_limited"]': 1,
        'i:["openrouter","gpt","failure"]': 1,
    }
    tokens = _data(r, keys, "tokens_used")
    assert tokens == {'i:["openrouter","gpt","input"]': 100, 'i:["openrouter","gpt","output"]': 40}
    assert _data(r, keys, "credits_used") == {'n:["openrouter","gpt"]': 500_000_000}
    assert _data(r, keys, "gatewayz_api_cost_usd") == {'n:["openrouter","gpt"]': 250_000_000}
    assert sum(v for k, v in _data(r, keys, "backend_ttfb_seconds").items() if k[0] == "b") == 1
    ttfc = _data(r, keys, "time_to_first_chunk_seconds")
    assert sum(v for k, v in ttfc.items() if k[0] == "b") == 1
    duration = _data(r, keys, "model_inference_duration_seconds")
    assert sum(v for k, v in duration.items() if k[0] == "b") == 3


@pytest.mark.parametrize(
    ("arguments", "cause"),
    [
        ({"input_tokens": -1, "output_tokens": 5}, "invalid_tokens"),
        ({"input_tokens": 10, "output_tokens": 1.5}, "invalid_tokens"),
        ({"input_tokens": True}, "invalid_tokens"),
        ({"input_tokens": 10**12, "output_tokens": 10**12}, "invalid_tokens"),  # sum too big
        ({"status_code": 200, "outcome": "success"}, "status_and_outcome"),
        ({"status_code": 999}, "invalid_status_code"),
        ({"outcome": ["success"]}, "invalid_outcome"),
        ({"credits": -0.1}, "invalid_credits"),
        ({"credits": float("nan")}, "invalid_credits"),
        ({"credits": "1"}, "invalid_credits"),
        ({"ttfb_s": -0.5}, "invalid_latency"),
        ({"ttfc_s": float("inf")}, "invalid_latency"),
        ({"cost_usd": -1.0}, "invalid_cost"),
        ({"model": None}, "invalid_argument"),
        ({"endpoint": 3}, "invalid_argument"),
        ({"provider": "bad name"}, "invalid_provider"),
        ({"latency_s": -1.0}, "invalid_latency"),
    ],
)
def test_an_invalid_call_books_nothing_and_is_counted_once(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    arguments: dict[str, Any],
    cause: str,
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    call: dict[str, Any] = {"provider": "openrouter", "model": "gpt", "latency_s": 0.5}
    call |= arguments
    gateway.record_inference(call.pop("provider"), call.pop("model"), call.pop("latency_s"), **call)
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {cause: 1}
    assert metrics.stats()["accepted"] == 0
    assert _window_events(r, keys, "openrouter") == 0
    for metric in ("model_inference_requests", "model_inference_duration_seconds", "tokens_used"):
        assert _data(r, keys, metric) == {}, metric
    assert r.hget(keys.client_stats, f"rejected:{cause}") == b"1"


def test_origin_status_values_say_error_for_every_class_but_success(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics, status_values="origin")
    gateway.record_inference("p", "m", 0.2, status_code=200, cost_usd=0.5)
    gateway.record_inference("p", "m", 0.2, status_code=503, cost_usd=0.25)
    gateway.record_inference("p", "m", 0.2, status_code=429)
    gateway.record_inference("p", "m", 0.2, status_code=404)
    gateway.record_inference("p", "m2", 0.2, outcome="failure")
    assert metrics.flush(timeout=5)
    assert _data(r, keys, "model_inference_requests") == {
        'i:["p","m","success"]': 1,
        'i:["p","m","error"]': 3,
        'i:["p","m2","error"]': 1,
    }
    # the provider's own figures keep the outcome classes: only the label value differs
    totals = {k.decode(): int(v) for k, v in r.hgetall(keys.totals("p")).items()}
    assert (totals["n:failure"], totals["n:rate_limited"], totals["n:caller_error"]) == (2, 1, 1)
    assert _data(r, keys, "gatewayz_api_cost_usd") == {'n:["p","m"]': 750_000_000}


def test_status_values_must_be_outcome_or_origin(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="status_values"):
        GatewayMetrics(make_client(), status_values="error")  # type: ignore[arg-type]


def test_histogram_buckets_are_chosen_per_metric(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    gateway = GatewayMetrics(metrics, buckets=ORIGIN_BUCKETS)
    # the origin's own module declaring the same histogram (another help text): the same one
    origin = metrics.histogram(
        "model_inference_duration_seconds",
        "Model inference duration in seconds",
        ["provider", "model"],
        buckets=(0.1, 0.5, 1, 2.5, 5, 10, 25, 60),
    )
    assert origin is gateway.inference_duration
    gateway.record_inference("openrouter", "gpt", 20.0, status_code=200, ttfb_s=1.2, ttfc_s=7.0)
    assert metrics.flush(timeout=5)
    declared = {
        name: json.loads(r.hget(keys.metric_schema, name) or "{}")["buckets"]
        for name in ORIGIN_BUCKETS
    }
    assert declared == {name: [float(b) for b in bounds] for name, bounds in ORIGIN_BUCKETS.items()}
    # 20 s: above 10, at most 25 -> bucket 6 of the origin's (0.1, 0.5, 1, 2.5, 5, 10, 25, 60)
    assert _data(r, keys, "model_inference_duration_seconds")['b6:["openrouter","gpt"]'] == 1
    # 1.2 s: bucket 3 of (0.1, 0.5, 1.0, 1.5, ...); 7 s: bucket 8 of (..., 5.0, 8.0, ...)
    assert _data(r, keys, "backend_ttfb_seconds")['b3:["openrouter","gpt",""]'] == 1
    assert _data(r, keys, "time_to_first_chunk_seconds")['b8:["openrouter","gpt"]'] == 1
    with pytest.raises(ValueError, match="has not"):
        GatewayMetrics(metrics, buckets={"model_latency": (1.0,)})


def test_a_model_beyond_the_label_bound_is_truncated_counted_and_not_remembered(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(max_label_value_bytes=64)
    gateway = GatewayMetrics(metrics)
    model = "m" * 16_384
    for _ in range(3):
        gateway.record_inference("openrouter", model, 0.5, status_code=200)
    gateway.record_inference("openrouter", "gpt", 0.5, status_code=200)
    assert metrics.flush(timeout=5)
    short = bounded_label_value(model, 64)
    assert _data(r, keys, "model_inference_requests") == {
        f'i:["openrouter","{short}","success"]': 3,
        'i:["openrouter","gpt","success"]': 1,
        "!truncated": 3,  # once per call
    }
    assert _data(r, keys, "model_inference_duration_seconds")["!truncated"] == 3
    assert [key[1] for key in gateway._booking._booked] == ["gpt"]  # the long one not kept
