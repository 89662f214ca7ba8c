/*
 * Redis backend, ops (redis_int.h): each kx_store op is one EVALSHA of the script in
 * redis_scripts.h; hiredis queues writes, so ops issued in the same loop iteration go out in
 * one pipelined write and nothing waits for a reply. While the store is not up, ops return
 * -EAGAIN at once (their callback never runs). A NOSCRIPT reply (script cache flushed,
 * failover) reloads the script and resends that op behind the SCRIPT LOAD on the same
 * connection, so it runs after the load. Connections: redis_conn.c; cluster routing:
 * redis_cluster.c.
 *
 * Ownership: ops come from a free list owned by the store (each keeps its argument buffer,
 * so steady state allocates nothing here; hiredis allocates its own command buffers).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "klaxon/secret.h"
#include "state/redis_int.h"
#include "state/redis_scripts.h"

#define REDIS_DEFAULT_TIMEOUT_MS 5000
#define REDIS_MAX_PENDING 100000u
#define REDIS_MAX_NOSCRIPT_RETRIES 3
/* A window reply's fixed elements before its evidence: 10 integers, cross_value,
 * suppressed, the prior mark (2), met (2) (redis_scripts.h). */
#define REPLY_FIXED 16
#define REDIS_MAX_PREFIX 256u

/* EVALSHA sha numkeys zkey ekey akey hkey tkey member time window ttl max_evidence member_cap agg
 * suppress evidence nterms [op value]... deviations history evidence_if_crossed */
#define OP_NARGS (18 + 2 * KX_CMP_MAX_TERMS) /* the arguments stored per op, zkey .. */

/* ---- ops ---- */

void kx__redis_op_release(kx_store_redis *r, redis_op *op)
{
    if (op->counted)
        r->npending--;
    op->counted = false;
    op->cb = NULL;
    op->acb = NULL;
    op->mcb = NULL;
    op->tcb = NULL;
    op->wcb = NULL;
    op->ccb = NULL;
    op->scb = NULL;
    op->ud = NULL;
    op->next = r->free_ops;
    r->free_ops = op;
}

/* Returns op to the free list, then runs its callback (which may issue the next add). */
static void op_finish(kx_store_redis *r, redis_op *op, int status, const kx_window_result *res)
{
    kx_store_cb cb = op->cb;
    kx_absence_cb acb = op->acb;
    kx_store_many_cb mcb = op->mcb;
    kx_absence_many_cb tcb = op->tcb;
    kx_watermark_cb wcb = op->wcb;
    kx_claim_cb ccb = op->ccb;
    kx_set_scan_cb scb = op->scb;
    void *ud = op->ud;
    kx__redis_op_release(r, op);
    if (status && status != -ECANCELED)
        kx_metric_inc(KX_M_STORE_ERRORS);
    if (scb)
        scb(ud, status, NULL, NULL, NULL, 0);
    else if (wcb)
        wcb(ud, status, false, 0);
    else if (ccb)
        ccb(ud, status, KX_CLAIM_MINE, 0);
    else if (acb)
        acb(ud, status, NULL);
    else if (mcb)
        mcb(ud, status, NULL, 0);
    else if (tcb)
        tcb(ud, status, NULL, 0);
    else
        cb(ud, status, res);
}

/* The same for an absence op that succeeded. */
static void op_finish_absence(kx_store_redis *r, redis_op *op, const kx_absence_result *res)
{
    kx_absence_cb acb = op->acb;
    void *ud = op->ud;
    kx__redis_op_release(r, op);
    acb(ud, 0, res);
}

/* Touch: {outcome, since[, payload]}. Due: {n, last1, payload1, ...}. */
static int parse_absence(kx_store_redis *r, const redis_op *op, const redisReply *reply,
                         kx_absence_result *res)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_INTEGER)
        return -EPROTO;
    size_t n, first;
    if (op->kind == OP_CTOUCH) {
        res->late = reply->element[0]->integer == 1;
        return 0;
    }
    if (op->kind == OP_CDUE) {
        n = (size_t)reply->element[0]->integer;
        if (reply->element[0]->integer < 0 || n > KX_STORE_ABSENCE_DUE_MAX ||
            reply->elements != 2 + 3 * n || reply->element[1]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
        res->more = reply->element[1]->integer == 1;
        for (size_t i = 0; i < n; i++) {
            const redisReply *st = reply->element[2 + 3 * i];
            const redisReply *c = reply->element[3 + 3 * i];
            const redisReply *pl = reply->element[4 + 3 * i];
            if (st->type != REDIS_REPLY_INTEGER || c->type != REDIS_REPLY_INTEGER ||
                pl->type != REDIS_REPLY_STRING)
                return -EPROTO;
            r->res_last[i] = st->integer;
            r->res_count[i] = c->integer;
            r->res_ev[i] = pl->str;
            r->res_ev_len[i] = pl->len;
        }
        res->n = n;
        res->last_ms = r->res_last;
        res->count = r->res_count;
        res->payload = r->res_ev;
        res->payload_len = r->res_ev_len;
        return 0;
    }
    if (op->kind == OP_TOUCH) {
        if (reply->elements < 2 || reply->element[1]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
        res->outcome = (kx_absence_outcome)reply->element[0]->integer;
        res->since_ms = reply->element[1]->integer;
        if (res->outcome == KX_ABSENCE_NONE)
            return 0;
        if (reply->elements != 3 || reply->element[2]->type != REDIS_REPLY_STRING)
            return -EPROTO;
        r->res_last[0] = res->since_ms;
        r->res_ev[0] = reply->element[2]->str;
        r->res_ev_len[0] = reply->element[2]->len;
        n = 1;
    } else {
        n = (size_t)reply->element[0]->integer;
        first = 1;
        if (reply->element[0]->integer < 0 || n > KX_STORE_ABSENCE_DUE_MAX ||
            reply->elements != 1 + 2 * n)
            return -EPROTO;
        for (size_t i = 0; i < n; i++) {
            const redisReply *l = reply->element[first + 2 * i];
            const redisReply *pl = reply->element[first + 2 * i + 1];
            if (l->type != REDIS_REPLY_INTEGER || pl->type != REDIS_REPLY_STRING)
                return -EPROTO;
            r->res_last[i] = l->integer;
            r->res_ev[i] = pl->str;
            r->res_ev_len[i] = pl->len;
        }
    }
    res->n = n;
    res->last_ms = r->res_last;
    res->payload = r->res_ev;
    res->payload_len = r->res_ev_len;
    return 0;
}

/* One add's reply into res; its evidence pointers go to ev/ev_len (room for
 * KX__STORE_MAX_EVIDENCE). */
static int parse_one(const redisReply *reply, kx_window_result *res, long long *dropped,
                     const char **ev, size_t *ev_len);

static int parse_result(kx_store_redis *r, const redisReply *reply, kx_window_result *res,
                        long long *dropped)
{
    return parse_one(reply, res, dropped, r->res_ev, r->res_ev_len);
}

static int parse_one(const redisReply *reply, kx_window_result *res, long long *dropped,
                     const char **ev, size_t *ev_len)
{
    enum { NINT = 10, NFIX = REPLY_FIXED };
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < NFIX ||
        reply->elements - NFIX > KX__STORE_MAX_EVIDENCE)
        return -EPROTO;
    for (size_t i = 0; i < NINT; i++)
        if (reply->element[i]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
    const redisReply *cv = reply->element[NINT];
    if (cv->type != REDIS_REPLY_STRING || cv->len >= 64)
        return -EPROTO;
    for (size_t i = NINT + 1; i < NFIX; i++)
        if (reply->element[i]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
    res->suppressed = reply->element[NINT + 1]->integer;
    res->prev_alerted = reply->element[NINT + 2]->integer == 1;
    res->prev_alert_first_ms = reply->element[NINT + 3]->integer;
    res->met = reply->element[NINT + 4]->integer == 1;
    res->met_ms = reply->element[NINT + 5]->integer;
    char num[64];
    memcpy(num, cv->str, cv->len);
    num[cv->len] = '\0';
    res->cross_value = strtod(num, NULL);
    res->late = reply->element[8]->integer == 1;
    res->cross_count = reply->element[9]->integer;
    res->added = reply->element[0]->integer == 1;
    res->count = reply->element[1]->integer;
    res->first_ms = reply->element[2]->integer;
    res->last_ms = reply->element[3]->integer;
    *dropped = reply->element[4]->integer;
    res->crossed = reply->element[5]->integer == 1;
    res->cross_first_ms = reply->element[6]->integer;
    res->cross_last_ms = reply->element[7]->integer;
    res->nevidence = reply->elements - NFIX;
    for (size_t i = 0; i < res->nevidence; i++) {
        const redisReply *e = reply->element[NFIX + i];
        if (e->type != REDIS_REPLY_STRING)
            return -EPROTO;
        ev[i] = e->str;
        ev_len[i] = e->len;
    }
    res->evidence = ev;
    res->evidence_len = ev_len;
    return 0;
}

/* OP_TOUCH_MANY: a reply per touch, 0 (nothing to report) or {outcome, since, payload};
 * OP_CTOUCH_MANY: 0, or 1 (late). */
static int parse_touch_many(kx_store_redis *r, const redisReply *reply, bool closing, size_t want,
                            size_t *n)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != want)
        return -EPROTO;
    size_t k = reply->elements;
    if (k > r->tm_cap) {
        kx_absence_result *res = realloc(r->tm_res, k * sizeof(*res));
        if (res)
            r->tm_res = res;
        int64_t *since = realloc(r->tm_since, k * sizeof(*since));
        if (since)
            r->tm_since = since;
        const char **pl = realloc(r->tm_pl, k * sizeof(*pl));
        if (pl)
            r->tm_pl = pl;
        size_t *len = realloc(r->tm_pl_len, k * sizeof(*len));
        if (len)
            r->tm_pl_len = len;
        if (!res || !since || !pl || !len)
            return -ENOMEM;
        r->tm_cap = k;
    }
    for (size_t i = 0; i < k; i++) {
        const redisReply *e = reply->element[i];
        kx_absence_result *res = &r->tm_res[i];
        *res = (kx_absence_result){0};
        if (e->type == REDIS_REPLY_INTEGER && (e->integer == 0 || (closing && e->integer == 1))) {
            res->late = e->integer == 1;
            continue;
        }
        if (closing || e->type != REDIS_REPLY_ARRAY || e->elements != 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[0]->integer < KX_ABSENCE_RESOLVED ||
            e->element[0]->integer > KX_ABSENCE_REPLACED ||
            e->element[1]->type != REDIS_REPLY_INTEGER || e->element[2]->type != REDIS_REPLY_STRING)
            return -EPROTO;
        res->outcome = (kx_absence_outcome)e->element[0]->integer;
        res->since_ms = r->tm_since[i] = e->element[1]->integer;
        r->tm_pl[i] = e->element[2]->str;
        r->tm_pl_len[i] = e->element[2]->len;
        res->n = 1;
        res->last_ms = &r->tm_since[i];
        res->payload = &r->tm_pl[i];
        res->payload_len = &r->tm_pl_len[i];
    }
    *n = k;
    return 0;
}

/* OP_MANY: an array of single replies (one per add sent), or for an add with nothing to
 * report (not late, no crossing, condition not met, no earlier alert, nothing dropped, no
 * evidence wanted with every add) just 1 or 0 (added).
 * Evidence pointers are packed into many_ev. */
static int parse_many(kx_store_redis *r, const redisReply *reply, size_t want, size_t *n,
                      long long *dropped)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != want)
        return -EPROTO;
    size_t k = reply->elements, nev = 0;
    for (size_t i = 0; i < k; i++) {
        const redisReply *e = reply->element[i];
        if (e->type == REDIS_REPLY_INTEGER && (e->integer == 0 || e->integer == 1))
            continue; /* nothing to report but whether it was added */
        if (e->type != REDIS_REPLY_ARRAY || e->elements < REPLY_FIXED)
            return -EPROTO;
        nev += e->elements - REPLY_FIXED;
    }
    if (k > r->many_cap) {
        kx_window_result *p = realloc(r->many_res, k * sizeof(*p));
        if (!p)
            return -ENOMEM;
        r->many_res = p;
        r->many_cap = k;
    }
    if (nev > r->many_ev_cap) {
        const char **p = realloc(r->many_ev, nev * sizeof(*p));
        if (!p)
            return -ENOMEM;
        r->many_ev = p;
        size_t *l = realloc(r->many_ev_len, nev * sizeof(*l));
        if (!l)
            return -ENOMEM;
        r->many_ev_len = l;
        r->many_ev_cap = nev;
    }
    *dropped = 0;
    size_t at = 0;
    for (size_t i = 0; i < k; i++) {
        long long d = 0;
        memset(&r->many_res[i], 0, sizeof(r->many_res[i]));
        if (reply->element[i]->type == REDIS_REPLY_INTEGER) {
            r->many_res[i].added = reply->element[i]->integer == 1;
            continue;
        }
        int rc =
            parse_one(reply->element[i], &r->many_res[i], &d, r->many_ev + at, r->many_ev_len + at);
        if (rc)
            return rc;
        at += r->many_res[i].nevidence;
        *dropped += d;
    }
    *n = k;
    return 0;
}

void kx__redis_op_finish(kx_store_redis *r, redis_op *op, int status)
{
    if (op->kind == OP_LOG)
        kx__redis_log_fail(r, op, status);
    else
        op_finish(r, op, status, NULL);
}

/* An SSCAN reply: [cursor, [member...]], the members handed over borrowed. */
static void scan_reply(kx_store_redis *r, redis_op *op, const redisReply *reply)
{
    const redisReply *cur = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
                                ? reply->element[0]
                                : NULL,
                     *mem = cur ? reply->element[1] : NULL;
    if (!cur || (cur->type != REDIS_REPLY_STRING && cur->type != REDIS_REPLY_STATUS) ||
        mem->type != REDIS_REPLY_ARRAY) {
        /* WRONGTYPE comes as an error (handled before); anything else is not Redis' SSCAN */
        op_finish(r, op, -EPROTO, NULL);
        return;
    }
    if (mem->elements > r->scan_cap) {
        size_t cap = mem->elements;
        const char **m = realloc(r->scan_members, cap * sizeof(*m));
        if (m)
            r->scan_members = m;
        size_t *l = m ? realloc(r->scan_lens, cap * sizeof(*l)) : NULL;
        if (l)
            r->scan_lens = l;
        if (!m || !l) {
            op_finish(r, op, -ENOMEM, NULL);
            return;
        }
        r->scan_cap = cap;
    }
    size_t n = 0;
    for (size_t i = 0; i < mem->elements; i++) {
        const redisReply *e = mem->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        r->scan_members[n] = e->str;
        r->scan_lens[n++] = e->len;
    }
    kx_set_scan_cb scb = op->scb;
    void *ud = op->ud;
    kx__redis_op_release(r, op);
    scb(ud, 0, cur->str, r->scan_members, r->scan_lens, n);
}

void kx__redis_op_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    redis_op *op = privdata;
    kx_store_redis *r = op->r;
    redis_node *n = r->nodes[op->node];
    redisReply *reply = reply_;
    kx__redis_enter(r);
    n->npending--;
    kx__redis_answered(r, op);
    if (op->kind == OP_LOG) {
        kx__redis_log_reply(r, n, op, reply);
        goto out;
    }
    if (!reply) {
        /* The connection is going down: everything still queued on it fails the same way,
         * and the store is down for those callbacks already (the state callback follows). */
        n->up = false;
        if (n->in_map)
            r->up = false;
        op_finish(r, op, r->destroying ? -ECANCELED : -EIO, NULL);
        goto out;
    }
    kx__redis_watchdog_kick(n);
    if (r->destroying) {
        op_finish(r, op, -ECANCELED, NULL);
        goto out;
    }
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
        op->tries < REDIS_MAX_NOSCRIPT_RETRIES) {
        /* The load is queued before the resend on the same connection, so it runs first. */
        op->tries++;
        if (kx__redis_script_load(n) == 0 && kx__redis_node_send(n, op) == 0)
            goto out;
        op_finish(r, op, -EIO, NULL);
        goto out;
    }
    if (reply->type == REDIS_REPLY_ERROR && op->kind == OP_SCAN &&
        (!strncmp(reply->str, "MOVED ", 6) || !strncmp(reply->str, "ASK ", 4)) &&
        !(op->len[1] == 1 && op->args.data[op->off[1]] == '0')) {
        /* An SSCAN cursor is the node's own: on another node the read starts over. */
        op_finish(r, op, -EAGAIN, NULL);
        goto out;
    }
    if (reply->type == REDIS_REPLY_ERROR && kx__redis_redirect(r, op, reply))
        goto out;
    if (reply->type == REDIS_REPLY_ERROR) {
        kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state", "redis %s:%d: %s: %s", n->host, n->port,
                       op->kind == OP_SCAN ? "live list read" : "window add", reply->str);
        op_finish(r, op, -EPROTO, NULL);
        goto out;
    }
    if (op->kind == OP_WM) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_INTEGER ||
            reply->element[1]->type != REDIS_REPLY_INTEGER) {
            op_finish(r, op, -EPROTO, NULL);
            goto out;
        }
        kx_watermark_cb wcb = op->wcb;
        void *ud = op->ud;
        bool known = reply->element[0]->integer == 1;
        int64_t wm = reply->element[1]->integer;
        kx__redis_op_release(r, op);
        wcb(ud, 0, known, wm);
        goto out;
    }
    if (op->kind == OP_CLAIM) {
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_INTEGER ||
            reply->element[1]->type != REDIS_REPLY_INTEGER ||
            reply->element[0]->integer < KX_CLAIM_MINE ||
            reply->element[0]->integer > KX_CLAIM_DONE_STATE) {
            op_finish(r, op, -EPROTO, NULL);
            goto out;
        }
        kx_claim_cb ccb = op->ccb;
        void *ud = op->ud;
        kx_claim_state st = (kx_claim_state)reply->element[0]->integer;
        int64_t ttl = reply->element[1]->integer;
        kx__redis_op_release(r, op);
        ccb(ud, 0, st, ttl < 0 ? 0 : ttl);
        goto out;
    }
    if (op->kind == OP_SCAN) {
        scan_reply(r, op, reply);
        goto out;
    }
    if (op->kind == OP_MANY) {
        size_t nres = 0;
        long long dropped = 0;
        if (parse_many(r, reply, op->nmany, &nres, &dropped) != 0) {
            kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state", "redis %s:%d: unexpected reply",
                           n->host, n->port);
            op_finish(r, op, -EPROTO, NULL);
            goto out;
        }
        if (dropped > 0) {
            kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
            kx_log_limited(&r->rl_cap, KX_LOG_WARN, "state",
                           "key \"%.*s\" over %u members: dropped the %lld oldest", (int)op->len[0],
                           op->args.data + op->off[0], r->base.member_cap, dropped);
        }
        kx_store_many_cb mcb = op->mcb;
        void *ud = op->ud;
        kx__redis_op_release(r, op);
        mcb(ud, 0, r->many_res, nres);
        goto out;
    }
    if (op->kind == OP_TOUCH_MANY || op->kind == OP_CTOUCH_MANY) {
        size_t nres = 0;
        if (parse_touch_many(r, reply, op->kind == OP_CTOUCH_MANY, op->nmany, &nres) != 0) {
            kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state", "redis %s:%d: unexpected reply",
                           n->host, n->port);
            op_finish(r, op, -EPROTO, NULL);
            goto out;
        }
        kx_absence_many_cb tcb = op->tcb;
        void *ud = op->ud;
        kx__redis_op_release(r, op);
        tcb(ud, 0, r->tm_res, nres);
        goto out;
    }
    if (op->kind != OP_WINDOW) {
        kx_absence_result ares = {0};
        if (parse_absence(r, op, reply, &ares) != 0) {
            kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state", "redis %s:%d: unexpected reply",
                           n->host, n->port);
            op_finish(r, op, -EPROTO, NULL);
        } else {
            op_finish_absence(r, op, &ares);
        }
        goto out;
    }
    kx_window_result res = {0};
    long long dropped = 0;
    if (parse_result(r, reply, &res, &dropped) != 0) {
        kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state", "redis %s:%d: unexpected reply", n->host,
                       n->port);
        op_finish(r, op, -EPROTO, NULL);
        goto out;
    }
    if (dropped > 0) {
        kx_metric_inc(KX_M_STATE_KEYS_CAPPED);
        kx_log_limited(&r->rl_cap, KX_LOG_WARN, "state",
                       "key \"%.*s\" over %u members: dropped the %lld oldest", (int)op->len[0],
                       op->args.data + op->off[0], r->base.member_cap, dropped);
    }
    op_finish(r, op, 0, &res);
out:
    /* A slot this reply drained may let held ops go (cluster). */
    if (r->flush_due) {
        r->flush_due = false;
        kx__redis_flush_held(r);
    }
    kx__redis_leave(r);
}

/* Room for one more argument position. */
static int op_arg_room(redis_op *op)
{
    if ((size_t)op->nargs < op->argcap)
        return 0;
    size_t cap = op->argcap ? op->argcap * 2 : OP_NARGS;
    size_t *o = realloc(op->off, cap * sizeof(*o));
    if (!o)
        return -ENOMEM;
    op->off = o;
    size_t *l = realloc(op->len, cap * sizeof(*l));
    if (!l)
        return -ENOMEM;
    op->len = l;
    op->argcap = cap;
    return 0;
}

/* Appends one argument to op->args and records where it is. */
int kx__redis_op_arg(redis_op *op, const char *p, size_t n)
{
    if (op_arg_room(op))
        return -ENOMEM;
    op->off[op->nargs] = op->args.len;
    int rc = kx_buf_append(&op->args, p, n);
    if (rc)
        return rc;
    op->len[op->nargs++] = n;
    return 0;
}

/* A number argument, written in place: "%lld", or "%.17g" (exact through Lua's tonumber). A
 * call carries a dozen, so printf's cost showed in klaxon's CPU per event. */
static int op_arg_num(redis_op *op, bool integer, int64_t i, double d)
{
    if (op_arg_room(op))
        return -ENOMEM;
    size_t start = op->args.len;
    op->off[op->nargs] = start;
    int rc = integer ? kx_buf_put_i64(&op->args, i) : kx_buf_put_g17(&op->args, d);
    if (rc)
        return rc;
    op->len[op->nargs++] = op->args.len - start;
    return 0;
}

int kx__redis_op_arg_i64(redis_op *op, int64_t v)
{
    return op_arg_num(op, true, v, 0);
}

static int op_arg_g17(redis_op *op, double v)
{
    return op_arg_num(op, false, 0, v);
}

/* PREFIX{KEY}:z or :e -- the hash tag keeps both keys of a window in one cluster slot. */
int kx__redis_op_arg_key(redis_op *op, const char *prefix, const char *key, char kind)
{
    if (op_arg_room(op))
        return -ENOMEM;
    op->off[op->nargs] = op->args.len;
    size_t start = op->args.len;
    int rc = kx_buf_puts(&op->args, prefix);
    if (!rc)
        rc = kx_buf_putc(&op->args, '{');
    if (!rc)
        rc = kx_buf_puts(&op->args, key);
    if (!rc)
        rc = kx_buf_putc(&op->args, '}');
    if (!rc)
        rc = kx_buf_putc(&op->args, ':');
    if (!rc)
        rc = kx_buf_putc(&op->args, kind);
    if (rc)
        return rc;
    op->len[op->nargs++] = op->args.len - start;
    return 0;
}

/* A key's Redis keys: KEYS[1..KX__REDIS_NKEYS] of the script (redis_scripts.h). */
static int op_arg_keys(redis_op *op, const char *prefix, const char *key)
{
    int rc = 0;
    for (size_t i = 0; i < KX__REDIS_NKEYS && !rc; i++)
        rc = kx__redis_op_arg_key(op, prefix, key, kx__redis_key_kinds[i]);
    return rc;
}

/* A condition: the count of terms, then op and value of each. */
static int op_arg_terms(redis_op *op, const kx_cmp_term *cond, size_t ncond)
{
    int rc = kx__redis_op_arg_i64(op, (int64_t)ncond);
    for (size_t i = 0; i < ncond && !rc; i++) {
        rc = kx__redis_op_arg_i64(op, (int64_t)cond[i].op);
        if (!rc)
            rc = op_arg_g17(op, cond[i].value);
    }
    return rc;
}

static int op_build(kx_store_redis *r, redis_op *op, const kx_window_add *a)
{
    size_t max_ev =
        a->max_evidence < KX__STORE_MAX_EVIDENCE ? a->max_evidence : KX__STORE_MAX_EVIDENCE;
    int rc = op_arg_keys(op, r->prefix, a->key);
    if (!rc)
        rc = kx__redis_op_arg(op, a->member, strlen(a->member));
    if (!rc)
        rc = kx__redis_op_arg_i64(op, a->time_ms);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, a->window_ms);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, a->ttl_ms);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, (int64_t)max_ev);
    /* first_seen keeps at most KX__STORE_SEEN_CAP values per key (as the memory backend). */
    uint32_t cap = r->base.member_cap;
    if (a->agg == KX_AGG_FIRST_SEEN && cap > KX__STORE_SEEN_CAP)
        cap = KX__STORE_SEEN_CAP;
    if (!rc)
        rc = kx__redis_op_arg_i64(op, (int64_t)cap);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, (int64_t)a->agg);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, a->suppress_ms);
    if (!rc)
        rc =
            kx__redis_op_arg(op, a->evidence ? a->evidence : "", a->evidence ? a->evidence_len : 0);
    kx_cmp_term cond[KX_CMP_MAX_TERMS];
    size_t ncond = kx__store_cond(a, cond);
    if (!rc)
        rc = op_arg_terms(op, cond, ncond);
    if (!rc)
        rc = op_arg_g17(op, a->deviations);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, a->history);
    if (!rc)
        rc = kx__redis_op_arg(op, a->evidence_if_crossed ? "1" : "0", 1);
    return rc;
}

/* An op from the free list, or NULL with *rc set when none may be sent now. */
redis_op *kx__redis_op_take(kx_store_redis *r, int *rc)
{
    if (r->destroying) {
        *rc = -ECANCELED;
        return NULL;
    }
    if (!r->up) {
        kx_metric_inc(KX_M_STORE_ERRORS);
        *rc = -EAGAIN;
        return NULL;
    }
    if (r->npending >= REDIS_MAX_PENDING) {
        *rc = -ENOBUFS;
        return NULL;
    }
    redis_op *op = r->free_ops;
    if (op) {
        r->free_ops = op->next;
    } else {
        op = calloc(1, sizeof(*op));
        if (!op) {
            *rc = -ENOMEM;
            return NULL;
        }
        kx_buf_init(&op->args, 0);
    }
    op->r = r;
    op->cb = NULL;
    op->acb = NULL;
    op->cmd = CMD_EVALSHA;
    op->forget = false;
    kx_buf_reset(&op->args);
    op->nargs = 0;
    op->tries = 0;
    return op;
}

int kx__redis_op_send(kx_store_redis *r, redis_op *op)
{
    op->ask = REDIS_NO_NODE;
    op->redirects = 0;
    op->not_before = op->tryagain_until = 0;
    op->seq = ++r->seq;
    /* The first argument is a key; all of an op's keys share its hash tag. */
    op->slot = r->mode == REDIS_MODE_CLUSTER
                   ? kx__redis_key_slot(op->args.data + op->off[0], op->len[0])
                   : 0;
    return kx__redis_route(r, op);
}

int kx__redis_op_accept(kx_store_redis *r, redis_op *op, int rc)
{
    if (rc) {
        if (rc == -EAGAIN)
            kx_metric_inc(KX_M_STORE_ERRORS);
        kx__redis_op_release(r, op);
        return rc;
    }
    op->counted = true;
    r->npending++;
    kx_metric_inc(KX_M_STORE_OPS);
    return 0;
}

static int op_go(kx_store_redis *r, redis_op *op, int rc)
{
    if (!rc)
        rc = kx__redis_op_send(r, op);
    return kx__redis_op_accept(r, op, rc);
}

static int redis_window_add(kx_store *s, const kx_window_add *a, kx_store_cb cb, void *ud)
{
    kx_store_redis *r = (kx_store_redis *)s;
    int rc = kx__store_validate(a);
    if (rc)
        return rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = OP_WINDOW;
    op->cb = cb;
    op->ud = ud;
    if (r->log_windows && a->agg <= KX_AGG_ORDERED) {
        op->single = true;
        return kx__redis_log_add(r, op, a, 1);
    }
    return op_go(r, op, op_build(r, op, a));
}

static int redis_window_add_many(kx_store *s, const kx_window_add *ops, size_t n,
                                 kx_store_many_cb cb, void *ud)
{
    kx_store_redis *r = (kx_store_redis *)s;
    int rc = kx__store_validate_many(ops, n);
    if (rc)
        return rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = OP_MANY;
    op->mcb = cb;
    op->ud = ud;
    op->nmany = n;
    if (r->log_windows && ops[0].agg <= KX_AGG_ORDERED) {
        op->single = false;
        return kx__redis_log_add(r, op, ops, n);
    }
    /* The first add's arguments, then the count and (member, time, evidence) of the rest. */
    rc = op_build(r, op, &ops[0]);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, (int64_t)(n - 1));
    for (size_t i = 1; i < n && !rc; i++) {
        rc = kx__redis_op_arg(op, ops[i].member, strlen(ops[i].member));
        if (!rc)
            rc = kx__redis_op_arg_i64(op, ops[i].time_ms);
        if (!rc)
            rc = kx__redis_op_arg(op, ops[i].evidence ? ops[i].evidence : "",
                                  ops[i].evidence ? ops[i].evidence_len : 0);
    }
    return op_go(r, op, rc);
}

/* The absence keys and the script's ten fixed arguments (redis_scripts.h). */
/* What an absence or closing op sends (touch: group, identity and payload; due: limit,
 * token and, closing, the condition). */
typedef struct absence_args {
    const char *key, *group;
    int64_t t, timespan, keep, limit;
    uint64_t token;
    const char *payload;
    size_t payload_len;
    const char *identity;
    const kx_cmp_term *cond;
    size_t ncond;
} absence_args;

/* A token as 16 hex digits, "0" for none. */
static int op_arg_token(redis_op *op, uint64_t token)
{
    char hex[16];
    if (!token)
        return kx__redis_op_arg(op, "0", 1);
    kx_hex64(hex, token);
    return kx__redis_op_arg(op, hex, sizeof(hex));
}

/* The absence keys and the script's ten fixed arguments (redis_scripts.h), then the terms. */
static int op_build_absence(kx_store_redis *r, redis_op *op, int agg, const absence_args *x)
{
    int rc = op_arg_keys(op, r->prefix, x->key);
    if (!rc)
        rc = kx__redis_op_arg(op, x->group, strlen(x->group));
    if (!rc)
        rc = kx__redis_op_arg_i64(op, x->t);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, x->timespan);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, x->keep);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, x->limit);
    if (!rc)
        rc = op_arg_token(op, x->token);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, agg);
    if (!rc)
        rc = kx__redis_op_arg(op, x->identity ? x->identity : "0",
                              x->identity ? strlen(x->identity) : 1);
    if (!rc)
        rc = kx__redis_op_arg(op, x->payload ? x->payload : "", x->payload ? x->payload_len : 0);
    if (!rc)
        rc = op_arg_terms(op, x->cond, x->ncond);
    return rc;
}

static int redis_absence_op(kx_store_redis *r, op_kind kind, const absence_args *x,
                            kx_absence_cb cb, void *ud)
{
    static const int agg[] = {[OP_TOUCH] = KX__REDIS_OP_ABSENCE_TOUCH,
                              [OP_DUE] = KX__REDIS_OP_ABSENCE_DUE,
                              [OP_CTOUCH] = KX__REDIS_OP_CLOSE_TOUCH,
                              [OP_CDUE] = KX__REDIS_OP_CLOSE_DUE};
    int rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = kind;
    op->acb = cb;
    op->ud = ud;
    return op_go(r, op, op_build_absence(r, op, agg[kind], x));
}

/* ARGV 8 (a closing touch's identity) carries a touch's mode. */
static const char *touch_mode_arg(kx_touch_mode mode)
{
    return mode == KX_TOUCH_EXTEND ? "x" : mode == KX_TOUCH_REPLACE ? "r" : "0";
}

/* One touch's arguments (absence or closing: the op array and the index). */
typedef void (*touch_args_fn)(const void *ops, size_t i, absence_args *x);

static void absence_touch_args(const void *ops, size_t i, absence_args *x)
{
    const kx_absence_touch *a = &((const kx_absence_touch *)ops)[i];
    *x = (absence_args){.key = a->key,
                        .group = a->group,
                        .t = a->time_ms,
                        .timespan = a->timespan_ms,
                        .keep = a->keep_ms,
                        .payload = a->payload,
                        .payload_len = a->payload_len,
                        .identity = touch_mode_arg(a->mode),
                        .token = a->token};
}

static void close_touch_args(const void *ops, size_t i, absence_args *x)
{
    const kx_close_touch *a = &((const kx_close_touch *)ops)[i];
    *x = (absence_args){.key = a->key,
                        .group = a->group,
                        .t = a->time_ms,
                        .timespan = a->timespan_ms,
                        .keep = a->ttl_ms,
                        .payload = a->payload,
                        .payload_len = a->payload_len,
                        .identity = a->identity};
}

static int redis_absence_touch(kx_store *s, const kx_absence_touch *a, kx_absence_cb cb, void *ud)
{
    int rc = kx__store_validate_touch(a);
    if (rc)
        return rc;
    absence_args x;
    absence_touch_args(a, 0, &x);
    return redis_absence_op((kx_store_redis *)s, OP_TOUCH, &x, cb, ud);
}

/* Several touches of one key: the first touch's arguments as for one touch, then the count
 * and (group, time, mode or identity, payload, token) of the rest (redis_scripts.h). */
static int redis_touch_many(kx_store_redis *r, op_kind kind, int agg, const void *ops, size_t n,
                            touch_args_fn args_of, kx_absence_many_cb cb, void *ud)
{
    int rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = kind;
    op->tcb = cb;
    op->ud = ud;
    op->nmany = n;
    absence_args x;
    args_of(ops, 0, &x);
    rc = op_build_absence(r, op, agg, &x);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, (int64_t)(n - 1));
    for (size_t i = 1; i < n && !rc; i++) {
        args_of(ops, i, &x);
        rc = kx__redis_op_arg(op, x.group, strlen(x.group));
        if (!rc)
            rc = kx__redis_op_arg_i64(op, x.t);
        if (!rc)
            rc = kx__redis_op_arg(op, x.identity, strlen(x.identity));
        if (!rc)
            rc = kx__redis_op_arg(op, x.payload ? x.payload : "", x.payload ? x.payload_len : 0);
        if (!rc)
            rc = op_arg_token(op, x.token);
    }
    return op_go(r, op, rc);
}

static int redis_absence_touch_many(kx_store *s, const kx_absence_touch *a, size_t n,
                                    kx_absence_many_cb cb, void *ud)
{
    int rc = kx__store_validate_touch_many(a, n);
    return rc ? rc
              : redis_touch_many((kx_store_redis *)s, OP_TOUCH_MANY, KX__REDIS_OP_ABSENCE_TOUCH, a,
                                 n, absence_touch_args, cb, ud);
}

static int redis_close_touch_many(kx_store *s, const kx_close_touch *a, size_t n,
                                  kx_absence_many_cb cb, void *ud)
{
    int rc = kx__store_validate_close_touch_many(a, n);
    return rc ? rc
              : redis_touch_many((kx_store_redis *)s, OP_CTOUCH_MANY, KX__REDIS_OP_CLOSE_TOUCH, a,
                                 n, close_touch_args, cb, ud);
}

static int redis_absence_due(kx_store *s, const kx_absence_due *a, kx_absence_cb cb, void *ud)
{
    int rc = kx__store_validate_due(a);
    if (rc)
        return rc;
    absence_args x = {.key = a->key,
                      .group = "",
                      .t = a->watermark_ms,
                      .timespan = a->timespan_ms,
                      .keep = a->keep_ms,
                      .limit = (int64_t)a->limit,
                      .token = a->token};
    return redis_absence_op((kx_store_redis *)s, OP_DUE, &x, cb, ud);
}

static int redis_close_touch(kx_store *s, const kx_close_touch *a, kx_absence_cb cb, void *ud)
{
    int rc = kx__store_validate_close_touch(a);
    if (rc)
        return rc;
    absence_args x;
    close_touch_args(a, 0, &x);
    return redis_absence_op((kx_store_redis *)s, OP_CTOUCH, &x, cb, ud);
}

static int redis_close_due(kx_store *s, const kx_close_due *a, kx_absence_cb cb, void *ud)
{
    int rc = kx__store_validate_close_due(a);
    if (rc)
        return rc;
    absence_args x = {.key = a->key,
                      .group = "",
                      .t = a->watermark_ms,
                      .timespan = a->timespan_ms,
                      .keep = a->ttl_ms,
                      .limit = (int64_t)a->limit,
                      .token = a->token,
                      .cond = a->cond,
                      .ncond = a->ncond};
    return redis_absence_op((kx_store_redis *)s, OP_CDUE, &x, cb, ud);
}

static int redis_watermark(kx_store *s, const kx_watermark_op *a, kx_watermark_cb cb, void *ud)
{
    kx_store_redis *r = (kx_store_redis *)s;
    int rc = kx__store_validate_watermark(a);
    if (rc)
        return rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = OP_WM;
    op->wcb = cb;
    op->ud = ud;
    absence_args x = {.key = a->key,
                      .group = "",
                      .t = a->now_ms,
                      .timespan = a->quiet_ms,
                      .keep = a->ttl_ms,
                      .limit = (int64_t)a->n};
    rc = op_build_absence(r, op, KX__REDIS_OP_WATERMARK, &x);
    /* The entries in the place of a condition's terms: name, newest time, live. */
    for (size_t i = 0; i < a->n && !rc; i++) {
        rc = kx__redis_op_arg(op, a->mine[i].name, strlen(a->mine[i].name));
        if (!rc)
            rc = kx__redis_op_arg_i64(op, a->mine[i].max_ms);
        if (!rc)
            rc = kx__redis_op_arg(op, a->mine[i].live ? "1" : "0", 1);
    }
    return op_go(r, op, rc);
}

static int redis_claim(kx_store *s, const kx_claim_op *a, kx_claim_cb cb, void *ud)
{
    kx_store_redis *r = (kx_store_redis *)s;
    int rc = kx__store_validate_claim(a);
    if (rc)
        return rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = OP_CLAIM;
    op->ccb = cb;
    op->ud = ud;
    absence_args x = {.key = a->key,
                      .group = a->holder,
                      .timespan = a->lease_ms,
                      .keep = a->keep_ms,
                      .limit = (int64_t)a->mode};
    return op_go(r, op, op_build_absence(r, op, KX__REDIS_OP_CLAIM, &x));
}

/* DEL of a key's Redis keys, no reply wanted. Best effort: while the store is down the
 * keys are left to their TTL. */
static int redis_forget(kx_store *s, const char *key)
{
    kx_store_redis *r = (kx_store_redis *)s;
    if (!r->up)
        return -EAGAIN;
    char k[KX__REDIS_NKEYS][KX__STORE_MAX_KEY_LEN + REDIS_MAX_PREFIX + 8];
    for (size_t i = 0; i < KX__REDIS_NKEYS; i++)
        snprintf(k[i], sizeof(k[i]), "%s{%s}:%c", r->prefix, key, kx__redis_key_kinds[i]);
    redis_node *n = kx__redis_key_node(r, k[0], strlen(k[0]));
    if (!n)
        return -EAGAIN;
    _Static_assert(KX__REDIS_NKEYS == 5, "DEL names every key");
    /* and the window log (:l), which names no script key: after the key's adds in flight */
    if (r->log_windows && kx__redis_log_forget(r, key))
        return redisAsyncCommand(n->ac, NULL, NULL, "DEL %s %s %s %s %s", k[0], k[1], k[2], k[3],
                                 k[4]) == REDIS_OK
                   ? 0
                   : -EIO;
    return redisAsyncCommand(n->ac, NULL, NULL, "DEL %s %s %s %s %s %s{%s}:l", k[0], k[1], k[2],
                             k[3], k[4], r->prefix, key) == REDIS_OK
               ? 0
               : -EIO;
}

/* SSCAN key cursor COUNT 1000: one page of a live list's set. The key is another system's,
 * as written (no prefix); in a cluster it goes to its slot's node like any op. */
static int redis_set_scan(kx_store *s, const char *key, const char *cursor, kx_set_scan_cb cb,
                          void *ud)
{
    kx_store_redis *r = (kx_store_redis *)s;
    int rc = 0;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op)
        return rc;
    op->kind = OP_SCAN;
    op->cmd = CMD_SSCAN;
    op->scb = cb;
    op->ud = ud;
    rc = kx__redis_op_arg(op, key, strlen(key));
    if (!rc)
        rc = kx__redis_op_arg(op, cursor, strlen(cursor));
    if (!rc)
        rc = kx__redis_op_arg(op, "COUNT", 5);
    if (!rc)
        rc = kx__redis_op_arg(op, "1000", 4);
    return op_go(r, op, rc);
}

static bool redis_is_up(const kx_store *s)
{
    return ((const kx_store_redis *)s)->up;
}

static size_t redis_pending(const kx_store *s)
{
    return ((const kx_store_redis *)s)->npending;
}

static void redis_destroy(kx_store *s)
{
    kx_store_redis *r = (kx_store_redis *)s;
    if (r->destroying)
        return;
    r->destroying = true;
    kx__redis_enter(r);
    kx__redis_log_cancel(r);
    kx__redis_destroy_nodes(r);
    kx__redis_leave(r);
}

int kx_store_redis_use_log(kx_store *s)
{
    if (!s || strcmp(s->vt->kind, "redis") != 0)
        return -EINVAL;
    kx_store_redis *r = (kx_store_redis *)s;
    if (r->log_windows)
        return 0;
    int rc = kx__redis_log_init(r);
    if (!rc)
        r->log_windows = true;
    return rc;
}

void kx__store_redis_set_timeout(kx_store *s, int64_t timeout_ms)
{
    ((kx_store_redis *)s)->timeout_ms = timeout_ms > 0 ? timeout_ms : REDIS_DEFAULT_TIMEOUT_MS;
}

static const kx__store_vtbl redis_vtbl = {
    .kind = "redis",
    .window_add = redis_window_add,
    .window_add_many = redis_window_add_many,
    .absence_touch = redis_absence_touch,
    .absence_touch_many = redis_absence_touch_many,
    .absence_due = redis_absence_due,
    .close_touch_many = redis_close_touch_many,
    .close_touch = redis_close_touch,
    .close_due = redis_close_due,
    .watermark = redis_watermark,
    .claim = redis_claim,
    .forget = redis_forget,
    .set_scan = redis_set_scan,
    .is_up = redis_is_up,
    .pending = redis_pending,
    .destroy = redis_destroy,
};

int kx_store_redis_create(struct ev_loop *loop, const char *host, int port, const char *prefix,
                          kx_store **out)
{
    return kx_store_redis_create_auth(loop, host, port, prefix, NULL, NULL, out);
}

int kx_store_redis_create_auth(struct ev_loop *loop, const char *host, int port, const char *prefix,
                               const char *username, const char *password, kx_store **out)
{
    if (!loop || !host || !out || port < 1 || port > 65535 || (username && !password))
        return -EINVAL;
    if (!prefix)
        prefix = "klaxon:";
    if (strlen(prefix) > REDIS_MAX_PREFIX)
        return -EINVAL;
    kx_store_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    kx__store_base_init(&r->base, &redis_vtbl);
    kx_buf_init(&r->resp, 0);
    r->loop = loop;
    r->prefix = strdup(prefix);
    r->username = username ? strdup(username) : NULL;
    r->password = password ? strdup(password) : NULL;
    if (!r->prefix || (username && !r->username) || (password && !r->password)) {
        free(r->prefix);
        free(r->username);
        kx_secret_free(r->password);
        free(r);
        return -ENOMEM;
    }
    r->timeout_ms = REDIS_DEFAULT_TIMEOUT_MS;
    redis_node *seed = kx__redis_node(r, host, port);
    if (!seed) {
        free(r->prefix);
        free(r->username);
        kx_secret_free(r->password);
        free(r);
        return -EINVAL; /* not a numeric address */
    }
    kx__redis_conn_init(r);
    kx_metric_set_store_up(0);
    kx__redis_node_start(seed);
    *out = &r->base;
    return 0;
}
