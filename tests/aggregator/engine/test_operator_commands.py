"""The breaker commands against a real Redis (and a Cluster): the exact keys each one leaves, what
they refuse, that status only reads, and the conflict answer when the state keeps changing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from aggregator.core.operator_actions import CommandResult
from aggregator.engine.operator_commands import ATTEMPTS, BreakerCommands
from aggregator.settings import AggregatorSettings
from gatewayz_protocol.keys import Keys
from gatewayz_transport.connection import connect
from tests.support.backends import BOTH_BACKENDS
from tests.support.clock import FakeClock
from tests.support.redis_state import breaker_hash, sent_commands, state_of

pytestmark = BOTH_BACKENDS
NOW = 1_800_000_000.0


@pytest.fixture
def commands(redis_url: str, namespace: str, clock: FakeClock) -> Iterator[BreakerCommands]:
    settings = AggregatorSettings(redis_url=redis_url, namespace=namespace)
    connection = connect(redis_url, socket_timeout=2.0)
    yield BreakerCommands(connection, settings, clock, f"namespace {namespace!r}")
    connection.close()


def test_each_change_leaves_exactly_these_keys(
    commands: BreakerCommands, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    assert commands.status().kind == "no_data"
    refused = commands.force("open", "acme", create=False)
    assert refused == CommandResult(
        "not_registered",
        message=f"provider 'acme' is not registered in namespace {keys.namespace!r} "
        "(no traffic seen)",
    )
    assert state_of(r, keys) == {}  # a refusal writes nothing

    opened = commands.force("open", "acme", create=True)
    assert opened.kind == "done"
    registry = ("zset", [("acme", NOW)], True)
    assert state_of(r, keys) == {
        "{acme}:breaker": ("hash", breaker_hash("open", 1, True, NOW), False),  # forced: no TTL
        "{acme}:transitions": ("hash", {"closed>open": "1"}, False),
        "{shared}:providers": registry,
    }
    clock.advance(10)
    assert commands.force("close", "acme", create=False).kind == "done"
    closed = breaker_hash("closed", 2, True, NOW + 10)
    transitions = {"closed>open": "1", "open>closed": "1"}
    assert state_of(r, keys) == {
        "{acme}:breaker": ("hash", closed, False),
        "{acme}:transitions": ("hash", transitions, False),
        "{shared}:providers": ("zset", [("acme", NOW + 10)], True),
    }
    clock.advance(10)
    reset = commands.force("reset", "acme", create=False)
    assert reset.rows[0]["forced"] is False and reset.rows[0]["epoch"] == 3
    after_reset = {
        "{acme}:breaker": ("hash", breaker_hash("closed", 3, False, NOW + 20), True),
        "{acme}:transitions": ("hash", transitions, False),  # forced closed -> closed: none
        "{shared}:providers": ("zset", [("acme", NOW + 20)], True),
    }
    assert state_of(r, keys) == after_reset
    clock.advance(10)
    again = commands.force("reset", "acme", create=False)
    assert again.kind == "unchanged" and again.rows[0]["changed"] is False
    assert state_of(r, keys) == after_reset  # nothing written, the registry not touched


def test_status_reads_and_never_trims(
    commands: BreakerCommands, r: redis.Redis, keys: Keys, clock: FakeClock
) -> None:
    failures = keys.window_keys("acme")[len(keys.window_keys("acme")) - 3]
    r.zadd(failures, {f"old-{i}": NOW - 400 for i in range(10)})  # outside a 300 s window
    r.zadd(keys.providers, {"acme": NOW - 30 * 24 * 3600})  # past the retention
    before = state_of(r, keys)
    (row,) = commands.status().rows
    assert row == {
        "provider": "acme",
        "state": "closed",
        "since": 0.0,
        "epoch": 0,
        "open_until": 0.0,
        "consecutive_opens": 0,
        "forced": False,
        "transitions": {},
    }
    assert commands.status("acme").rows == (row,)
    unknown = commands.status("nobody")
    assert unknown.kind == "no_data" and "no data for provider 'nobody'" in unknown.message
    assert state_of(r, keys) == before


def test_a_state_that_keeps_changing_is_a_conflict_and_wins(
    commands: BreakerCommands, r: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer moves the epoch between each read and write: every compare-and-set
    loses, the command says so and leaves that writer's state."""
    commands.force("open", "acme", create=True)
    reader = commands._reader
    read = reader.read

    def read_then_move(*args: Any, **kwargs: Any) -> Any:
        reading = read(*args, **kwargs)
        r.hincrby(keys.breaker("acme"), "epoch", 1)  # a transition elsewhere meanwhile
        return reading

    monkeypatch.setattr(reader, "read", read_then_move)
    result = commands.force("close", "acme", create=False)
    assert result == CommandResult("conflict", message="acme: state kept changing, try again")
    assert r.hget(keys.breaker("acme"), "state") == b"open"
    assert r.hget(keys.breaker("acme"), "epoch") == str(1 + ATTEMPTS).encode()


def test_every_command_reads_a_bounded_part_of_the_registry(
    redis_url: str,
    namespace: str,
    r: redis.Redis,
    keys: Keys,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """status reads at most ``max_providers`` breakers, the most recently seen, and says how
    many names there are; a named provider is looked up by name, beyond the cap too. (The whole
    registry was read per command: 100,000 names took 16 s over HTTP, 19 s on the CLI.)"""
    r.zadd(keys.providers, {f"p{i:02d}": NOW - 100 + i for i in range(10)})  # p09 the newest
    sent = sent_commands(monkeypatch)
    settings = AggregatorSettings(redis_url=redis_url, namespace=namespace, max_providers=3)
    connection = connect(redis_url, socket_timeout=2.0)
    commands = BreakerCommands(connection, settings, clock, f"namespace {namespace!r}")
    listed = commands.status()
    assert [row["provider"] for row in listed.rows] == ["p07", "p08", "p09"]
    assert (listed.kind, listed.registered, listed.truncated) == ("done", 10, True)
    assert [row["provider"] for row in commands.status("p00").rows] == ["p00"]
    assert commands.force("open", "p00", create=False).kind == "done"
    registry = [command[:4] for command in sent if command[1] == keys.providers]
    assert registry == [
        ("ZCOUNT", keys.providers, "-inf", "+inf"),
        ("ZRANGE", keys.providers, -3, -1),
        ("ZCOUNT", keys.providers, "-inf", "+inf"),
        ("ZSCORE", keys.providers, "p00"),
        ("ZCOUNT", keys.providers, "-inf", "+inf"),
        ("ZSCORE", keys.providers, "p00"),
    ]  # then the forced open registers it: a script, on its breaker's key
    whole = AggregatorSettings(redis_url=redis_url, namespace=namespace, max_providers=11)
    every = BreakerCommands(connection, whole, clock, "here").status()
    assert (len(every.rows), every.registered, every.truncated) == (10, 10, False)
    connection.close()
