/*
 * The Lua script behind every kx_store op on Redis. One script per update makes the update
 * atomic (no other client sees the window half-updated) and costs one round trip, however
 * many commands it runs. Its text is in src/state/lua/, one file per kind of state, each
 * paired with the memory backend's file of the same kind; change both together
 * (tests/unit/test_store.c runs one suite against both). `agg` (ARGV[7]) picks the branch by
 * the OP_* numbers below: the sliding windows, first_seen, baseline, absence touch and due,
 * closing-window touch and due, the shared watermark, claims (each file says what its keys
 * hold; docs/internals/state.md).
 *
 * KEYS[1]  PREFIX{KEY}:z  sorted set, member -> event time (ms)
 * KEYS[2]  PREFIX{KEY}:e  list of evidence blobs, most recent first
 * KEYS[3]  PREFIX{KEY}:a  the last window reported as crossed, "first last nsup" (ms, ms, and
 *                         the adds since that found the condition met and reported nothing)
 * KEYS[4]  PREFIX{KEY}:h  the newest time pruned from :z (by age or the member cap)
 * KEYS[5]  PREFIX{KEY}:t  absence: the answers of touches that a retry must get again;
 *                         DISTINCT windows: the tally of the newest window's values
 *   (each file says what its branch keeps in each; the {KEY} hash tag puts all five in one
 *   Redis Cluster slot, as a script requires)
 * ARGV     1 member, 2 time, 3 window, 4 ttl, 5 max_evidence, 6 member_cap, 7 agg,
 *          8 suppress, 9 evidence ("" = none), 10 nterms, then op and value per term,
 *          then (n = 2 * nterms) 11+n deviations, 12+n history (baseline), 13+n "1" when
 *          evidence is wanted only with a crossing, and for several members of one key
 *          14+n the count of further members and a (member, time, evidence) triplet each.
 *          Absence and closing ops use the first ten: 1 group, 2 time or watermark,
 *          (several absence or closing touches of one key: then 11 the count of further
 *          touches and a (group, time, mode or identity, payload, token) quintuplet each; the
 *          reply is one element per touch: absence 0 or {outcome, since, payload}, closing 0
 *          or 1) 3 timespan, 4 keep or ttl, 5 limit (due), 6 token (due and absence touch;
 *          "0" = none), 7 agg,
 *          8 identity (closing touch) or mode (touch: 'x' extend, 'r' replace), 9 payload (touch),
 * 10 nterms, then (closing due) the terms. Returns  {added, count, first, last, dropped, crossed,
 * cross_first, cross_last, late, cross_count, cross_value (a string: %.17g), suppressed,
 * prev_alerted, prev_alert_first, met, met_time, evidence...}; for several members an array of
 * those (count/first/last 0; a member with nothing to report: its `added` alone); touch {outcome,
 * since[, payload]}; due {n, last1, payload1, ...}; closing touch {late}; closing due {n, more,
 * start1, count1, payload1, ...}.
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
 * ongoing attack) alerts again once per suppress period instead of never. A window that overlaps
 * [last reported first, last reported last + suppress] (and is not that same window) is passed
 * over: one burst completed out of order reports one window, and a group alerts again only after
 * its suppress period. A re-added member (a re-delivered event) never reports a window that starts
 * at or before the newest pruned time: that window lost members, and would otherwise "cross" now
 * although in time order it never did (a new incident no single in-order run raises). A new late
 * member still may: the lateness contract.
 * Aggregates (kx_agg in klaxon/store.h) read the value after a member's first 0x1f byte and
 * walk members in ZRANGEBYSCORE order, the order src/state/memory/window.c uses, so sums are
 * identical. Times are integers below 2^53 (checked by the caller), exact as scores; '%d' formats
 * them without the exponent tostring() would use.
 */
#ifndef KLAXON_STATE_REDIS_SCRIPTS_H
#define KLAXON_STATE_REDIS_SCRIPTS_H

#include "state/redis_lua.h"
#include "state/store_impl.h"

/* The suffixes of the keys every op names, KEYS[1..5] in this order. */
#define KX__REDIS_NKEYS 5u
static const char kx__redis_key_kinds[KX__REDIS_NKEYS] = {'z', 'e', 'a', 'h', 't'};

/* The script's operations (ARGV[7]): the sliding-window aggregates are kx_agg's values, then
 * the other ops. One list: the C enum and the script's OP_* locals both come from it. */
#define KX__REDIS_OPS(X)                                                                           \
    X(COUNT, 0)                                                                                    \
    X(DISTINCT, 1)                                                                                 \
    X(SUM, 2)                                                                                      \
    X(AVG, 3)                                                                                      \
    X(SHARE, 4)                                                                                    \
    X(ORDERED, 5)                                                                                  \
    X(FIRST_SEEN, 6)                                                                               \
    X(BASELINE, 7)                                                                                 \
    X(ABSENCE_TOUCH, 8)                                                                            \
    X(ABSENCE_DUE, 9)                                                                              \
    X(CLOSE_TOUCH, 10)                                                                             \
    X(CLOSE_DUE, 11)                                                                               \
    X(WATERMARK, 12)                                                                               \
    X(CLAIM, 13)                                                                                   \
    X(LOG_CREATE, 14)                                                                              \
    X(LOG_KEEP, 15)

#define KX__REDIS_OP_ENUM(name, n) KX__REDIS_OP_##name = n,
typedef enum { KX__REDIS_OPS(KX__REDIS_OP_ENUM) } kx__redis_op;
#define KX__REDIS_OP_LUA(name, n) "local OP_" #name " = " #n "\n"

_Static_assert(KX__REDIS_OP_COUNT == (int)KX_AGG_COUNT &&
                   KX__REDIS_OP_DISTINCT == (int)KX_AGG_DISTINCT &&
                   KX__REDIS_OP_SUM == (int)KX_AGG_SUM && KX__REDIS_OP_AVG == (int)KX_AGG_AVG &&
                   KX__REDIS_OP_SHARE == (int)KX_AGG_SHARE &&
                   KX__REDIS_OP_ORDERED == (int)KX_AGG_ORDERED &&
                   KX__REDIS_OP_FIRST_SEEN == (int)KX_AGG_FIRST_SEEN &&
                   KX__REDIS_OP_BASELINE == (int)KX_AGG_BASELINE,
               "the script's aggregate ops are kx_agg's values");

/* The script: the OP_* locals, then src/state/lua/ (generated redis_lua.h, cmake/embed.cmake).
 * Loaded once per connection (SCRIPT LOAD), run by EVALSHA, loaded again on NOSCRIPT. */
static const char kx__redis_script[] = KX__REDIS_OPS(KX__REDIS_OP_LUA) KX__REDIS_LUA_BODY;

#endif
