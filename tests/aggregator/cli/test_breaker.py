"""``python -m aggregator breaker``: refusals, --create, and resets that change nothing count
nothing (real subprocesses for the exit codes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import redis

from client import MetricsClient
from devtools.redis_server import RedisProcess
from gatewayz_protocol.keys import Keys
from tests.support.backends import AUTH_HINT, BOTH_BACKENDS, password_redis

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


def test_status_shows_at_most_the_cap_of_providers_and_says_how_many_there_are(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    r.zadd(keys.providers, {f"p{i:02d}": 1_800_000_000 + i for i in range(10)})
    command = [sys.executable, "-m", "aggregator", "breaker", "status"]
    env = {**os.environ, "GATEWAYZ_MAX_PROVIDERS": "3"}
    shown = subprocess.run(
        [*command, *connection(redis_url, namespace)], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert [json.loads(line)["provider"] for line in shown.stdout.splitlines()] == [
        "p07",
        "p08",
        "p09",
    ]
    assert shown.stderr == (
        "aggregator breaker: 3 of 10 registered providers shown, the most recently seen"
        " (GATEWAYZ_MAX_PROVIDERS); name one to see it: breaker status PROVIDER\n"
    )
    one = subprocess.run(
        [*command, "p00", *connection(redis_url, namespace)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert (one.returncode, one.stderr, json.loads(one.stdout)["provider"]) == (0, "", "p00")


def test_status_and_forcing_never_touch_a_window_whatever_the_commands_window_and_clock(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    """An aggregator serving a 600 s window: calls 400 s old count. ``breaker status`` with the
    default 300 s window (and ``open`` on a host clock 250 s ahead) used to trim them away;
    commands read, they never maintain. And they stamp states with Redis's clock."""
    now = float(r.time()[0])
    failures = keys.window_keys("acme")[len(keys.window_keys("acme")) - 3]
    old = {f"old-{i}": now - 400 for i in range(100)}
    recent = {f"new-{i}": now - 100 for i in range(5)}
    r.zadd(failures, {**old, **recent})
    r.zadd(keys.providers, {"acme": now})
    stale_name = "gone"  # past the retention period: only the aggregator prunes it
    r.zadd(keys.providers, {stale_name: now - 30 * 24 * 3600})
    status = breaker(redis_url, namespace, "status")
    assert status.returncode == 0, status.stderr
    assert r.zcard(failures) == 105
    ahead = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, time; real = time.time; time.time = lambda: real() + 250; "
            "from aggregator.__main__ import main; sys.exit(main(sys.argv[1:]))",
            "breaker",
            "open",
            "acme",
            *connection(redis_url, namespace),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ahead.returncode == 0, ahead.stderr
    assert r.zcard(failures) == 105
    assert r.zscore(keys.providers, stale_name) is not None
    # the state's time is Redis's, which the aggregator and the workers judge it by, not the
    # host's 250 s ahead (an open breaker's deadline would have been 250 s late)
    seconds, micros = r.time()
    since = float(r.hget(keys.breaker("acme"), "since") or 0)
    assert seconds + micros / 1e6 - 5 < since <= seconds + micros / 1e6


@pytest.fixture
def secured() -> Iterator[RedisProcess]:
    yield from password_redis()


def test_a_redis_refusing_the_credentials_is_said_so_with_what_to_do(
    secured: RedisProcess,
) -> None:
    wrong = f"redis://:wrong@127.0.0.1:{secured.port}/0"
    status = breaker(wrong, "refused-credentials", "status")
    assert (status.returncode, status.stderr) == (
        1,
        "aggregator: error: redis: AuthenticationError: invalid username-password pair or "
        f"user is disabled ({AUTH_HINT})\n",
    )
