"""Every command a worker sends, taken away from its Redis user in turn, by a machine: an ACL
written by hand, a command renamed away, a proxy that passes only some. The same gateway traffic
(calls with and without a model, backend metrics, ``allow()`` on an open and on a half-open
breaker) runs once with every right, then once per refused command, and each run is held to:

- safety, whatever is refused: every call is delivered at most once and accounted for exactly
  (what Redis holds = settled - dropped; the window and the totals agree), a half-open breaker
  grants no more trial calls than its permits, nothing the aggregator serves exceeds what was
  recorded, and no call into the client raises;
- candour: a run that ends otherwise than the run with every right (fewer calls delivered, a
  flush that fails, ``allow()`` answering differently, a metric not served) has a log record at
  WARNING or above naming the refused command, so an operator can find what to grant.

The harmful refusals this search found are pinned by ``tests/client/test_refused_commands.py``
(XADD, MULTI). The commands come from the worker's role in ``devtools/redis_acl.py`` (what a
deployment grants it), plus the connection's own and EVAL (the scripts' fallback)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, GatewayMetrics, MetricsClient
from devtools.redis_acl import WORKER
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.client.test_allow import set_state
from tests.support.acl import check_named, role_commands, user_without
from tests.support.backends import empty_namespace
from tests.support.scrape import samples, scrape

ROUNDS, CALLS, PERMITS = 3, 10, 5
"""Rounds of traffic (each ends in a flush), calls per provider per round, trial permits."""


WORKER_COMMANDS = role_commands(WORKER)


@dataclass(frozen=True)
class Run:
    """What one run of the traffic left: in Redis, in the client's counts, in what it answered
    and in what the aggregator serves."""

    delivered: dict[str, int]
    """Provider -> calls in its totals."""
    windowed: dict[str, int]
    """Provider -> calls in its window."""
    settled: int
    dropped: int
    flushes: tuple[bool, ...]
    trials_granted: int
    open_allowed: int
    served: dict[str, float]
    """The backend metrics, as the aggregator serves them."""

    def outcome(self) -> tuple[object, ...]:
        return (self.delivered, self.flushes, self.trials_granted, self.open_allowed, self.served)


def _traffic(url: str, admin_url: str, namespace: str) -> Run:
    metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace=namespace))
    gateway = GatewayMetrics(metrics, app_name="search")
    jobs = metrics.counter("search_jobs", "Jobs", ["kind"])
    sizes = metrics.histogram("search_sizes", "Sizes", buckets=(1.0, 10.0))
    depth = metrics.gauge("search_depth", "Depth")
    flushes, granted, open_allowed = [], 0, 0
    try:
        for round_ in range(ROUNDS):
            for _ in range(CALLS):
                with gateway.inference("up", "m1", "/v1/chat") as call:
                    call.status_code = 200
                    call.input_tokens, call.output_tokens, call.cost_usd = 10, 5, 0.001
                metrics.record("down", 0.1, status_code=503)
                jobs.labels("a").inc()
                sizes.observe(5.0)
            depth.set(round_ + 1)
            granted += sum(metrics.allow("trial") for _ in range(4))
            open_allowed += metrics.allow("shut")
            # (once a flush failed, the next ones are not waited for as long: the run would
            # only take longer)
            flushes.append(metrics.flush(timeout=0.5 if all(flushes) else 0.05))
        stats = metrics.stats()
    finally:
        metrics.close(timeout=0.1)
    admin = redis.Redis.from_url(admin_url)
    keys = Keys(namespace)
    try:
        delivered, windowed = {}, {}
        for provider in ("up", "down"):
            totals = admin.hgetall(keys.totals(provider))
            delivered[provider] = sum(int(v) for f, v in totals.items() if f.startswith(b"n:"))
            windowed[provider] = sum(int(admin.zcard(key)) for key in keys.window_keys(provider))
    finally:
        admin.close()
    return Run(
        delivered,
        windowed,
        settled=stats["settled"],
        dropped=stats["dropped"],
        flushes=tuple(flushes),
        trials_granted=granted,
        open_allowed=open_allowed,
        served=_served(admin_url, namespace),
    )


def _served(admin_url: str, namespace: str) -> dict[str, float]:
    settings = AggregatorSettings(redis_url=admin_url, namespace=namespace, instance="search")
    connection = connect(admin_url, socket_timeout=2.0)
    aggregator = Aggregator(settings, connection)
    try:
        aggregator.run_cycle()
        found = samples(scrape(aggregator))
    finally:
        aggregator.release_lease()
        connection.close()
    wanted = {
        ("search_jobs_total", (("kind", "a"),)): "jobs",
        ("search_sizes_count", ()): "sizes",
        ("search_depth", ()): "depth",
    }
    return {name: found[key] for key, name in wanted.items() if key in found}


@pytest.fixture
def breakers(redis_url: str, namespace: str) -> Iterator[None]:
    """``trial`` half-open with ``PERMITS`` permits, ``shut`` open: written by the aggregator's
    writer, as a transition would."""
    admin, keys = redis.Redis.from_url(redis_url), Keys(namespace)
    set_state(admin, keys, "trial", "half_open", permits=PERMITS)
    set_state(admin, keys, "shut", "open")
    yield
    admin.close()


@pytest.fixture(scope="module")
def with_every_right(single_redis_url: str) -> Iterator[Run]:
    # its own namespace: the module's tests may run in several processes, each building this
    namespace = f"refusals-baseline-{uuid.uuid4().hex[:12]}"
    admin, keys = redis.Redis.from_url(single_redis_url), Keys(namespace)
    set_state(admin, keys, "trial", "half_open", permits=PERMITS)
    set_state(admin, keys, "shut", "open")
    admin.close()
    yield _traffic(single_redis_url, single_redis_url, namespace)
    empty_namespace(single_redis_url, namespace)


def _check_safe(run: Run) -> None:
    recorded = ROUNDS * CALLS
    for provider, delivered in run.delivered.items():
        assert delivered <= recorded, (provider, delivered)
        assert run.windowed[provider] == delivered, (provider, run.windowed, run.delivered)
    assert sum(run.delivered.values()) == run.settled - run.dropped, run
    if run.open_allowed == 0:  # (a worker that cannot read breakers fails open: documented)
        assert run.trials_granted <= PERMITS, run
    assert run.served.get("jobs", 0) <= recorded and run.served.get("sizes", 0) <= recorded


def test_with_every_right_everything_arrives(with_every_right: Run) -> None:
    run = with_every_right
    _check_safe(run)
    assert run.delivered == {"up": ROUNDS * CALLS, "down": ROUNDS * CALLS}
    assert (run.settled, run.dropped) == (2 * ROUNDS * CALLS, 0)
    assert run.flushes == (True,) * ROUNDS
    assert (run.trials_granted, run.open_allowed) == (PERMITS, 0)
    assert run.served == {"jobs": ROUNDS * CALLS, "sizes": ROUNDS * CALLS, "depth": ROUNDS}


@pytest.mark.parametrize("refused", WORKER_COMMANDS)
def test_a_refused_command_loses_nothing_silently(
    single_redis_url: str,
    namespace: str,
    breakers: None,
    refused: str,
    with_every_right: Run,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        user_without(single_redis_url, refused) as url,
        caplog.at_level(logging.WARNING),
    ):
        run = _traffic(url, single_redis_url, namespace)
    _check_safe(run)
    said = (f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    check_named(refused, with_every_right.outcome(), run.outcome(), said)
