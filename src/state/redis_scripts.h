/*
 * The Lua script behind kx_store_window_add on Redis. One script per update makes the update
 * atomic (no other client sees the window half-updated) and costs one round trip, however
 * many commands it runs. store_memory.c implements the same steps in the same order; change
 * both together (tests/unit/test_store.c runs one suite against both).
 *
 * KEYS[1]  PREFIX{KEY}:z  sorted set, member -> event time (ms)
 * KEYS[2]  PREFIX{KEY}:e  list of evidence blobs, most recent first
 * KEYS[3]  PREFIX{KEY}:a  the last window reported as crossed, "first last" (ms)
 * KEYS[4]  PREFIX{KEY}:h  the newest time pruned from :z (by age or the member cap)
 *   (the {KEY} hash tag puts all three in one Redis Cluster slot, as a script requires)
 * ARGV     member, time, window, ttl, max_evidence, member_cap, agg, suppress, evidence
 *          ("" = none), nterms, then op and value per term
 * Returns  {added, count, first, last, dropped, crossed, cross_first, cross_last, late,
 *           cross_count, cross_value (a string: %.17g), evidence...}
 *
 * Steps: a member older than (newest time in the key - ttl) is refused as late, nothing
 * changed; ZADD NX (a member already present keeps its first time: replays do not count
 * twice); prune members older than (newest - ttl), so events up to ttl - window late still
 * see their whole window; drop the oldest past member_cap; push the evidence only for a new
 * member; refresh the TTLs; count [time - window, time] inclusive; with a condition, find the
 * earliest window ending at a member time in [time, time + window] (at most 64 members) that
 * satisfies it with this member and not without it: the window this add completed, so a late
 * event still raises the alert an in-order one would have (SHARE: the add's own window, if
 * it satisfies the condition). A window that starts after the last reported one's end plus
 * suppress is due even if it held without this member: a condition that stays met (a dense,
 * ongoing attack) alerts again once per suppress period instead of never. A window that overlaps [last reported first, last reported
 * last + suppress] (and is not that same window) is passed over: one burst completed out of
 * order reports one window, and a group alerts again only after its suppress period.
 * A re-added member (a re-delivered event) never reports a window that starts at or before
 * the newest pruned time: that window lost members, and would otherwise "cross" now although
 * in time order it never did (a new incident no single in-order run raises). A new late
 * member still may: the lateness contract.
 * Aggregates (kx_agg in klaxon/store.h) read the value after a member's first 0x1f byte and
 * walk members in ZRANGEBYSCORE order, the order store_memory.c uses, so sums are identical.
 * Times are integers below 2^53 (checked by the caller), exact as scores; '%d' formats them
 * without the exponent tostring() would use.
 */
#ifndef KLAXON_STATE_REDIS_SCRIPTS_H
#define KLAXON_STATE_REDIS_SCRIPTS_H

static const char kx__redis_window_add_lua[] =
    "local z, e, a, hk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]\n"
    "local t = tonumber(ARGV[2])\n"
    "local w = tonumber(ARGV[3])\n"
    "local ttl = tonumber(ARGV[4])\n"
    "local maxev = tonumber(ARGV[5])\n"
    "local cap = tonumber(ARGV[6])\n"
    "local agg = tonumber(ARGV[7])\n"
    "local sup = tonumber(ARGV[8])\n"
    "local nterm = tonumber(ARGV[10])\n"
    "local function fmt(x) return string.format('%d', x) end\n"
    "local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')\n"
    "if #top > 0 and t < tonumber(top[2]) - ttl then\n"
    "  return {0, 0, 0, 0, 0, 0, 0, 0, 1, 0, '0'}\n"
    "end\n"
    "local added = redis.call('ZADD', z, 'NX', ARGV[2], ARGV[1])\n"
    "top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')\n"
    "local maxt = tonumber(top[2])\n"
    "local gone = redis.call('ZREVRANGEBYSCORE', z, '(' .. fmt(maxt - ttl), '-inf', 'WITHSCORES',\n"
    "                        'LIMIT', 0, 1)\n"
    "redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. fmt(maxt - ttl))\n"
    "local dropped = 0\n"
    "local card = redis.call('ZCARD', z)\n"
    "if card > cap then\n"
    "  dropped = card - cap\n"
    "  gone = redis.call('ZRANGE', z, dropped - 1, dropped - 1, 'WITHSCORES')\n"
    "  redis.call('ZREMRANGEBYRANK', z, 0, dropped - 1)\n"
    "end\n"
    "local hz = tonumber(redis.call('GET', hk))\n"
    "if #gone > 0 and (hz == nil or tonumber(gone[2]) > hz) then\n"
    "  hz = tonumber(gone[2])\n"
    "  redis.call('SET', hk, fmt(hz))\n"
    "end\n"
    "if added == 1 and maxev > 0 and ARGV[9] ~= '' then\n"
    "  redis.call('LPUSH', e, ARGV[9])\n"
    "  redis.call('LTRIM', e, 0, maxev - 1)\n"
    "end\n"
    "redis.call('PEXPIRE', z, ttl)\n"
    "redis.call('PEXPIRE', e, ttl)\n"
    "redis.call('PEXPIRE', a, ttl)\n"
    "redis.call('PEXPIRE', hk, ttl)\n"
    "local lo = fmt(t - w)\n"
    "local count = redis.call('ZCOUNT', z, lo, ARGV[2])\n"
    "local first, last = 0, 0\n"
    "if count > 0 then\n"
    "  first = tonumber(redis.call('ZRANGEBYSCORE', z, lo, ARGV[2], 'WITHSCORES', 'LIMIT', 0, "
    "1)[2])\n"
    "  last = tonumber(redis.call('ZREVRANGEBYSCORE', z, ARGV[2], lo, 'WITHSCORES', 'LIMIT', 0, "
    "1)[2])\n"
    "end\n"
    "local function val(m)\n"
    "  local i = string.find(m, '\\31', 1, true)\n"
    "  if i then return string.sub(m, i + 1) end\n"
    "  return ''\n"
    "end\n"
    "local function holds(v)\n"
    "  for i = 0, nterm - 1 do\n"
    "    local op, x = tonumber(ARGV[11 + 2 * i]), tonumber(ARGV[12 + 2 * i])\n"
    "    local ok\n"
    "    if op == 0 then ok = v > x elseif op == 1 then ok = v >= x\n"
    "    elseif op == 2 then ok = v < x elseif op == 3 then ok = v <= x\n"
    "    elseif op == 4 then ok = v == x else ok = v ~= x end\n"
    "    if not ok then return false end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local own = val(ARGV[1])\n"
    "local function aggregate(slo, shi, skip)\n"
    "  if agg == 0 then\n"
    "    local c = redis.call('ZCOUNT', z, slo, shi)\n"
    "    if skip then c = c - 1 end\n"
    "    return c\n"
    "  end\n"
    "  local ms = redis.call('ZRANGEBYSCORE', z, slo, shi)\n"
    "  local n, sum, seen, d, k, same = 0, 0, {}, 0, 0, 0\n"
    "  for i = 1, #ms do\n"
    "    if ms[i] ~= skip then\n"
    "      local v = val(ms[i])\n"
    "      n = n + 1\n"
    "      if agg == 1 then\n"
    "        if not seen[v] then seen[v] = true; d = d + 1 end\n"
    "      elseif agg == 2 or agg == 3 then\n"
    "        local x = tonumber(v)\n"
    "        if x and x == x then sum = sum + x end\n"
    "      elseif agg == 4 then\n"
    "        if v == own then same = same + 1 end\n"
    "      elseif v == tostring(k) then\n"
    "        k = k + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if agg == 1 then return d end\n"
    "  if agg == 2 then return sum end\n"
    "  if agg == 3 then if n == 0 then return nil end return sum / n end\n"
    "  if agg == 4 then if n == 0 then return nil end return same * 100 / n end\n"
    "  return k\n"
    "end\n"
    "local crossed, cfirst, clast, ccount, cvalue = 0, 0, 0, 0, 0\n"
    "if nterm > 0 and redis.call('ZSCORE', z, ARGV[1]) then\n"
    "  local af, al = nil, nil\n"
    "  local mark = redis.call('GET', a)\n"
    "  if mark then\n"
    "    local sp = string.find(mark, ' ')\n"
    "    af, al = tonumber(string.sub(mark, 1, sp - 1)), tonumber(string.sub(mark, sp + 1))\n"
    "  end\n"
    "  local later\n"
    "  if agg == 4 then\n"
    "    later = {ARGV[1], ARGV[2]}\n"
    "  else\n"
    "    later = redis.call('ZRANGEBYSCORE', z, ARGV[2], fmt(t + w), 'WITHSCORES', 'LIMIT', 0, "
    "64)\n"
    "  end\n"
    "  local prev = nil\n"
    "  for i = 2, #later, 2 do\n"
    "    local s = tonumber(later[i])\n"
    "    if s ~= prev then\n"
    "      prev = s\n"
    "      local slo, shi = fmt(s - w), fmt(s)\n"
    "      local with = nil\n"
    "      if hz == nil or added == 1 or s - w > hz then with = aggregate(slo, shi, nil) end\n"
    "      if with and holds(with) then\n"
    "        local without = nil\n"
    "        if agg ~= 4 then without = aggregate(slo, shi, ARGV[1]) end\n"
    "        local f = tonumber(redis.call('ZRANGEBYSCORE', z, slo, shi, 'WITHSCORES',\n"
    "                                      'LIMIT', 0, 1)[2])\n"
    "        local due = af ~= nil and f > al + sup\n"
    "        if due or not (without and holds(without)) then\n"
    "          local same = af ~= nil and f == af and s == al\n"
    "          local overlaps = af ~= nil and f <= al + sup and s >= af\n"
    "          if same or not overlaps then\n"
    "            crossed, cfirst, clast, cvalue = 1, f, s, with\n"
    "            ccount = redis.call('ZCOUNT', z, slo, shi)\n"
    "            redis.call('SET', a, fmt(f) .. ' ' .. fmt(s), 'PX', ttl)\n"
    "            break\n"
    "          end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local res = {added, count, first, last, dropped, crossed, cfirst, clast, 0, ccount,\n"
    "             string.format('%.17g', cvalue)}\n"
    "if maxev > 0 then\n"
    "  local ev = redis.call('LRANGE', e, 0, maxev - 1)\n"
    "  for i = 1, #ev do res[#res + 1] = ev[i] end\n"
    "end\n"
    "return res\n";

#endif
