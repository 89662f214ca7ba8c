-- klaxon's Redis script, part "common": the script's arguments and the helpers every branch uses (fmt, holds, several, answered, remember).
-- The parts run in one script, in the order of KX_REDIS_LUA_PARTS (src/CMakeLists.txt,
-- embedded by cmake/embed.cmake); OP_* come from klaxon's enum (src/state/redis_scripts.h). Change
-- this file and its memory twin together: tests/unit/test_store.c runs one suite on both.
local z, e, a, hk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = tonumber(ARGV[2])
local w = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local maxev = tonumber(ARGV[5])
local cap = tonumber(ARGV[6])
local agg = tonumber(ARGV[7])
local sup = tonumber(ARGV[8])
local nterm = tonumber(ARGV[10])
local function fmt(x) return string.format('%d', x) end
-- The condition's terms, parsed once per call (holds runs per window checked).
local term_op, term_x = {}, {}
for i = 0, (nterm or 0) - 1 do
  term_op[i], term_x[i] = tonumber(ARGV[11 + 2 * i]), tonumber(ARGV[12 + 2 * i])
end
local function holds(v)
  for i = 0, nterm - 1 do
    local op, x = term_op[i], term_x[i]
    local ok
    if op == 0 then ok = v > x elseif op == 1 then ok = v >= x
    elseif op == 2 then ok = v < x elseif op == 3 then ok = v <= x
    elseif op == 4 then ok = v == x else ok = v ~= x end
    if not ok then return false end
  end
  return true
end
-- The updates one call carries: the first (given), then ARGV[at] = the count of further ones
-- and `width` arguments each (several updates of one key, applied in order).
local function several(first, at, width)
  local out = {first}
  for i = 0, tonumber(ARGV[at] or '0') - 1 do
    local x = {}
    for j = 1, width do x[j] = ARGV[at + width * i + j] end
    out[#out + 1] = x
  end
  return out
end
-- A due question asked again (the same token, after a lost reply) gets the answer it had:
-- e holds the replies of the due calls that reported something (absence, closing).
local function answered(token)
  if token == '0' then return nil end
  local prev = redis.call('HGET', e, token)
  if prev then return cmsgpack.unpack(prev) end
  return nil
end
-- Keeps replies (token -> reply) in hash h for such retries, at most `most` of them (all
-- dropped when full), for 10 minutes: due answers in e, absence touch answers in KEYS[5].
local function remember(h, most, toks, replies)
  if #toks == 0 then return end
  if redis.call('HLEN', h) + #toks > most then redis.call('DEL', h) end
  local hs = {}
  for i = 1, #toks do
    hs[#hs + 1] = toks[i]
    hs[#hs + 1] = cmsgpack.pack(replies[i])
  end
  redis.call('HSET', h, unpack(hs))
  redis.call('PEXPIRE', h, 600000)
end
