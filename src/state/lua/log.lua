-- klaxon's Redis script, part "log": the window log's two atomic steps (src/state/redis_log.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h).
-- z = PREFIX{KEY}:l, a stream of records of adds ('r') and snapshots ('s'), with IDs
-- EPOCH-SEQ: EPOCH is the server's clock (ms) when the stream was created (XADD's own ID
-- for a new stream, EPOCH-0: no TIME, which an ACL with +@read +@write does not allow), SEQ
-- counts from 0. Every other step is a plain command (XADD NOMKSTREAM with the next ID,
-- XRANGE, PEXPIRE): the memory store's C does the window arithmetic.
-- create: ARGV[1] = the first record, ARGV[4] = the stream's TTL (ms); returns the first
-- entry's ID, or 0 when the stream exists (the caller reads it instead).
if agg == OP_LOG_CREATE then
  if redis.call('EXISTS', z) == 1 then return 0 end
  local id = redis.call('XADD', z, '*', 'r', ARGV[1])
  redis.call('PEXPIRE', z, ARGV[4])
  return id
end
-- keep: when the newest entry is ARGV[2], append the snapshot ARGV[1] as ARGV[3] and drop
-- every entry before it (the snapshot holds their effect); returns 1 when it did, else 0.
if agg == OP_LOG_KEEP then
  local top = redis.call('XREVRANGE', z, '+', '-', 'COUNT', 1)
  if top[1] and top[1][1] == ARGV[2] then
    redis.call('XADD', z, ARGV[3], 's', ARGV[1])
    redis.call('XTRIM', z, 'MINID', ARGV[3])
    return 1
  end
  return 0
end
