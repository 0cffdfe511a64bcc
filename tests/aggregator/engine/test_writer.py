"""The aggregator's Redis writer on a real Redis: compare-and-set transitions, fenced cycle
numbers and snapshots, the registry, and scripts Redis forgot."""

from __future__ import annotations

import zlib

import pytest
import redis

from aggregator.engine.writer import FENCED, Committed, PlannedWrite, StateWriter
from gatewayz_protocol.breaker_state import BreakerState
from gatewayz_protocol.keys import Keys
from gatewayz_protocol.leader_scripts import TOKEN_JUMP
from gatewayz_transport.connection import connect
from tests.support.acl import user_without
from tests.support.backends import BOTH_BACKENDS
from tests.support.processes import wait_for

pytestmark = BOTH_BACKENDS


def test_a_stale_epoch_or_a_deposed_leader_cannot_overwrite_a_newer_state(
    r: redis.Redis, keys: Keys
) -> None:
    writer = StateWriter(r, keys, retention_seconds=3600)
    opened = BreakerState("open", 10.0, 1, 40.0, 1)
    assert writer.begin(3).transitions(
        [PlannedWrite("p", 0, opened, "closed>open")]
    ).send().results == [1]
    stale = BreakerState("closed", 11.0, 1, 0.0, 0)
    assert writer.begin(3).transitions(
        [PlannedWrite("p", 0, stale, "open>closed")]
    ).send().results == [0]
    # right epoch, but a fencing token older than the one that wrote the state: refused
    half = BreakerState("half_open", 12.0, 2, 40.0, 1)
    assert writer.begin(2).transitions(
        [PlannedWrite("p", 1, half, "open>half_open")]
    ).send().results == [-1]
    assert r.hget(keys.breaker("p"), "state") == b"open"
    assert r.hget(keys.breaker("p"), "epoch") == b"1"
    assert r.hgetall(keys.transitions("p")) == {b"closed>open": b"1"}


def _calls(connection: redis.Redis, command: str) -> int:
    stats = connection.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


def test_a_holder_whose_token_a_fence_refused_gets_a_new_token_above_the_fences(
    r: redis.Redis, keys: Keys
) -> None:
    # The {leader} slot lost its data (its token counter restarted) while a breaker kept the
    # fence of an earlier leader: the holder's transitions are refused. Asked with the refused
    # token, the lease is taken again under a token past the fence.
    writer = StateWriter(r, keys, retention_seconds=3600)
    earlier, _ = writer.hold_lease("a", ttl_seconds=60)
    writer.begin(earlier + 5).raise_fences(["openrouter"]).send()  # a later leader's fence
    r.delete(keys.leader_lease, keys.leader_token)  # lost with the slot's data
    token, _ = writer.hold_lease("a", ttl_seconds=60)
    assert token == 1 and int(r.hget(keys.breaker("openrouter"), "fence")) == earlier + 5
    assert writer.hold_lease("a", ttl_seconds=60, refused=0)[0] == 1  # renewed
    again, _ = writer.hold_lease("a", ttl_seconds=60, refused=token)
    assert again == 1 + TOKEN_JUMP + 1
    assert writer.hold_lease("a", ttl_seconds=60, refused=token)[0] == again  # renewed now
    assert writer.hold_lease("b", ttl_seconds=60, refused=token)[0] == 0  # not b's to take


def test_a_replica_without_the_lease_can_neither_number_nor_publish_a_snapshot(
    r: redis.Redis, keys: Keys
) -> None:
    writer = StateWriter(r, keys, retention_seconds=3600)
    old, _ = writer.hold_lease("old", ttl_seconds=60)
    assert writer.begin(old).reserve_cycle(0).send().cycle == 1
    assert writer.publish('{"from": "old"}', fence=old, ttl_seconds=60)
    r.delete(keys.leader_lease)  # expired while "old" was paused
    new, _ = writer.hold_lease("new", ttl_seconds=60)
    assert new == old + 1
    assert writer.begin(old).reserve_cycle(0).send().cycle == FENCED
    assert not writer.publish('{"from": "old, deposed"}', fence=old, ttl_seconds=60)
    assert zlib.decompress(r.get(keys.snapshot)[3:]) == b'{"from": "old"}'
    assert writer.begin(new).reserve_cycle(0).send().cycle == 2
    assert writer.publish('{"from": "new"}', fence=new, ttl_seconds=60)
    assert r.get(keys.snapshot)[:3] == b"z1:"  # compressed: followers fetch it every cycle
    assert zlib.decompress(r.get(keys.snapshot)[3:]) == b'{"from": "new"}'
    r.delete(keys.leader_lease)  # no holder at all: nobody publishes
    assert not writer.publish('{"from": "new, expired"}', fence=new, ttl_seconds=60)


def test_a_lost_cycle_counter_restarts_above_what_the_leader_knew(
    r: redis.Redis, keys: Keys
) -> None:
    writer = StateWriter(r, keys, retention_seconds=3600)
    token, _ = writer.hold_lease("a", ttl_seconds=60)
    assert writer.begin(token).reserve_cycle(41).send().cycle == 42
    assert writer.begin(token).reserve_cycle(0).send().cycle == 43
    assert r.get(keys.snapshot_cycle) == b"43"


def test_registering_a_provider_is_one_command_that_only_moves_forward(
    private_redis: redis.Redis,
) -> None:
    keys = Keys("reg")
    writer = StateWriter(private_redis, keys, retention_seconds=3600)
    private_redis.config_resetstat()
    writer.begin(None).keep_registered(["openrouter"], 100.0).send()
    assert _calls(private_redis, "zadd") == 1
    writer.begin(None).keep_registered(["openrouter"], 50.0).send()  # never back
    writer.begin(None).keep_registered(["openrouter"], 200.0).send()
    assert _calls(private_redis, "zadd") == 3
    assert private_redis.zscore(keys.providers, "openrouter") == 200.0
    assert 0 < private_redis.ttl(keys.providers) <= 3600


def test_transitions_run_by_sha_and_survive_a_flushed_script_cache(
    private_redis: redis.Redis,
) -> None:
    keys = Keys("sha")
    writer = StateWriter(private_redis, keys, retention_seconds=3600)
    token, _ = writer.hold_lease("a", ttl_seconds=60)
    opened = BreakerState("open", 10.0, 1, 40.0, 1)
    half = BreakerState("half_open", 41.0, 2, 40.0, 1)
    private_redis.config_resetstat()
    private_redis.script_flush()  # a restart, a failover, an operator: Redis forgot them
    commit = writer.begin(token).transitions([PlannedWrite("p", 0, opened, "closed>open")])
    committed = commit.reserve_cycle(0).send()
    assert committed == Committed([1], 1)
    assert writer.begin(token).transitions(
        [PlannedWrite("p", 1, half, "open>half_open")]
    ).send().results == [1]
    assert private_redis.hgetall(keys.transitions("p")) == {
        b"closed>open": b"1",
        b"open>half_open": b"1",
    }
    assert private_redis.get(keys.snapshot_cycle) == b"1"  # applied once, not twice
    assert _calls(private_redis, "eval") == 0
    assert _calls(private_redis, "script|load") == 2  # the two scripts, once each


def test_a_deposed_leaders_late_transition_is_refused(r: redis.Redis, keys: Keys) -> None:
    """A leader paused after it read its token writes after another took over and decided
    nothing for that breaker: refused by the fence the new leader raised as it took over, and,
    without it, by the lease's end on the server's clock."""
    writer = StateWriter(r, keys, retention_seconds=3600)
    old, old_until = writer.hold_lease("old", ttl_seconds=0.3)
    opened = BreakerState("open", 10.0, 1, 40.0, 1)
    late = PlannedWrite("p", 0, opened, "closed>open")
    wait_for(lambda: r.exists(keys.leader_lease) == 0)  # expired during the pause
    new, new_until = writer.hold_lease("new", ttl_seconds=60)
    assert new == old + 1
    # the new leader's first commit raises the fences of what it read, deciding nothing else
    assert writer.begin(new, new_until).raise_fences(["p"]).send().results == []
    assert r.hget(keys.breaker("p"), "fence") == str(new).encode()
    assert 0 < r.ttl(keys.breaker("p")) <= 3600
    assert writer.begin(old, old_until).transitions([late]).send().results == [FENCED]
    assert writer.begin(old).transitions([late]).send().results == [FENCED]  # the fence alone
    other = PlannedWrite("q", 0, opened, "closed>open")  # a breaker whose fence was not raised
    assert writer.begin(old, old_until).transitions([other]).send().results == [FENCED]
    assert r.exists(keys.breaker("q")) == 0  # refused by the server's clock: the lease is over
    assert r.hgetall(keys.transitions("p")) == {} and r.hgetall(keys.transitions("q")) == {}
    assert writer.begin(new, new_until).transitions([late]).send().results == [1]


@pytest.mark.parametrize("refused", ["del", "hincrby", "expire"])
def test_a_transition_its_user_may_not_finish_writes_nothing(
    redis_url: str, r: redis.Redis, keys: Keys, refused: str
) -> None:
    # Redis applies a script's commands up to the one it refuses: the state was written, its
    # permits kept and the transition uncounted, while the caller was told it failed
    with user_without(redis_url, refused) as url:
        writer = StateWriter(connect(url, socket_timeout=2.0), keys, retention_seconds=3600)
        opened = BreakerState("open", 10.0, 1, 40.0, 1)
        with pytest.raises(redis.ResponseError, match=f"'{refused}' command"):
            writer.begin(None).transitions([PlannedWrite("p", 0, opened, "closed>open")]).send()
    assert not r.exists(keys.breaker("p"), keys.transitions("p"))
