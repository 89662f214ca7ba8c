/* first_seen in the memory store: as src/state/lua/first_seen.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* The script's first_seen branch, step for step (redis_scripts.h). */
int kx__mem_first_seen(kx_store_memory *m, mem_win *w, const kx_window_add *op,
                       kx_window_result *res)
{
    size_t mlen = strlen(op->member);
    const char *sep = memchr(op->member, 0x1f, mlen);
    const char *id = op->member, *v = sep + 1;
    size_t ilen = (size_t)(sep - op->member), vlen = mlen - ilen - 1;
    uint64_t h = kx_hash64(v, vlen, 0);
    int64_t t = op->time_ms;
    int32_t at = kx__mem_seen_find(w, h, v, vlen);
    int64_t prev = at >= 0 ? w->seen[at].last : -1;
    int rc;
    if (at < 0 || prev < t - op->window_ms) {
        if (at < 0 && (rc = kx__mem_seen_append(w, h, v, vlen, &at)))
            return rc;
        mem_seen *e = &w->seen[at];
        if ((rc = kx__mem_seen_set_intro(e, id, ilen)))
            return rc;
        e->last = t;
        res->added = res->crossed = true;
    } else {
        mem_seen *e = &w->seen[at];
        res->crossed = e->ilen == ilen && memcmp(e->val + e->vlen, id, ilen) == 0;
        if (t > e->last)
            e->last = t;
    }
    /* Forget values last seen before (newest - ttl), then the least recently seen (ties: by
     * value bytes, Redis' order) past the cap. */
    int64_t maxt = INT64_MIN, limit;
    for (uint32_t i = 0; i < w->seen_n; i++)
        if (w->seen[i].last > maxt)
            maxt = w->seen[i].last;
    limit = maxt - op->ttl_ms;
    uint32_t live = 0;
    bool gone = false;
    for (uint32_t i = 0; i < w->seen_n; i++) {
        if (w->seen[i].last < limit) {
            w->seen[i].last = INT64_MIN;
            gone = true;
        } else {
            live++;
        }
    }
    uint32_t cap =
        m->base.member_cap < KX__STORE_SEEN_CAP ? m->base.member_cap : KX__STORE_SEEN_CAP;
    uint32_t dropped = live > cap ? live - cap : 0;
    for (uint32_t d = 0; d < dropped; d++) {
        int32_t old = -1;
        for (uint32_t i = 0; i < w->seen_n; i++) {
            const mem_seen *e = &w->seen[i];
            if (e->last == INT64_MIN)
                continue;
            if (old < 0 || e->last < w->seen[old].last ||
                (e->last == w->seen[old].last &&
                 kx__mem_member_cmp(e->val, e->vlen, w->seen[old].val, w->seen[old].vlen) < 0))
                old = (int32_t)i;
        }
        w->seen[old].last = INT64_MIN;
        gone = true;
    }
    if (gone)
        kx__mem_seen_compact(w);
    if (dropped) {
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&m->rl_members, KX_LOG_WARN, "state",
                       "key \"%s\" over %u values: dropped the %u least recently seen", op->key,
                       cap, dropped);
    }
    res->count = res->cross_count = w->seen_n;
    res->first_ms = res->last_ms = res->cross_first_ms = res->cross_last_ms = t;
    res->cross_value = (double)prev;
    return 0;
}
