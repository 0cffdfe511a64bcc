"""A Redis that cannot save to disk (a full disk, a directory it may not write): with
``stop-writes-on-bgsave-error`` (its default) it refuses every write with MISCONF until a save
succeeds again. That is "not now", not "never": a worker keeps its events and delivers them once
Redis takes writes again (before, a worker holding event ids ahead had every batch refused and
counted as dropped), and both sides say what the operator must fix."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from devtools.redis_server import RedisProcess, start_redis
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from gatewayz_transport.errors import CANNOT_SAVE_HINT
from tests.support.processes import need_tool, wait_for

NAMESPACE = "cannot-save"


@pytest.fixture
def unsaving() -> Iterator[RedisProcess]:
    """A Redis whose saves fail: its directory is /proc, which nobody may write to."""
    need_tool("redis-server", "apt-get install redis-server")
    server = start_redis(extra_args=["--dir", "/proc", "--save", "3600 1"])
    yield server
    server.kill()  # a shutdown would try to save, and fail, for its whole timeout
    server.stop()


def _refuses_writes(r: redis.Redis) -> bool:
    try:
        r.set("probe", 1)
    except redis.ResponseError as exc:
        return str(exc).startswith("MISCONF")
    return False


def test_a_redis_that_cannot_save_delays_events_and_loses_none(
    unsaving: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    r = redis.Redis(port=unsaving.port)
    metrics = MetricsClient(settings=ClientSettings(redis_url=unsaving.url, namespace=NAMESPACE))
    settings = AggregatorSettings(redis_url=unsaving.url, namespace=NAMESPACE, instance="only")
    aggregator = Aggregator(settings, connect(unsaving.url, socket_timeout=2.0))
    try:
        for _ in range(5):
            metrics.record("acme", 0.2, status_code=200)
        assert metrics.flush(timeout=5.0)  # the worker now holds event ids ahead
        r.bgsave()  # fails: from now on Redis refuses writes
        wait_for(lambda: _refuses_writes(r), timeout=10)

        with caplog.at_level(logging.ERROR):
            for _ in range(20):
                metrics.record("acme", 0.2, status_code=200)
            assert not metrics.flush(timeout=1.0)
            assert aggregator.run_cycle() is None
        assert metrics.stats()["dropped"] == 0  # kept, not given up on
        # it cannot take the leader lease (a write): /readyz says why, with what to do
        assert str(aggregator.served().lease_error).endswith(f"({CANNOT_SAVE_HINT})")
        ready, reason = aggregator.ready()
        assert not ready and reason.endswith(f"({CANNOT_SAVE_HINT})")
        said = [m.getMessage() for m in caplog.records]
        assert any(m.startswith("metrics flush to Redis failed") for m in said), said
        assert not any("counted as dropped" in m for m in said), said

        r.config_set("stop-writes-on-bgsave-error", "no")  # as a save that succeeds again would
        assert metrics.flush(timeout=10.0)
        windows = Keys(NAMESPACE).window_keys("acme")
        assert sum(r.zcard(key) for key in windows) == 25
        snapshot = aggregator.run_cycle()
        assert snapshot is not None
        (acme,) = [p for p in snapshot.providers if p.provider == "acme"]
        assert acme.requests_total["success"] == 25
    finally:
        metrics.close(timeout=2.0)
        r.close()
