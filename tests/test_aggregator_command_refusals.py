"""Every command the aggregator sends, taken away from its Redis user in turn, by a machine (the
worker's side: ``tests/test_command_refusals.py``). The same namespace (a provider failing, one
succeeding with a model, a backend counter) is aggregated once with every right, then once per
refused command: two breaker cycles and two metrics cycles, then a scrape. Each run is held to:

- safety: no cycle raises, ``/metrics`` answers 200 and parses, no breaker leaves a state it
  should not (``up`` never opens), and nothing served exceeds what was recorded;
- candour: a run that ends otherwise than the run with every right (a breaker not opened, a
  figure missing, not ready) has a log record at WARNING or above, or the reason ``/readyz``
  gives, naming the refused command, beside the server's count of refusals
  (``gatewayz_redis_permission_refusals_total``, which the ``GatewayzRedisPermissionRefused``
  alert watches).

Found here: a command refused inside a script (DEL in TRANSITION: a breaker cycle failing) was
logged without its name (Redis names the script's line); an ACL without PING made ``/readyz``
say "redis unreachable" of a Redis that answered."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, GatewayMetrics, MetricsClient
from devtools.redis_acl import AGGREGATOR
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.acl import check_named, role_commands, user_without
from tests.support.backends import empty_namespace
from tests.support.scrape import samples, scrape

CALLS = 20
SERVED = (
    "provider_availability",
    "provider_error_rate",
    "gatewayz_provider_requests_total",
    "gatewayz_provider_window_requests",
    "gatewayz_circuit_breaker_state",
    "gatewayz_circuit_breaker_transitions_total",
    "model_inference_requests_total",
    "jobs_total",
)
"""The families compared between runs (the rest are timings and the process's own)."""


AGGREGATOR_COMMANDS = role_commands(AGGREGATOR)


@dataclass(frozen=True)
class Run:
    ready: tuple[bool, str]
    breakers: dict[str, str]
    """Provider -> its breaker's state in Redis ("closed" when it has none)."""
    served: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def outcome(self) -> tuple[object, ...]:
        return (self.ready[0], self.breakers, self.served)


def _record(url: str, namespace: str) -> None:
    metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace=namespace))
    gateway = GatewayMetrics(metrics, app_name="search")
    try:
        for _ in range(CALLS):
            with gateway.inference("up", "m1", "/v1/chat") as call:
                call.status_code = 200
            metrics.record("down", 0.1, status_code=503)
        metrics.counter("jobs", "Jobs", ["kind"]).labels("a").inc(3)
        assert metrics.flush(timeout=5.0)
    finally:
        metrics.close(timeout=1.0)


def _aggregate(url: str, admin_url: str, namespace: str) -> Run:
    settings = AggregatorSettings(
        redis_url=url, namespace=namespace, instance="search", breaker=BreakerConfig(min_calls=5)
    )
    connection = connect(url, socket_timeout=2.0)
    aggregator = Aggregator(settings, connection)
    try:
        for _ in range(2):
            aggregator.run_breaker_cycle()
            aggregator.run_cycle()
        found = samples(scrape(aggregator))
        ready = aggregator.ready()
    finally:
        with contextlib.suppress(redis.ResponseError):  # (the process logs it: a warning)
            aggregator.release_lease()
        connection.close()
    admin, keys = redis.Redis.from_url(admin_url), Keys(namespace)
    try:
        breakers = {
            p: (admin.hget(keys.breaker(p), "state") or b"closed").decode() for p in ("up", "down")
        }
    finally:
        admin.close()
    served = {key: value for key, value in found.items() if key[0].startswith(SERVED)}
    return Run(ready, breakers, served)


@pytest.fixture(scope="module")
def with_every_right(single_redis_url: str) -> Iterator[Run]:
    # its own namespace: the module's tests may run in several processes, each building this
    namespace = f"aggregator-refusals-baseline-{uuid.uuid4().hex[:12]}"
    _record(single_redis_url, namespace)
    yield _aggregate(single_redis_url, single_redis_url, namespace)
    empty_namespace(single_redis_url, namespace)


def _check_safe(run: Run) -> None:
    assert run.breakers["up"] == "closed", run.breakers
    for (name, labels), value in run.served.items():
        if name.endswith("_total") or name == "gatewayz_provider_window_requests":
            assert value <= CALLS, (name, labels, value)


def test_with_every_right_the_figures_are_the_recorded_ones(with_every_right: Run) -> None:
    run = with_every_right
    _check_safe(run)
    assert run.ready[0], run.ready
    assert run.breakers == {"up": "closed", "down": "open"}
    served = run.served
    assert served[("provider_availability", (("provider", "up"),))] == 1.0
    assert served[("provider_availability", (("provider", "down"),))] == 0.0
    assert served[("provider_error_rate", (("provider", "down"),))] == 1.0
    for provider, outcome in (("up", "success"), ("down", "failure")):
        labels = (("outcome", outcome), ("provider", provider))
        assert served[("gatewayz_provider_requests_total", labels)] == CALLS
        assert served[("gatewayz_provider_window_requests", (("provider", provider),))] == CALLS
    model = (("model", "m1"), ("provider", "up"), ("status", "success"))
    assert served[("model_inference_requests_total", model)] == CALLS
    assert served[("jobs_total", (("kind", "a"),))] == 3
    opened = (("from_state", "closed"), ("provider", "down"), ("to_state", "open"))
    assert served[("gatewayz_circuit_breaker_transitions_total", opened)] == 1


@pytest.mark.parametrize("refused", AGGREGATOR_COMMANDS)
def test_a_refused_command_changes_nothing_silently(
    single_redis_url: str,
    namespace: str,
    refused: str,
    with_every_right: Run,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _record(single_redis_url, namespace)
    with (
        user_without(single_redis_url, refused) as url,
        caplog.at_level(logging.WARNING),
    ):
        run = _aggregate(url, single_redis_url, namespace)
    _check_safe(run)
    said = [run.ready[1], *(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)]
    check_named(refused, with_every_right.outcome(), run.outcome(), said)
