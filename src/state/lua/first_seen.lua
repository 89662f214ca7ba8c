-- klaxon's Redis script, part "first_seen": first_seen (src/state/memory/first_seen.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
if agg == OP_FIRST_SEEN then  -- first_seen: z = value -> last seen, a = value -> introducer
  -- One add, or (ARGV[14] = the count of further ones, then member, time, evidence each)
  -- several of this key in order, each with the result it would have had alone. A value's
  -- score only moves forward, so the newest time is tracked here, and `low` (at most the
  -- oldest score) tells when a prune can find anything.
  local base = 14 + 2 * nterm
  local adds = several({ARGV[1], ARGV[2], ARGV[9]}, base, 3)
  local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  local maxt = nil
  if #top > 0 then maxt = tonumber(top[2]) end
  local bottom = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  local low = nil
  if #bottom > 0 then low = tonumber(bottom[2]) end
  local card = redis.call('ZCARD', z)
  local out = {}
  for k = 1, #adds do
    local m, mt = adds[k][1], tonumber(adds[k][2])
    local sep = string.find(m, '\31', 1, true)
    local id, v = string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
    local s = redis.call('ZSCORE', z, v)
    local prev, new, crossed = -1, 0, 0
    if s then prev = tonumber(s) end
    if not s or prev < mt - w then
      new, crossed = 1, 1
      redis.call('ZADD', z, fmt(mt), v)
      redis.call('HSET', a, v, id)
      if not s then card = card + 1 end
    else
      if redis.call('HGET', a, v) == id then crossed = 1 end
      if mt > prev then redis.call('ZADD', z, fmt(mt), v) end
    end
    if maxt == nil or mt > maxt then maxt = mt end
    if low == nil or mt < low then low = mt end
    -- Forget values last seen before (newest - ttl), then the least recently seen past cap.
    local limit = maxt - ttl
    local old = {}
    if low < limit then
      old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. fmt(limit))
      low = limit
    end
    local dropped = 0
    local live = card - #old
    if live > cap then
      dropped = live - cap
      local more = redis.call('ZRANGE', z, #old, #old + dropped - 1)
      for i = 1, #more do old[#old + 1] = more[i] end
    end
    for i = 1, #old, 1000 do
      local last = math.min(i + 999, #old)
      redis.call('ZREM', z, unpack(old, i, last))
      redis.call('HDEL', a, unpack(old, i, last))
    end
    card = live - dropped
    if ARGV[base] then -- count/first/last: for single adds only (as the windows)
      out[k] = {new, 0, 0, 0, dropped, crossed, mt, mt, 0, card, fmt(prev), 0, 0, 0, 0, 0}
    else
      out[k] = {new, card, mt, mt, dropped, crossed, mt, mt, 0, card, fmt(prev), 0, 0, 0, 0, 0}
    end
  end
  redis.call('PEXPIRE', z, ttl)
  redis.call('PEXPIRE', a, ttl)
  if ARGV[base] then return out end
  return out[1]
end
