"""Timed blocks: ``track()`` (CallTracker) and ``gateway.inference()`` (InferenceCall) through the
one TimedCall. Unit tests book into a stand-in with a settable perf_counter (exact latencies, no
sleeps); the last test times real blocks against Redis."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis

import client._gateway as gateway_module
import client._tracking as tracking
from client import GatewayMetrics, InferenceCall, MetricsClient
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

    def record_inference(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))


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
    assert set(kwargs) == {"exemplar"}


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
