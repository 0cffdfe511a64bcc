"""A URL naming a replica: after a failover without Sentinel, the old master's address serves a
read-only replica. Every write is refused, for as long as nobody changes the URL. Workers keep
what they recorded and say what to do; every aggregator follows a leader none of them can be,
and says so in its log and its ``/readyz`` instead of waiting silently for a snapshot. Once the
server is a master again, everything kept is delivered and a replica leads."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from aggregator.core.served import readiness
from aggregator.engine.cycle import Aggregator
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from gatewayz_transport.connection import connect
from gatewayz_transport.errors import READ_ONLY_HINT

NAMESPACE = "replica-url"


def test_a_replica_refuses_every_write_says_why_and_all_is_delivered_once_promoted(
    private_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    url = f"redis://127.0.0.1:{port}/0"
    private_redis.replicaof("127.0.0.1", "1")  # a master that never answers: read-only for good
    metrics = MetricsClient(settings=ClientSettings(redis_url=url, namespace=NAMESPACE))
    settings = AggregatorSettings(redis_url=url, namespace=NAMESPACE, instance="only")
    aggregator = Aggregator(settings, connect(url, socket_timeout=2.0))
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(12):
                assert metrics.record("acme", 0.2, status_code=200)
            assert not metrics.flush(timeout=1.0)  # refused: kept, not dropped
            for _ in range(3):
                aggregator.run_breaker_cycle()
                aggregator.run_cycle()
        assert not aggregator.is_leader and aggregator.snapshot is None
        ready, reason = readiness(aggregator.served(), time.time(), 60.0)
        assert not ready
        assert reason.startswith("no snapshot yet; cannot take the leader lease: ReadOnlyError: ")
        assert reason.endswith(f"({READ_ONLY_HINT})")
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        lease = [m for m in said if m.startswith("cannot take the leader lease: ")]
        assert len(lease) == 1 and lease[0].endswith(f"({READ_ONLY_HINT})")  # once, not per tick
        flushes = [m for m in said if m.startswith("metrics flush to Redis failed")]
        assert len(flushes) == 1 and flushes[0].endswith(f"({READ_ONLY_HINT})")

        private_redis.replicaof("NO", "ONE")  # promoted (or the URL fixed): a master again
        assert metrics.flush(timeout=10.0)
        snapshot = aggregator.run_cycle()
        assert snapshot is not None and aggregator.is_leader
        (acme,) = [p for p in snapshot.providers if p.provider == "acme"]
        assert acme.requests_total["success"] == 12  # every call recorded meanwhile
        assert readiness(aggregator.served(), time.time(), 60.0) == (True, "ok")
        assert aggregator.served().lease_error is None
    finally:
        metrics.close(timeout=2.0)
