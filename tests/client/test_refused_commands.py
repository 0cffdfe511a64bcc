"""A Redis that refuses a command the worker sends, found by taking each one away from a user's
ACL (an ACL written by hand, a command renamed away, a proxy):

- ``XADD`` (the breaker wakes): the refusal comes when the wake is queued, so Redis discards the
  whole transaction it rides in. The batch is sent again without its wakes: every event is
  delivered exactly once (on a cluster the slots the first attempt applied are not applied
  again), and the breaker waits for its next evaluation (client/_flush_pass.py
  ``FlushPass._deliver``).
- ``MULTI``: Redis runs each command as it comes, then refuses EXEC. The batch was applied,
  one command at a time: it is reported so, never sent again (that applied it twice, with the
  wakes' retry) and never counted as dropped (client/_transaction.py ``_ran_one_by_one``)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest
import redis

from client import ClientSettings, MetricsClient
from client import _transaction as transaction
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS, open_redis

pytestmark = BOTH_BACKENDS


@pytest.fixture(params=["xadd", "multi"])
def refused(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def without(redis_url: str, refused: str) -> Iterator[str]:
    """``redis_url`` as a user who may run every command but ``refused`` (on every node of a
    cluster)."""
    user, password = f"no-{refused}-{secrets.token_hex(4)}", secrets.token_hex(8)
    admin = open_redis(redis_url)
    nodes = (
        [node.redis_connection for node in admin.get_nodes()]
        if isinstance(admin, redis.RedisCluster)
        else [admin]
    )
    for node in nodes:
        node.acl_setuser(  # type: ignore[union-attr]
            user,
            enabled=True,
            passwords=[f"+{password}"],
            keys=["*"],
            commands=["+@all", f"-{refused}"],
        )
    scheme, _, rest = redis_url.partition("://")
    yield f"{scheme}://{user}:{password}@{rest}"
    for node in nodes:
        node.acl_deluser(user)  # type: ignore[union-attr]
    admin.close()


def test_every_event_is_delivered_once_whichever_of_these_is_refused(
    redis_url: str,
    namespace: str,
    refused: str,
    without: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transaction, "_said_at", [float("-inf")])  # said once a minute
    metrics = MetricsClient(settings=ClientSettings(redis_url=without, namespace=namespace))
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
        said = [r.getMessage() for r in caplog.records]
        if refused == "xadd":
            assert not r.exists(keys.breaker_wakes)
            (wakes,) = [m for m in said if "breaker wakes" in m]  # once, not per batch
            assert "'xadd'" in wakes
        else:
            assert r.exists(keys.breaker_wakes)  # one by one, the wakes too
            assert [m for m in said if m.startswith("Redis refused MULTI")]
        assert metrics.stats()["dropped"] == 0
    finally:
        metrics.close(timeout=2.0)
        r.close()
