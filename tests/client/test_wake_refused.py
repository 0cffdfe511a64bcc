"""A Redis that refuses the breaker wakes (an ACL written by hand without ``XADD``, stream
commands renamed away): the refusal comes when the wake is queued, so Redis discards the whole
transaction it rides in. The batch is sent again without its wakes: every event is delivered
exactly once (on a cluster the slots the first attempt applied are not applied again), and the
breaker waits for its next evaluation (client/_flush_pass.py ``_without_extra``)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest
import redis

from client import ClientSettings, MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS, open_redis

pytestmark = BOTH_BACKENDS


@pytest.fixture
def without_xadd(redis_url: str) -> Iterator[str]:
    """``redis_url`` as a user who may run everything but XADD (on every node of a cluster)."""
    user, password = f"no-xadd-{secrets.token_hex(4)}", secrets.token_hex(8)
    admin = open_redis(redis_url)
    nodes = (
        [node.redis_connection for node in admin.get_nodes()]
        if isinstance(admin, redis.RedisCluster)
        else [admin]
    )
    for node in nodes:
        node.acl_setuser(  # type: ignore[union-attr]
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all", "-xadd"]
        )
    scheme, _, rest = redis_url.partition("://")
    yield f"{scheme}://{user}:{password}@{rest}"
    for node in nodes:
        node.acl_deluser(user)  # type: ignore[union-attr]
    admin.close()


def test_a_batch_whose_wakes_are_refused_is_delivered_once_without_them(
    redis_url: str, namespace: str, without_xadd: str, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = MetricsClient(settings=ClientSettings(redis_url=without_xadd, namespace=namespace))
    keys, r = Keys(namespace), open_redis(redis_url)
    try:
        with caplog.at_level(logging.ERROR, logger="gatewayz.metrics.client"):
            for _ in range(3):  # each batch fails enough to wake (5 failures, half the calls)
                for _ in range(10):
                    assert metrics.record("down", 0.1, status_code=503)
                assert metrics.flush(timeout=5.0)
        (failures,) = [key for key in keys.window_keys("down") if key.endswith(":w:fail")]
        assert r.zcard(failures) == 30
        assert int(r.hget(keys.totals("down"), "n:failure") or 0) == 30  # not 40: once each
        assert not r.exists(keys.breaker_wakes)
        refused = [m.getMessage() for m in caplog.records if "breaker wakes" in m.getMessage()]
        assert len(refused) == 1  # said once, not per batch
        assert "'xadd'" in refused[0]
        assert metrics.stats()["dropped"] == 0
    finally:
        metrics.close(timeout=2.0)
        r.close()
