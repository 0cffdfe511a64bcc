"""Every public method of the worker client with hostile arguments: what records never raises,
what declares raises ValueError only. Against a real Redis, as a worker would run it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import GatewayMetrics, MetricsClient, MetricsMiddleware
from tests.support.clock import FakeClock

MakeClient = Callable[..., MetricsClient]


class Hostile:
    """An argument whose every conversion, comparison and attribute fails."""

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __int__(self) -> int:
        raise RuntimeError("no int")

    def __index__(self) -> int:
        raise RuntimeError("no index")

    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("no lt")

    def __le__(self, other: object) -> bool:
        raise RuntimeError("no le")

    def __bool__(self) -> bool:
        raise RuntimeError("no bool")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.just(object()),
    st.builds(Hostile),
    st.sampled_from(["openrouter", "success", "failure", 200, 503, 0.25, 7]),
)
SWEEP = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_the_two_reported_ones(make_client: MakeClient, clock: FakeClock) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    gateway.record_inference("openrouter", "gpt", 0.1, outcome=[])  # type: ignore[arg-type]
    metrics.gauge("depth", "Depth").dec("x")  # type: ignore[arg-type]
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {"invalid_outcome": 1}


def test_recording_never_raises(make_client: MakeClient, clock: FakeClock) -> None:
    metrics = make_client(clock=clock)
    counter = metrics.counter("c_total", "C", ["a"])
    gauge = metrics.gauge("g", "G", ["a"])
    histogram = metrics.histogram("h", "H", ["a"], buckets=[1.0])

    @SWEEP
    @given(args=st.lists(ANYTHING, min_size=6, max_size=6), kwargs=st.booleans())
    def check(args: list[Any], kwargs: bool) -> None:
        provider, latency, status, outcome, tokens, cost = args
        if kwargs:
            accepted = metrics.record(
                provider, latency, status_code=status, outcome=outcome, tokens=tokens,
                cost_usd=cost,
            )  # fmt: skip
        else:
            accepted = metrics.record(provider, latency, status, outcome, tokens, cost)
        assert accepted in (True, False)
        assert metrics.allow(provider) in (True, False)
        assert asyncio.run(metrics.allow_async(provider)) in (True, False)
        with metrics.track("openrouter") as call:
            call.status_code, call.outcome = status, outcome
            call.tokens, call.cost_usd = tokens, cost
        for child in (counter.labels(provider), gauge.labels(latency), histogram.labels(status)):
            for method in ("inc", "dec", "set", "observe"):
                if hasattr(child, method):
                    getattr(child, method)(tokens)
        assert metrics.flush(timeout=latency) in (True, False)
        assert isinstance(metrics.stats(), dict)

    check()
    assert metrics.flush(timeout=10)


def test_booking_inferences_never_raises(make_client: MakeClient, clock: FakeClock) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)

    @SWEEP
    @given(args=st.lists(ANYTHING, min_size=12, max_size=12))
    def check(args: list[Any]) -> None:
        provider, model, latency, status, outcome, tin, tout, credits, cost, end, ttfb, ttfc = args
        gateway.record_inference(
            provider, model, latency, status_code=status, outcome=outcome, input_tokens=tin,
            output_tokens=tout, credits=credits, cost_usd=cost, endpoint=end, ttfb_s=ttfb,
            ttfc_s=ttfc,
        )  # fmt: skip
        with gateway.inference(provider, model, end) as call:
            call.first_byte()
            call.chunk()
            call.status_code, call.outcome = status, outcome
            call.input_tokens, call.output_tokens = tin, tout
            call.credits, call.cost_usd = credits, cost

    check()
    assert metrics.flush(timeout=10)


def test_an_exception_in_a_timed_block_is_the_callers_own(
    make_client: MakeClient, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics)
    for exc in (ValueError("mine"), _AttributeBomb()):
        with pytest.raises(type(exc)), metrics.track("openrouter"):
            raise exc
        with pytest.raises(type(exc)), gateway.inference("openrouter", "gpt"):
            raise exc
    assert metrics.flush(timeout=5)
    assert metrics.stats()["accepted"] == 4  # each block still recorded (a failure)


class _AttributeBomb(Exception):
    """An exception whose status attributes cannot be read."""

    @property
    def status_code(self) -> int:
        raise RuntimeError("boom")


def test_declaring_raises_value_error_only(make_client: MakeClient, clock: FakeClock) -> None:
    metrics = make_client(clock=clock)

    @SWEEP
    @given(
        kind=st.sampled_from(["counter", "gauge", "histogram"]),
        args=st.lists(ANYTHING, min_size=4, max_size=4),
    )
    def check(kind: str, args: list[Any]) -> None:
        name, documentation, labelnames, extra = args
        try:
            if kind == "gauge":
                metrics.gauge(name, documentation, labelnames, combine=extra)
            elif kind == "histogram":
                metrics.histogram(name, documentation, labelnames, buckets=extra)
            else:
                metrics.counter(name, documentation, labelnames)
        except ValueError:
            pass

    check()
    counter = metrics.counter("sized_total", "Sized", ["a", "b"])
    with pytest.raises(ValueError):
        counter.labels("only one")
    with pytest.raises(ValueError):
        counter.labels(a="x", c="y")
    counter.labels(Hostile(), math.nan).inc()  # the right count of any values: fine
    assert metrics.flush(timeout=5)


def test_the_middleware_counts_odd_responses_without_breaking_them(
    make_client: MakeClient, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    gateway = GatewayMetrics(metrics, app_name="odd")
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": "not a status"})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    middleware = MetricsMiddleware(app, gateway)
    scope = {"type": "http", "method": Hostile(), "route": Hostile(), "root_path": 5}
    asyncio.run(middleware(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    asyncio.run(middleware({"type": "http", "method": "GET"}, receive, send))
    assert metrics.flush(timeout=5)
