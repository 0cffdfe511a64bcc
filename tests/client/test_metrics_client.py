"""MetricsClient against a real Redis: what lands in which key, rejections, track(), fork."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest
import redis

from client import MetricsClient
from protocol.keys import Keys
from tests.conftest import FakeClock

MakeClient = Callable[..., MetricsClient]


def _hash(r: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(key).items()}


def test_each_event_is_one_member_in_its_partition_with_exact_counters(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    metrics = make_client(clock=clock)
    metrics.record("openrouter", 0.05, status_code=200, tokens=100, cost_usd=0.25)
    metrics.record("openrouter", 0.3, status_code=201, tokens=50, cost_usd=0.5)
    clock.advance(1.0)
    metrics.record("openrouter", 2.2, outcome="success")
    metrics.record("openrouter", 10.0, outcome="failure")
    metrics.record("openrouter", 0.2, status_code=429)
    metrics.record("openrouter", 0.01, status_code=404)
    assert metrics.flush(timeout=5)

    w = keys.window_keys("openrouter")
    t0 = 1_800_000_000.0
    # window partitions: ok:0 is <= 0.05, ok:3 is (0.25, 0.5], ok:8 is (2.0, 2.5]
    assert r.zrange(w[0], 0, -1, withscores=True)[0][1] == t0
    assert r.zcard(w[0]) == 1
    assert r.zcard(w[3]) == 1
    assert r.zrange(w[8], 0, -1, withscores=True)[0][1] == t0 + 1
    assert [r.zcard(k) for k in w[-3:]] == [1, 1, 1]  # fail, rate limited, caller error
    assert sum(r.zcard(k) for k in w) == 6
    members = [m for k in w for m in r.zrange(k, 0, -1)]
    assert len(set(members)) == 6
    assert all(len(m) == 6 for m in members)

    totals = _hash(r, keys.totals("openrouter"))
    assert totals == {
        "n:success": 3,
        "n:failure": 1,
        "n:rate_limited": 1,
        "n:caller_error": 1,
        # 0.05, 0.01 -> b:0.1; 0.3, 0.2 -> b:0.5; 2.2 -> b:5; 10.0 -> b:10
        "b:0.1": 2,
        "b:0.5": 2,
        "b:5": 1,
        "b:10": 1,
        "lat_us": 50_000 + 300_000 + 2_200_000 + 10_000_000 + 200_000 + 10_000,
        "tokens": 150,
        "cost_nusd": 750_000_000,
    }
    for key in [*(k for k in w if r.exists(k)), keys.totals("openrouter"), keys.providers]:
        assert r.ttl(key) > 0, key
    assert max(r.ttl(k) for k in w if r.exists(k)) <= 300 + 60
    assert r.zscore(keys.providers, "openrouter") == t0 + 1


def test_members_are_unique_across_writers_of_the_namespace(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    first, second = make_client(clock=clock), make_client(clock=clock)
    for _ in range(3):  # interleaved batches, so the two writers' id blocks alternate
        for i in range(2_000):
            first.record("openrouter", 0.2, status_code=200)
            second.record("openrouter", 0.2 + i % 2, status_code=200)
        assert first.flush(timeout=5) and second.flush(timeout=5)
    stored = sum(int(r.zcard(k)) for k in keys.window_keys("openrouter"))
    assert stored == 12_000  # a shared member would have merged two events into one
    members = [m for k in keys.window_keys("openrouter") for m in r.zrange(k, 0, -1)]
    assert {len(m) for m in members} == {6}


def test_events_wait_in_the_buffer_while_no_ids_can_be_reserved(
    make_client: MakeClient, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    r.hset(keys.event_ids, "not", "a counter")  # INCRBY now fails with WRONGTYPE
    metrics = make_client(clock=clock, backoff_initial_seconds=0.01, backoff_max_seconds=0.05)
    for _ in range(5):
        metrics.record("openrouter", 0.2, status_code=200)
    assert metrics.flush(timeout=0.5) is False
    assert metrics.stats()["buffered"] == 5
    assert metrics.stats()["dropped"] == 0
    assert r.exists(keys.totals("openrouter")) == 0

    r.delete(keys.event_ids)
    assert metrics.flush(timeout=5)
    assert sum(int(r.zcard(k)) for k in keys.window_keys("openrouter")) == 5
    assert _hash(r, keys.totals("openrouter"))["n:success"] == 5
    assert metrics.stats()["write_errors"] == 0


def test_cost_is_exact_over_many_events(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    for _ in range(200_000):
        metrics.record("openrouter", 0.1, cost_usd=0.1)
    assert metrics.flush(timeout=30)
    # Summing 0.1 as floats 200,000 times drifts; integer nano-USD does not.
    assert sum(0.1 for _ in range(200_000)) != 20_000.0
    assert _hash(r, keys.totals("openrouter"))["cost_nusd"] == 20_000 * 1_000_000_000


@pytest.mark.parametrize(
    ("args", "kwargs", "cause"),
    [
        (("", 0.1), {}, "invalid_provider"),
        (("x" * 65, 0.1), {}, "invalid_provider"),
        (("open}router", 0.1), {}, "invalid_provider"),
        (("a:b", 0.1), {}, "invalid_provider"),
        ((None, 0.1), {}, "invalid_provider"),
        ((["list"], 0.1), {}, "invalid_argument"),
        (("openrouter", float("nan")), {}, "invalid_latency"),
        (("openrouter", float("inf")), {}, "invalid_latency"),
        (("openrouter", -0.1), {}, "invalid_latency"),
        (("openrouter", "fast"), {}, "invalid_argument"),
        (("openrouter", 0.1), {"outcome": "meh"}, "invalid_outcome"),
        (("openrouter", 0.1), {"status_code": 200, "outcome": "success"}, "status_and_outcome"),
        (("openrouter", 0.1), {"status_code": 700}, "invalid_status_code"),
        (("openrouter", 0.1), {"tokens": -1}, "invalid_tokens"),
        (("openrouter", 0.1), {"cost_usd": float("nan")}, "invalid_cost"),
    ],
)
def test_invalid_calls_are_rejected_and_counted_never_raised(
    make_client: MakeClient,
    r: redis.Redis,
    keys: Keys,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    cause: str,
) -> None:
    metrics = make_client()
    metrics.record(*args, **kwargs)  # type: ignore[arg-type]
    metrics.record(*args, **kwargs)  # type: ignore[arg-type]
    assert metrics.flush(timeout=5)
    assert metrics.stats()["rejected"] == {cause: 2}
    assert metrics.stats()["accepted"] == 0
    assert _hash(r, keys.client_stats) == {f"rejected:{cause}": 2}
    assert not r.exists(keys.providers)


def test_each_rejection_cause_is_logged_once(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = make_client()
    with caplog.at_level(logging.WARNING, logger="gatewayz.metrics.client"):
        for _ in range(5):
            metrics.record("bad name", 0.1)
            metrics.record("openrouter", -1.0)
    messages = [rec.getMessage() for rec in caplog.records]
    assert len(messages) == 2
    assert "invalid_provider" in messages[0]
    assert "invalid_latency" in messages[1]
    assert metrics.stats()["rejected"] == {"invalid_provider": 5, "invalid_latency": 5}


class _HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def test_track_times_the_block_and_classifies_exceptions(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    with metrics.track("anthropic") as call:
        call.tokens = 900
        call.cost_usd = 0.002
    for exc in (_HTTPError(503), _HTTPError(429), _HTTPError(400), TimeoutError("slow")):
        with pytest.raises(type(exc)), metrics.track("anthropic"):
            raise exc
    with metrics.track("anthropic") as call:
        call.status_code = 502  # an error response without an exception
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("anthropic"))
    assert totals["n:success"] == 1
    assert totals["n:failure"] == 3  # 503, timeout, 502
    assert totals["n:rate_limited"] == 1
    assert totals["n:caller_error"] == 1
    assert totals["tokens"] == 900
    assert totals["cost_nusd"] == 2_000_000
    assert totals["b:0.1"] == 6  # every block took far less than 100 ms


def test_forked_child_does_not_resend_parent_events(
    make_client: MakeClient, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client(flush_interval_seconds=30.0)  # keep the parent's events buffered
    for _ in range(10):
        metrics.record("openrouter", 0.1)
    assert metrics.stats()["buffered"] == 10
    pid = os.fork()
    if pid == 0:  # child: its own events only, then leave without running atexit hooks
        code = 1
        try:
            for _ in range(5):
                metrics.record("openrouter", 0.2)
            code = 0 if metrics.flush(timeout=5) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics.flush(timeout=5)
    totals = _hash(r, keys.totals("openrouter"))
    assert totals["n:success"] == 15
    assert totals["lat_us"] == 10 * 100_000 + 5 * 200_000
