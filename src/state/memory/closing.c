/* Closing windows ("at most N") in the memory store: as src/state/lua/closing.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* "group|%017lld|" of window k, as the script's kfmt: k + 2^52 (never negative, exact in the
 * script's doubles), zero-padded so byte order is number order. end gives the bound just
 * after the window's members ("...}"). */
static size_t close_prefix(char *out, size_t cap, const char *g, size_t glen, int64_t k, bool end)
{
    int n = snprintf(out, cap, "%.*s|%017lld%c", (int)glen, g, (long long)(k + ((int64_t)1 << 52)),
                     end ? '}' : '|');
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int kx__mem_close_touch(kx_store *s, const kx_close_touch *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_close_touch(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m);
    mem_win *w;
    if ((rc = kx__mem_update_key(m, op->key, now, op->ttl_ms, &w)) == -ENOSPC) {
        kx__mem_run_acb(m, cb, ud, -ENOSPC, NULL);
        return 0;
    }
    if (rc)
        return rc;
    size_t glen = strlen(op->group);
    uint64_t h = kx_hash64(op->group, glen, 0);
    int32_t at = kx__mem_seen_find(w, h, op->group, glen);
    int64_t k = kx__store_close_window(op->time_ms, op->timespan_ms);
    kx_absence_result res = {0};
    if (w->has_horizon && (k + 1) * op->timespan_ms <= w->horizon_wm) {
        res.late = true;
        kx__mem_run_acb(m, cb, ud, 0, &res);
        return 0;
    }
    char prefix[KX__STORE_MAX_KEY_LEN + 32];
    size_t plen = close_prefix(prefix, sizeof(prefix), op->group, glen, k, false);
    kx_buf member;
    kx_buf_init(&member, 0);
    if (!plen || kx_buf_append(&member, prefix, plen) || kx_buf_puts(&member, op->identity)) {
        kx_buf_fini(&member);
        return -ENOMEM;
    }
    uint64_t mh = kx_hash64(member.data, member.len, 0);
    if (!kx__mem_win_find(w, mh, member.data, member.len))
        rc = kx__mem_win_insert(w, mh, 0, member.data, (uint32_t)member.len);
    kx_buf_fini(&member);
    if (rc)
        return rc;
    bool fresh = at < 0;
    if (fresh && (rc = kx__mem_seen_append(w, h, op->group, glen, &at)))
        return rc;
    mem_seen *e = &w->seen[at];
    int64_t end = (k + 1) * op->timespan_ms;
    if (!e->has_deadline || end < e->deadline) {
        e->has_deadline = true;
        e->deadline = end;
    }
    if (fresh || op->time_ms >= e->last) {
        if ((rc = kx__mem_seen_set_intro(e, op->payload ? op->payload : "", op->payload_len)))
            return rc;
        e->last = op->time_ms;
    }
    w->expire_at = now + op->ttl_ms;
    kx__mem_run_acb(m, cb, ud, 0, &res);
    return 0;
}

static int close_one(kx_store_memory *m, size_t i, kx_absence_cb cb, void *ud)
{
    return kx__mem_close_touch(&m->base, &((const kx_close_touch *)m->tm.ops)[i], cb, ud);
}

int kx__mem_close_touch_many(kx_store *s, const kx_close_touch *ops, size_t n,
                             kx_absence_many_cb cb, void *ud)
{
    int rc = kx__store_validate_close_touch_many(ops, n);
    if (rc)
        return rc;
    ((kx_store_memory *)s)->tm.ops = ops;
    return kx__mem_touch_many((kx_store_memory *)s, n, close_one, cb, ud);
}

/* A group whose open window has closed at the watermark. */
static bool closed(const mem_seen *e, const void *arg)
{
    const kx_close_due *op = arg;
    return e->has_deadline && e->deadline <= op->watermark_ms;
}

int kx__mem_close_due(kx_store *s, const kx_close_due *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_close_due(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m);
    kx_absence_result res = {0};
    kx_metric_inc(KX_M_STORE_OPS);
    mem_win *w = kx__mem_lookup(m, op->key, now);
    size_t n = 0, iter = 0, nd = 0, at = 0;
    bool gone = false;
    if (w) {
        if (!w->has_horizon || op->watermark_ms > w->horizon_wm) {
            w->has_horizon = true;
            w->horizon_wm = op->watermark_ms;
        }
        /* The due groups in the script's order, sorted once; a group whose next window is due
         * too goes back in its place. */
        if ((rc = kx__mem_due_groups(m, w, true, closed, op, &nd)))
            return rc;
    }
    while (at < nd) {
        if (n >= op->limit || iter >= 4 * op->limit) {
            res.more = true;
            break;
        }
        iter++;
        mem_seen *e = &w->seen[m->due[at]];
        int64_t k = (int64_t)floor((double)e->deadline / (double)op->timespan_ms) - 1;
        char lo[KX__STORE_MAX_KEY_LEN + 32], hi[KX__STORE_MAX_KEY_LEN + 32];
        size_t lol = close_prefix(lo, sizeof(lo), e->val, e->vlen, k, false);
        size_t hil = close_prefix(hi, sizeof(hi), e->val, e->vlen, k, true);
        uint32_t a = kx__mem_win_lower(w, 0, lo, lol), b = kx__mem_win_lower(w, 0, hi, hil);
        int64_t c = (int64_t)(b - a);
        kx__mem_win_remove_range(w, a, b);
        /* The group's next window with events: the first member after this window's. */
        e->has_deadline = false;
        if (a < w->n) {
            const mem_entry *nx = kx__mem_win_at(w, a);
            const char *mb = w->str + nx->off;
            if (nx->len > e->vlen + 18 && memcmp(mb, e->val, e->vlen) == 0 && mb[e->vlen] == '|') {
                char num[18];
                memcpy(num, mb + e->vlen + 1, 17);
                num[17] = '\0';
                int64_t k2 = strtoll(num, NULL, 10) - ((int64_t)1 << 52);
                e->has_deadline = true;
                e->deadline = (k2 + 1) * op->timespan_ms;
            }
        }
        if (c > 0 && kx_cmp_holds(op->cond, op->ncond, (double)c)) {
            m->res_last[n] = k * op->timespan_ms;
            m->res_count[n] = c;
            m->res_ev[n] = e->val + e->vlen; /* freed only after the callback */
            m->res_ev_len[n] = e->ilen;
            n++;
        }
        uint32_t cur = m->due[at++];
        if (!e->has_deadline) {
            e->last = INT64_MIN; /* no window left: forgotten (kx__mem_seen_compact, below) */
            gone = true;
        } else if (e->deadline <= op->watermark_ms) {
            /* Due again: back into the rest of the list, in order. */
            size_t lo_i = at, hi_i = nd;
            while (lo_i < hi_i) {
                size_t mid = lo_i + (hi_i - lo_i) / 2;
                if (kx__mem_group_cmp(&m->due[mid], &cur) < 0)
                    lo_i = mid + 1;
                else
                    hi_i = mid;
            }
            at--;
            memmove(&m->due[at], &m->due[at + 1], (lo_i - 1 - at) * sizeof(*m->due));
            m->due[lo_i - 1] = cur;
        }
    }
    bool keep_alive = false;
    for (uint32_t i = 0; w && i < w->seen_n && !keep_alive; i++)
        keep_alive = w->seen[i].has_deadline;
    if (w && keep_alive)
        w->expire_at = now + op->ttl_ms;
    res.n = n;
    res.last_ms = m->res_last;
    res.count = m->res_count;
    res.payload = m->res_ev;
    res.payload_len = m->res_ev_len;
    kx__mem_enter(m);
    cb(ud, 0, &res);
    if (gone && !m->destroy_pending)
        kx__mem_seen_compact(w); /* w is still in the table: nothing in the callback frees keys */
    kx__mem_leave(m);
    return 0;
}
