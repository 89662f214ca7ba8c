/* Alert claims in the memory store: as src/state/lua/claim.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* ---- claims: the key's string heap holds the holder's name or "d" (done) ---- */

int kx__mem_claim(kx_store *s, const kx_claim_op *op, kx_claim_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_claim(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m);
    kx_metric_inc(KX_M_STORE_OPS);
    size_t hlen = strlen(op->holder);
    mem_win *w = kx__mem_lookup(m, op->key, now);
    bool done = w && w->str_len == 1 && w->str[0] == 'd';
    bool other = w && !done && (w->str_len != hlen || memcmp(w->str, op->holder, hlen));
    kx_claim_state st;
    int64_t ttl = 0;
    const char *set = NULL;
    if (done) {
        st = KX_CLAIM_DONE_STATE;
        ttl = w->expire_at - now;
    } else if (op->mode == KX_CLAIM_DONE) {
        st = KX_CLAIM_DONE_STATE;
        set = "d";
        ttl = op->keep_ms;
    } else if (other) {
        st = KX_CLAIM_HELD;
        ttl = w->expire_at - now;
    } else if (op->mode == KX_CLAIM_RELEASE) {
        st = KX_CLAIM_MINE;
        if (w) {
            size_t klen = strlen(op->key);
            kx__mem_tab_del_at(m, kx__mem_tab_find(m, op->key, klen, kx_hash64(op->key, klen, 0)));
        }
    } else {
        st = KX_CLAIM_MINE;
        set = op->holder;
        ttl = op->lease_ms;
    }
    if (set) {
        if (!w && (rc = kx__mem_key(m, op->key, now, ttl, &w))) {
            if (rc == -ENOSPC)
                kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
            return rc;
        }
        uint32_t off;
        w->str_len = 0;
        if ((rc = kx__mem_str_append(w, set, (uint32_t)strlen(set), &off))) {
            /* Leave no key that would read as another holder's claim. */
            size_t klen = strlen(op->key);
            kx__mem_tab_del_at(m, kx__mem_tab_find(m, op->key, klen, kx_hash64(op->key, klen, 0)));
            return rc;
        }
        w->expire_at = now + ttl;
    }
    kx__mem_enter(m);
    cb(ud, 0, st, ttl < 0 ? 0 : ttl);
    kx__mem_leave(m);
    return 0;
}
