"""Timed blocks: ``track()`` (CallTracker) and ``gateway.inference()`` (InferenceCall) through the
one TimedCall. Unit tests book into a stand-in with a settable perf_counter (exact latencies, no
sleeps); the last test times real blocks against Redis."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import redis
from fastapi import HTTPException

import client._gateway as gateway_module
import client._tracking as tracking
from client import CircuitOpenError, GatewayMetrics, InferenceCall, MetricsClient
from client._tracking import CallTracker
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]


class Booked:
    """Stands in for MetricsClient and GatewayMetrics: keeps every call a block books."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(self, *args: Any, **kwargs: Any) -> bool:
        self.calls.append((args, kwargs))
        return True

    def record_inference(self, *args: Any, **kwargs: Any) -> bool:
        self.calls.append((args, kwargs))
        return True

    def _add_usage(self, *args: Any) -> Any:
        """MetricsClient's answers the cost accepted (nano-USD), GatewayMetrics' a bool."""
        self.calls.append((("add_usage", *args), {}))
        return True


class PerfCounter:
    """A settable ``time.perf_counter`` (binary fractions: the differences are exact)."""

    def __init__(self) -> None:
        self.now = 8.0

    def __call__(self) -> float:
        return self.now


def tracker(booked: Booked) -> CallTracker:
    return CallTracker(cast(MetricsClient, booked), "openrouter")


def inference(booked: Booked, endpoint: str = "") -> InferenceCall:
    return InferenceCall(cast(GatewayMetrics, booked), "openrouter", "gpt", endpoint)


@pytest.fixture
def perf(monkeypatch: pytest.MonkeyPatch) -> PerfCounter:
    counter = PerfCounter()
    fake_time = SimpleNamespace(perf_counter=counter)
    monkeypatch.setattr(tracking, "time", fake_time)
    monkeypatch.setattr(gateway_module, "time", fake_time)
    return counter


class _HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def test_a_tracked_block_books_its_latency_and_what_it_set(perf: PerfCounter) -> None:
    booked = Booked()
    with tracker(booked) as call:
        perf.now += 0.25
        call.status_code = 502
        call.tokens = 900
        call.cost_usd = 0.002
    ((args, kwargs),) = booked.calls
    assert args == ("openrouter", 0.25, 502, None, 900, 0.002)
    assert set(kwargs) == {"exemplar", "model"}
    assert kwargs["model"] is None  # no model given: none booked


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (_HTTPError(503), "failure"),
        (_HTTPError(429), "rate_limited"),
        (_HTTPError(400), "caller_error"),
        (TimeoutError("slow"), "failure"),
    ],
)
def test_an_exception_is_booked_by_its_class_and_re_raised(
    perf: PerfCounter, exc: Exception, outcome: str
) -> None:
    booked = Booked()
    with pytest.raises(type(exc)), tracker(booked):
        perf.now += 0.5
        raise exc
    ((args, _),) = booked.calls
    assert args == ("openrouter", 0.5, None, outcome, 0, 0.0)


def test_what_the_block_set_wins_over_the_exception(perf: PerfCounter) -> None:
    booked = Booked()
    with pytest.raises(TimeoutError), tracker(booked) as call:
        call.status_code = 200
        raise TimeoutError
    with pytest.raises(TimeoutError), tracker(booked) as call:
        call.outcome = "rate_limited"
        raise TimeoutError
    assert [args[2:4] for args, _ in booked.calls] == [(200, None), (None, "rate_limited")]


@pytest.mark.parametrize(
    "exc", [asyncio.CancelledError(), GeneratorExit(), KeyboardInterrupt(), SystemExit(3)]
)
def test_the_caller_giving_up_is_booked_cancelled_and_re_raised(
    perf: PerfCounter, exc: BaseException
) -> None:
    booked = Booked()
    with pytest.raises(type(exc)), tracker(booked) as call:
        call.tokens = 7  # consumed before the caller went away: still booked
        perf.now += 0.5
        raise exc
    ((args, _),) = booked.calls
    assert args == ("openrouter", 0.5, None, "cancelled", 7, 0.0)
    assert call.booked_as == "cancelled"
    with pytest.raises(type(exc)), inference(booked) as inferred:
        raise exc
    assert booked.calls[-1][1]["outcome"] == "cancelled"
    assert inferred.booked_as == "cancelled"


def test_a_breaker_rejection_books_nothing(perf: PerfCounter) -> None:
    booked = Booked()
    for timed in (tracker(booked), inference(booked)):
        with pytest.raises(CircuitOpenError), timed as call:
            raise CircuitOpenError("openrouter", "open", 12.5)
        assert call.booked_as == "breaker_rejected"
    assert booked.calls == []  # counted where the breaker decided, not here


def test_booked_as_says_what_the_call_was_booked_as(perf: PerfCounter) -> None:
    booked = Booked()
    seen = []
    for status, outcome in ((None, None), (503, None), (429, None), (404, None),
                            (None, "failure"), (302, None)):  # fmt: skip
        with tracker(booked) as call:
            assert call.booked_as is None  # not before the block ends
            call.status_code, call.outcome = status, outcome
        seen.append(call.booked_as)
    assert seen == ["success", "failure", "rate_limited", "caller_error", "failure", "success"]
    booked.record = lambda *args, **kwargs: False  # type: ignore[method-assign]
    with tracker(booked) as call:
        call.status_code = 999
    assert call.booked_as is None  # rejected as invalid


def test_usage_is_added_through_the_handle_after_the_block(perf: PerfCounter) -> None:
    booked = Booked()
    with tracker(booked) as call:
        pass
    assert call.add_usage(tokens=12, cost_usd=0.5) is True
    with inference(booked) as inferred:
        pass
    assert inferred.add_usage(input_tokens=3, output_tokens=4, credits=0.25, cost_usd=0.5)
    assert [args for args, _ in booked.calls[1:2] + booked.calls[3:]] == [
        ("add_usage", "openrouter", 12, 0.5),
        ("add_usage", "openrouter", "gpt", 3, 4, 0.25, 0.5),
    ]


def test_an_inference_is_timed_by_the_same_code_with_its_first_byte_and_chunk(
    perf: PerfCounter,
) -> None:
    booked = Booked()
    with inference(booked, "/v1/chat") as call:
        perf.now += 0.125
        call.first_byte()
        perf.now += 0.125
        call.chunk()  # the first chunk: TTFC; the first byte stays
        perf.now += 0.25
        call.chunk()
        call.input_tokens, call.output_tokens = 100, 40
        call.credits, call.cost_usd = 0.5, 0.25
    with pytest.raises(TimeoutError), inference(booked) as call:
        perf.now += 1.5
        raise TimeoutError
    (first_args, first), (second_args, second) = booked.calls
    assert first_args == ("openrouter", "gpt", 0.5)
    del first["exemplar"], second["exemplar"]
    assert first == {
        "status_code": None,
        "outcome": None,
        "input_tokens": 100,
        "output_tokens": 40,
        "credits": 0.5,
        "cost_usd": 0.25,
        "endpoint": "/v1/chat",
        "ttfb_s": 0.125,
        "ttfc_s": 0.25,
    }
    assert second_args == ("openrouter", "gpt", 1.5)
    assert (second["outcome"], second["ttfb_s"], second["ttfc_s"]) == ("failure", None, None)


def _hash(r: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(key).items()}


def test_track_times_the_block_and_classifies_exceptions(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    with metrics.track("anthropic") as call:
        call.tokens = 900
        call.cost_usd = 0.002
    for exc in (_HTTPError(503), _HTTPError(429), _HTTPError(400), TimeoutError("slow")):
        with pytest.raises(type(exc)), metrics.track("anthropic"):
            raise exc
    with metrics.track("anthropic") as call:
        call.status_code = 502  # an error response without an exception
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("anthropic"))
    assert totals["n:success"] == 1
    assert totals["n:failure"] == 3  # 503, timeout, 502
    assert totals["n:rate_limited"] == 1
    assert totals["n:caller_error"] == 1
    assert totals["tokens"] == 900
    assert totals["cost_nusd"] == 2_000_000
    assert totals["b:0.1"] == 6  # every block took far less than 100 ms


def test_a_tracked_call_then_its_usage_from_another_thread(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    with metrics.track("anthropic") as call:
        call.status_code = 200
    worker = threading.Thread(target=lambda: call.add_usage(tokens=900, cost_usd=0.002))
    worker.start()
    worker.join()
    assert call.add_usage(tokens=12.0) is True  # an integral float: 12 tokens
    assert metrics.record("anthropic", 3.0, outcome="cancelled", tokens=5) is True
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("anthropic"))
    del totals["lat_us"]  # the block's real duration
    assert totals == {
        "n:success": 1, "b:0.1": 1, "cancelled": 1, "tokens": 917, "cost_nusd": 2_000_000,
    }  # fmt: skip
    assert sum(int(r.zcard(key)) for key in keys.window_keys("anthropic")) == 1


def test_a_status_given_as_an_int_enum_is_booked_as_its_int(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    # FastAPI's HTTPException keeps the HTTPStatus it was given; httpx.codes is an IntEnum too
    metrics = make_client()
    gateway = GatewayMetrics(metrics)
    calls: list[CallTracker | InferenceCall] = []
    with metrics.track("anthropic") as call:
        call.status_code = HTTPStatus.OK
    calls.append(call)
    with gateway.inference("anthropic", "claude") as inferred:
        inferred.status_code = HTTPStatus.CREATED
    calls.append(inferred)
    for status in (HTTPStatus.BAD_REQUEST, HTTPStatus.TOO_MANY_REQUESTS):
        with pytest.raises(HTTPException), metrics.track("anthropic") as call:
            calls.append(call)
            raise HTTPException(status_code=status)
    assert metrics.record("anthropic", 0.1, status_code=httpx.codes.BAD_GATEWAY) is True
    assert [c.booked_as for c in calls] == ["success", "success", "caller_error", "rate_limited"]
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("anthropic"))
    assert [totals.get(f"n:{o}") for o in ("success", "caller_error", "rate_limited")] == [2, 1, 1]
    assert totals.get("n:failure") == 1  # the 502
    requests = {
        k.decode(): int(v)
        for k, v in r.hgetall(keys.metric_data("model_inference_requests")).items()
    }
    assert requests == {'i:["anthropic","claude","success"]': 1}
    assert metrics.stats()["rejected"] == {}
