"""The aggregator's only Redis writer: breaker transitions (compare-and-set, fenced), the leader
lease, the published snapshot and the shared op counter."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from aggregator.breaker import BreakerState
from client.keys import Keys

# Compare-and-set on the state epoch, fenced by the leader's token: a writer holding a stale
# epoch or a deposed leader's token can never overwrite a newer state.
# KEYS[1] breaker hash, KEYS[2] permits zset, KEYS[3] transitions hash.
# ARGV[1] expected epoch; ARGV[2] fencing token ('' for an operator command: not fenced);
# ARGV[3] TTL seconds (0: persist, for forced states); ARGV[4] transition counter field;
# ARGV[5..] field/value pairs of the new state.
# Returns 1 applied, 0 epoch mismatch, -1 stale fencing token.
_TRANSITION_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if current ~= tonumber(ARGV[1]) then
  return 0
end
if ARGV[2] ~= '' then
  local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if tonumber(ARGV[2]) < fence then
    return -1
  end
  redis.call('HSET', KEYS[1], 'fence', ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if ARGV[3] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 1
"""

# Acquire or renew the leader lease. KEYS[1] lease, KEYS[2] token counter; ARGV[1] instance,
# ARGV[2] TTL ms. Returns the holder's fencing token, or 0 when another instance holds it.
_LEASE_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held then
  local sep = string.find(held, '|', 1, true)
  if string.sub(held, 1, sep - 1) ~= ARGV[1] then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(held, sep + 1))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""

_RELEASE_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def breaker_fields(state: BreakerState, permits: int, permit_seconds: float) -> list[str]:
    return [
        "state", state.state,
        "since", repr(state.since),
        "epoch", str(state.epoch),
        "open_until", repr(state.open_until),
        "consecutive_opens", str(state.consecutive_opens),
        "forced", "1" if state.forced else "0",
        "permits", str(permits),
        "permit_ms", str(max(1, int(permit_seconds * 1000))),
    ]  # fmt: skip


@dataclass(frozen=True)
class PlannedWrite:
    provider: str
    expected_epoch: int
    new: BreakerState
    counter_field: str  # "closed>open"


class StateWriter:
    def __init__(
        self,
        connection: redis.Redis,
        keys: Keys,
        retention_seconds: float,
        permits: int = 5,
        permit_seconds: float = 30.0,
    ):
        self._redis = connection
        self._keys = keys
        self._retention = int(retention_seconds)
        self._permits = permits
        self._permit_seconds = permit_seconds
        self._transition = connection.register_script(_TRANSITION_SCRIPT)
        self._lease = connection.register_script(_LEASE_SCRIPT)
        self._release = connection.register_script(_RELEASE_SCRIPT)

    def commit(
        self,
        writes: Sequence[PlannedWrite],
        ops: Counter[str],
        fence: int | None,
        snapshot_json: str | None = None,
        snapshot_ttl_seconds: float = 0.0,
    ) -> list[int]:
        """Apply transitions, publish a snapshot and add ``ops`` (plus this call's own
        commands) to the shared op counter, in one round trip. Returns per write 1 (applied),
        0 (epoch moved on) or -1 (a newer leader's token is there). ``fence`` None means an
        operator command."""
        ops = Counter(ops)
        keys = self._keys
        pipe = self._redis.pipeline(transaction=False)
        for write in writes:
            ttl = 0 if write.new.forced else self._retention
            self._transition(
                keys=[
                    keys.breaker(write.provider),
                    keys.permits(write.provider),
                    keys.transitions(write.provider),
                ],
                args=[
                    write.expected_epoch,
                    "" if fence is None else fence,
                    ttl,
                    write.counter_field,
                    *breaker_fields(write.new, self._permits, self._permit_seconds),
                ],
                client=pipe,
            )
            ops["evalsha"] += 1
        if snapshot_json is not None:
            pipe.set(keys.snapshot, snapshot_json, px=max(1, int(snapshot_ttl_seconds * 1000)))
            ops["set"] += 1
        for operation, count in ops.items():
            if count:
                pipe.hincrby(keys.redis_ops, operation, count)
        replies = pipe.execute()
        return [int(r) for r in replies[: len(writes)]]

    def register_provider(self, provider: str, now: float) -> None:
        """Put a provider in the registry (an operator forcing a state wants to see it exported,
        traffic or not)."""
        self._redis.zadd(self._keys.providers, {provider: now}, gt=True)
        self._redis.zadd(self._keys.providers, {provider: now}, nx=True)

    def hold_lease(self, instance: str, ttl_seconds: float) -> int:
        """Acquire or renew the leader lease: the fencing token, or 0 when another holds it."""
        token = self._lease(
            keys=[self._keys.leader_lease, self._keys.leader_token],
            args=[instance, max(1, int(ttl_seconds * 1000))],
        )
        return int(token)

    def release_lease(self, instance: str) -> None:
        self._release(keys=[self._keys.leader_lease], args=[instance])
