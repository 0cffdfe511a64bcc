"""The leader's Lua scripts: the fence a new leader raises in each breaker, the lease (its
fencing token), the snapshot's cycle number and its publication. Each starts with ``ALLOW_OOM``
(``scripts``): the leader must keep leading while Redis refuses every other write."""

from __future__ import annotations

from typing import Final

from gatewayz_protocol.scripts import ALLOW_OOM

RAISE_FENCE: Final = (
    ALLOW_OOM
    + """
-- A new leader's token, raised into a breaker hash as it takes over, so a deposed leader's
-- transition is refused there even before the new leader writes that breaker. KEYS[1] breaker
-- hash; ARGV[1] fencing token, ARGV[2] TTL seconds of a hash this creates. Returns 1 raised, 0
-- already at or above it. A breaker key that is not a hash is replaced (TRANSITION's rule).
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local fence = redis.call('HGET', KEYS[1], 'fence')
fence = (fence and string.match(fence, '^%d+$')) and tonumber(fence) or 0
if tonumber(ARGV[1]) <= fence then
  return 0
end
local existed = redis.call('EXISTS', KEYS[1])
redis.call('HSET', KEYS[1], 'fence', ARGV[1])
if existed == 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
)

_LEASE_HOLDER = """(function()
  local held = redis.pcall('GET', KEYS[1])
  if type(held) ~= 'string' then
    return nil
  end
  local sep = string.find(held, '|', 1, true)
  if not sep or sep == 1 then
    return nil
  end
  local token = tonumber(string.sub(held, sep + 1))
  if not token or token < 1 or token ~= math.floor(token) then
    return nil
  end
  return string.sub(held, 1, sep - 1), token
end)()"""
"""Lua: the lease's holder and token (KEYS[1]); nothing when no lease is held or the key holds
what no replica writes (not ``instance|token``, another type)."""

_COUNT = """(function(key)
  local raw = redis.pcall('GET', key)
  if raw == false then
    return 0
  end
  if type(raw) ~= 'string' or not string.match(raw, '^%d+$') or #raw > 15 then
    return nil
  end
  return tonumber(raw)
end)"""
"""Lua: a counter's value (a function of its key), 0 when it is missing; nothing when it holds
what INCR would refuse (another writer's)."""

TOKEN_JUMP: Final = 1 << 20
"""How far the leader's token counter jumps when a lease holder's token was refused by a fence
above it (``LEASE``)."""

LEASE: Final = (
    ALLOW_OOM
    + f"""
-- Acquire or renew the leader lease. KEYS[1] lease, KEYS[2] token counter; ARGV[1] instance,
-- ARGV[2] TTL ms, ARGV[3] a token of this instance's that a breaker's fence refused (absent or
-- 0: none). Returns {{the holder's fencing token, Redis time in ms until which the lease
-- holds}}, or {{0, 0}} when another instance holds it. A lease held under a refused token is
-- taken again under a new one, the counter jumped by {TOKEN_JUMP} first: no other leader holds
-- the lease, so the fence is above every token the counter gives, which lost its value with its
-- slot's data (a restart without AOF, a cluster master killed before it replicated) while the
-- breakers kept theirs. Renewing the refused token, the leader was fenced off for good.
-- A lease value no replica writes (not `instance|token`, or without the TTL every lease has)
-- and a counter that is not one are another writer's: overwritten, never a reason to stop.
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local until_ms = now_ms + tonumber(ARGV[2])
local holder, token = {_LEASE_HOLDER}
if holder and redis.call('PTTL', KEYS[1]) < 0 then
  holder = nil
end
if holder then
  if holder ~= ARGV[1] then
    return {{0, 0}}
  end
  if token > tonumber(ARGV[3] or '0') then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {{token, until_ms}}
  end
  -- (GET and SET: the aggregator's ACL grants no INCRBY)
  redis.call('SET', KEYS[2], ({_COUNT}(KEYS[2]) or 0) + {TOKEN_JUMP})
elseif {_COUNT}(KEYS[2]) == nil then  -- lost to another writer: jumped above the fences it gave
  redis.call('SET', KEYS[2], {TOKEN_JUMP})
end
token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return {{token, until_ms}}
"""
)

RELEASE: Final = (
    ALLOW_OOM
    + f"""
-- Give the lease up at once (clean shutdown). KEYS[1] lease; ARGV[1] instance.
local holder = {_LEASE_HOLDER}
if holder == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)

# The leader's writes of shared state check that it still holds the lease under the token it
# was given: a deposed leader (its lease expired, or taken over) can write nothing.
_HOLDS_LEASE = f"""
local holder, token = {_LEASE_HOLDER}
if not holder or token ~= tonumber(ARGV[1]) then
  return -1
end
"""

RESERVE_CYCLE: Final = (
    ALLOW_OOM
    + f"""
-- The next snapshot cycle number, shared by all replicas, for the lease holder only.
-- KEYS[1] lease, KEYS[2] cycle counter; ARGV[1] fencing token, ARGV[2] the last cycle this
-- replica knows (a counter lost with an emptied Redis restarts above it, never below).
-- Returns the cycle, or -1 when the caller does not hold the lease.
{_HOLDS_LEASE}
local last = {_COUNT}(KEYS[2])
if last == nil or last < tonumber(ARGV[2]) then  -- (nil: another writer's value, overwritten)
  redis.call('SET', KEYS[2], ARGV[2])
end
return redis.call('INCR', KEYS[2])
"""
)

PUBLISH_SNAPSHOT: Final = (
    ALLOW_OOM
    + f"""
-- Publish the leader's snapshot for followers. KEYS[1] lease, KEYS[2] snapshot; ARGV[1]
-- fencing token, ARGV[2] TTL ms, ARGV[3] snapshot JSON. Returns 1, or -1 (not the lease holder:
-- nothing written).
{_HOLDS_LEASE}
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return 1
"""
)
