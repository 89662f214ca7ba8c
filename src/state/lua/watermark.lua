-- klaxon's Redis script, part "watermark": the shared watermark (src/state/memory/watermark.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
-- shared watermark: a = "topic/partition" -> "newest wall" (the partition's newest event
-- time and the wall clock when it last moved)
if agg == OP_WATERMARK then
  local nent = tonumber(ARGV[5])
  for i = 0, nent - 1 do
    local name, mx = ARGV[11 + 3 * i], tonumber(ARGV[12 + 3 * i])
    local cur = redis.call('HGET', a, name)
    local cm = nil
    if cur then cm = tonumber(string.sub(cur, 1, string.find(cur, ' ', 1, true) - 1)) end
    if cm == nil or mx > cm then redis.call('HSET', a, name, fmt(mx) .. ' ' .. fmt(t))
    elseif ARGV[13 + 3 * i] == '1' then redis.call('HSET', a, name, fmt(cm) .. ' ' .. fmt(t))
    end
  end
  local all = redis.call('HGETALL', a)
  local wm = nil
  for i = 1, #all, 2 do
    local v = all[i + 1]
    local sp = string.find(v, ' ', 1, true)
    local mx, at = tonumber(string.sub(v, 1, sp - 1)), tonumber(string.sub(v, sp + 1))
    if t - at > ttl then
      redis.call('HDEL', a, all[i])
    else
      local eff = mx
      if t - at > w then eff = math.max(mx + (t - at - w), t - w) end
      if wm == nil or eff < wm then wm = eff end
    end
  end
  if redis.call('EXISTS', a) == 1 then redis.call('PEXPIRE', a, fmt(ttl)) end
  if wm == nil then return {0, 0} end
  return {1, wm}
end
