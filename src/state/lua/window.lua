-- klaxon's Redis script, part "window": sliding windows: COUNT, DISTINCT, SUM, AVG, SHARE, ORDERED (src/state/memory/window.c).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
-- the sliding-window aggregates (agg 0..5): one member, or several of one key in order
local nterm2 = 2 * nterm
local full = true
local base = 14 + nterm2
local members = several({ARGV[1], ARGV[2], ARGV[9]}, base, 3)
-- count/first/last are for single adds only: a caller of several (even one) does not read them.
if ARGV[base] then full = false end
local ev_if_crossed = ARGV[13 + nterm2] == '1'
local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
local maxt = nil
if #top > 0 then maxt = tonumber(top[2]) end
local card = redis.call('ZCARD', z)
local marks = redis.call('MGET', hk, a)
local hz = tonumber(marks[1])
local hz_dirty = false
local af, al, nsup = nil, nil, 0
if nterm > 0 then
  local mark = marks[2]
  if mark then
    local sp = string.find(mark, ' ')
    local sp2 = string.find(mark, ' ', sp + 1, true)
    af = tonumber(string.sub(mark, 1, sp - 1))
    if sp2 then
      al, nsup = tonumber(string.sub(mark, sp + 1, sp2 - 1)), tonumber(string.sub(mark, sp2 + 1))
    else
      al = tonumber(string.sub(mark, sp + 1))
    end
  end
end
local a_dirty = false
-- Pruning is lazy: members older than pruned_below are invisible at once (every read starts
-- at pruned_below at the earliest) and deleted once, before the cap is checked and at the end,
-- so a call costs one prune however many members it adds. hz is the newest time deleted.
local pruned_below, pruned_done = nil, nil
local pushed, touched = false, false
-- DISTINCT's tally (below, append_only): set when one() changes the members.
local tally = KEYS[5]
local tally_stale = false
-- Evidence is pushed once per call (before any read of the list and at the end).
local pending = {}
local function push_evidence()
  if #pending > 0 then
    -- LPUSH answers the length: a list no longer than kept needs no LTRIM.
    if redis.call('LPUSH', e, unpack(pending)) > maxev then pushed = true end
    pending = {}
  end
end
-- The newest member pending deletion (older than pruned_below), or nil.
local function newest_pending()
  if pruned_below ~= nil and (pruned_done == nil or pruned_below > pruned_done) then
    local gone = redis.call('ZREVRANGEBYSCORE', z, '(' .. fmt(pruned_below), '-inf', 'WITHSCORES',
                            'LIMIT', 0, 1)
    if #gone > 0 then return tonumber(gone[2]) end
  end
  return nil
end
local function prune_now()
  local g = newest_pending()
  if g ~= nil then -- (nothing older: nothing to delete)
    card = card - redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. fmt(pruned_below))
    if hz == nil or g > hz then hz, hz_dirty = g, true end
  end
  pruned_done = pruned_below
end
-- The newest time pruned so far, the members pending deletion included.
local function hz_now()
  local g = newest_pending()
  if g ~= nil and (hz == nil or g > hz) then return g end
  return hz
end
-- A window's lower bound, at pruned_below at the earliest.
local function lo_num(x)
  if pruned_below ~= nil and x < pruned_below then return pruned_below end
  return x
end
local function lo_of(x) return fmt(lo_num(x)) end
local function val(m)
  local i = string.find(m, '\31', 1, true)
  if i then return string.sub(m, i + 1) end
  return ''
end
-- DISTINCT over the windows of one call: the key's members from the first window's start on,
-- read once (dc.t times, dc.v values, in Redis' order), kept up to date as members are added
-- in time order (anything else drops it), and a window slid over them with a count per value:
-- consecutive windows that move forward cost only the members that enter and leave.
local dc = nil
local function dc_load(lo)
  local r = redis.call('ZRANGEBYSCORE', z, fmt(lo), '+inf', 'WITHSCORES')
  local t, v = {}, {}
  for i = 1, #r, 2 do
    v[#v + 1] = val(r[i])
    t[#t + 1] = tonumber(r[i + 1])
  end
  dc = {t = t, v = v, from = lo, l = 1, r = 0, cnt = {}, d = 0, qlo = nil, qhi = nil}
end
local function dc_added(mt, member)
  if dc ~= nil then
    local n = #dc.t
    if mt >= dc.from and (n == 0 or mt >= dc.t[n]) then
      dc.t[n + 1], dc.v[n + 1] = mt, val(member)
    else
      dc = nil
    end
  end
end
local function dc_distinct(lo, hi)
  if dc == nil or lo < dc.from then dc_load(lo) end
  local t, v, cnt = dc.t, dc.v, dc.cnt
  if dc.qlo ~= nil and (lo < dc.qlo or hi < dc.qhi) then -- backwards: start the window over
    dc.l, dc.r, dc.d = 1, 0, 0
    cnt = {}
    dc.cnt = cnt
  end
  while dc.l <= #t and t[dc.l] < lo do -- members leaving (or never in) the window
    if dc.l <= dc.r then
      local x = v[dc.l]
      cnt[x] = cnt[x] - 1
      if cnt[x] == 0 then dc.d = dc.d - 1 end
    end
    dc.l = dc.l + 1
  end
  if dc.r < dc.l - 1 then dc.r = dc.l - 1 end
  while dc.r < #t and t[dc.r + 1] <= hi do -- members entering it
    dc.r = dc.r + 1
    local x = v[dc.r]
    local c = cnt[x] or 0
    if c == 0 then dc.d = dc.d + 1 end
    cnt[x] = c + 1
  end
  dc.qlo, dc.qhi = lo, hi
  return dc.d
end
local function aggregate(slo, shi, skip, own, nlo, nhi)
  if agg == OP_DISTINCT and not skip then return dc_distinct(nlo, nhi) end
  if agg == OP_COUNT then
    local c = redis.call('ZCOUNT', z, slo, shi)
    if skip then c = c - 1 end
    return c
  end
  local ms = redis.call('ZRANGEBYSCORE', z, slo, shi)
  local n, sum, seen, d, k, same = 0, 0, {}, 0, 0, 0
  for i = 1, #ms do
    if ms[i] ~= skip then
      local v = val(ms[i])
      n = n + 1
      if agg == OP_DISTINCT then
        if not seen[v] then seen[v] = true; d = d + 1 end
      elseif agg == OP_SUM or agg == OP_AVG then
        local x = tonumber(v)
        if x and x == x then sum = sum + x end
      elseif agg == OP_SHARE then
        if v == own then same = same + 1 end
      elseif v == tostring(k) then
        k = k + 1
      end
    end
  end
  if agg == OP_DISTINCT then return d end
  if agg == OP_SUM then return sum end
  if agg == OP_AVG then if n == 0 then return nil end return sum / n end
  if agg == OP_SHARE then if n == 0 then return nil end return same * 100 / n end
  return k
end
local function one(member, mt, evidence)
  local ms = fmt(mt)
  local paf = af
  if maxt ~= nil and mt < maxt - ttl then
    return {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, '0', 0, 0, 0, 0, 0}
  end
  touched = true
  local prev_maxt = maxt
  local added = redis.call('ZADD', z, 'NX', ms, member)
  if added == 0 and pruned_below ~= nil and (pruned_done == nil or pruned_below > pruned_done) then
    -- Present only because its deletion is pending: as if deleted and added again.
    local old = tonumber(redis.call('ZSCORE', z, member))
    if old < pruned_below then
      redis.call('ZADD', z, 'XX', ms, member)
      dc = nil
      if hz == nil or old > hz then hz, hz_dirty = old, true end
      added = 1
      card = card - 1
    end
  end
  card = card + added
  if added == 1 then dc_added(mt, member) end
  -- the newest member's time (a replay keeps its member's first time: not newer)
  if added == 1 and (maxt == nil or mt > maxt) then maxt = mt end
  if pruned_below == nil or maxt - ttl > pruned_below then pruned_below = maxt - ttl end
  local dropped = 0
  if card > cap then prune_now() end
  if card > cap then
    dropped = card - cap
    local gone = redis.call('ZRANGE', z, dropped - 1, dropped - 1, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', z, 0, dropped - 1)
    dc = nil
    card = cap
    if #gone > 0 and (hz == nil or tonumber(gone[2]) > hz) then
      hz = tonumber(gone[2])
      hz_dirty = true
    end
  end
  if added == 1 and maxev > 0 and evidence ~= '' then pending[#pending + 1] = evidence end
  if added == 1 or dropped > 0 then tally_stale = true end
  local count, first, last = 0, 0, 0
  if full then
    local lo = lo_of(mt - w)
    count = redis.call('ZCOUNT', z, lo, ms)
    if count > 0 then
      first = tonumber(redis.call('ZRANGEBYSCORE', z, lo, ms, 'WITHSCORES', 'LIMIT', 0, 1)[2])
      last = tonumber(redis.call('ZREVRANGEBYSCORE', z, ms, lo, 'WITHSCORES', 'LIMIT', 0, 1)[2])
    end
  end
  local own = val(member)
  local crossed, cfirst, clast, ccount, cvalue, csup, passed = 0, 0, 0, 0, 0, 0, false
  local met_at = 0
  local present = added == 1 and dropped == 0
  if nterm > 0 and not present then
    local sc = redis.call('ZSCORE', z, member) -- kept, and not pending deletion
    present = sc and tonumber(sc) >= pruned_below
  end
  if nterm > 0 and present then
    local later
    if agg == OP_SHARE or (added == 1 and (prev_maxt == nil or mt > prev_maxt)) then
      -- SHARE looks at the add's own window; a new newest member has nothing after it.
      later = {member, ms}
    else
      later = redis.call('ZRANGEBYSCORE', z, ms, fmt(mt + w), 'WITHSCORES', 'LIMIT', 0, 64)
    end
    local prev = nil
    for i = 2, #later, 2 do
      local s = tonumber(later[i])
      if s ~= prev then
        prev = s
        local nlo = lo_num(s - w)
        local slo, shi = fmt(nlo), fmt(s)
        local with = nil
        if added == 1 then
          with = aggregate(slo, shi, nil, own, nlo, s)
        else
          local hzn = hz_now()
          if hzn == nil or s - w > hzn then with = aggregate(slo, shi, nil, own, nlo, s) end
        end
        if with and holds(with) then
          if not passed then met_at = s end
          passed = true
          local without = nil
          if agg ~= OP_SHARE then without = aggregate(slo, shi, member, own) end
          local f = tonumber(redis.call('ZRANGEBYSCORE', z, slo, shi, 'WITHSCORES',
                                        'LIMIT', 0, 1)[2])
          local due = af ~= nil and f > al + sup
          if due or not (without and holds(without)) then
            local same = af ~= nil and f == af and s == al
            local overlaps = af ~= nil and f <= al + sup and s >= af
            if same or not overlaps then
              crossed, cfirst, clast, cvalue = 1, f, s, with
              ccount = redis.call('ZCOUNT', z, slo, shi)
              csup, nsup = nsup, 0
              af, al, a_dirty = f, s, true
              break
            end
          end
        end
      end
    end
  end
  if crossed == 0 and passed and added == 1 and af ~= nil then
    nsup, a_dirty = nsup + 1, true
  end
  if not full and crossed == 0 and not passed and paf == nil and dropped == 0 and
     (maxev == 0 or ev_if_crossed) then
    return added -- nothing to report (a call of several): the reply is only `added`
  end
  local res = {added, count, first, last, dropped, crossed, cfirst, clast, 0, ccount,
               string.format('%.17g', cvalue), csup, 0, 0, 0, met_at}
  if paf ~= nil then res[13], res[14] = 1, paf end
  if passed then res[15] = 1 end
  if maxev > 0 and (crossed == 1 or not ev_if_crossed) then
    push_evidence()
    local ev = redis.call('LRANGE', e, 0, maxev - 1)
    for i = 1, #ev do res[#res + 1] = ev[i] end
  end
  return res
end
local out = {}
-- COUNT and DISTINCT, several adds: the leading adds that only append (each newer than every
-- member, not there yet, the key under its cap, the condition not met with it: nothing to
-- report) are added with one ZMSCORE and one ZADD, their windows' aggregates slid locally
-- over one read of the members leaving them, instead of an add and an aggregate each. Exactly
-- what one() would do for them; the first add that does anything else, and all after it, go
-- through one().
-- DISTINCT keeps, in KEYS[5] (:t), a tally of the newest member's window: 'v' .. value ->
-- members with it, 'd' -> the values with one or more, 'max' -> the newest time it is for.
-- Only this path reads or writes it; one() deletes it when it changes the members, and a
-- tally whose 'max' is not the key's newest time is built again from the window.
-- The leading adds that could only append: their count and times.
local function appendable()
  local k, prev, seen, names, ts = 0, maxt, {}, {}, {}
  for i = 1, #members do
    local m, mt = members[i][1], tonumber(members[i][2])
    if (prev ~= nil and mt <= prev) or seen[m] or card + i > cap then break end
    prev, seen[m], names[i], ts[i], k = mt, true, m, mt, i
  end
  if k < 2 then return 0, ts end
  local sc = redis.call('ZMSCORE', z, unpack(names, 1, k))
  for i = 1, k do
    if sc[i] then return i - 1, ts end
  end
  return k, ts
end
-- COUNT: how many of the k adds leave the condition unmet.
local function count_prefix(k, ts)
  local t1, tk = ts[1], ts[k]
  -- members before the call at or after the first window's start; those that leave later
  -- windows, in time order
  local before = redis.call('ZCOUNT', z, fmt(t1 - w), '+inf')
  local leaving = {}
  if tk - w > t1 - w then
    local r = redis.call('ZRANGEBYSCORE', z, fmt(t1 - w), '(' .. fmt(tk - w), 'WITHSCORES')
    for i = 2, #r, 2 do leaving[#leaving + 1] = tonumber(r[i]) end
  end
  local gone, first_in = 0, 1 -- leaving[] passed; the oldest of this call's adds in the window
  for i = 1, k do
    local mt = ts[i]
    while gone < #leaving and leaving[gone + 1] < mt - w do gone = gone + 1 end
    while ts[first_in] < mt - w do first_in = first_in + 1 end
    if holds(before - gone + i - first_in + 1) then return i - 1 end
  end
  return k
end
-- DISTINCT: as count_prefix, on the tally; writes the tally as the k adds leave it when it
-- takes them all.
local function distinct_prefix(k, ts)
  local vs = {}
  for i = 1, k do vs[i] = 'v' .. val(members[i][1]) end
  -- the members before the call that leave the windows of the adds, in time order
  local lo0 = -math.huge
  if maxt ~= nil then lo0 = maxt - w end
  local leave_v, leave_t = {}, {}
  if maxt ~= nil and ts[k] - w > lo0 then
    local r = redis.call('ZRANGEBYSCORE', z, fmt(lo0), '(' .. fmt(ts[k] - w), 'WITHSCORES')
    for i = 1, #r, 2 do
      leave_v[#leave_v + 1] = 'v' .. val(r[i])
      leave_t[#leave_t + 1] = tonumber(r[i + 1])
    end
  end
  local fields, want = {'max', 'd'}, {}
  for _, list in ipairs({vs, leave_v}) do
    for _, f in ipairs(list) do
      if not want[f] then want[f] = true; fields[#fields + 1] = f end
    end
  end
  local got = {} -- (in chunks: unpack has a limit, and the leaving members can be many)
  for i = 1, #fields, 1000 do
    local part = redis.call('HMGET', tally, unpack(fields, i, math.min(i + 999, #fields)))
    for j = 1, #part do got[i + j - 1] = part[j] end
  end
  local cnt, d, rebuilt = {}, 0, false
  if maxt ~= nil and tonumber(got[1]) == maxt then
    d = tonumber(got[2])
    for j = 3, #fields do cnt[fields[j]] = tonumber(got[j]) or 0 end
  else -- none, or not this window's: from the window itself
    rebuilt = true
    if maxt ~= nil then
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, fmt(lo0), fmt(maxt))) do
        local f = 'v' .. val(m)
        local c = (cnt[f] or 0) + 1
        cnt[f] = c
        if c == 1 then d = d + 1 end
      end
    end
  end
  local changed, li, first_in = {}, 0, 1
  local function bump(f, by)
    changed[f] = true
    local c = (cnt[f] or 0) + by
    cnt[f] = c
    if by > 0 and c == 1 then d = d + 1 end
    if by < 0 and c == 0 then d = d - 1 end
  end
  for i = 1, k do
    bump(vs[i], 1)
    local lo = ts[i] - w
    while li < #leave_t and leave_t[li + 1] < lo do li = li + 1; bump(leave_v[li], -1) end
    while ts[first_in] < lo do bump(vs[first_in], -1); first_in = first_in + 1 end
    if holds(d) then
      -- This add does more than append: one() adds it, which makes any tally stale, so
      -- none is written.
      tally_stale = true
      return i - 1
    end
  end
  if rebuilt then
    redis.call('DEL', tally)
    changed = cnt
  end
  local hs, gone = {'max', fmt(ts[k]), 'd', fmt(d)}, {}
  for f in pairs(changed) do
    local c = cnt[f] or 0
    if c > 0 then hs[#hs + 1] = f; hs[#hs + 1] = fmt(c) else gone[#gone + 1] = f end
  end
  for i = 1, #hs, 1000 do redis.call('HSET', tally, unpack(hs, i, math.min(i + 999, #hs))) end
  for i = 1, #gone, 1000 do redis.call('HDEL', tally, unpack(gone, i, math.min(i + 999, #gone))) end
  redis.call('PEXPIRE', tally, ttl)
  return k
end
local function append_only()
  if (agg ~= OP_COUNT and agg ~= OP_DISTINCT) or full or nterm == 0 or
     (maxev > 0 and not ev_if_crossed) then return 0 end
  local k, ts = appendable()
  if k < 2 then return 0 end
  if agg == OP_COUNT then k = count_prefix(k, ts) else k = distinct_prefix(k, ts) end
  if k < 1 then return 0 end
  local za = {}
  for i = 1, k do
    za[#za + 1] = members[i][2]
    za[#za + 1] = members[i][1]
    if maxev > 0 and members[i][3] ~= '' then pending[#pending + 1] = members[i][3] end
    if af == nil then
      out[i] = 1
    else -- the earlier alert is reported with every add (as one() does)
      out[i] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, '0', 0, 1, af, 0, 0}
    end
  end
  redis.call('ZADD', z, unpack(za))
  touched = true
  card = card + k
  maxt = ts[k]
  if pruned_below == nil or maxt - ttl > pruned_below then pruned_below = maxt - ttl end
  return k
end
for i = append_only() + 1, #members do
  out[i] = one(members[i][1], tonumber(members[i][2]), members[i][3])
end
if tally_stale and agg == OP_DISTINCT then redis.call('DEL', tally) end
prune_now()
if hz_dirty then redis.call('SET', hk, fmt(hz)) end
if a_dirty then redis.call('SET', a, fmt(af) .. ' ' .. fmt(al) .. ' ' .. fmt(nsup)) end
push_evidence()
if pushed then redis.call('LTRIM', e, 0, maxev - 1) end
if touched then
  redis.call('PEXPIRE', z, ttl)
  redis.call('PEXPIRE', e, ttl)
  -- The marks only where they exist (read at the start, or written now).
  if marks[2] or a_dirty then redis.call('PEXPIRE', a, ttl) end
  if marks[1] or hz_dirty then redis.call('PEXPIRE', hk, ttl) end
end
if ARGV[base] then return out end
return out[1]
