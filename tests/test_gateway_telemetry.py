"""The example gateway under a real Gunicorn (4 preloaded workers) with GATEWAYZ_LOKI_URL set: the
post_fork hook sets telemetry up in each worker, and a request's log line reaches Loki as
``{app="gatewayz-api"}`` with the provider and model in the line, not in the labels."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import example_gateway
from tests.support.loki import Receiver, receiver
from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def loki() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


def test_a_gateway_request_logs_a_line_to_loki_from_its_worker(
    loki: Receiver, redis_url: str, namespace: str
) -> None:
    env = {
        "FAKE_PROVIDERS": "openrouter:0.01:0.0",
        "GATEWAYZ_LOKI_URL": loki.url,
        "GATEWAYZ_DEPLOYMENT_ENV": "test",
    }
    with example_gateway(redis_url, namespace, env, unset=("GATEWAYZ_LOKI_APP",)) as base:
        body = json.dumps({"provider": "openrouter", "model": "m-telemetry"}).encode()
        request = urllib.request.Request(
            f"{base}/v1/chat/completions", data=body, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            pid = response.headers["x-worker-pid"]

        def logged() -> bool:
            return any(line.fields().get("model") == "m-telemetry" for line in loki.lines())

        wait_for(logged, timeout=20)
    (line,) = [line for line in loki.lines() if line.fields().get("model") == "m-telemetry"]
    assert line.labels == {
        "app": "gatewayz-api",
        "env": "test",
        "service": "gatewayz-api",
        "level": "info",
    }
    fields = line.fields()
    assert (fields["msg"], fields["provider"], fields["status"]) == (
        "chat completion",
        "openrouter",
        "200",
    )
    assert float(fields["duration_s"]) >= 0
    assert pid  # served by a worker, whose own sender pushed the line
    assert time.time_ns() - line.timestamp_ns < 120e9
