"""``python -m aggregator breaker``: refusals, --create, and resets that change nothing count
nothing (real subprocesses for the exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import redis

from client import MetricsClient
from gatewayz_protocol.keys import Keys
from tests.support.backends import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]


def connection(url: str, namespace: str) -> list[str]:
    return ["--redis-url", url, "--namespace", namespace]


def breaker(url: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "breaker", *args, *connection(url, namespace)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(r: redis.Redis, keys: Keys) -> dict[bytes, object]:
    return {
        key: (r.type(key), r.dump(key)) for key in r.scan_iter(match=keys.pattern(), count=1000)
    }


def test_forcing_an_unregistered_provider_needs_create(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    for action in ("open", "close", "reset"):
        refused = breaker(redis_url, namespace, action, "typo")
        assert refused.returncode == 1
        assert "not registered" in refused.stderr and "--create" in refused.stderr
    assert snapshot(r, keys) == {}
    created = breaker(redis_url, namespace, "open", "typo", "--create")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["state"] == "open"
    assert r.zscore(keys.providers, "typo") is not None


def test_a_reset_that_changes_nothing_writes_nothing(
    make_client: MakeClient, redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    metrics.record("acme", 0.2)
    assert metrics.flush(timeout=5)
    before = snapshot(r, keys)
    done = breaker(redis_url, namespace, "reset", "acme")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["changed"] is False
    assert snapshot(r, keys) == before


def test_reset_of_a_forced_closed_breaker_counts_no_transition(
    make_client: MakeClient, redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    metrics = make_client()
    metrics.record("acme", 0.2)
    assert metrics.flush(timeout=5)
    assert breaker(redis_url, namespace, "close", "acme").returncode == 0
    assert r.hget(keys.breaker("acme"), "forced") == b"1"
    done = breaker(redis_url, namespace, "reset", "acme")
    assert done.returncode == 0, done.stderr
    assert r.hget(keys.breaker("acme"), "forced") == b"0"
    assert r.hgetall(keys.transitions("acme")) == {}  # closed -> closed is no transition
    assert breaker(redis_url, namespace, "open", "acme").returncode == 0
    assert breaker(redis_url, namespace, "reset", "acme").returncode == 0
    assert r.hgetall(keys.transitions("acme")) == {b"closed>open": b"1", b"open>closed": b"1"}


def test_status_and_usage_errors(redis_url: str, namespace: str) -> None:
    empty = breaker(redis_url, namespace, "status")
    assert empty.returncode == 1 and "no data" in empty.stderr
    unknown = breaker(redis_url, namespace, "status", "nobody")
    assert unknown.returncode == 1 and "no data" in unknown.stderr
    missing = breaker(redis_url, namespace, "open")
    assert missing.returncode == 2 and "needs a PROVIDER" in missing.stderr
