"""A Redis that refuses a command the worker sends, found by taking each one away from a user's
ACL (an ACL written by hand, a command renamed away, a proxy):

- ``XADD`` (the breaker wakes): the refusal comes when the wake is queued, so Redis discards the
  whole transaction it rides in. The batch is sent again without its wakes: every event is
  delivered exactly once (on a cluster the slots the first attempt applied are not applied
  again), and the breaker waits for its next evaluation (client/_flush_pass.py
  ``FlushPass._deliver``).
- ``MULTI``: Redis runs each command as it comes, then refuses EXEC. The batch was applied,
  one command at a time: it is reported so, never sent again (that applied it twice, with the
  wakes' retry) and never counted as dropped (client/_transaction.py ``_ran_one_by_one``).
- ``HINCRBY`` (a batch refused whole): retried with backoff, said once a minute, and ``close()``
  ends the thread (it looped before: client/_flusher.py).
- ``HSETNX`` (a declaration): on a cluster a slot of its own, refused while the providers' slots
  applied the events: a part refused, not the whole batch (client/_slots.py), and the refused
  declaration sent again once a second, not in a loop (client/_declarations.py).
- ``PEXPIRE`` (PERMIT's last write): no permit taken (gatewayz_protocol/scripts.py).

The search that found them runs on every CI: tests/test_command_refusals.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from client import ClientSettings, MetricsClient
from client import _transaction as transaction
from gatewayz_protocol.keys import Keys
from tests.client.test_allow import set_state
from tests.support.acl import user_without
from tests.support.backends import BOTH_BACKENDS, open_redis

pytestmark = BOTH_BACKENDS


@pytest.fixture(params=["xadd", "multi"])
def refused(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def without(redis_url: str, refused: str) -> Iterator[str]:
    """``redis_url`` as a user who may run every command but ``refused``."""
    with user_without(redis_url, refused) as url:
        yield url


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


@pytest.mark.parametrize("refused", ["hincrby"])
def test_a_batch_refused_for_good_is_retried_with_backoff_said_once_and_closed_at_once(
    redis_url: str,
    namespace: str,
    without: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every batch carries the counts of the one dropped before it: refused again each time, a
    # batch every flush interval and an ERROR line each (20 a second), and close() left the
    # thread sending them in a busy loop (3,500 a second) after it returned.
    metrics = MetricsClient(settings=ClientSettings(redis_url=without, namespace=namespace))
    with caplog.at_level(logging.ERROR, logger="gatewayz.metrics.client"):
        for _ in range(10):
            assert metrics.record("refused", 0.1, status_code=200)
        assert not metrics.flush(timeout=1.0)
        passes = metrics._flusher.passes
        assert not metrics.flush(timeout=1.0)  # one more try, then a pause (0.1 s, doubling)
        assert metrics._flusher.passes - passes <= 5  # (a pass every 50 ms: 20)
        assert metrics.stats()["dropped"] == 10
        metrics.close(timeout=1.0)
        thread = metrics._flusher._thread
        assert thread is not None and not thread.is_alive()
    said = [r.getMessage() for r in caplog.records if "metrics batch refused" in r.getMessage()]
    assert len(said) == 1 and "'hincrby'" in said[0], said


@pytest.mark.parametrize("refused", ["hsetnx"])
def test_a_part_refused_for_good_leaves_the_rest_of_the_batch_counted_as_written(
    redis_url: str, namespace: str, without: str, caplog: pytest.LogCaptureFixture
) -> None:
    # HSETNX (a metric's declaration) is in a slot of its own on a cluster: the providers'
    # slots applied the events while the batch was counted dropped whole (in Redis 10,
    # dropped 10). One Redis refuses the whole transaction: all dropped, none written.
    # (One batch, sent by flush(): the interval is longer than the test.)
    settings = ClientSettings(redis_url=without, namespace=namespace, flush_interval_seconds=60)
    metrics = MetricsClient(settings=settings)
    keys, r = Keys(namespace), open_redis(redis_url)
    try:
        metrics.counter("jobs", "Jobs").inc()
        for _ in range(10):
            assert metrics.record("steady", 0.1, status_code=200)
        assert not metrics.flush(timeout=1.0)  # a write was refused
        stats = metrics.stats()
        written = int(r.hget(keys.totals("steady"), "n:success") or 0)
        in_window = sum(int(r.zcard(key)) for key in keys.window_keys("steady"))
        assert (stats["settled"], in_window) == (10, written)
        cluster = isinstance(r, redis.RedisCluster)
        assert (written, stats["dropped"]) == ((10, 0) if cluster else (0, 10))
        assert stats["metric_updates_dropped"] == {}  # held until Redis takes the declaration
        said = [r.getMessage() for r in caplog.records]
        assert not [m for m in said if "declared differently" in m], said  # refused, not that
        metrics.close(timeout=0.2)
        thread = metrics._flusher._thread  # (it sent the refused declaration again and again,
        assert thread is not None and not thread.is_alive()  # 3,000 times a second, after close)
    finally:
        metrics.close(timeout=0.2)
        r.close()


@pytest.mark.parametrize("refused", ["pexpire"])
def test_a_permit_its_user_may_not_finish_is_not_taken(
    redis_url: str, namespace: str, without: str
) -> None:
    # PERMIT added the permit, then Redis refused its PEXPIRE: each allow() took one of the
    # half-open period's permits from every worker, and none made a trial call
    keys, r = Keys(namespace), open_redis(redis_url)
    set_state(r, keys, "trial", "half_open", permits=5)
    metrics = MetricsClient(settings=ClientSettings(redis_url=without, namespace=namespace))
    try:
        assert [metrics.allow("trial") for _ in range(3)] == [False] * 3  # no trial call
        assert r.zcard(keys.permits("trial")) == 0  # and no permit gone from the others
        other = MetricsClient(redis_url=redis_url, namespace=namespace)
        assert other.allow("trial")  # a worker whose user may: its trial call
        other.close(timeout=0.5)
    finally:
        metrics.close(timeout=0.5)
        r.close()
