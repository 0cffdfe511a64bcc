"""Every Lua script of the project: only where a read-modify-write must be atomic. Each takes all
its keys through KEYS[] and is run by its SHA (``connection.register``), never re-sent with
every call.

The breaker's scripts (permits, transitions, and the leader's in ``leader_scripts``: the lease,
snapshot numbers and publishing) start with ``ALLOW_OOM``: their writes are tiny, and the
breaker must keep working while Redis is at ``maxmemory`` and refuses every other write.
"""

from __future__ import annotations

from typing import Final

ALLOW_OOM: Final = "#!lua flags=allow-oom\n"
"""Redis 7 script flags: run even when Redis is out of memory. A server that knows no flags
(Redis 6, fakeredis) gets the script without this line (``connection.register``)."""

_WRITES_ALLOWED = """
-- Redis applies a script's commands up to the one it refuses: each write of the script is
-- checked against the caller's ACL first (Redis 7), so a refused one leaves nothing half done.
local function refused(writes, what)
  if redis.acl_check_cmd then
    for _, write in ipairs(writes) do
      if not redis.acl_check_cmd(unpack(write)) then
        return redis.error_reply("NOPERM this user has no permissions to run the '"
          .. string.lower(write[1]) .. "' command (" .. what .. " wrote nothing)")
      end
    end
  end
  return nil
end
"""

PERMIT: Final = (
    ALLOW_OOM
    + _WRITES_ALLOWED
    + """
-- Take one half-open trial permit if fewer than the breaker's ``permits`` are live. Permits
-- expire ``permit_ms`` after they are taken (Redis server time, so hosts' clocks do not matter).
-- KEYS[1] breaker hash, KEYS[2] permits zset; ARGV[1] holder. Returns {state, granted}.
local fields = redis.call('HMGET', KEYS[1], 'state', 'permits', 'permit_ms')
local state = fields[1] or 'closed'
if state ~= 'half_open' then
  return {state, 0}
end
local writes = {{'ZREMRANGEBYSCORE', KEYS[2], '0', '0'}, {'ZADD', KEYS[2], '0', ''},
  {'PEXPIRE', KEYS[2], '1'}}
local no = refused(writes, 'taking a permit')  -- (a permit taken, never used, kept its place)
if no then
  return no
end
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
if redis.call('ZCARD', KEYS[2]) >= tonumber(fields[2] or '5') then
  return {state, 0}
end
local ttl = tonumber(fields[3] or '30000')
redis.call('ZADD', KEYS[2], now_ms + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return {state, 1}
"""
)

ADMIT: Final = """
-- Admit providers into the registry while fewer than the cap are active (seen after ARGV[3]),
-- so a flood of new names cannot grow Redis or /metrics without bound, while names idle for
-- longer than the export horizon do not hold places. KEYS[1] registry zset; ARGV[1] cap,
-- ARGV[2] now, ARGV[3] start of the horizon, ARGV[4..] names. Returns 1 (admitted or already
-- known) or 0 per name.
local admitted = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    admitted[#admitted + 1] = 1
  elseif redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[3], '+inf') < tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    admitted[#admitted + 1] = 1
  else
    admitted[#admitted + 1] = 0
  end
end
return admitted
"""

INSTRUMENTS: Final = """
-- Counter/histogram deltas of one flush under a per-metric series cap: a series id not yet in
-- the metric's set is admitted while the set is smaller than the cap, else its updates are
-- dropped and counted. All keys share the {metrics} hash tag (one cluster slot).
-- KEYS: per metric, its series set then its data hash; then, when their count is odd, the
-- slot's applied hash. ARGV[1] cap, ARGV[2] TTL seconds; then per metric: series count; per
-- series: id, updates, field count, (field, increment)...; then, with the applied hash, a field
-- and a value set in it once every increment is applied: the writer's marker that this call
-- ran, read after a lost reply (a call Redis did not know the script of did nothing, while the
-- rest of its transaction ran).
local cap = tonumber(ARGV[1])
local a = 3
for m = 1, #KEYS - (#KEYS % 2), 2 do
  local set, data = KEYS[m], KEYS[m + 1]
  local dropped = 0
  local nseries = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, nseries do
    local sid, updates, nfields = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    a = a + 3
    local known = redis.call('SISMEMBER', set, sid) == 1
    if not known and redis.call('SCARD', set) < cap then
      redis.call('SADD', set, sid)
      known = true
    end
    if known then
      for j = 0, nfields - 1 do
        local name = ARGV[a + 2 * j]
        local value = redis.call('HINCRBY', data, name, ARGV[a + 2 * j + 1])
        if string.sub(name, 1, 2) == 'n:' and value >= 1000000000 then
          -- carry whole units out of the nano-units so the field never overflows
          local whole = math.floor(value / 1000000000)
          redis.call('HINCRBY', data, name, -whole * 1000000000)
          redis.call('HINCRBY', data, 'i:' .. string.sub(name, 3), whole)
        end
      end
    else
      dropped = dropped + updates
    end
    a = a + 2 * nfields
  end
  if dropped > 0 then
    redis.call('HINCRBY', data, '!dropped', dropped)
  end
  redis.call('EXPIRE', set, ARGV[2])
  redis.call('EXPIRE', data, ARGV[2])
end
if #KEYS % 2 == 1 then
  redis.call('HSET', KEYS[#KEYS], ARGV[a], ARGV[a + 1])
  redis.call('EXPIRE', KEYS[#KEYS], ARGV[2])
end
return 1
"""

ID_JUMP_FIELD: Final = "~ids"
"""The field of the ``{shared}`` slot's ``applied`` hash naming the master the id counter last
jumped on (``RESERVE_IDS``): no writer id starts with ``~``, and ``PRUNE_MARKERS`` keeps it (its
value, a replication id in hex, is no marker)."""

RESERVE_IDS: Final = f"""
-- Reserve a block of window member ids, the first time a writer reserves and after it failed to:
-- the counter jumps ARGV[3] ids once per master of its slot (a replica promoted after a failover,
-- a restarted Redis: it may have missed the last increments, so ids handed out by the one before
-- and not replicated must not be handed out again), never once per writer or per failure.
-- The master is named by its replication id (a new one at every promotion and restart); the
-- jump's is kept in KEYS[2]. A server whose id cannot be read (INFO denied, not Redis) jumps at
-- every call, as before. KEYS[1] id counter, KEYS[2] the slot's applied hash; ARGV[1] ids to
-- reserve, ARGV[2] the start of a missing counter, ARGV[3] the jump, ARGV[4] TTL seconds.
-- Returns the counter after the reservation. A counter INCRBY refuses (another writer's value,
-- another type) or would soon overflow starts again at ARGV[2] like a missing one (ids are taken
-- modulo 2^36): a writer's next reservation after the one that failed on it runs this, so the
-- ids flow again instead of every flush failing.
redis.call('SET', KEYS[1], ARGV[2], 'NX')
local counter = redis.pcall('INCRBY', KEYS[1], 0)  -- (not _COUNT's GET: a worker's ACL has none)
if type(counter) ~= 'number' or counter < 0 or counter >= 2 ^ 62 then
  redis.call('SET', KEYS[1], ARGV[2])
end
local info = redis.pcall('INFO', 'replication')
local master = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or nil
if master == nil or redis.call('HGET', KEYS[2], '{ID_JUMP_FIELD}') ~= master then
  redis.call('INCRBY', KEYS[1], ARGV[3])
  if master ~= nil then
    redis.call('HSET', KEYS[2], '{ID_JUMP_FIELD}', master)
    redis.call('EXPIRE', KEYS[2], ARGV[4])
  end
end
local last = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return last
"""

PRUNE_MARKERS: Final = """
-- Forget the applied markers of writers gone for good (a Redis Cluster slot's applied hash keeps
-- one field per writer that ever wrote the slot: with recycled workers it would grow without
-- bound). A marker 'r<first id>:<count>:<unix time written>' older than ARGV[1], or one without
-- a time (written by an older client), is deleted; any other field is kept.
-- KEYS[1] applied hash; ARGV[1] the oldest time kept. Returns how many were forgotten.
local fields = redis.call('HGETALL', KEYS[1])
local stale = {}
for i = 1, #fields, 2 do
  local value = fields[i + 1]
  if string.sub(value, 1, 1) == 'r' then
    local at = string.match(value, '^r%-?%d+:%d+:(%d+)$')
    if at == nil or tonumber(at) < tonumber(ARGV[1]) then
      stale[#stale + 1] = fields[i]
    end
  end
end
for i = 1, #stale, 1000 do
  redis.call('HDEL', KEYS[1], unpack(stale, i, math.min(i + 999, #stale)))
end
return #stale
"""

PRUNE_GAUGE_WRITERS: Final = """
-- Forget processes whose gauge values expired (they died): without this, every short-lived
-- worker would stay in the writers set for the retention period. A process that wrote again
-- since it was read keeps its entry. KEYS[1] writers zset, KEYS[2..] the candidates' gauge
-- hashes; ARGV the candidates' writer ids, in the same order. Returns how many were forgotten.
local pruned = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    pruned = pruned + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return pruned
"""

TRANSITION: Final = (
    ALLOW_OOM
    + _WRITES_ALLOWED
    + """
-- Compare-and-set on the state epoch, fenced by the leader's token and its lease: a writer
-- holding a stale epoch, a deposed leader's token, or a lease this server's clock says is over
-- can never overwrite a newer state.
-- KEYS[1] breaker hash, KEYS[2] permits zset, KEYS[3] transitions hash.
-- ARGV[1] expected epoch; ARGV[2] fencing token ('' for an operator command: not fenced);
-- ARGV[3] TTL seconds (0: persist, for forced states); ARGV[4] transition counter field ('':
-- not a transition but a state restored, counted nowhere); ARGV[5] Redis time in ms until
-- which the writer's lease holds ('': not checked); ARGV[6..] field/value pairs of the state.
-- Returns 1 applied, 0 epoch mismatch, -1 stale fencing token or lease over. A breaker key that
-- is not a hash, or a field that is not a number (a foreign or hand-written value), reads as
-- absent and is overwritten: one bad value never freezes a breaker.
local writes = {{'DEL', KEYS[1]}, {'HSET', KEYS[1], 'state', ''}, {'DEL', KEYS[2]}}
table.insert(writes, ARGV[3] == '0' and {'PERSIST', KEYS[1]} or {'EXPIRE', KEYS[1], '1'})
if ARGV[4] ~= '' then
  table.insert(writes, {'HINCRBY', KEYS[3], ARGV[4], '1'})
end
local no = refused(writes, 'the transition')  -- (a state written, its permits kept, uncounted)
if no then
  return no
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
local function count(value)  -- at most 15 digits, as the aggregator reads them (else absent)
  if value and #value <= 15 and string.match(value, '^%d+$') then
    return tonumber(value)
  end
  return 0
end
local current = count(redis.call('HGET', KEYS[1], 'epoch'))
if current ~= tonumber(ARGV[1]) then
  return 0
end
if ARGV[2] ~= '' then
  local fence = count(redis.call('HGET', KEYS[1], 'fence'))
  if tonumber(ARGV[2]) < fence then
    return -1
  end
  if ARGV[5] ~= '' then
    local time = redis.call('TIME')
    if tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) > tonumber(ARGV[5]) then
      return -1
    end
  end
  redis.call('HSET', KEYS[1], 'fence', ARGV[2])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
if ARGV[3] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('DEL', KEYS[2])
if ARGV[4] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
end
return 1
"""
)
