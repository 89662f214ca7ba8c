-- klaxon's Redis script, part "claim": alert claims: one page per incident across processes (src/state/memory/claim.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
-- claim: z = a holder's name (its lease the key's TTL) or 'd' (done, kept ARGV[4] ms);
-- ARGV[5] = mode: 0 take or renew for ARGV[3] ms, 1 done, 2 release
if agg == OP_CLAIM then
  local v, mode, me = redis.call('GET', z), tonumber(ARGV[5]), ARGV[1]
  if v == 'd' then return {2, redis.call('PTTL', z)} end
  if mode == 1 then
    redis.call('SET', z, 'd', 'PX', ARGV[4])
    return {2, tonumber(ARGV[4])}
  end
  if v and v ~= me then return {1, redis.call('PTTL', z)} end
  if mode == 2 then
    if v then redis.call('DEL', z) end
    return {0, 0}
  end
  redis.call('SET', z, me, 'PX', ARGV[3])
  return {0, tonumber(ARGV[3])}
end
