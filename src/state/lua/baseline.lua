-- klaxon's Redis script, part "baseline": baseline (src/state/memory/baseline.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
if agg == OP_BASELINE then  -- baseline: z = identity -> time, a = hash of the history
  -- One add, or (ARGV[14 + 2 * nterm] = the count of further ones, then member, time,
  -- evidence each) several of this key, each made exactly as a call of its own.
  local base = 14 + 2 * nterm
  local multi = ARGV[base] ~= nil
  local function badd(member, tt, evidence)
    local late = ttl - w
    local dev = tonumber(ARGV[11 + 2 * nterm])
    local hist = tonumber(ARGV[12 + 2 * nterm])
    local alpha = 2 / (hist + 1)
    local k = math.floor(tt / w)
    local r = redis.call('HMGET', a, 'folded', 'mean', 'var', 'n', 'alerted')
    local folded, mean, var, n, alerted
    if r[1] then
      folded, mean, var, n = tonumber(r[1]), tonumber(r[2]), tonumber(r[3]), tonumber(r[4])
      alerted = tonumber(r[5])
    else
      folded, mean, var, n = math.floor((tt - late) / w) - 1, 0, 0, 0
    end
    local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
    local known = redis.call('ZSCORE', z, member)
    if not known and ((#top > 0 and tt < tonumber(top[2]) - late) or k <= folded) then
      return {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, '0', 0, 0, 0, 0, 0}
    end
    local added = redis.call('ZADD', z, 'NX', fmt(tt), member)
    local maxt = tonumber(redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
    local function icount(j)
      return redis.call('ZCOUNT', z, fmt(j * w), fmt((j + 1) * w - 1))
    end
    local function fold(j0, j1, m, v, k)
      local j = j0
      while j <= j1 do
        local c = icount(j)
        if c == 0 then
          local nx = redis.call('ZRANGEBYSCORE', z, fmt(j * w), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
          local nj = j1 + 1
          if #nx > 0 then nj = math.min(math.floor(tonumber(nx[2]) / w), j1 + 1) end
          if k > 0 then
            local g = nj - j
            for i = 1, math.min(g, 3 * hist + 2) do
              local d = 0 - m
              local inc = alpha * d
              m = m + inc
              v = (1 - alpha) * (v + d * inc)
            end
            if g > 3 * hist + 2 then m, v = 0, 0 end
            k = k + g
          end
          j = nj
        else
          local d = c - m
          local inc = alpha * d
          m = m + inc
          v = (1 - alpha) * (v + d * inc)
          k = k + 1
          j = j + 1
        end
      end
      return m, v, k
    end
    local lastclosed = math.floor((maxt - late) / w) - 1
    if lastclosed > folded then
      mean, var, n = fold(folded + 1, lastclosed, mean, var, n)
      folded = lastclosed
    end
    local dropped = 0
    redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. fmt(maxt - ttl))
    local card = redis.call('ZCARD', z)
    if card > cap then
      dropped = card - cap
      redis.call('ZREMRANGEBYRANK', z, 0, dropped - 1)
    end
    if added == 1 and maxev > 0 and evidence ~= '' then
      redis.call('LPUSH', e, evidence)
      redis.call('LTRIM', e, 0, maxev - 1)
    end
    local c = icount(k)
    local m, v, nn = fold(folded + 1, k - 1, mean, var, n)
    local crossed = 0
    if alerted == k then
      if added == 0 then crossed = 1 end
    elseif k > folded and nn >= hist and c > m + dev * math.sqrt(v) and holds(c) then
      crossed = 1
      alerted = k
    end
    local f = string.format
    redis.call('HSET', a, 'folded', fmt(folded), 'mean', f('%.17g', mean), 'var',
               f('%.17g', var), 'n', fmt(n))
    if alerted then redis.call('HSET', a, 'alerted', fmt(alerted)) end
    local keep = fmt((3 * hist + 2) * w + late)
    redis.call('PEXPIRE', z, keep)
    redis.call('PEXPIRE', e, keep)
    redis.call('PEXPIRE', a, keep)
    local res = {added, c, k * w, tt, dropped, crossed, k * w, tt, 0, c, f('%.17g', m), 0, 0, 0, 0, 0}
    if multi then res[2], res[3], res[4] = 0, 0, 0 end -- (as the windows: single adds only)
    if maxev > 0 and (crossed == 1 or ARGV[13 + 2 * nterm] ~= '1') then
      local ev = redis.call('LRANGE', e, 0, maxev - 1)
      for i = 1, #ev do res[#res + 1] = ev[i] end
    end
    return res
  end
  local out = {}
  for i, x in ipairs(several({ARGV[1], ARGV[2], ARGV[9]}, base, 3)) do
    out[i] = badd(x[1], tonumber(x[2]), x[3])
  end
  if multi then return out end
  return out[1]
end
