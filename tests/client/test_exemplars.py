"""Exemplar labels: those a caller passes (kept when they can be one, else left out) and those of
OpenTelemetry's active span (only a valid, sampled one links)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from client import MetricsClient
from client._exemplars import current_exemplar, valid_exemplar
from gatewayz_protocol.keys import Keys


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"},
         {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}),
        ({"trace_id": "ab", "span_id": "cd"}, {"trace_id": "ab", "span_id": "cd"}),
        ({"n": 7}, {"n": "7"}),  # as strings
        ({"k": "v" * 127}, {"k": "v" * 127}),  # 128 characters in all: the bound
        ({"k": "v" * 128}, None),  # 129: over it
        ({}, None),
        (None, None),
        ("trace_id=ab", None),  # not a mapping
        ([("trace_id", "ab")], None),
        ({"k": Unprintable()}, None),
    ],
)  # fmt: skip
def test_labels_are_kept_as_strings_when_they_can_be_an_exemplar(
    labels: Any, expected: dict[str, str] | None
) -> None:
    assert valid_exemplar(labels) == expected


def test_without_opentelemetry_loaded_there_is_no_exemplar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "opentelemetry.trace", raising=False)
    assert current_exemplar() is None


def test_the_active_sampled_span_is_the_exemplar() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert current_exemplar() is None  # no active span
    with tracer.start_as_current_span("call") as span:
        context = span.get_span_context()
        expected = {"trace_id": format(context.trace_id, "032x"),
                    "span_id": format(context.span_id, "016x")}  # fmt: skip
        assert current_exemplar() == expected
        assert len(expected["trace_id"]) == 32 and len(expected["span_id"]) == 16
    assert current_exemplar() is None


def test_an_unsampled_span_is_no_exemplar() -> None:
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with tracer.start_as_current_span("call"):
        assert current_exemplar() is None


def test_an_exemplar_openmetrics_would_refuse_is_left_out_counted_and_never_stored(
    make_client: Callable[..., MetricsClient], r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    assert metrics.record("openrouter", 0.3, status_code=200, exemplar={"trace id": "abc"})
    assert metrics.record("openrouter", 0.3, status_code=200, exemplar={"t": "x" * 200})
    assert metrics.record("openrouter", 0.3, status_code=200, exemplar={"trace_id": "ok"})
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {"invalid_exemplar": 2}
    stored = r.hgetall(keys.exemplars("openrouter"))
    assert [json.loads(v)["l"] for v in stored.values()] == [{"trace_id": "ok"}]
    assert r.hget(keys.totals("openrouter"), "n:success") == b"3"  # every call recorded


def test_a_falsy_exemplar_is_none_given_nothing_counted_nor_logged(
    make_client: Callable[..., MetricsClient],
    r: redis.Redis,
    keys: Keys,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: exemplar={} (a gateway's `labels or {}`), False, 0 or "" counted invalid_exemplar
    # and logged a warning, while the docs (and a backend metric's observe()) take them as none
    metrics = make_client()
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        for none_given in ({}, False, 0, "", (), None):
            assert metrics.record("openrouter", 0.3, status_code=200, exemplar=none_given)
        assert metrics.record("openrouter", 0.3, status_code=200, exemplar=[("trace_id", "x")])
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {"invalid_exemplar": 1}  # a list: not a mapping
    (logged,) = caplog.records  # the list's, once
    assert logged.getMessage().startswith("metrics exemplar left out (invalid_exemplar): [(")
    assert r.hgetall(keys.exemplars("openrouter")) == {}
    assert r.hget(keys.totals("openrouter"), "n:success") == b"7"  # every call recorded
