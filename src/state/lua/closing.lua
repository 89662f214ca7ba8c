-- klaxon's Redis script, part "closing": closing windows, "at most N" (src/state/memory/closing.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
-- closing windows: z = "group|window|identity" (score 0, lexical order: a group's windows in
-- order); a = group -> "lastt payload" (the group's newest event and its payload), and the
-- field "|wm" = the largest watermark judged so far (groups hold no '|'): a window that ends
-- at or before it is closed, and its events are late; hk = group -> end of its earliest
-- window with events. A group with no window left is forgotten.
local function kfmt(k) return string.format('%017d', k + 4503599627370496) end
local function crec(g)
  local rec = redis.call('HGET', a, g)
  if not rec then return nil, '' end
  local p1 = string.find(rec, ' ', 1, true)
  return tonumber(string.sub(rec, 1, p1 - 1)), string.sub(rec, p1 + 1)
end
if agg == OP_CLOSE_TOUCH then
  -- One touch, or (ARGV[11] = the count of further ones, then group, time, identity, payload
  -- each) several of this key in order: the window members with one ZADD, each group's
  -- earliest window end with one ZADD LT, its newest event read once and written once.
  local horizon = tonumber(redis.call('HGET', a, '|wm'))
  local touches = several({ARGV[1], ARGV[2], ARGV[8], ARGV[9]}, 11, 5) -- (the 5th: no token)
  local replies, members, ends, endorder, recs, dirty = {}, {}, {}, {}, {}, {}
  for i = 1, #touches do
    local g, tt, id, pl = touches[i][1], tonumber(touches[i][2]), touches[i][3], touches[i][4]
    local k = math.floor(tt / w)
    if horizon ~= nil and (k + 1) * w <= horizon then
      replies[i] = 1
    else
      replies[i] = 0
      members[#members + 1] = 0
      members[#members + 1] = g .. '|' .. kfmt(k) .. '|' .. id
      local e = (k + 1) * w
      if ends[g] == nil then endorder[#endorder + 1] = g; ends[g] = e
      elseif e < ends[g] then ends[g] = e end
      local r = recs[g]
      if r == nil then
        local lastt, opl = crec(g)
        r = {lastt, opl}
        recs[g] = r
      end
      if r[1] == nil or tt >= r[1] then
        r[1], r[2] = tt, pl
        if not dirty[g] then dirty[#dirty + 1] = g; dirty[g] = true end
      end
    end
  end
  if #members > 0 then
    for i = 1, #members, 1000 do
      redis.call('ZADD', z, 'NX', unpack(members, i, math.min(i + 999, #members)))
    end
    for i = 1, #endorder, 500 do
      local zs = {}
      for x = i, math.min(i + 499, #endorder) do
        zs[#zs + 1] = fmt(ends[endorder[x]])
        zs[#zs + 1] = endorder[x]
      end
      redis.call('ZADD', hk, 'LT', unpack(zs))
    end
    for i = 1, #dirty, 500 do
      local hs = {}
      for x = i, math.min(i + 499, #dirty) do
        hs[#hs + 1] = dirty[x]
        hs[#hs + 1] = fmt(recs[dirty[x]][1]) .. ' ' .. recs[dirty[x]][2]
      end
      redis.call('HSET', a, unpack(hs))
    end
    redis.call('PEXPIRE', z, ARGV[4])
    redis.call('PEXPIRE', a, ARGV[4])
    redis.call('PEXPIRE', hk, ARGV[4])
  end
  if ARGV[11] then return replies end
  return {replies[1]}
end
if agg == OP_CLOSE_DUE then
  local token = ARGV[6]
  local prev = answered(token)
  if prev then return prev end
  local horizon = tonumber(redis.call('HGET', a, '|wm'))
  if horizon == nil or t > horizon then redis.call('HSET', a, '|wm', fmt(t)) end
  local lim = tonumber(ARGV[5])
  local res = {0, 0}
  local n, iter = 0, 0
  while true do
    local d = redis.call('ZRANGEBYSCORE', hk, '-inf', fmt(t), 'WITHSCORES', 'LIMIT', 0, 1)
    if #d == 0 then break end
    if n >= lim or iter >= 4 * lim then
      res[2] = 1
      break
    end
    iter = iter + 1
    local g = d[1]
    local k = math.floor(tonumber(d[2]) / w) - 1
    local lo, hi = '[' .. g .. '|' .. kfmt(k) .. '|', '(' .. g .. '|' .. kfmt(k) .. '}'
    local c = redis.call('ZLEXCOUNT', z, lo, hi)
    redis.call('ZREMRANGEBYLEX', z, lo, hi)
    local lastt, pl = crec(g)
    local nx = redis.call('ZRANGEBYLEX', z, '[' .. g .. '|', '(' .. g .. '}', 'LIMIT', 0, 1)
    if #nx > 0 then
      local k2 = tonumber(string.sub(nx[1], #g + 2, #g + 18)) - 4503599627370496
      redis.call('ZADD', hk, fmt((k2 + 1) * w), g)
    else
      redis.call('ZREM', hk, g)
      redis.call('HDEL', a, g)
    end
    if c > 0 and holds(c) then
      n = n + 1
      res[#res + 1] = k * w
      res[#res + 1] = c
      res[#res + 1] = pl
    end
  end
  res[1] = n
  if token ~= '0' and n > 0 then remember(e, 64, {token}, {res}) end
  if redis.call('ZCARD', hk) > 0 then
    redis.call('PEXPIRE', z, ARGV[4])
    redis.call('PEXPIRE', a, ARGV[4])
    redis.call('PEXPIRE', hk, ARGV[4])
  end
  return res
end
