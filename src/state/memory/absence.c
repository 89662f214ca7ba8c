/* Absence in the memory store: as src/state/lua/absence.lua. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/memory/memory_int.h"

int kx__mem_absence_touch(kx_store *s, const kx_absence_touch *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_touch(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m);
    mem_win *w;
    if ((rc = kx__mem_update_key(m, op->key, now, op->timespan_ms + op->keep_ms, &w)) == -ENOSPC) {
        kx__mem_run_acb(m, cb, ud, -ENOSPC, NULL);
        return 0;
    }
    if (rc)
        return rc;
    size_t glen = strlen(op->group);
    uint64_t h = kx_hash64(op->group, glen, 0);
    int32_t at = kx__mem_seen_find(w, h, op->group, glen);
    kx_absence_result res = {0};
    char *old = NULL; /* the replaced payload, handed out with a report */
    const char *payload = NULL;
    size_t payload_len = 0;
    bool same_payload = at >= 0 && w->seen[at].ilen == op->payload_len &&
                        (op->payload_len == 0 || memcmp(w->seen[at].val + w->seen[at].vlen,
                                                        op->payload, op->payload_len) == 0);
    if (at >= 0 && same_payload && w->seen[at].oc != KX_ABSENCE_NONE &&
        (op->time_ms == w->seen[at].last ||
         (op->mode == KX_TOUCH_REPLACE && op->time_ms < w->seen[at].last))) {
        /* The same touch again (a retry after a lost reply, as the script sees it): the
         * same report, with the payload given now. */
        res.outcome = (kx_absence_outcome)w->seen[at].oc;
        res.since_ms = w->seen[at].oc_since;
        payload = op->payload ? op->payload : "";
        payload_len = op->payload_len;
    } else if (op->mode == KX_TOUCH_EXTEND &&
               (at < 0 || op->time_ms <= w->seen[at].last ||
                (w->seen[at].has_fired && w->seen[at].fired == w->seen[at].last) ||
                op->time_ms - w->seen[at].last > op->timespan_ms)) {
        /* Not an open group (none, reported, or silent a whole timespan): nothing changes. */
    } else if (at < 0 || op->time_ms > w->seen[at].last ||
               (op->mode == KX_TOUCH_REPLACE && !same_payload)) {
        /* A sighting, or (replace) another incident: one a late event completed may be
         * stamped before the open one's last; that one is still over, and the group stays
         * open from the later of the two (from the new one's time when the old one was
         * reported). */
        int64_t nt = op->time_ms;
        if (at >= 0 && nt <= w->seen[at].last &&
            !(w->seen[at].has_fired && w->seen[at].fired == w->seen[at].last))
            nt = w->seen[at].last;
        if (at >= 0) {
            mem_seen *e = &w->seen[at];
            if (e->has_fired && e->fired == e->last)
                res.outcome = KX_ABSENCE_RESOLVED;
            else if (op->time_ms - e->last > op->timespan_ms)
                res.outcome = KX_ABSENCE_GAP;
            else if (op->mode == KX_TOUCH_REPLACE)
                res.outcome = KX_ABSENCE_REPLACED;
            if (res.outcome != KX_ABSENCE_NONE) {
                res.since_ms = e->last;
                old = malloc((size_t)e->ilen + 1);
                if (!old)
                    return -ENOMEM;
                memcpy(old, e->val + e->vlen, e->ilen);
                payload = old;
                payload_len = e->ilen;
            }
        }
        if (at < 0 && (rc = kx__mem_seen_append(w, h, op->group, glen, &at))) {
            free(old);
            return rc;
        }
        mem_seen *e = &w->seen[at];
        if (op->mode != KX_TOUCH_EXTEND && /* (an extend keeps the payload) */
            (rc = kx__mem_seen_set_intro(e, op->payload ? op->payload : "", op->payload_len))) {
            free(old);
            return rc;
        }
        e->last = nt;
        e->has_fired = false;
        e->oc = res.outcome;
        e->oc_since = res.since_ms;
    }
    w->expire_at = now + op->timespan_ms + op->keep_ms;
    if (res.outcome != KX_ABSENCE_NONE) {
        res.n = 1;
        m->res_last[0] = res.since_ms;
        m->res_ev[0] = payload;
        m->res_ev_len[0] = payload_len;
        res.last_ms = m->res_last;
        res.payload = m->res_ev;
        res.payload_len = m->res_ev_len;
    }
    kx__mem_run_acb(m, cb, ud, 0, &res);
    free(old);
    return 0;
}

/* One touch's result of a touch_many: kept, its payload copied. */
static void many_one_cb(void *ud, int status, const kx_absence_result *res)
{
    kx_store_memory *m = ud;
    struct mem_touch_many *tm = &m->tm;
    size_t i = tm->i;
    if (status) {
        tm->status = status;
        return;
    }
    tm->res[i] = (kx_absence_result){.outcome = res->outcome, .n = res->n, .late = res->late};
    tm->len[i] = 0;
    tm->off[i] = tm->pl.len;
    if (res->n) {
        tm->since[i] = res->since_ms;
        tm->len[i] = res->payload_len[0];
        if (kx_buf_append(&tm->pl, res->payload[0], res->payload_len[0]))
            tm->status = -ENOMEM;
    }
}

/* Touches one by one (the script applies them in order in one call too): one(i) makes the
 * i-th; cb gets every result, or the first failure. */
int kx__mem_touch_many(kx_store_memory *m, size_t n,
                       int (*one)(kx_store_memory *m, size_t i, kx_absence_cb cb, void *ud),
                       kx_absence_many_cb cb, void *ud)
{
    struct mem_touch_many *tm = &m->tm;
    if (m->destroy_pending)
        return -ECANCELED;
    if (n > tm->cap) {
        free(tm->res);
        free(tm->since);
        free(tm->off);
        free(tm->len);
        free(tm->ptr);
        tm->res = calloc(n, sizeof(*tm->res));
        tm->since = calloc(n, sizeof(*tm->since));
        tm->off = calloc(n, sizeof(*tm->off));
        tm->len = calloc(n, sizeof(*tm->len));
        tm->ptr = calloc(n, sizeof(*tm->ptr));
        tm->cap = n;
        if (!tm->res || !tm->since || !tm->off || !tm->len || !tm->ptr) {
            tm->cap = 0;
            return -ENOMEM;
        }
    }
    tm->status = 0;
    kx_buf_reset(&tm->pl);
    m->depth++; /* a destroy from the caller's callback waits for the end of this call */
    for (tm->i = 0; tm->i < n && !tm->status; tm->i++) {
        int rc = one(m, tm->i, many_one_cb, m);
        if (rc) {
            m->depth--;
            return rc;
        }
    }
    m->depth--;
    for (size_t i = 0; i < n && !tm->status; i++) {
        tm->ptr[i] = tm->pl.data ? tm->pl.data + tm->off[i] : "";
        if (tm->res[i].n) {
            tm->res[i].last_ms = &tm->since[i];
            tm->res[i].since_ms = tm->since[i];
            tm->res[i].payload = &tm->ptr[i];
            tm->res[i].payload_len = &tm->len[i];
        }
    }
    kx__mem_enter(m);
    if (tm->status)
        cb(ud, tm->status, NULL, 0);
    else
        cb(ud, 0, tm->res, n);
    kx__mem_leave(m);
    return 0;
}

static int touch_one(kx_store_memory *m, size_t i, kx_absence_cb cb, void *ud)
{
    return kx__mem_absence_touch(&m->base, &((const kx_absence_touch *)m->tm.ops)[i], cb, ud);
}

int kx__mem_absence_touch_many(kx_store *s, const kx_absence_touch *ops, size_t n,
                               kx_absence_many_cb cb, void *ud)
{
    int rc = kx__store_validate_touch_many(ops, n);
    if (rc)
        return rc;
    ((kx_store_memory *)s)->tm.ops = ops;
    return kx__mem_touch_many((kx_store_memory *)s, n, touch_one, cb, ud);
}

/* A group silent for its timespan at the watermark, not yet reported. */
static bool silent(const mem_seen *e, const void *arg)
{
    const kx_absence_due *op = arg;
    return !(e->has_fired && e->fired == e->last) && e->last + op->timespan_ms < op->watermark_ms;
}

int kx__mem_absence_due(kx_store *s, const kx_absence_due *op, kx_absence_cb cb, void *ud)
{
    kx_store_memory *m = (kx_store_memory *)s;
    int rc = kx__store_validate_due(op);
    if (rc)
        return rc;
    if (m->destroy_pending)
        return -ECANCELED;
    int64_t now = kx__mem_loop_now_ms(m);
    kx_absence_result res = {0};
    kx_metric_inc(KX_M_STORE_OPS);
    mem_win *w = kx__mem_lookup(m, op->key, now);
    if (w) {
        w->expire_at = now + op->timespan_ms + op->keep_ms;
        /* Forget groups reported more than keep ago. */
        bool gone = false;
        for (uint32_t k = 0; k < w->seen_n; k++) {
            mem_seen *e = &w->seen[k];
            if (e->has_fired && e->fired == e->last &&
                e->fired_wm < op->watermark_ms - op->keep_ms) {
                e->last = INT64_MIN;
                gone = true;
            }
        }
        if (gone)
            kx__mem_seen_compact(w);
        size_t nd = 0;
        if ((rc = kx__mem_due_groups(m, w, false, silent, op, &nd)))
            return rc;
        if (nd > op->limit)
            nd = op->limit;
        for (size_t k = 0; k < nd; k++) {
            mem_seen *e = &w->seen[m->due[k]];
            e->has_fired = true;
            e->fired = e->last;
            e->fired_wm = op->watermark_ms;
            m->res_last[k] = e->last;
            m->res_ev[k] = e->val + e->vlen;
            m->res_ev_len[k] = e->ilen;
        }
        res.n = nd;
        res.last_ms = m->res_last;
        res.payload = m->res_ev;
        res.payload_len = m->res_ev_len;
    }
    kx__mem_run_acb(m, cb, ud, 0, &res);
    return 0;
}
