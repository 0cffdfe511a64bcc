"""What the aggregator tells an operator once (aggregator/engine/notices.py): skipped values
counted by kind and each key named once, an evicting policy once per policy, a newer snapshot
version once per version. Pure: log records only."""

from __future__ import annotations

import logging

import pytest

from aggregator.core.readings import RedisMemory, Skip
from aggregator.core.snapshot import SNAPSHOT_VERSION
from aggregator.engine import notices
from aggregator.engine.notices import Notices


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_skipped_values_are_counted_every_time_and_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told = Notices()
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        told.skipped([Skip("breaker", "ns:{p}:breaker", ("epoch",)), Skip("breaker", "k2", ())])
        told.skipped([Skip("breaker", "ns:{p}:breaker", ("epoch", "since"))])
        told.skipped([Skip("totals", "k3", tuple(f"f{i}" for i in range(12)))])
    assert told.counts == {"breaker": 1 + 1 + 2, "totals": 12}
    assert _messages(caplog) == [
        "skipped fields 'epoch' of 'ns:{p}:breaker' (breaker): no writer of this project "
        "writes that; counted in gatewayz_redis_values_skipped_total, named here once",
        "skipped the key of 'k2' (breaker): no writer of this project writes that; counted in "
        "gatewayz_redis_values_skipped_total, named here once",
        "skipped fields " + ", ".join(f"'f{i}'" for i in range(10)) + " and 2 more of 'k3' "
        "(totals): no writer of this project writes that; counted in "
        "gatewayz_redis_values_skipped_total, named here once",
    ]


def test_naming_keys_is_bounded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notices, "MAX_NAMED", 2)
    told = Notices()
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        told.skipped([Skip("totals", f"k{i}", ("x",)) for i in range(6)])
    assert told.counts == {"totals": 6}
    assert len(caplog.records) == 3 + 1  # three named (the bound, then one past it), a notice
    assert _messages(caplog)[-1] == "more than 2 keys with skipped values: counted only"


def test_an_evicting_policy_is_said_once_per_policy(caplog: pytest.LogCaptureFixture) -> None:
    told = Notices()
    lru = RedisMemory(10, 100, "allkeys-lru", 0)
    with caplog.at_level(logging.ERROR, logger="gatewayz.aggregator"):
        for memory in (lru, lru, RedisMemory(10, 100, "noeviction", 0), lru, None):
            told.memory_policy(memory)
    assert len(caplog.records) == 2  # lru, then lru again after it was fixed meanwhile
    assert "maxmemory-policy is allkeys-lru with maxmemory 100 bytes" in _messages(caplog)[0]


def test_a_newer_snapshot_version_is_said_once_per_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told = Notices()
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        for version in (SNAPSHOT_VERSION, 1, SNAPSHOT_VERSION + 1, SNAPSHOT_VERSION + 1, 99):
            told.snapshot_version(version)
    assert _messages(caplog) == [
        f"the leader publishes snapshot version {v}, this replica knows {SNAPSHOT_VERSION}: "
        "what it does not know is left out until it is upgraded"
        for v in (SNAPSHOT_VERSION + 1, 99)
    ]


def test_no_provider_is_said_at_once_then_every_ten_minutes_while_it_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told = Notices("namespace 'x' on redis://h:6379/0")
    with caplog.at_level(logging.WARNING, logger="gatewayz.aggregator"):
        for count, now in ((0, 0.0), (0, 599.0), (0, 600.0), (3, 700.0), (0, 701.0)):
            told.providers_seen(count, now)
    said = "no provider registered in namespace 'x' on redis://h:6379/0"
    # at 0 (the first), at 600 (ten minutes on), at 701 (gone again after providers came)
    assert [m.startswith(said) for m in _messages(caplog)] == [True, True, True]


def test_a_snapshot_over_the_followers_bound_is_said_once_while_it_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    told = Notices()
    with caplog.at_level(logging.ERROR, logger="gatewayz.aggregator"):
        for text in ("x" * 10, "x" * 11, "x" * 12, "x" * 5, "x" * 11):
            assert told.published(text, 10) == text
    over = "the snapshot published is %d bytes of JSON, over the 10 bytes a follower with these"
    assert [m[: len(over) - 1] for m in _messages(caplog)] == [
        over[:-1] % 11,
        over[:-1] % 11,  # again: it came back after one under the bound
    ]
