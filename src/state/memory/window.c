/* Sliding windows in the memory store: the same steps, in the same order and with the same
 * arithmetic, as src/state/lua/window.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

/* ---- aggregates (the same arithmetic, in the same member order, as the Lua script) ---- */

/* The value of a member: the bytes after its first 0x1f ("" when there is none). */
const char *kx__mem_entry_value(const mem_win *w, const mem_entry *e, size_t *len)
{
    const char *p = w->str + e->off;
    const char *sep = memchr(p, 0x1f, e->len);
    if (!sep) {
        *len = 0;
        return p + e->len;
    }
    *len = e->len - (size_t)(sep + 1 - p);
    return sep + 1;
}

/* Lua's tonumber on the value; a value that is not a number counts as 0 (as in the script). */
static double entry_number(const mem_win *w, const mem_entry *e)
{
    size_t len;
    const char *v = kx__mem_entry_value(w, e, &len);
    char tmp[64];
    if (len == 0 || len >= sizeof(tmp))
        return 0;
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    char *end;
    double d = strtod(tmp, &end);
    return *end == '\0' && d == d ? d : 0;
}

static bool value_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Distinct values among entries [lo, hi) except skip. */
static int64_t agg_distinct(kx_store_memory *m, mem_win *w, uint32_t lo, uint32_t hi, uint32_t skip)
{
    size_t need = 16;
    while (need < (size_t)(hi - lo) * 2)
        need *= 2;
    if (need > m->dset_cap) {
        uint32_t *p = realloc(m->dset, need * sizeof(*p));
        if (!p)
            return -1;
        m->dset = p;
        m->dset_cap = need;
    }
    memset(m->dset, 0, need * sizeof(*m->dset));
    int64_t n = 0;
    for (uint32_t i = lo; i < hi; i++) {
        if (i == skip)
            continue;
        const mem_entry *e = kx__mem_win_at(w, i);
        size_t j = (size_t)e->vh & (need - 1);
        for (;; j = (j + 1) & (need - 1)) {
            if (!m->dset[j]) {
                m->dset[j] = i + 1;
                n++;
                break;
            }
            const mem_entry *o = kx__mem_win_at(w, m->dset[j] - 1);
            if (o->vh != e->vh)
                continue;
            size_t len, olen;
            const char *v = kx__mem_entry_value(w, e, &len);
            const char *ov = kx__mem_entry_value(w, o, &olen);
            if (value_eq(v, len, ov, olen))
                break;
        }
    }
    return n;
}

/* The aggregate of entries [lo, hi) without entry skip (UINT32_MAX: none); own is the adding
 * member's value (SHARE). False when it is undefined (an average of nothing). */
bool kx__mem_agg(kx_store_memory *m, mem_win *w, kx_agg agg, uint32_t lo, uint32_t hi,
                 uint32_t skip, const char *own, size_t own_len, double *out)
{
    int64_t n = (int64_t)(hi - lo) - (skip >= lo && skip < hi);
    switch (agg) {
    case KX_AGG_COUNT:
        *out = (double)n;
        return true;
    case KX_AGG_DISTINCT: {
        int64_t d = agg_distinct(m, w, lo, hi, skip);
        *out = (double)d;
        return d >= 0;
    }
    case KX_AGG_SUM:
    case KX_AGG_AVG: {
        double sum = 0;
        for (uint32_t i = lo; i < hi; i++)
            if (i != skip)
                sum += entry_number(w, kx__mem_win_at(w, i));
        if (agg == KX_AGG_AVG) {
            if (n == 0)
                return false;
            sum /= (double)n;
        }
        *out = sum;
        return true;
    }
    case KX_AGG_SHARE: {
        if (n == 0)
            return false;
        int64_t same = 0;
        for (uint32_t i = lo; i < hi; i++) {
            size_t len;
            const char *v = kx__mem_entry_value(w, kx__mem_win_at(w, i), &len);
            if (i != skip && value_eq(v, len, own, own_len))
                same++;
        }
        *out = (double)same * 100.0 / (double)n;
        return true;
    }
    default: { /* ORDERED */
        int64_t k = 0;
        char want[24];
        int wl = snprintf(want, sizeof(want), "%lld", (long long)k);
        for (uint32_t i = lo; i < hi; i++) {
            size_t len;
            const char *v = kx__mem_entry_value(w, kx__mem_win_at(w, i), &len);
            if (i != skip && value_eq(v, len, want, (size_t)wl)) {
                k++;
                wl = snprintf(want, sizeof(want), "%lld", (long long)k);
            }
        }
        *out = (double)k;
        return true;
    }
    }
}

/* The evidence a reply carries: the newest max_ev, or none without a crossing when the
 * caller wants it only then. */
static void result_evidence(kx_store_memory *m, const mem_win *w, const kx_window_add *op,
                            size_t max_ev, kx_window_result *res)
{
    res->nevidence = w->ev_n < max_ev ? w->ev_n : max_ev;
    if (op->evidence_if_crossed && !res->crossed)
        res->nevidence = 0;
    for (size_t i = 0; i < res->nevidence; i++) {
        m->res_ev[i] = w->ev[i].p;
        m->res_ev_len[i] = w->ev[i].len;
    }
    res->evidence = m->res_ev;
    res->evidence_len = m->res_ev_len;
}

int kx__mem_window_add(kx_store *s, const kx_window_add *op, kx_store_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m);
    mem_win *w;
    int64_t key_ttl = op->ttl_ms;
    if (op->agg == KX_AGG_BASELINE) /* the history outlives the members */
        key_ttl = (3 * op->history + 2) * op->window_ms + (op->ttl_ms - op->window_ms);
    rc = kx__mem_key(m, op->key, now, key_ttl, &w);
    if (rc == -ENOSPC) {
        kx__mem_key_refused(m, op->key);
        kx__mem_run_cb(m, cb, ud, -ENOSPC, NULL);
        return 0;
    }
    if (rc)
        return rc;

    size_t max_ev =
        op->max_evidence < KX__STORE_MAX_EVIDENCE ? op->max_evidence : KX__STORE_MAX_EVIDENCE;
    kx_window_result res = {0};
    if (op->agg == KX_AGG_FIRST_SEEN) {
        kx__mem_count_op(m);
        if ((rc = kx__mem_first_seen(m, w, op, &res)))
            return rc;
        w->expire_at = now + op->ttl_ms;
        kx__mem_run_cb(m, cb, ud, 0, &res);
        return 0;
    }
    if (op->agg == KX_AGG_BASELINE) {
        bool bl_added = false;
        kx__mem_count_op(m);
        if ((rc = kx__mem_baseline(m, w, op, now, &res, &bl_added)))
            return rc;
        if (!res.late && bl_added && op->evidence && max_ev > 0 &&
            (rc = kx__mem_win_push_evidence(w, op->evidence, op->evidence_len, (uint32_t)max_ev)))
            return rc;
        if (!res.late)
            result_evidence(m, w, op, max_ev, &res);
        kx__mem_run_cb(m, cb, ud, 0, &res);
        return 0;
    }
    size_t mlen = strlen(op->member);
    uint64_t h = kx_hash64(op->member, mlen, 0);
    /* Older than the key keeps (newest - ttl): the script refuses it before ZADD. */
    if (w->n > 0 && op->time_ms < kx__mem_win_at(w, w->n - 1)->t - op->ttl_ms) {
        kx__mem_count_op(m);
        res.late = true;
        kx__mem_run_cb(m, cb, ud, 0, &res);
        return 0;
    }
    bool added = kx__mem_win_find(w, h, op->member, mlen) == NULL;
    if (added) {
        rc = kx__mem_win_insert(w, h, op->time_ms, op->member, (uint32_t)mlen);
        if (rc)
            return rc;
    }
    kx__mem_count_op(m);
    /* Same order as the Lua script: prune by the newest time seen, cap, then count. */
    int64_t max_t = kx__mem_win_at(w, w->n - 1)->t;
    uint32_t old = kx__mem_win_time_bound(w, max_t - op->ttl_ms, false);
    if (old > 0)
        kx__mem_note_pruned(w, kx__mem_win_at(w, old - 1)->t);
    kx__mem_win_drop_front(w, old);
    uint32_t cap = s->member_cap;
    if (w->n > cap) {
        uint32_t dropped = w->n - cap;
        kx__mem_note_pruned(w, kx__mem_win_at(w, dropped - 1)->t);
        kx__mem_win_drop_front(w, dropped);
        if (!m->quiet) {
            kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
            kx_log_limited(&m->rl_members, KX_LOG_WARN, "state",
                           "key \"%s\" over %u members: dropped the %u oldest", op->key, cap,
                           dropped);
        }
    }
    if (added && op->evidence && max_ev > 0) {
        rc = kx__mem_win_push_evidence(w, op->evidence, op->evidence_len, (uint32_t)max_ev);
        if (rc)
            return rc;
    }
    w->expire_at = now + op->ttl_ms;

    uint32_t lo = kx__mem_win_time_bound(w, op->time_ms - op->window_ms, false);
    uint32_t hi = kx__mem_win_time_bound(w, op->time_ms, true);
    if (hi > lo) {
        res.count = hi - lo;
        res.first_ms = kx__mem_win_at(w, lo)->t;
        res.last_ms = kx__mem_win_at(w, hi - 1)->t;
    }
    res.added = added;
    res.prev_alerted = w->alerted; /* the mark before this add (the scan below may move it) */
    res.prev_alert_first_ms = w->alerted ? w->alert_first : 0;
    kx_cmp_term cond[KX_CMP_MAX_TERMS];
    size_t ncond = kx__store_cond(op, cond);
    const mem_entry *self = ncond > 0 ? kx__mem_win_find(w, h, op->member, mlen) : NULL;
    if (self) { /* absent: dropped by the member cap just now */
        /* The same scan as the Lua script: the earliest window ending at a member time in
         * [t, t + window] (at most KX_STORE_CROSS_SCAN members) that this member makes satisfy
         * the condition; SHARE judges the add's own window only. */
        uint32_t self_i = (uint32_t)(self - kx__mem_win_at(w, 0));
        size_t own_len;
        const char *own = kx__mem_entry_value(w, self, &own_len);
        uint32_t i = kx__mem_win_time_bound(w, op->time_ms, false);
        uint32_t end = kx__mem_win_time_bound(w, op->time_ms + op->window_ms, true);
        if (op->agg == KX_AGG_SHARE)
            end = i + 1;
        bool have_prev = false, passed = false;
        int64_t prev = 0;
        for (uint32_t seen = 0; i < end && seen < KX_STORE_CROSS_SCAN; i++, seen++) {
            int64_t s_t = kx__mem_win_at(w, i)->t;
            if (have_prev && s_t == prev)
                continue;
            have_prev = true;
            prev = s_t;
            if (op->agg == KX_AGG_SHARE)
                s_t = op->time_ms;
            if (!added && w->pruned && s_t - op->window_ms <= w->horizon)
                continue; /* a re-delivery into a window that lost members to pruning */
            uint32_t clo = kx__mem_win_time_bound(w, s_t - op->window_ms, false);
            uint32_t chi = kx__mem_win_time_bound(w, s_t, true);
            double with, without;
            if (!kx__mem_agg(m, w, op->agg, clo, chi, UINT32_MAX, own, own_len, &with) ||
                !kx_cmp_holds(cond, ncond, with))
                continue;
            if (!passed) {
                res.met = true;
                res.met_ms = s_t;
            }
            passed = true; /* met: a crossing now, or one the suppression swallows */
            int64_t f = kx__mem_win_at(w, clo)->t;
            /* Due: starts after the last reported window's end + suppress. A condition that
             * stays met (a dense, ongoing attack) then alerts again once per suppress period,
             * although no single add makes it hold. */
            bool due = w->alerted && f > w->alert_last + op->suppress_ms;
            if (!due && op->agg != KX_AGG_SHARE &&
                kx__mem_agg(m, w, op->agg, clo, chi, self_i, own, own_len, &without) &&
                kx_cmp_holds(cond, ncond, without))
                continue; /* held already without this member: not its crossing */
            bool same = w->alerted && f == w->alert_first && s_t == w->alert_last;
            bool overlaps =
                w->alerted && f <= w->alert_last + op->suppress_ms && s_t >= w->alert_first;
            if (!same && overlaps)
                continue; /* part of the burst already reported, or suppressed */
            res.crossed = true;
            res.suppressed = w->nsup;
            w->nsup = 0;
            res.cross_first_ms = f;
            res.cross_last_ms = s_t;
            res.cross_count = (int64_t)(chi - clo);
            res.cross_value = with;
            w->alerted = true;
            w->alert_first = f;
            w->alert_last = s_t;
            break;
        }
        /* Counted from the group's first alert on: before it nothing was suppressed. */
        if (!res.crossed && passed && added && w->alerted)
            w->nsup++;
    }
    result_evidence(m, w, op, max_ev, &res);
    kx__mem_run_cb(m, cb, ud, 0, &res);
    return 0;
}

/* One add of a window_add_many: keep its result and a copy of its evidence. */
static void many_one_cb(void *ud, int status, const kx_window_result *res)
{
    kx_store_memory *m = ud;
    if (status) {
        m->many_status = status;
        return;
    }
    kx_window_result *r = &m->many_res[m->many_i];
    *r = *res;
    r->count = r->first_ms = r->last_ms = 0; /* as the Redis backend: not computed */
    if (m->many_ev_n + res->nevidence > m->many_ev_cap) {
        size_t cap = m->many_ev_cap ? m->many_ev_cap * 2 : 16;
        while (cap < m->many_ev_n + res->nevidence)
            cap *= 2;
        size_t *o = realloc(m->many_ev_off, cap * sizeof(*o));
        size_t *l = o ? realloc(m->many_ev_len, cap * sizeof(*l)) : NULL;
        if (o)
            m->many_ev_off = o;
        if (!l) {
            m->many_status = -ENOMEM;
            return;
        }
        m->many_ev_len = l;
        m->many_ev_cap = cap;
    }
    /* evidence = index of its first blob until the pointers are fixed up */
    r->evidence = (const char *const *)(uintptr_t)m->many_ev_n;
    for (size_t i = 0; i < res->nevidence; i++) {
        m->many_ev_off[m->many_ev_n] = m->many_ev.len;
        m->many_ev_len[m->many_ev_n++] = res->evidence_len[i];
        if (kx_buf_append(&m->many_ev, res->evidence[i], res->evidence_len[i]))
            m->many_status = -ENOMEM;
    }
}

/* The adds one by one, then one callback with all the results (as the Redis backend's one
 * script call). */
int kx__mem_window_add_many(kx_store *s, const kx_window_add *ops, size_t n, kx_store_many_cb cb,
                            void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_many(ops, n);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    if (n > m->many_cap) {
        kx_window_result *p = realloc(m->many_res, n * sizeof(*p));
        if (!p)
            return -ENOMEM;
        m->many_res = p;
        m->many_cap = n;
    }
    m->many_status = 0;
    m->many_ev_n = 0;
    kx_buf_reset(&m->many_ev);
    m->depth++; /* a destroy from the caller's callback waits for the end of this call */
    for (m->many_i = 0; m->many_i < n && !m->many_status; m->many_i++) {
        rc = kx__mem_window_add(s, &ops[m->many_i], many_one_cb, m);
        if (rc) {
            m->depth--;
            return rc;
        }
    }
    m->depth--;
    if (m->many_status == 0) {
        const char **ptr =
            realloc(m->many_ev_ptr, (m->many_ev_n ? m->many_ev_n : 1) * sizeof(*ptr));
        if (!ptr) {
            m->many_status = -ENOMEM;
        } else {
            m->many_ev_ptr = ptr;
            for (size_t i = 0; i < m->many_ev_n; i++)
                ptr[i] = m->many_ev.data + m->many_ev_off[i];
            for (size_t i = 0; i < n; i++) {
                size_t first = (size_t)(uintptr_t)m->many_res[i].evidence;
                m->many_res[i].evidence = ptr + first;
                m->many_res[i].evidence_len = m->many_ev_len + first;
            }
        }
    }
    kx__mem_enter(m);
    if (m->many_status)
        cb(ud, m->many_status, NULL, 0);
    else
        cb(ud, 0, m->many_res, n);
    kx__mem_leave(m);
    return 0;
}
