/* The shared watermark in the memory store: as src/state/lua/watermark.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* ---- shared watermark: entries "topic/partition" -> newest time (last), moved (oc_since) */

int kx__mem_watermark(kx_store *s, const kx_watermark_op *op, kx_watermark_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_watermark(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m), t = op->now_ms;
    kx_metric_inc(KX_M_STORE_OPS);
    mem_win *w = kx__mem_lookup(m, op->key, now);
    if (!w && op->n > 0 && (rc = kx__mem_key(m, op->key, now, op->ttl_ms, &w))) {
        if (rc != -ENOSPC)
            return rc;
        /* The key table is full: no shared watermark (the caller judges by its own). */
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        w = NULL;
    }
    bool known = false, gone = false;
    int64_t wm = 0;
    if (w) {
        for (size_t i = 0; i < op->n; i++) {
            size_t len = strlen(op->mine[i].name);
            uint64_t h = kx_hash64(op->mine[i].name, len, 0);
            int32_t at = kx__mem_seen_find(w, h, op->mine[i].name, len);
            bool fresh = at < 0;
            if (fresh && (rc = kx__mem_seen_append(w, h, op->mine[i].name, len, &at)))
                return rc;
            mem_seen *e = &w->seen[at];
            if (fresh || op->mine[i].max_ms > e->last) {
                e->last = op->mine[i].max_ms;
                e->oc_since = t;
            } else if (op->mine[i].live) {
                e->oc_since = t;
            }
        }
        for (uint32_t i = 0; i < w->seen_n; i++) {
            mem_seen *e = &w->seen[i];
            if (t - e->oc_since > op->ttl_ms) {
                e->last = INT64_MIN;
                gone = true;
                continue;
            }
            int64_t eff = e->last;
            if (t - e->oc_since > op->quiet_ms) {
                eff = e->last + (t - e->oc_since - op->quiet_ms);
                if (eff < t - op->quiet_ms)
                    eff = t - op->quiet_ms;
            }
            if (!known || eff < wm)
                wm = eff;
            known = true;
        }
        if (gone)
            kx__mem_seen_compact(w);
        if (w->seen_n > 0)
            w->expire_at = now + op->ttl_ms;
    }
    kx__mem_enter(m);
    cb(ud, 0, known, wm);
    kx__mem_leave(m);
    return 0;
}
