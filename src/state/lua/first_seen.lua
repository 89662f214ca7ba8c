-- klaxon's Redis script, part "first_seen": first_seen (src/state/memory/first_seen.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
if agg == OP_FIRST_SEEN then  -- first_seen: z = value -> last seen, a = value -> introducer
  local sep = string.find(ARGV[1], '\31', 1, true)
  local id, v = string.sub(ARGV[1], 1, sep - 1), string.sub(ARGV[1], sep + 1)
  local s = redis.call('ZSCORE', z, v)
  local prev, new, crossed = -1, 0, 0
  if s then prev = tonumber(s) end
  if not s or prev < t - w then
    new, crossed = 1, 1
    redis.call('ZADD', z, ARGV[2], v)
    redis.call('HSET', a, v, id)
  else
    if redis.call('HGET', a, v) == id then crossed = 1 end
    if t > prev then redis.call('ZADD', z, ARGV[2], v) end
  end
  local maxt = tonumber(redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. fmt(maxt - ttl))
  local dropped = 0
  local card = redis.call('ZCARD', z) - #old
  if card > cap then
    dropped = card - cap
    local more = redis.call('ZRANGE', z, #old, #old + dropped - 1)
    for i = 1, #more do old[#old + 1] = more[i] end
  end
  for i = 1, #old, 1000 do
    local last = math.min(i + 999, #old)
    redis.call('ZREM', z, unpack(old, i, last))
    redis.call('HDEL', a, unpack(old, i, last))
  end
  card = card - dropped
  redis.call('PEXPIRE', z, ttl)
  redis.call('PEXPIRE', a, ttl)
  return {new, card, t, t, dropped, crossed, t, t, 0, card, fmt(prev), 0, 0, 0, 0, 0}
end
