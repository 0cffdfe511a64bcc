"""/metrics answered from the rendered bytes ahead of the routing (aggregator/serve/
metrics_route.py): header for header and byte for byte the route's answer, in every format
with and without gzip, for GET and HEAD; a request the route would refuse (no token, a wrong
token, a host not trusted) is refused exactly as the route refuses it, comparing the token once;
a body not rendered yet goes to the route."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.serve.metrics_route import MetricsFastPath

MakeAggregator = Callable[..., Aggregator]
TOKEN = "reader-tok-1"
OPERATOR = "operator-tok-2"


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per /metrics request the fast path answered."""
    calls: list[int] = []
    answer = MetricsFastPath._answer

    async def spy(self: MetricsFastPath, *args: Any) -> None:
        calls.append(1)
        await answer(self, *args)

    monkeypatch.setattr(MetricsFastPath, "_answer", spy)
    return calls


def _answer(response: httpx.Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, response.headers.raw, response.content


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text", "text/plain"])
@pytest.mark.parametrize("encoding", ["gzip", "identity"])
def test_a_rendered_body_is_answered_as_the_route_answers_it(
    make_aggregator: MakeAggregator, answered: list[int], accept: str | None, encoding: str
) -> None:
    aggregator = make_aggregator(providers=("idle", "other"))
    assert aggregator.run_cycle() is not None
    http = TestClient(create_app(aggregator), base_url="http://127.0.0.1")
    headers = {"Accept-Encoding": encoding, **({"Accept": accept} if accept else {})}
    by_route = http.get("/metrics", headers=headers)  # not rendered yet: the route renders
    assert answered == []
    fast = http.get("/metrics", headers=headers)
    assert answered == [1]
    assert _answer(fast) == _answer(by_route)
    again = http.get("/metrics", headers=headers)
    assert again.status_code == 200 and b"provider_availability" in again.content
    head = http.head("/metrics", headers=headers)
    assert len(answered) == 3
    assert _answer(head) == (200, fast.headers.raw, b"")


def test_requests_the_route_refuses_are_refused_as_before(
    make_aggregator: MakeAggregator, answered: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    aggregator = make_aggregator(
        providers=("idle",),
        auth_token=TOKEN,
        operator_token=OPERATOR,
        allowed_hosts=("metrics.example",),
    )
    assert aggregator.run_cycle() is not None
    refusals = {
        "none": {},
        "not bearer": {"Authorization": f"Basic {TOKEN}"},
        "wrong": {"Authorization": "Bearer nope"},
    }
    # the route's own answers, before anything is rendered
    by_route = TestClient(create_app(aggregator), base_url="http://metrics.example")
    expected = {name: _answer(by_route.get("/metrics", headers=h)) for name, h in refusals.items()}
    assert answered == []
    assert expected["none"][0] == expected["wrong"][0] == 401

    http = TestClient(create_app(aggregator), base_url="http://metrics.example")
    reader = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reader.status_code == 200 and answered == []  # rendered by the route
    compared: list[bytes] = []
    compare_digest = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for token in (TOKEN, OPERATOR):
        response = http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert _answer(response) == _answer(reader)
    for name, headers in refusals.items():
        assert _answer(http.get("/metrics", headers=headers)) == expected[name]
    assert len(answered) == 5
    # each token sent compared once against each token configured, as the route compares
    assert compared == [TOKEN.encode()] * 2 + [OPERATOR.encode()] * 2 + [b"nope"] * 2
    elsewhere = TestClient(http.app, base_url="http://elsewhere.example")
    host = elsewhere.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert host.status_code == 400  # Starlette's host check, before this path
    assert len(answered) == 5
