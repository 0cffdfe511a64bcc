"""``python -m aggregator inspect``: exact per-minute counts of the events a test wrote, read only,
and the CLI's discoverability and error cases (as real subprocesses)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from aggregator.__main__ import main
from aggregator.cli.inspection import minute_edges
from client import MetricsClient
from devtools.redis_server import RedisProcess
from gatewayz_protocol.keys import Keys
from tests.support.backends import AUTH_HINT, BOTH_BACKENDS, password_redis
from tests.support.clock import FakeClock
from tests.support.redis_state import sent_commands

pytestmark = BOTH_BACKENDS

MakeClient = Callable[..., MetricsClient]
OUTCOMES = ("success", "failure", "rate_limited", "caller_error")


def cli(*args: str, url: str = "", namespace: str = "") -> subprocess.CompletedProcess[str]:
    flags = [
        *(["--redis-url", url] if url else []),
        *(["--namespace", namespace] if namespace else []),
    ]
    return subprocess.run(
        [sys.executable, "-m", "aggregator", *args, *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def dump(r: redis.Redis, keys: Keys) -> dict[bytes, Any]:
    """Every key of the namespace: its serialized value (DUMP) and whether it expires."""
    return {
        key: (r.dump(key), r.ttl(key) == -1)
        for key in sorted(r.scan_iter(match=keys.pattern(), count=1000))
    }


def test_inspect_shows_exact_counts_per_minute_and_writes_nothing(
    make_client: MakeClient, r: redis.Redis, keys: Keys, redis_url: str, namespace: str
) -> None:
    seconds, micros = r.time()
    now = seconds + micros / 1e6
    clock = FakeClock(now)
    metrics = make_client(clock=clock)
    expected: Counter[tuple[int, str]] = Counter()
    plan = {0: (3, 1, 0, 2), 1: (5, 0, 1, 0), 3: (1, 2, 2, 1)}  # minutes ago -> per outcome
    for minutes_ago, per_outcome in plan.items():
        at = (math.floor(now / 60) - minutes_ago) * 60 + 7.5  # inside that UTC minute
        if at > now:
            # not in the future: well outside the window instead (right at its start, the
            # events left it while the command started, a few seconds later)
            at -= 600
        clock.now = at
        for outcome, count in zip(OUTCOMES, per_outcome, strict=True):
            for _ in range(count):
                metrics.record("acme", 0.3, outcome=outcome)
                if now - 300 < at:
                    expected[(math.floor(at / 60) * 60, outcome)] += 1
    clock.now = now
    metrics.record("acme", 0.3, outcome="cancelled")  # in the totals only, never the window
    metrics.record("acme", 0.3, outcome="cancelled")
    assert metrics.flush(timeout=5)
    before = dump(r, keys)

    shown = cli("inspect", "acme", "--json", url=redis_url, namespace=namespace)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    got = Counter(
        {
            (math.floor(row["start"] / 60) * 60, outcome): row[outcome]
            for row in doc["minutes"]
            for outcome in OUTCOMES
            if row[outcome]
        }
    )
    assert got == expected
    assert doc["window"]["total"] == sum(expected.values())
    assert doc["totals"]["cancelled"] == 2
    assert doc["registered"] and doc["breaker"]["state"] == "closed"
    assert doc["minutes"][0]["start"] == doc["now"]["unix"] - 300
    assert doc["keys"][keys.totals("acme")]["exists"]
    successes = [row for row in doc["minutes"] if row["success"]]
    assert all(0.25 <= row["p50_seconds"] <= 0.5 for row in successes)

    table = cli("inspect", url=redis_url, namespace=namespace)
    assert table.returncode == 0, table.stderr
    assert "acme" in table.stdout and "closed" in table.stdout
    text = cli("inspect", "acme", url=redis_url, namespace=namespace)
    assert text.returncode == 0 and "minute by minute" in text.stdout
    assert "rejected by the breaker 0, cancelled 2" in text.stdout

    unknown = cli("inspect", "nobody", url=redis_url, namespace=namespace)
    assert unknown.returncode == 1 and "no data for provider 'nobody'" in unknown.stderr
    assert dump(r, keys) == before  # nothing trimmed, registered or touched
    assert r.zscore(keys.providers, "nobody") is None


def test_inspect_and_status_say_when_the_namespace_is_empty(redis_url: str, namespace: str) -> None:
    for args in (("inspect",), ("inspect", "acme"), ("breaker", "status")):
        done = cli(*args, url=redis_url, namespace=namespace)
        assert done.returncode == 1, args
        assert "no data" in done.stderr and namespace in done.stderr
        assert done.stdout == ""


def test_every_command_is_listed_and_takes_the_connection_flags() -> None:
    top = cli("--help")
    assert top.returncode == 0
    assert "breaker" in top.stdout and "inspect" in top.stdout and "--port" in top.stdout
    for command in ("breaker", "inspect"):
        helped = cli(command, "--help")
        assert helped.returncode == 0
        assert "--redis-url" in helped.stdout and "--namespace" in helped.stdout
    bad = cli("inspect", "bad name!")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_inspect_reads_a_bounded_part_of_the_registry_and_says_how_many_there_are(
    redis_url: str,
    namespace: str,
    r: redis.Redis,
    keys: Keys,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The overview reads the --max-providers most recently seen and says how many names the
    registry holds; a named provider is looked up by name, beyond the cap too. (The whole
    registry was read, every name's windows with it: 100,000 names, a week of churning clients,
    made the command very slow.)"""
    seconds, _ = r.time()
    r.zadd(keys.providers, {f"p{i:02d}": seconds - 100 + i for i in range(10)})  # p09 newest
    r.zadd(keys.shards, {"p08": 2, "p00": 3})
    r.zadd(keys.window_keys("p08", 1)[0], {"call-1": seconds - 1})  # its shard 1 counts
    sent = sent_commands(monkeypatch)
    flags = ["--redis-url", redis_url, "--namespace", namespace, "--max-providers", "3"]
    assert main(["inspect", "--json", *flags]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["provider"] for p in doc["providers"]] == ["p07", "p08", "p09"]
    assert [p["total"] for p in doc["providers"]] == [0, 1, 0]
    assert (doc["registered"], doc["truncated"]) == (10, True)
    registries = (keys.providers, keys.shards)
    assert [c[:4] for c in sent if c[1] in registries] == [
        ("ZCOUNT", keys.providers, "-inf", "+inf"),
        ("ZRANGE", keys.providers, -3, -1),
        ("ZSCORE", keys.shards, "p07"),
        ("ZSCORE", keys.shards, "p08"),
        ("ZSCORE", keys.shards, "p09"),
    ]
    assert main(["inspect", *flags]) == 0
    assert capsys.readouterr().out.endswith(
        "\n\n3 of 10 registered providers shown, the most recently seen (--max-providers,"
        " GATEWAYZ_MAX_PROVIDERS); name one to see it: inspect PROVIDER\n"
    )
    sent.clear()
    assert main(["inspect", "p00", "--json", *flags]) == 0
    one = json.loads(capsys.readouterr().out)
    assert (one["provider"], one["last_seen"]["unix"]) == ("p00", seconds - 100)
    assert len([key for key in one["keys"] if ":w:fail" in key]) == 3  # its three shards
    assert [c[:4] for c in sent if c[1] in registries] == [
        ("ZCOUNT", keys.providers, "-inf", "+inf"),
        ("ZSCORE", keys.providers, "p00"),
        ("ZSCORE", keys.shards, "p00"),
    ]
    assert main(["inspect", "--json", *flags[:-1], "10"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert (len(every["providers"]), every["registered"], every["truncated"]) == (10, 10, False)


def test_minute_edges() -> None:
    edges = minute_edges(1_800_000_030.0, 120.0, 10.0)
    assert edges == [1_799_999_910.0, 1_799_999_940.0, 1_800_000_000.0, 1_800_000_040.0]


def test_values_written_into_redis_never_reach_the_terminal_as_escapes(
    redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    title, clear, clipboard = "\x1b]0;pwned\x07", "\x1b[2J", "\x1b]52;c;cm0gLXJmIH4=\x07"
    r.zadd(keys.providers, {"acme": 1.0, "bad\x1b[31mname": 2.0})
    r.hset(keys.breaker("acme"), mapping={"state": "open", "note": title, clear: "1"})
    r.hset(keys.transitions("acme"), f"closed>{clear}", 1)
    r.zadd(keys.permits("acme"), {clipboard: 9e15})
    for args in (("inspect", "acme"), ("inspect",), ("breaker", "status")):
        done = cli(*args, url=redis_url, namespace=namespace)
        assert done.returncode == 0, done.stderr
        assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout
    detail = cli("inspect", "acme", url=redis_url, namespace=namespace).stdout
    assert "note=\\x1b]0;pwned\\x07" in detail and "\\x1b]52;c;" in detail


def test_fields_no_writer_writes_are_shown_as_skipped_and_the_rest_as_read(
    make_client: MakeClient, redis_url: str, namespace: str, r: redis.Redis, keys: Keys
) -> None:
    # Before: each of these (and about 50 other spellings) made inspect exit 1 with a traceback
    # (int() of a count, a breaker field name decoded strictly, float() of a deadline).
    metrics = make_client()
    for status in (200, 200, 200, 503, 503):
        metrics.record("acme", 0.3, status_code=status)
    assert metrics.flush(timeout=5)
    totals = {
        "n:failure": "x",
        "lat_us": "9" * 40,
        "b:+Inf": "1.5",
        "tokens": "",
        "cost_nusd": "1.8e9",
    }
    breaker = {"state": "open", "since": "1800000000.5", "open_until": "\u00e9", "permits": "x"}
    r.hset(keys.totals("acme"), mapping=totals)
    r.hset(keys.breaker("acme"), mapping={**breaker, b"\xff": "1", "note": "kept"})
    r.hset(keys.transitions("acme"), mapping={"closed>open": "1", "open>closed": "-1"})
    shown = cli("inspect", "acme", "--json", url=redis_url, namespace=namespace)
    assert shown.returncode == 0 and shown.stderr == ""
    doc = json.loads(shown.stdout)
    assert doc["totals"]["requests"] == {
        "success": 3,
        "failure": 0,
        "rate_limited": 0,
        "caller_error": 0,
    }
    assert (doc["totals"]["latency_sum_seconds"], doc["totals"]["tokens"]) == (0.0, 0)
    assert doc["breaker"]["state"] == "open" and list(doc["breaker"]["deadlines"]) == ["since"]
    assert doc["breaker"]["fields"] == {"state": "open", "since": "1800000000.5", "note": "kept"}
    assert doc["transitions"] == {"closed>open": 1}
    assert doc["skipped"] == {
        keys.totals("acme"): totals,
        keys.breaker("acme"): {"open_until": "\u00e9", "permits": "x", "\ufffd": "1"},
        keys.transitions("acme"): {"open>closed": "-1"},
    }
    text = cli("inspect", "acme", url=redis_url, namespace=namespace)
    assert text.returncode == 0 and text.stderr == ""
    assert "success=3 failure=0" in text.stdout and "'open_until' = '\u00e9'" in text.stdout
    table = cli("inspect", url=redis_url, namespace=namespace)
    assert table.returncode == 0 and table.stderr == ""
    assert "skipped as the aggregator skips them, of: acme" in table.stdout


@pytest.fixture
def secured() -> Iterator[RedisProcess]:
    yield from password_redis()


def test_a_redis_refusing_the_credentials_is_said_so_with_what_to_do(
    secured: RedisProcess,
) -> None:
    shown = cli("inspect", url=secured.url, namespace="refused-credentials")  # no password
    assert shown.returncode == 1
    prefix = "aggregator inspect: error: redis: AuthenticationError: "
    assert shown.stderr.startswith(prefix), shown.stderr
    assert shown.stderr.endswith(f" ({AUTH_HINT})\n") and shown.stderr.count("\n") == 1
