"""The demo's embedded fallback: fakeredis's TCP server (with Lua) runs the whole pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from aggregator.core.breaker import BreakerConfig
from aggregator.engine.cycle import Aggregator
from client import ClientSettings, MetricsClient
from devtools.redis_server import RedisProcess, start_redis
from tests.support.clock import FakeClock


@pytest.fixture
def fake_server() -> Iterator[RedisProcess]:
    server = start_redis(force_fake=True)
    assert server.kind == "fakeredis"
    yield server
    server.stop()


def test_pipeline_runs_on_the_fakeredis_server(
    fake_server: RedisProcess,
    namespace: str,
    make_aggregator: Callable[..., Aggregator],
    clock: FakeClock,
) -> None:
    metrics = MetricsClient(
        settings=ClientSettings(redis_url=fake_server.url, namespace=namespace), clock=clock
    )
    for _ in range(20):
        metrics.record("flaky", 0.7, status_code=500)
    metrics.record("steady", 0.3, cost_usd=0.25)
    assert metrics.flush(timeout=5)
    aggregator = make_aggregator(url=fake_server.url, breaker=BreakerConfig(min_calls=20))
    clock.advance(1)
    snapshot = aggregator.run_cycle()
    assert snapshot is not None
    health = {p.provider: p for p in snapshot.providers}
    assert health["flaky"].breaker.state == "open"
    assert health["flaky"].window_requests == 20
    assert health["steady"].cost_usd == 0.25
    assert health["steady"].histogram_cumulative == (0, 1, 1, 1, 1, 1, 1)
    assert metrics.allow("flaky") is False
    metrics.close(timeout=2)
