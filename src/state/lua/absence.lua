-- klaxon's Redis script, part "absence": absence: a group's sightings and the due question (src/state/memory/absence.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
-- absence: z = group -> last sighting, for the groups whose silence was not reported;
-- a = group -> "last fired oc since payload" (fired: the last sighting whose silence was
-- reported, or n; oc/since: what the touch that set last reported, so a retry of it after a
-- lost reply, same payload, reports it again); hk = reported group -> the watermark it was reported at
-- (forgotten keep later); e = token -> the reply of a due call that reported groups (a retry
-- after a lost reply gets the same groups again), at most 64; KEYS[5] (:t) = token -> the
-- answer of a touch that a retry must get again (it reported something, or it is a replace
-- that a later touch of its group in the same call moved on), at most 1024; 10 minutes each.
local tk = KEYS[5]
local function arec(g)
  local rec = redis.call('HGET', a, g)
  if not rec then return nil end
  local p1 = string.find(rec, ' ', 1, true)
  local p2 = string.find(rec, ' ', p1 + 1, true)
  local p3 = string.find(rec, ' ', p2 + 1, true)
  local p4 = string.find(rec, ' ', p3 + 1, true)
  local f = string.sub(rec, p1 + 1, p2 - 1)
  local fired = nil
  if f ~= 'n' then fired = tonumber(f) end
  return tonumber(string.sub(rec, 1, p1 - 1)), fired, tonumber(string.sub(rec, p2 + 1, p3 - 1)),
         tonumber(string.sub(rec, p3 + 1, p4 - 1)), string.sub(rec, p4 + 1)
end
if agg == OP_ABSENCE_TOUCH then
  -- One touch, or (ARGV[11] = the count of further ones, then group, time, mode, payload each)
  -- several of this key in order. Each group's record is read once and written once per call;
  -- every touch sees what the touches before it left, so the results are those of the touches
  -- one by one.
  -- (ARGV[6], or the fifth of each further one: the touch's token, "0" for none).
  local touches = several({ARGV[1], ARGV[2], ARGV[8], ARGV[9], ARGV[6]}, 11, 5)
  -- Touches made again after a lost reply: the answers they had, where kept (below).
  local toks, known, final = {}, {}, {}
  for k = 1, #touches do
    if touches[k][5] ~= '0' then toks[#toks + 1] = touches[k][5] end
    final[touches[k][1]] = k -- the group's last touch in this call
  end
  if #toks > 0 then
    local got = redis.call('HMGET', tk, unpack(toks))
    for i = 1, #toks do
      if got[i] then known[toks[i]] = cmsgpack.unpack(got[i]) end
    end
  end
  local recs, dirty = {}, {} -- group -> {last, fired, oc, since, payload} (all nil: none)
  local replies, kept_toks, kept = {}, {}, {}
  for k = 1, #touches do
    local g, tt, mode, pl = touches[k][1], tonumber(touches[k][2]), touches[k][3], touches[k][4]
    local tok = touches[k][5]
    if known[tok] then
      replies[k] = known[tok] -- answered before: applied then, the same answer now
    else
      local r = recs[g]
      if r == nil then
        local last, fired, oc, osince, old = arec(g)
        r = {last, fired, oc, osince, old}
        recs[g] = r
      end
      local last, fired, oc, old = r[1], r[2], r[3], r[5]
      local out, since = 0, 0
      if mode == 'x' and (last == nil or tt <= last or fired == last or tt - last > w) then
        -- extend: not an open group, nothing changes
      elseif last == nil or tt > last or (mode == 'r' and old ~= pl) then
        -- a sighting, or (replace) another incident: one a late event completed may be stamped
        -- before the open one's last; that one is still over, and the group stays open from the
        -- later of the two (from the new one's time when the old one was reported)
        local nt = tt
        if last ~= nil and tt <= last and fired ~= last then nt = last end
        if last ~= nil and fired == last then out, since = 1, last
        elseif last ~= nil and tt - last > w then out, since = 2, last
        elseif last ~= nil and mode == 'r' then out, since = 3, last end
        local npl = pl
        if mode == 'x' then npl = old end
        if not dirty[g] then dirty[#dirty + 1] = g; dirty[g] = true end
        recs[g] = {nt, nil, out, since, npl}
      elseif (tt == last or (mode == 'r' and tt < last)) and oc > 0 and old == pl then
        -- the same touch again (a retry after a lost reply): the same report
        out, since, old = oc, r[4], pl
      end
      if out == 0 then replies[k] = 0 else replies[k] = {out, since, old} end
      -- Kept for a retry: a report, and a replace's "nothing" when a later touch of its
      -- group follows (made again after that one, it would find another incident open).
      if tok ~= '0' and (out ~= 0 or (mode == 'r' and final[g] > k)) then
        kept_toks[#kept_toks + 1] = tok
        kept[#kept + 1] = replies[k]
      end
    end
  end
  remember(tk, 1024, kept_toks, kept)
  -- The writes, batched: the records, the sightings, and the groups no longer reported.
  for i = 1, #dirty, 500 do
    local j = math.min(i + 499, #dirty)
    local hs, zs, gs = {}, {}, {}
    for x = i, j do
      local g = dirty[x]
      local r = recs[g]
      hs[#hs + 1] = g
      hs[#hs + 1] = fmt(r[1]) .. ' n ' .. r[3] .. ' ' .. fmt(r[4]) .. ' ' .. r[5]
      zs[#zs + 1] = fmt(r[1])
      zs[#zs + 1] = g
      gs[#gs + 1] = g
    end
    redis.call('HSET', a, unpack(hs))
    redis.call('ZADD', z, unpack(zs))
    redis.call('ZREM', hk, unpack(gs))
  end
  local keep = tonumber(ARGV[4])
  redis.call('PEXPIRE', z, fmt(w + keep))
  redis.call('PEXPIRE', a, fmt(w + keep))
  redis.call('PEXPIRE', hk, fmt(w + keep))
  if ARGV[11] then return replies end
  if replies[1] == 0 then return {0, 0} end
  return replies[1]
end
if agg == OP_ABSENCE_DUE then
  local token = ARGV[6]
  local prev = answered(token)
  if prev then return prev end
  local keep = tonumber(ARGV[4])
  local gone = redis.call('ZRANGEBYSCORE', hk, '-inf', '(' .. fmt(t - keep))
  for i = 1, #gone, 1000 do
    local j = math.min(i + 999, #gone)
    redis.call('HDEL', a, unpack(gone, i, j))
    redis.call('ZREM', hk, unpack(gone, i, j))
  end
  local due = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. fmt(t - w), 'LIMIT', 0, ARGV[5])
  local res = {#due}
  for i = 1, #due do
    local g = due[i]
    local last, fired, oc, osince, pl = arec(g)
    redis.call('ZREM', z, g)
    if last ~= nil then
      redis.call('HSET', a, g, fmt(last) .. ' ' .. fmt(last) .. ' ' .. oc .. ' ' ..
                 fmt(osince) .. ' ' .. pl)
      redis.call('ZADD', hk, fmt(t), g)
      res[#res + 1] = last
      res[#res + 1] = pl
    else
      res[1] = res[1] - 1
    end
  end
  if token ~= '0' and res[1] > 0 then remember(e, 64, {token}, {res}) end
  if redis.call('EXISTS', a) == 1 then
    redis.call('PEXPIRE', z, fmt(w + keep))
    redis.call('PEXPIRE', a, fmt(w + keep))
    redis.call('PEXPIRE', hk, fmt(w + keep))
  end
  return res
end
