"""The aggregator's only Redis writer: breaker transitions (compare-and-set) and op counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import redis

from aggregator.breaker import BreakerState
from client.keys import Keys

# Compare-and-set on the state epoch: a writer holding a stale epoch can never overwrite a
# newer state. KEYS[1] = breaker hash; ARGV[1] = expected epoch; ARGV[2] = TTL seconds;
# ARGV[3..] = field/value pairs of the new state.
_CAS_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')
if current ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def breaker_fields(state: BreakerState) -> list[str]:
    return [
        "state", state.state,
        "since", repr(state.since),
        "epoch", str(state.epoch),
        "open_until", repr(state.open_until),
        "consecutive_opens", str(state.consecutive_opens),
    ]  # fmt: skip


class StateWriter:
    def __init__(self, connection: redis.Redis, keys: Keys, retention_seconds: float):
        self._redis = connection
        self._keys = keys
        self._retention = int(retention_seconds)
        self._cas = connection.register_script(_CAS_SCRIPT)

    def commit(
        self,
        transitions: Sequence[tuple[str, int, BreakerState]],
        ops: Counter[str],
    ) -> list[bool]:
        """Apply (provider, expected epoch, new state) transitions and add ``ops`` (plus this
        call's own commands) to the shared op counter, in one round trip. Returns, per
        transition, whether its compare-and-set won."""
        ops = Counter(ops)
        if transitions:
            ops["evalsha"] += len(transitions)
        pipe = self._redis.pipeline(transaction=False)
        for provider, expected_epoch, state in transitions:
            self._cas(
                keys=[self._keys.breaker(provider)],
                args=[expected_epoch, self._retention, *breaker_fields(state)],
                client=pipe,
            )
        for operation, count in ops.items():
            pipe.hincrby(self._keys.redis_ops, operation, count)
        replies = pipe.execute()
        return [bool(r) for r in replies[: len(transitions)]]
