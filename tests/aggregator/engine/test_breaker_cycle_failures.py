"""A leader whose breaker cycles fail (here its Redis user may not run ZCOUNT, which every
evaluation reads windows with: a hand-written ACL): the breakers keep their states, so an outage
never opens one. Each failure is counted and exported
(``gatewayz_aggregator_breaker_cycles_failed_total``, alert
GatewayzAggregatorBreakerCyclesFailing), not only logged."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from aggregator.serve.app import create_app
from aggregator.settings import AggregatorSettings
from client import ClientSettings, MetricsClient
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.acl import user_without

NAMESPACE = "breaker-cycles-failing"


def test_failed_breaker_cycles_are_counted_and_exported(private_redis: redis.Redis) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    with user_without(f"redis://127.0.0.1:{port}/0", "zcount") as url:
        worker = MetricsClient(
            settings=ClientSettings(redis_url=f"redis://127.0.0.1:{port}/0", namespace=NAMESPACE)
        )
        settings = AggregatorSettings(
            redis_url=url, namespace=NAMESPACE, instance="only", breaker=BreakerConfig(min_calls=5)
        )
        aggregator = Aggregator(settings, connect(url, socket_timeout=2.0))
        try:
            for _ in range(20):
                worker.record("down", 0.1, status_code=503)
            assert worker.flush(timeout=5.0)
            assert [aggregator.run_breaker_cycle() for _ in range(3)] == [[], [], []]
            assert aggregator.is_leader  # it leads, and evaluates nothing
            assert aggregator.status.breaker_cycles_failed == 3
            assert not private_redis.exists(Keys(NAMESPACE).breaker("down"))  # still closed
            text = (
                TestClient(create_app(aggregator), base_url="http://127.0.0.1").get("/metrics").text
            )
            assert "\ngatewayz_aggregator_breaker_cycles_failed_total 3.0\n" in text
        finally:
            worker.close(timeout=2.0)
