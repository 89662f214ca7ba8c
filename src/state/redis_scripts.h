/*
 * The Lua script behind kx_store_window_add on Redis. One script per update makes the update
 * atomic (no other client sees the window half-updated) and costs one round trip, however
 * many commands it runs. store_memory.c implements the same steps in the same order; change
 * both together (tests/unit/test_store.c runs one suite against both).
 *
 * KEYS[1]  PREFIX{KEY}:z  sorted set, member -> event time (ms)
 * KEYS[2]  PREFIX{KEY}:e  list of evidence blobs, most recent first
 * KEYS[3]  PREFIX{KEY}:a  the last window reported as crossed, "first last" (ms)
 *   (the {KEY} hash tag puts both in one Redis Cluster slot, as a script requires)
 * ARGV     member, time, window, ttl, max_evidence, member_cap, cross_at [, evidence]
 * Returns  {added, count, first, last, dropped, crossed, cross_first, cross_last, evidence...}
 *
 * Steps: ZADD NX (a member already present keeps its first time: replays do not count
 * twice); prune members older than (newest time in the key - ttl), so events up to
 * ttl - window late still see their whole window; drop the oldest past member_cap; push the
 * evidence only for a new member; refresh both TTLs; count [time - window, time] inclusive;
 * with cross_at > 0, find the earliest window ending at a member time in [time, time +
 * window] (at most 64 members) whose count is exactly cross_at: the window this add
 * completed, so a late event still raises the alert an in-order one would have. A window
 * that overlaps the last reported one (and is not that same window) is passed over: one
 * burst completed out of order reports one window, not one per overlapping window.
 * Times are integers below 2^53 (checked by the caller), exact as scores; '%d' formats them
 * without the exponent tostring() would use.
 */
#ifndef KLAXON_STATE_REDIS_SCRIPTS_H
#define KLAXON_STATE_REDIS_SCRIPTS_H

static const char kx__redis_window_add_lua[] =
    "local z, e, a = KEYS[1], KEYS[2], KEYS[3]\n"
    "local t = tonumber(ARGV[2])\n"
    "local w = tonumber(ARGV[3])\n"
    "local ttl = tonumber(ARGV[4])\n"
    "local maxev = tonumber(ARGV[5])\n"
    "local cap = tonumber(ARGV[6])\n"
    "local added = redis.call('ZADD', z, 'NX', ARGV[2], ARGV[1])\n"
    "local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')\n"
    "local maxt = tonumber(top[2])\n"
    "redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. string.format('%d', maxt - ttl))\n"
    "local dropped = 0\n"
    "local card = redis.call('ZCARD', z)\n"
    "if card > cap then\n"
    "  dropped = card - cap\n"
    "  redis.call('ZREMRANGEBYRANK', z, 0, dropped - 1)\n"
    "end\n"
    "if added == 1 and maxev > 0 and ARGV[8] then\n"
    "  redis.call('LPUSH', e, ARGV[8])\n"
    "  redis.call('LTRIM', e, 0, maxev - 1)\n"
    "end\n"
    "redis.call('PEXPIRE', z, ttl)\n"
    "redis.call('PEXPIRE', e, ttl)\n"
    "redis.call('PEXPIRE', a, ttl)\n"
    "local lo = string.format('%d', t - w)\n"
    "local count = redis.call('ZCOUNT', z, lo, ARGV[2])\n"
    "local first, last = 0, 0\n"
    "if count > 0 then\n"
    "  first = tonumber(redis.call('ZRANGEBYSCORE', z, lo, ARGV[2], 'WITHSCORES',\n"
    "                              'LIMIT', 0, 1)[2])\n"
    "  last = tonumber(redis.call('ZREVRANGEBYSCORE', z, ARGV[2], lo, 'WITHSCORES',\n"
    "                             'LIMIT', 0, 1)[2])\n"
    "end\n"
    "local crossed, cfirst, clast = 0, 0, 0\n"
    "local cross = tonumber(ARGV[7])\n"
    "if cross > 0 then\n"
    "  local af, al = nil, nil\n"
    "  local mark = redis.call('GET', a)\n"
    "  if mark then\n"
    "    local sp = string.find(mark, ' ')\n"
    "    af, al = tonumber(string.sub(mark, 1, sp - 1)), tonumber(string.sub(mark, sp + 1))\n"
    "  end\n"
    "  local later = redis.call('ZRANGEBYSCORE', z, ARGV[2], string.format('%d', t + w),\n"
    "                           'WITHSCORES', 'LIMIT', 0, 64)\n"
    "  local prev = nil\n"
    "  for i = 2, #later, 2 do\n"
    "    local s = tonumber(later[i])\n"
    "    if s ~= prev then\n"
    "      prev = s\n"
    "      local slo, shi = string.format('%d', s - w), string.format('%d', s)\n"
    "      if redis.call('ZCOUNT', z, slo, shi) == cross then\n"
    "        local f = tonumber(redis.call('ZRANGEBYSCORE', z, slo, shi, 'WITHSCORES',\n"
    "                                      'LIMIT', 0, 1)[2])\n"
    "        local same = af ~= nil and f == af and s == al\n"
    "        local overlaps = af ~= nil and f <= al and s >= af\n"
    "        if same or not overlaps then\n"
    "          crossed, cfirst, clast = 1, f, s\n"
    "          redis.call('SET', a, string.format('%d %d', f, s), 'PX', ttl)\n"
    "          break\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local res = {added, count, first, last, dropped, crossed, cfirst, clast}\n"
    "if maxev > 0 then\n"
    "  local ev = redis.call('LRANGE', e, 0, maxev - 1)\n"
    "  for i = 1, #ev do res[#res + 1] = ev[i] end\n"
    "end\n"
    "return res\n";

#endif
