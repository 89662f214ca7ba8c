/*
 * The window log's evidence, out of the per-event path.
 *
 * An alert shows the last few events of its window (evidence), so every add carries its
 * event's excerpt. In a log record that would be most of the bytes Redis stores per event
 * (and it measured as a third of Redis' CPU per event at 10,000 groups). Instead, a process
 * writes the blobs of its adds of one loop iteration as one page, PREFIX ev:{PROC}:PAGE (one
 * SET ... PX for all the adds of a batch), and its records carry a reference (proc, page,
 * offset, length: KX__REDIS_EV_REF bytes). The replicas keep the references as the windows'
 * evidence; only an answer that shows evidence (a crossing) reads the blobs back, one
 * GETRANGE each, before it is delivered.
 *
 * A page lives the longest ttl of the windows whose blobs it holds, plus a minute: a blob is
 * wanted while its event is in a window (so Redis holds each event's blob for about ttl,
 * where the script kept only the last few per group: docs/scaling.md). A blob that cannot be
 * read (its page expired or was deleted, or another process's page is not written yet, which
 * a reader can only meet with a Redis Cluster, where the page and the window are on
 * different masters) is left out of the evidence and counted in
 * klaxon_state_log_evidence_missing_total.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "klaxon/metrics.h"
#include "state/redis_int.h"
#include "state/wire.h"

#define EV_PAGE_MAX (1u << 20) /* a page holds at most this (then the next one starts) */
#define EV_KEY_MAX 400 /* the prefix (at most 256 bytes), "ev:{16 hex}:" and a page number */

typedef struct ev_req {
    redis_op *op;
    size_t i; /* which reference */
} ev_req;

typedef struct ev_wait {
    kx_window_result *res; /* the answers, copied */
    size_t n;
    size_t *first; /* res[j]'s references: first[j] .. first[j] + res[j].nevidence */
    size_t nref, waiting;
    ev_req *req;
    char **blob; /* read back (NULL: missing) */
    size_t *blen;
    const char **ptr; /* what the answers point at */
    size_t *plen;
    kx_store_cb cb;
    kx_store_many_cb mcb;
    void *ud;
} ev_wait;

static size_t page_key(const kx_store_redis *r, uint64_t proc, uint64_t page, char *out, size_t cap)
{
    char hex[16];
    kx_hex64(hex, proc);
    int n = snprintf(out, cap, "%sev:{%.16s}:%llu", r->prefix, hex, (unsigned long long)page);
    return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

void kx__redis_ev_flush(kx_store_redis *r)
{
    if (ev_is_active(&r->ev_flush))
        ev_prepare_stop(r->loop, &r->ev_flush);
    if (!r->ev_pending.len)
        return;
    char key[EV_KEY_MAX];
    size_t klen = page_key(r, r->ev_proc, r->ev_page_no, key, sizeof(key));
    redis_node *n = klen ? kx__redis_key_node(r, key, klen) : NULL;
    long long ttl =
        (long long)(r->ev_page_ttl > INT64_MAX / 4 ? INT64_MAX / 2 : r->ev_page_ttl + 60000);
    if (!n || redisAsyncCommand(n->ac, NULL, NULL, "SET %b %b PX %lld", key, klen,
                                r->ev_pending.data, r->ev_pending.len, ttl) != REDIS_OK)
        kx_log_limited(&r->rl_ev, KX_LOG_WARN, "state",
                       "redis: window log evidence page not written (%zu bytes): the store is "
                       "down; alerts about those events will show less evidence",
                       r->ev_pending.len);
    r->ev_page_no++;
    kx_buf_reset(&r->ev_pending);
    r->ev_page_ttl = 0;
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    kx_store_redis *r = w->data;
    kx__redis_enter(r);
    kx__redis_ev_flush(r);
    kx__redis_leave(r);
}

int kx__redis_ev_put(kx_store_redis *r, const char *p, size_t n, int64_t ttl_ms, kx_buf *out)
{
    if (r->ev_pending.len && r->ev_pending.len + n > EV_PAGE_MAX)
        kx__redis_ev_flush(r);
    uint64_t off = r->ev_pending.len;
    int rc = kx_buf_append(&r->ev_pending, p, n);
    if (!rc) /* as kx__wire_put_bytes would write it: the length, then the reference */
        rc = kx__wire_put_u32(out, KX__REDIS_EV_REF);
    if (!rc)
        rc = kx__wire_put_u64(out, r->ev_proc);
    if (!rc)
        rc = kx__wire_put_u64(out, r->ev_page_no);
    if (!rc)
        rc = kx__wire_put_u64(out, off);
    if (!rc)
        rc = kx__wire_put_u32(out, (uint32_t)n);
    if (ttl_ms > r->ev_page_ttl)
        r->ev_page_ttl = ttl_ms;
    if (!ev_is_active(&r->ev_flush))
        ev_prepare_start(r->loop, &r->ev_flush);
    return rc;
}

static void ev_wait_free(ev_wait *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->nref; i++)
        free(w->blob[i]);
    free(w->res);
    free(w->first);
    free(w->req);
    free(w->blob);
    free(w->blen);
    free(w->ptr);
    free(w->plen);
    free(w);
}

/* Every blob is back (or missing): the answers go out with the blobs found; then, when they
 * came back later (async), the op goes on. */
static void deliver(kx_store_redis *r, redis_op *op, bool async)
{
    ev_wait *w = op->evw;
    size_t k = 0;
    for (size_t j = 0; j < w->n; j++) {
        size_t start = k;
        for (size_t i = w->first[j]; i < w->first[j] + w->res[j].nevidence; i++) {
            if (!w->blob[i]) {
                kx_metric_inc(KX_M_STATE_LOG_EVIDENCE_MISSING);
                continue;
            }
            w->ptr[k] = w->blob[i];
            w->plen[k++] = w->blen[i];
        }
        w->res[j].evidence = w->ptr + start;
        w->res[j].evidence_len = w->plen + start;
        w->res[j].nevidence = k - start;
    }
    int status = r->destroying ? -ECANCELED : 0;
    if (op->counted) {
        op->counted = false;
        r->npending--;
    }
    if (w->cb)
        w->cb(w->ud, status, status ? NULL : &w->res[0]);
    else
        w->mcb(w->ud, status, status ? NULL : w->res, status ? 0 : w->n);
    op->evw = NULL;
    ev_wait_free(w);
    if (async)
        kx__redis_log_delivered(r, op);
}

static void getrange_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    ev_req *q = privdata;
    redis_op *op = q->op;
    kx_store_redis *r = op->r;
    redis_node *n = ac->data;
    redisReply *reply = reply_;
    kx__redis_enter(r);
    n->npending--;
    if (reply) {
        kx__redis_watchdog_kick(n);
    } else {
        /* The connection is going down (as kx__redis_op_cb marks it): whatever the answer's
         * caller does next sees the store down. */
        n->up = false;
        if (n->in_map)
            r->up = false;
    }
    ev_wait *w = op->evw;
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len == w->blen[q->i] &&
        (w->blob[q->i] = malloc(reply->len + 1))) {
        memcpy(w->blob[q->i], reply->str, reply->len);
        w->blob[q->i][reply->len] = '\0';
    }
    if (--w->waiting == 0)
        deliver(r, op, true);
    kx__redis_leave(r);
}

/* Asks for reference i (parsed from p); false when it cannot be asked (left out). */
static bool ask(kx_store_redis *r, redis_op *op, size_t i, const char *p, size_t len)
{
    ev_wait *w = op->evw;
    kx__wire_rd rd = kx__wire_reader(p, len);
    uint64_t proc = kx__wire_u64(&rd), page = kx__wire_u64(&rd), off = kx__wire_u64(&rd);
    w->blen[i] = kx__wire_u32(&rd);
    char key[EV_KEY_MAX];
    size_t klen = page_key(r, proc, page, key, sizeof(key));
    if (rd.bad || !klen || w->blen[i] == 0)
        return false;
    redis_node *n = kx__redis_key_node(r, key, klen);
    w->req[i] = (ev_req){op, i};
    if (!n || redisAsyncCommand(n->ac, getrange_cb, &w->req[i], "GETRANGE %b %llu %llu", key, klen,
                                (unsigned long long)off,
                                (unsigned long long)(off + w->blen[i] - 1)) != REDIS_OK)
        return false;
    n->npending++;
    if (!ev_is_active(&n->watchdog))
        kx__redis_watchdog_kick(n);
    return true;
}

int kx__redis_ev_resolve(kx_store_redis *r, redis_op *op, const kx_window_result *res, size_t n,
                         kx_store_cb cb, kx_store_many_cb mcb, void *ud)
{
    size_t nref = 0;
    for (size_t j = 0; j < n; j++)
        nref += res[j].nevidence;
    if (!nref)
        return 0;
    ev_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->res = malloc(n * sizeof(*w->res));
    w->first = malloc(n * sizeof(*w->first));
    w->req = calloc(nref, sizeof(*w->req));
    w->blob = calloc(nref, sizeof(*w->blob));
    w->blen = calloc(nref, sizeof(*w->blen));
    w->ptr = calloc(nref, sizeof(*w->ptr));
    w->plen = calloc(nref, sizeof(*w->plen));
    if (!w->res || !w->first || !w->req || !w->blob || !w->blen || !w->ptr || !w->plen) {
        ev_wait_free(w);
        return -ENOMEM;
    }
    memcpy(w->res, res, n * sizeof(*res));
    w->n = n;
    w->nref = nref;
    w->cb = cb;
    w->mcb = mcb;
    w->ud = ud;
    op->evw = w;
    /* Our own blobs of this iteration first, on the page's connection ahead of the reads. */
    kx__redis_ev_flush(r);
    size_t i = 0;
    w->waiting = 1; /* held until every read is asked */
    for (size_t j = 0; j < n; j++) {
        w->first[j] = i;
        for (size_t e = 0; e < res[j].nevidence; e++, i++) {
            size_t len = res[j].evidence_len[e];
            if (len == KX__REDIS_EV_REF) {
                if (ask(r, op, i, res[j].evidence[e], len))
                    w->waiting++;
            } else if ((w->blob[i] = malloc(len + 1))) { /* not a reference: as it is */
                memcpy(w->blob[i], res[j].evidence[e], len);
                w->blob[i][len] = '\0';
                w->blen[i] = len;
            }
        }
    }
    if (--w->waiting == 0) { /* nothing to read after all (store down, not references) */
        deliver(r, op, false);
        return 2;
    }
    return 1;
}

int kx__redis_ev_init(kx_store_redis *r)
{
    if (getrandom(&r->ev_proc, sizeof(r->ev_proc), GRND_NONBLOCK) != (ssize_t)sizeof(r->ev_proc))
        r->ev_proc = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() ^
                     (uint64_t)(uintptr_t)r;
    kx_buf_init(&r->ev_pending, 0);
    ev_prepare_init(&r->ev_flush, flush_cb);
    r->ev_flush.data = r;
    return 0;
}

void kx__redis_ev_free(kx_store_redis *r)
{
    ev_prepare_stop(r->loop, &r->ev_flush);
    kx_buf_fini(&r->ev_pending);
}
