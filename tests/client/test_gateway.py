"""GatewayMetrics.record_inference: the rules of record(). A bad provider, latency, status code
or outcome rejects the call (counted once, nothing booked anywhere); any other bad value is left
out alone, counted by cause, and the rest booked: the provider's health event above all. Then
cancelled calls and usage added after the call. Checked in Redis, field by field."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from decimal import Decimal
from typing import Any

import anyio
import pytest
import redis
from starlette.responses import StreamingResponse

from client import GatewayMetrics, InferenceCall, MetricsClient
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
        ({"status_code": 200, "outcome": "success"}, "status_and_outcome"),
        ({"status_code": 999}, "invalid_status_code"),
        ({"outcome": ["success"]}, "invalid_outcome"),
        ({"provider": "bad name"}, "invalid_provider"),
        ({"latency_s": -1.0}, "invalid_latency"),
    ],
)
def test_an_invalid_health_event_books_nothing_and_is_counted_once(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    arguments: dict[str, Any],
    cause: str,
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    call: dict[str, Any] = {**FULL, "input_tokens": -1, "credits": "x"}  # bad, never counted
    del call["status_code"]
    call |= arguments
    booked = gateway.record_inference(
        call.pop("provider"), call.pop("model"), call.pop("latency_s"), **call
    )
    assert booked is False
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {cause: 1}
    assert metrics.stats()["accepted"] == 0
    assert _window_events(r, keys, "openrouter") == 0
    for metric in ("model_inference_requests", "model_inference_duration_seconds", "tokens_used"):
        assert _data(r, keys, metric) == {}, metric
    assert r.hget(keys.client_stats, f"rejected:{cause}") == b"1"


FULL: dict[str, Any] = {
    "provider": "openrouter", "model": "gpt", "latency_s": 0.5, "status_code": 200,
    "input_tokens": 100, "output_tokens": 40, "credits": 0.5, "cost_usd": 0.25,
    "endpoint": "/v1/chat", "ttfb_s": 0.1, "ttfc_s": 0.2,
}  # fmt: skip
"""A call with every value given: each case below spoils one of them."""


def _booked(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """What a call booked: its window event and provider totals, and each per-model metric's
    values (histograms: their count)."""
    totals = {k.decode(): int(v) for k, v in r.hgetall(keys.totals("openrouter")).items()}
    found: dict[str, Any] = {
        "window": _window_events(r, keys, "openrouter"),
        "n:success": totals.get("n:success", 0),
        "tokens": totals.get("tokens", 0),
        "cost_nusd": totals.get("cost_nusd", 0),
    }
    for metric in ("model_inference_requests", "tokens_used", "credits_used",
                   "gatewayz_api_cost_usd"):  # fmt: skip
        found[metric] = _data(r, keys, metric)
    for metric in ("model_inference_duration_seconds", "backend_ttfb_seconds",
                   "time_to_first_chunk_seconds"):  # fmt: skip
        found[metric] = sum(v for k, v in _data(r, keys, metric).items() if k[0] == "b")
    return found


EVERYTHING: dict[str, Any] = {
    "window": 1, "n:success": 1, "tokens": 140, "cost_nusd": 250_000_000,
    "model_inference_requests": {'i:["openrouter","gpt","success"]': 1},
    "tokens_used": {'i:["openrouter","gpt","input"]': 100, 'i:["openrouter","gpt","output"]': 40},
    "credits_used": {'n:["openrouter","gpt"]': 500_000_000},
    "gatewayz_api_cost_usd": {'n:["openrouter","gpt"]': 250_000_000},
    "model_inference_duration_seconds": 1, "backend_ttfb_seconds": 1,
    "time_to_first_chunk_seconds": 1,
}  # fmt: skip
PROVIDER_VIEW = ("window", "n:success", "tokens", "cost_nusd")
NO_MODEL = {k: ({} if isinstance(v, dict) else 0) for k, v in EVERYTHING.items()} | {
    k: EVERYTHING[k] for k in PROVIDER_VIEW
}
"""The per-model metrics, none booked."""


@pytest.mark.parametrize(
    ("arguments", "cause", "left_out"),
    [
        ({"input_tokens": -1}, "invalid_tokens",
         {"tokens": 40, "tokens_used": {'i:["openrouter","gpt","output"]': 40}}),
        ({"output_tokens": 1.5}, "invalid_tokens",
         {"tokens": 100, "tokens_used": {'i:["openrouter","gpt","input"]': 100}}),
        ({"input_tokens": True, "output_tokens": 0}, "invalid_tokens",
         {"tokens": 0, "tokens_used": {}}),
        # each count is one, their sum (the provider's) is not: only the sum is left out
        ({"input_tokens": 10**12, "output_tokens": 10**12}, "invalid_tokens",
         {"tokens": 0, "tokens_used": {'i:["openrouter","gpt","input"]': 10**12,
                                       'i:["openrouter","gpt","output"]': 10**12}}),
        ({"credits": -0.1}, "invalid_credits", {"credits_used": {}}),
        ({"credits": float("nan")}, "invalid_credits", {"credits_used": {}}),
        ({"credits": "1"}, "invalid_credits", {"credits_used": {}}),
        ({"ttfb_s": -0.5}, "invalid_ttfb", {"backend_ttfb_seconds": 0}),
        ({"ttfc_s": float("inf")}, "invalid_ttfc", {"time_to_first_chunk_seconds": 0}),
        ({"cost_usd": -1.0}, "invalid_cost", {"cost_nusd": 0, "gatewayz_api_cost_usd": {}}),
        ({"cost_usd": "0.25"}, "invalid_cost", {"cost_nusd": 0, "gatewayz_api_cost_usd": {}}),
        ({"endpoint": 3}, "invalid_endpoint", {"backend_ttfb_seconds": 0}),
        ({"model": None}, "invalid_model", NO_MODEL),
        ({"exemplar": {"bad name": "x"}}, "invalid_exemplar", {}),
        ({"input_tokens": 100.0, "output_tokens": 40.0}, None, {}),  # integral floats: counts
        # a NUMERIC column's values (psycopg, asyncpg): a finite Decimal is a number
        ({"latency_s": Decimal("0.5"), "input_tokens": Decimal(100), "output_tokens": Decimal(40),
          "credits": Decimal("0.5"), "cost_usd": Decimal("0.25"), "ttfb_s": Decimal("0.1"),
          "ttfc_s": Decimal("0.2")}, None, {}),
        ({"credits": Decimal("NaN")}, "invalid_credits", {"credits_used": {}}),
    ],
)  # fmt: skip
def test_a_bad_value_is_left_out_alone_and_the_rest_booked(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    arguments: dict[str, Any],
    cause: str | None,
    left_out: dict[str, Any],
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    call = FULL | arguments
    booked = gateway.record_inference(
        call.pop("provider"), call.pop("model"), call.pop("latency_s"), **call
    )
    assert booked is True
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == ({} if cause is None else {cause: 1})
    assert metrics.stats()["accepted"] == 1
    assert _booked(r, keys) == EVERYTHING | left_out  # the health event above all
    if cause is not None:
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


async def _upstream() -> AsyncIterator[bytes]:
    """A provider that sends one chunk, then nothing until it is abandoned."""
    yield b"first"
    await asyncio.get_running_loop().create_future()  # never done
    yield b"never"


def _cancelled_view(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    found = _booked(r, keys)
    totals = {k.decode(): int(v) for k, v in r.hgetall(keys.totals("openrouter")).items()}
    found["cancelled"] = totals.get("cancelled", 0)
    found["outcomes"] = {k: v for k, v in totals.items() if k.startswith(("n:", "b:"))}
    return found


CANCELLED_VIEW: dict[str, Any] = {
    **EVERYTHING,
    "window": 0, "n:success": 0, "cancelled": 1, "outcomes": {}, "tokens": 100,
    "cost_nusd": 0, "model_inference_requests": {}, "model_inference_duration_seconds": 0,
    "tokens_used": {'i:["openrouter","gpt","input"]': 100}, "credits_used": {},
    "gatewayz_api_cost_usd": {},
}  # fmt: skip
"""A stream abandoned after its first chunk: counted as cancelled, the tokens sent before and its
TTFB and TTFC booked; nothing in the window, the outcomes, the histogram or the latency."""


def test_a_task_cancelled_mid_stream_is_booked_cancelled_not_failed(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    calls: list[InferenceCall] = []

    async def handler(first: asyncio.Event) -> None:
        with gateway.inference("openrouter", "gpt", "/v1/chat") as call:
            calls.append(call)
            call.input_tokens = 100
            async for _ in call.stream(_upstream()):
                first.set()
            call.status_code = 200

    async def client_goes_away() -> None:
        first = asyncio.Event()
        task = asyncio.create_task(handler(first))
        await first.wait()
        task.cancel()  # what Starlette does to a streaming response whose client disconnected
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(client_goes_away())
    assert calls[0].booked_as == "cancelled"
    assert metrics.flush(timeout=5)
    assert _cancelled_view(r, keys) == CANCELLED_VIEW
    assert metrics.stats()["rejected"] == {}


def test_a_stream_closed_early_is_booked_cancelled(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    calls: list[InferenceCall] = []

    async def body() -> AsyncIterator[bytes]:  # a streaming response's body
        with gateway.inference("openrouter", "gpt", "/v1/chat") as call:
            calls.append(call)
            call.input_tokens = 100
            async for chunk in call.stream(_upstream()):
                yield chunk
            call.status_code = 200

    async def server_stops_sending() -> None:
        stream = body()
        assert await anext(stream) == b"first"
        await stream.aclose()  # GeneratorExit at the yield, inside the block

    asyncio.run(server_stops_sending())
    assert calls[0].booked_as == "cancelled"
    assert metrics.flush(timeout=5)
    assert _cancelled_view(r, keys) == CANCELLED_VIEW


def _disconnect_after_first_chunk(body: Iterator[bytes]) -> None:
    """Starlette's own StreamingResponse serves ``body`` (a sync generator: it iterates it in a
    worker thread with iterate_in_threadpool) to a client that goes away after the first chunk:
    the response's task is cancelled, and nothing closes ``body``."""

    async def serve() -> None:
        gone = anyio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message.get("body"):
                gone.set()
                await anyio.sleep_forever()  # the socket of a client that went away

        await StreamingResponse(body)({"type": "http", "method": "GET"}, receive, send)

    asyncio.run(serve())


def test_a_sync_stream_whose_client_went_away_is_booked_cancelled_when_python_frees_it(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    calls: list[InferenceCall] = []

    def body() -> Iterator[bytes]:
        with gateway.inference("openrouter", "gpt", "/v1/chat") as call:
            calls.append(call)
            call.input_tokens = 100
            for chunk in (b"first", b"second"):
                call.chunk()
                yield chunk
            call.status_code = 200

    collecting = gc.isenabled()
    gc.disable()  # the collections this test makes are its own
    try:
        _disconnect_after_first_chunk(body())
        # Suspended inside its block, and (through the cancellation's traceback) in a reference
        # cycle: the docs say it waits for the garbage collector. (Should Starlette ever close
        # the iterator, this is booked here already, and the streaming docs must say so.)
        assert calls[0].booked_as is None
        gc.collect()
        assert calls[0].booked_as == "cancelled"
        assert metrics.flush(timeout=5)
        assert _cancelled_view(r, keys) == CANCELLED_VIEW
        # One freed after the client closed (the lifespan's close() at shutdown): counted as
        # dropped, and the exit's close() has nothing to wait for
        _disconnect_after_first_chunk(body())
        assert metrics.close(timeout=5) is True
        gc.collect()
        assert calls[1].booked_as is None  # not booked: record() said False
        assert metrics.stats()["dropped_by_cause"] == {"closed": 1}
        assert metrics.close(timeout=2) is True
    finally:
        if collecting:
            gc.enable()


def test_usage_known_later_is_added_through_the_handle_without_a_second_event(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)

    threads: list[threading.Thread] = []

    def call_provider() -> InferenceCall:  # the gateway's synchronous provider call
        with gateway.inference("openrouter", "gpt", "/v1/chat") as call:
            call.status_code = 200
            call.first_byte(), call.chunk()
        threads.append(threading.current_thread())
        return call

    async def handler() -> InferenceCall:
        call = await asyncio.to_thread(call_provider)  # booked in a worker thread
        # post-processing on the event loop's thread: tokens and cost known now
        assert call.add_usage(input_tokens=100, output_tokens=40.0, credits=0.5, cost_usd=0.25)
        assert call.add_usage(cost_usd=0.125)  # a second one adds again
        assert call.add_usage(input_tokens=-3, credits="x")  # bad values left out, counted
        threads.append(threading.current_thread())
        return call

    call = asyncio.run(handler())
    assert call.booked_as == "success" and threads[0] is not threads[1]
    assert metrics.flush(timeout=5)
    assert _booked(r, keys) == EVERYTHING | {
        "cost_nusd": 375_000_000,
        "gatewayz_api_cost_usd": {'n:["openrouter","gpt"]': 375_000_000},
    }  # one window event, one count, one latency: the usage only in the counters
    assert metrics.stats()["rejected"] == {"invalid_tokens": 1, "invalid_credits": 1}
    assert gateway.inference("bad name", "gpt").add_usage(input_tokens=1) is False


def test_amounts_priced_from_a_database_are_taken_as_decimals(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    # psycopg and asyncpg return a NUMERIC price as a Decimal; the cost known only later
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    price = Decimal("0.0000025") * 1000  # Decimal('0.0025000'): 2,500,000 nano-units
    with gateway.inference("openrouter", "gpt") as call:
        call.status_code = 200
        call.credits, call.cost_usd = price, price  # type: ignore[assignment]
    assert call.add_usage(output_tokens=Decimal(1000), credits=price, cost_usd=price)  # type: ignore[arg-type]
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {}
    assert _data(r, keys, "credits_used") == {'n:["openrouter","gpt"]': 5_000_000}
    assert _data(r, keys, "gatewayz_api_cost_usd") == {'n:["openrouter","gpt"]': 5_000_000}
    assert _data(r, keys, "tokens_used") == {'i:["openrouter","gpt","output"]': 1000}
