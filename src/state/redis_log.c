/*
 * The window log: sliding windows (COUNT .. ORDERED) on Redis without a script run per add.
 *
 * A script call costs Redis a few microseconds before it runs a command, and a sorted-set
 * member per event costs more; klaxon's goal is a few microseconds of Redis CPU per event.
 * So the window arithmetic moves into klaxon: Redis keeps, per window key, a stream
 * PREFIX{KEY}:l of records, each the adds of one call (members, times, evidence) in the order
 * Redis took them, and every process replays that stream into a local memory store (the
 * replica, src/state/memory/). The memory store is the reference the shared suite holds both
 * backends to, so a replayed window answers exactly as one in memory would.
 *
 * Stream IDs are EPOCH-SEQ: EPOCH the server's clock (ms) when the stream was created, SEQ
 * 0, 1, ... An add is `XADD key NOMKSTREAM EPOCH-(SEQ+1)` with the newest entry this process
 * applied: Redis refuses it when another process appended first (the ID is not above the
 * top), so an append succeeds only on the state the replica holds -- a compare-and-set in one
 * native command. A refusal reads the entries missed (XRANGE) and tries again; a missing
 * stream (expired, forgotten) is created by a small script that picks the epoch. The answer
 * of an add is the replica's, computed after the append succeeded.
 *
 * Every record carries its writer's wall clock: a record more than ttl after the one before
 * starts the window over (the memory store's "a key expires after ttl of no updates", kept
 * the same in every replica). The stream's own TTL only collects garbage: each process
 * renews it (PEXPIRE 2 ttl) before an append when its last renewal is ttl old, so a stream
 * outlives every gap shorter than ttl. Once the records since the last snapshot outnumber
 * the members by LOG_COMPACT_MIN, a process appends a snapshot of its replica and trims
 * the records before it (one script call, only if no record came in between).
 *
 * Per key, one op is in flight per process (later ones wait in the key's queue): an append
 * names the next ID, which depends on the answer to the previous one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/redis_int.h"
#include "state/redis_scripts.h"
#include "state/wire.h"

#define LOG_MAX_KEYS 262144u /* replicas kept; the least recently used are dropped */
#define LOG_MAX_CONFLICTS 64 /* appends of one op that lost to another process */
#define LOG_COMPACT_MIN 256u /* records a snapshot must save before it is worth writing */
#define LOG_RECORD_VERSION 1u
#define LOG_ID_MAX 48

enum { LOG_FULL, LOG_SYNC, LOG_CREATE, LOG_REFRESH, LOG_APPEND, LOG_KEEP, LOG_FORGET, LOG_LASTID };

struct log_key {
    log_key *next;          /* hash chain */
    log_key *newer, *older; /* use order */
    uint64_t h;
    uint64_t epoch, seq; /* the newest entry applied; epoch 0: no replica */
    uint64_t entries;    /* entries in the stream as applied (the snapshot's, or from 1) */
    int64_t last_wall;   /* the newest record's wall clock (ms), 0 before the first */
    double keep_until;   /* loop time until which the stream surely lives (our PEXPIRE) */
    double used_at;      /* loop time of the last add through it */
    double ttl_s;        /* its windows' ttl: a replica unused this long is dropped */
    bool reset_pending;  /* a connection was lost while an op was in flight: reset after it */
    bool del_pending;    /* a forget's DEL could not be sent: it goes before anything else */
    int pinned;          /* key_release is running its queue: not to be dropped */
    redis_op *busy;      /* the op in flight */
    redis_op *qhead, *qtail;
    size_t klen;
    char key[];
};

/* ---- keys: a hash table, and the use order for dropping replicas ---- */

static void lru_unlink(kx_store_redis *r, log_key *lk)
{
    if (lk->newer)
        lk->newer->older = lk->older;
    else
        r->lru_new = lk->older;
    if (lk->older)
        lk->older->newer = lk->newer;
    else
        r->lru_old = lk->newer;
    lk->newer = lk->older = NULL;
}

static void lru_front(kx_store_redis *r, log_key *lk)
{
    lk->older = r->lru_new;
    lk->newer = NULL;
    if (r->lru_new)
        r->lru_new->newer = lk;
    r->lru_new = lk;
    if (!r->lru_old)
        r->lru_old = lk;
}

static log_key *lk_find(kx_store_redis *r, const char *key, size_t klen, uint64_t h)
{
    for (log_key *lk = r->log_tab[h & (r->log_cap - 1)]; lk; lk = lk->next)
        if (lk->h == h && lk->klen == klen && !memcmp(lk->key, key, klen))
            return lk;
    return NULL;
}

static void lk_unlink(kx_store_redis *r, log_key *lk)
{
    log_key **pp = &r->log_tab[lk->h & (r->log_cap - 1)];
    while (*pp != lk)
        pp = &(*pp)->next;
    *pp = lk->next;
    lru_unlink(r, lk);
    r->log_n--;
}

/* The replica starts over: nothing applied. */
static void lk_reset(kx_store_redis *r, log_key *lk)
{
    kx_store_forget(r->replica, lk->key);
    lk->epoch = lk->seq = lk->entries = 0;
    lk->last_wall = 0;
}

static int tab_grow(kx_store_redis *r)
{
    size_t cap = r->log_cap * 2;
    log_key **t = calloc(cap, sizeof(*t));
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < r->log_cap; i++)
        for (log_key *lk = r->log_tab[i], *nx; lk; lk = nx) {
            nx = lk->next;
            lk->next = t[lk->h & (cap - 1)];
            t[lk->h & (cap - 1)] = lk;
        }
    free(r->log_tab);
    r->log_tab = t;
    r->log_cap = cap;
    return 0;
}

static void lk_drop(kx_store_redis *r, log_key *lk)
{
    lk_unlink(r, lk);
    kx_store_forget(r->replica, lk->key);
    free(lk);
}

/* Past log_max keys, the least recently used idle ones go (rebuilt from Redis when used). */
static void lk_evict(kx_store_redis *r, const log_key *keep)
{
    log_key *lk = r->lru_old;
    while (r->log_n > r->log_max && lk) {
        log_key *newer = lk->newer;
        if (lk != keep && !lk->busy && !lk->qhead && !lk->pinned) {
            lk_drop(r, lk);
            kx_metric_inc(KX_M_STATE_LOG_DROPPED);
        }
        lk = newer;
    }
}

/* Replicas unused for their ttl go: their windows would start over on the next add anyway
 * (the records' clocks), so keeping them holds memory for nothing. Oldest first, a bounded
 * number per tick. */
static void sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    kx_store_redis *r = t->data;
    double now = ev_now(loop);
    size_t budget = 4096;
    log_key *lk = r->lru_old;
    while (lk && budget-- > 0 && now - lk->used_at > lk->ttl_s) {
        log_key *newer = lk->newer;
        if (!lk->busy && !lk->qhead && !lk->pinned)
            lk_drop(r, lk);
        lk = newer;
    }
}

static log_key *lk_get(kx_store_redis *r, const char *key)
{
    size_t klen = strlen(key);
    uint64_t h = kx_hash64(key, klen, 0);
    log_key *lk = lk_find(r, key, klen, h);
    if (lk) {
        lru_unlink(r, lk);
        lru_front(r, lk);
        return lk;
    }
    if (r->log_n + 1 > r->log_cap && tab_grow(r))
        return NULL;
    lk = calloc(1, sizeof(*lk) + klen + 1);
    if (!lk)
        return NULL;
    lk->h = h;
    lk->klen = klen;
    memcpy(lk->key, key, klen + 1);
    lk->next = r->log_tab[h & (r->log_cap - 1)];
    r->log_tab[h & (r->log_cap - 1)] = lk;
    lru_front(r, lk);
    r->log_n++;
    lk_evict(r, lk);
    return lk;
}

/* ---- records: the adds of one call ---- */

/* version, writer's wall clock, n, then per add: time, member, evidence (a reference to the
 * blob on this process's evidence page, redis_log_evidence.c) */
static int record_build(kx_store_redis *r, kx_buf *b, const kx_window_add *ops, size_t n)
{
    kx_buf_reset(b);
    int rc = kx__wire_put_u32(b, LOG_RECORD_VERSION);
    if (!rc)
        rc = kx__wire_put_u64(b, (uint64_t)kx_now_ms());
    if (!rc)
        rc = kx__wire_put_u32(b, (uint32_t)n);
    for (size_t i = 0; i < n && !rc; i++) {
        bool ev = ops[i].evidence && ops[i].max_evidence > 0;
        rc = kx__wire_put_u64(b, (uint64_t)ops[i].time_ms);
        if (!rc)
            rc = kx__wire_put_bytes(b, ops[i].member, strlen(ops[i].member));
        if (!rc)
            rc = ev ? kx__redis_ev_put(r, ops[i].evidence, ops[i].evidence_len, ops[i].ttl_ms, b)
                    : kx__wire_put_bytes(b, "", 0);
    }
    return rc;
}

/* Where the replica's answers to a record go: for an op's own record its caller, after their
 * evidence is read; for another process's, nowhere (cb and mcb NULL). */
typedef struct fwd {
    kx_store_redis *r;
    redis_op *op;
    kx_store_cb cb;
    kx_store_many_cb mcb;
    void *ud;
    bool later;   /* the evidence is being read: delivered from there */
    bool live;    /* an add was not late: the window was updated (and so renewed) */
    int status;   /* the replica's */
    int64_t wall; /* the record's clock */
} fwd;

static void fwd_res(fwd *f, int status, const kx_window_result *res, size_t n)
{
    kx_window_result bare;
    f->status = status;
    for (size_t i = 0; !status && i < n; i++)
        f->live |= !res[i].late;
    /* The window's clock moves before anything is delivered: a delivery may go on to write a
     * snapshot, which carries it. */
    log_key *lk = f->op->lk;
    if (!status && f->live && f->wall > lk->last_wall)
        lk->last_wall = f->wall;
    if (!f->cb && !f->mcb)
        return;
    if (!status && n) {
        int rc = kx__redis_ev_resolve(f->r, f->op, res, n, f->cb, f->mcb, f->ud);
        if (rc == 1) {
            f->later = true;
            return;
        }
        if (rc == 2)
            return;            /* delivered */
        if (rc < 0 && f->cb) { /* no memory to read the evidence: the answer without it */
            bare = res[0];
            bare.nevidence = 0;
            res = &bare;
        } else if (rc < 0) {
            status = rc;
        }
    }
    if (f->op->counted) {
        f->op->counted = false;
        f->r->npending--;
    }
    if (f->cb)
        f->cb(f->ud, status, status ? NULL : res);
    else
        f->mcb(f->ud, status, status ? NULL : res, status ? 0 : n);
}

static void fwd_one(void *ud, int status, const kx_window_result *res)
{
    fwd_res(ud, status, res, res ? 1 : 0);
}

static void fwd_many(void *ud, int status, const kx_window_result *res, size_t n)
{
    fwd_res(ud, status, res, n);
}

/* Applies a record to lk's replica with op's parameters; the answers go to f. 0, 1 when the
 * bytes are not a valid record (skipped: every replica skips it alike), or the replica's
 * failure (-ENOMEM, -ENOSPC: the replica no longer follows the log). */
static int record_apply(kx_store_redis *r, redis_op *op, const char *p, size_t len, fwd *f)
{
    log_key *lk = op->lk;
    kx__wire_rd rd = kx__wire_reader(p, len);
    if (kx__wire_u32(&rd) != LOG_RECORD_VERSION)
        return 1;
    int64_t wall = kx__wire_i64(&rd);
    uint32_t n = kx__wire_u32(&rd);
    if (rd.bad || n == 0 || n > KX_STORE_MANY_MAX)
        return 1;
    kx_buf_reset(&r->log_names);
    for (uint32_t i = 0; i < n; i++) {
        kx_window_add *a = &r->log_adds[i];
        *a = op->tmpl;
        a->time_ms = kx__wire_i64(&rd);
        size_t mlen;
        const char *m = kx__wire_bytes(&rd, &mlen);
        a->evidence = kx__wire_bytes(&rd, &a->evidence_len);
        if (!a->evidence_len)
            a->evidence = NULL;
        r->log_off[i] = r->log_names.len;
        if (rd.bad || memchr(m, '\0', mlen))
            return 1;
        if (kx_buf_append(&r->log_names, m, mlen) || kx_buf_putc(&r->log_names, '\0'))
            return -ENOMEM;
    }
    if (rd.p != rd.end)
        return 1;
    for (uint32_t i = 0; i < n; i++)
        r->log_adds[i].member = r->log_names.data + r->log_off[i];
    /* More than ttl after the last record that updated the window: it had expired (a memory
     * key expires ttl after its last update; a late add is no update). */
    if (lk->last_wall && wall > lk->last_wall + op->tmpl.ttl_ms)
        kx_store_forget(r->replica, lk->key);
    r->replica->member_cap = r->base.member_cap;
    f->wall = wall;
    /* Another process's record: the member cap's drops were counted and logged by it. */
    kx__store_memory_set_quiet(r->replica, !f->cb && !f->mcb);
    int rc = f->cb && op->single
                 ? kx_store_window_add(r->replica, &r->log_adds[0], fwd_one, f)
                 : kx_store_window_add_many(r->replica, r->log_adds, n, fwd_many, f);
    kx__store_memory_set_quiet(r->replica, false);
    if (rc == -EINVAL || rc == -EMSGSIZE)
        return 1; /* refused by the replica's checks: not a valid record */
    if (rc)
        return rc;
    if (f->status && !f->cb && !f->mcb)
        return f->status;
    return 0;
}

/* ---- steps ---- */

/* "EPOCH-SEQ" into out (LOG_ID_MAX), no NUL. Both stay below 2^63 (parse_id reads at most
 * 19 digits, the epoch is a clock in ms). */
static size_t fmt_id(char *out, uint64_t epoch, uint64_t seq)
{
    size_t n = kx_fmt_i64(out, (int64_t)epoch);
    out[n++] = '-';
    return n + kx_fmt_i64(out + n, (int64_t)seq);
}

/* "EPOCH-SEQ" as XADD returns it; false when it is not one. */
static bool parse_id(const char *s, size_t len, uint64_t *epoch, uint64_t *seq)
{
    uint64_t v[2] = {0, 0};
    int part = 0;
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-' && part == 0 && digits) {
            part = 1;
            digits = 0;
        } else if (s[i] >= '0' && s[i] <= '9' && digits < 19) {
            v[part] = v[part] * 10 + (uint64_t)(s[i] - '0');
            digits++;
        } else {
            return false;
        }
    }
    if (part != 1 || !digits)
        return false;
    *epoch = v[0];
    *seq = v[1];
    return true;
}

/* The stream's TTL, renewed every ttl: it outlives every gap the records keep. */
static int64_t stream_ttl_ms(const redis_op *op)
{
    return op->tmpl.ttl_ms > INT64_MAX / 4 ? INT64_MAX / 2 : 2 * op->tmpl.ttl_ms;
}

/* EVALSHA's keys (the stream first) and the script's ten fixed arguments (redis_scripts.h):
 * 1 a record or snapshot, 2 the expected newest ID, 3 the snapshot's ID, 4 the stream's TTL,
 * 7 the op. */
static int script_args(kx_store_redis *r, redis_op *op, int what, const kx_buf *blob,
                       const char *id, size_t idlen, const char *next, size_t nextlen)
{
    static const char kinds[KX__REDIS_NKEYS] = {'l', 'e', 'a', 'h', 't'};
    int rc = 0;
    for (size_t i = 0; i < KX__REDIS_NKEYS && !rc; i++)
        rc = kx__redis_op_arg_key(op, r->prefix, op->lk->key, kinds[i]);
    if (!rc)
        rc = kx__redis_op_arg(op, blob->data, blob->len);
    if (!rc)
        rc = kx__redis_op_arg(op, id, idlen);
    if (!rc)
        rc = kx__redis_op_arg(op, next, nextlen);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, stream_ttl_ms(op));
    for (int i = 0; i < 2 && !rc; i++)
        rc = kx__redis_op_arg(op, "", 0);
    if (!rc)
        rc = kx__redis_op_arg_i64(op, what);
    for (int i = 0; i < 2 && !rc; i++)
        rc = kx__redis_op_arg(op, "", 0);
    if (!rc)
        rc = kx__redis_op_arg(op, "0", 1);
    return rc;
}

/* Sends step `phase` of op. */
static int log_cmd(kx_store_redis *r, redis_op *op, int phase)
{
    log_key *lk = op->lk;
    char id[LOG_ID_MAX], next[LOG_ID_MAX + 1];
    size_t idlen = fmt_id(id, lk->epoch, lk->seq);
    size_t nextlen = fmt_id(next, lk->epoch, lk->seq + 1);
    kx_buf_reset(&op->args);
    op->nargs = 0;
    op->phase = phase;
    op->tries = 0;
    op->cmd = phase == LOG_FULL || phase == LOG_SYNC ? CMD_XRANGE
              : phase == LOG_REFRESH                 ? CMD_PEXPIRE
              : phase == LOG_APPEND                  ? CMD_XADD
              : phase == LOG_FORGET                  ? CMD_DEL
              : phase == LOG_LASTID                  ? CMD_XINFO_STREAM
                                                     : CMD_EVALSHA;
    int rc = 0;
    if (op->cmd != CMD_EVALSHA)
        rc = kx__redis_op_arg_key(op, r->prefix, lk->key, 'l');
    switch (phase) {
    case LOG_FULL:
        if (!rc)
            rc = kx__redis_op_arg(op, "-", 1);
        if (!rc)
            rc = kx__redis_op_arg(op, "+", 1);
        break;
    case LOG_SYNC: /* after the newest entry applied: "(" excludes it */
        memmove(next + 1, id, idlen);
        next[0] = '(';
        if (!rc)
            rc = kx__redis_op_arg(op, next, idlen + 1);
        if (!rc)
            rc = kx__redis_op_arg(op, "+", 1);
        break;
    case LOG_REFRESH:
        if (!rc)
            rc = kx__redis_op_arg_i64(op, stream_ttl_ms(op));
        break;
    case LOG_APPEND:
        if (!rc)
            rc = kx__redis_op_arg(op, "NOMKSTREAM", 10);
        if (!rc)
            rc = kx__redis_op_arg(op, next, nextlen);
        if (!rc)
            rc = kx__redis_op_arg(op, "r", 1);
        if (!rc)
            rc = kx__redis_op_arg(op, op->rec.data, op->rec.len);
        break;
    case LOG_CREATE:
        rc = script_args(r, op, KX__REDIS_OP_LOG_CREATE, &op->rec, "", 0, "", 0);
        break;
    case LOG_FORGET: /* DEL key, XINFO STREAM key: the key alone */
    case LOG_LASTID:
        break;
    default: /* LOG_KEEP */
        rc = script_args(r, op, KX__REDIS_OP_LOG_KEEP, &r->log_snap, id, idlen, next, nextlen);
        break;
    }
    return rc ? rc : kx__redis_op_send(r, op);
}

/* The first step an op needs: read the log (no replica), renew its TTL, or append. */
static int log_next(kx_store_redis *r, redis_op *op)
{
    log_key *lk = op->lk;
    if (op->forget || lk->del_pending)
        return log_cmd(r, op, LOG_FORGET);
    if (!lk->epoch)
        return log_cmd(r, op, LOG_FULL);
    if (lk->keep_until < ev_now(r->loop) + (double)op->tmpl.ttl_ms / 1000.0)
        return log_cmd(r, op, LOG_REFRESH);
    return log_cmd(r, op, LOG_APPEND);
}

/* Runs op's callback (if it has one left) with a failure status; op goes back. */
static void op_end(kx_store_redis *r, redis_op *op, int status)
{
    kx_store_cb cb = op->cb;
    kx_store_many_cb mcb = op->mcb;
    void *ud = op->ud;
    op->lk = NULL;
    kx__redis_op_release(r, op);
    if ((cb || mcb) && status && status != -ECANCELED)
        kx_metric_inc(KX_M_STORE_ERRORS);
    if (cb)
        cb(ud, status, NULL);
    else if (mcb)
        mcb(ud, status, NULL, 0);
}

/* No op in flight on the key any more: a reset that waited for it happens now. */
static void key_idle(kx_store_redis *r, log_key *lk)
{
    lk->busy = NULL;
    if (lk->reset_pending) {
        lk->reset_pending = false;
        lk_reset(r, lk);
    }
}

/* The key's op is done: the next waiting one goes. */
static void key_release(kx_store_redis *r, log_key *lk)
{
    key_idle(r, lk);
    /* A failed op's callback may issue adds to other keys, whose replicas can push idle ones
     * out: this one stays while its queue is run. */
    lk->pinned++;
    while (!lk->busy && lk->qhead) {
        redis_op *op = lk->qhead;
        lk->qhead = op->qnext;
        if (!lk->qhead)
            lk->qtail = NULL;
        op->qnext = NULL;
        lk->busy = op;
        int rc = r->destroying ? -ECANCELED : log_next(r, op);
        if (rc) {
            key_idle(r, lk);
            if (op->forget) { /* its DEL not sent: before anything else, then */
                lk->del_pending = true;
                lk_reset(r, lk);
            }
            op_end(r, op, rc == -ECANCELED ? rc : -EIO);
        }
    }
    lk->pinned--;
}

void kx__redis_log_fail(kx_store_redis *r, redis_op *op, int status)
{
    log_key *lk = op->lk;
    bool was_busy = lk && lk->busy == op;
    if (lk)
        lk->keep_until = 0; /* a renewal may have been lost with it */
    if (lk && op->forget) { /* deleted or not: delete (again) before anything else */
        lk->reset_pending = true;
        lk->del_pending = true;
    }
    op_end(r, op, status);
    if (was_busy)
        key_release(r, lk);
}

/* Applies our own record (its answers to the caller), then snapshots the log if due. */
static void own_applied(kx_store_redis *r, redis_op *op)
{
    log_key *lk = op->lk;
    fwd f = {.r = r, .op = op, .cb = op->cb, .mcb = op->mcb, .ud = op->ud};
    op->cb = NULL;
    op->mcb = NULL;
    int rc = record_apply(r, op, op->rec.data, op->rec.len, &f);
    if (rc) { /* not answered: the caller retries */
        kx_metric_inc(KX_M_STORE_ERRORS);
        fwd_res(&f, rc < 0 ? rc : -EPROTO, NULL, 0);
    }
    /* Not applied here (or not all of it), yet in the log: this replica no longer follows. */
    if (rc || f.status)
        lk_reset(r, lk);
    if (!f.later)
        kx__redis_log_delivered(r, op);
}

void kx__redis_log_delivered(kx_store_redis *r, redis_op *op)
{
    log_key *lk = op->lk;
    if (!r->destroying && lk->epoch &&
        lk->entries >= r->log_compact_min + kx__store_memory_members(r->replica, lk->key)) {
        kx_buf_reset(&r->log_snap);
        if (kx__wire_put_u64(&r->log_snap, (uint64_t)lk->last_wall) == 0 &&
            kx__store_memory_export(r->replica, lk->key, &r->log_snap) == 0 &&
            log_cmd(r, op, LOG_KEEP) == 0)
            return;
    }
    op->lk = NULL;
    kx__redis_op_release(r, op);
    key_release(r, lk);
}

/* A snapshot entry: the writer's newest wall clock, then the replica's export. */
static int snapshot_apply(kx_store_redis *r, redis_op *op, const char *p, size_t len)
{
    if (len < 8)
        return -EPROTO;
    kx__wire_rd rd = kx__wire_reader(p, 8);
    int64_t wall = kx__wire_i64(&rd);
    int rc = kx__store_memory_import(r->replica, op->lk->key, op->tmpl.ttl_ms, p + 8, len - 8);
    if (!rc)
        op->lk->last_wall = wall;
    return rc;
}

/* Applies XRANGE's entries: all of the stream (full: whatever it holds is the truth, gaps
 * included: a write Redis lost), or those after the newest applied, which must start on the
 * same stream (else 1: the replica must be rebuilt). Entries that are not ours (a field other
 * than r and s, a record or snapshot that does not parse) are skipped, logged, by every
 * replica alike. Returns 0, 1, or the replica's failure. */
static int apply_entries(kx_store_redis *r, redis_node *n, redis_op *op, const redisReply *reply,
                         bool full)
{
    log_key *lk = op->lk;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        uint64_t epoch, seq;
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING ||
            !parse_id(e->element[0]->str, e->element[0]->len, &epoch, &seq))
            return 1;
        const redisReply *fv = e->element[1];
        bool ok = fv->type == REDIS_REPLY_ARRAY && fv->elements == 2 &&
                  fv->element[0]->type == REDIS_REPLY_STRING &&
                  fv->element[1]->type == REDIS_REPLY_STRING && fv->element[0]->len == 1 &&
                  (fv->element[0]->str[0] == 's' || fv->element[0]->str[0] == 'r');
        bool snap = ok && fv->element[0]->str[0] == 's';
        if (i == 0 && !full && !snap && !(lk->epoch && epoch == lk->epoch && seq > lk->seq)) {
            if (seq != 0)
                return 1;
            lk_reset(r, lk); /* a new stream, from its start */
        }
        int rc = 1;
        if (snap) {
            lk_reset(r, lk);
            rc = snapshot_apply(r, op, fv->element[1]->str, fv->element[1]->len);
            lk->entries = 0;
        } else if (ok) {
            fwd f = {.r = r, .op = op};
            rc = record_apply(r, op, fv->element[1]->str, fv->element[1]->len, &f);
        }
        if (rc < 0 && rc != -EPROTO)
            return rc;
        if (rc)
            kx_log_limited(&r->rl_log, KX_LOG_WARN, "state",
                           "redis %s:%d: window log \"%s\": entry %s is not klaxon's: skipped",
                           n->host, n->port, lk->key, e->element[0]->str);
        lk->epoch = epoch;
        lk->seq = seq;
        lk->entries++;
    }
    return 0;
}

static void log_error(kx_store_redis *r, redis_node *n, const char *what, const char *detail)
{
    kx_log_limited(&r->rl_log, KX_LOG_ERROR, "state", "redis %s:%d: window log %s: %s", n->host,
                   n->port, what, detail);
}

static void on_read(kx_store_redis *r, redis_node *n, redis_op *op, const redisReply *reply)
{
    log_key *lk = op->lk;
    bool full = op->phase == LOG_FULL;
    if (reply->type != REDIS_REPLY_ARRAY) {
        log_error(r, n, "read", "unexpected reply");
        lk_reset(r, lk);
        kx__redis_log_fail(r, op, -EPROTO);
        return;
    }
    if (full && reply->elements == 0) { /* no stream: make it, with our record */
        if (log_cmd(r, op, LOG_CREATE))
            kx__redis_log_fail(r, op, -EIO);
        return;
    }
    if (!full && reply->elements == 0) {
        /* Refused, yet nothing after the newest applied: the stream's last ID is past its
         * newest entry (entries deleted from its end). Ask for that ID. */
        if (log_cmd(r, op, LOG_LASTID))
            kx__redis_log_fail(r, op, -EIO);
        return;
    }
    if (full)
        lk_reset(r, lk);
    int rc = apply_entries(r, n, op, reply, full);
    if (rc < 0 || (rc == 1 && full)) {
        log_error(r, n, "read", rc == 1 ? "a damaged entry ID" : strerror(-rc));
        lk_reset(r, lk);
        kx__redis_log_fail(r, op, rc < 0 ? rc : -EPROTO);
        return;
    }
    if (rc == 1) /* the stream is not the one applied: read all of it */
        lk_reset(r, lk);
    if (log_next(r, op))
        kx__redis_log_fail(r, op, -EIO);
}

void kx__redis_log_reply(kx_store_redis *r, redis_node *n, redis_op *op, redisReply *reply)
{
    log_key *lk = op->lk;
    if (!reply) {
        n->up = false;
        if (n->in_map)
            r->up = false;
        kx__redis_log_fail(r, op, r->destroying ? -ECANCELED : -EIO);
        return;
    }
    kx__redis_watchdog_kick(n);
    if (r->destroying) {
        kx__redis_log_fail(r, op, -ECANCELED);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (op->cmd == CMD_EVALSHA && strncmp(reply->str, "NOSCRIPT", 8) == 0 && op->tries < 3) {
            op->tries++;
            if (kx__redis_script_load(n) == 0 && kx__redis_node_send(n, op) == 0)
                return;
            kx__redis_log_fail(r, op, -EIO);
            return;
        }
        if (kx__redis_redirect(r, op, reply))
            return;
        if (op->phase == LOG_APPEND && strstr(reply->str, "equal or smaller")) {
            /* Another process appended first: read what it wrote, then try again. */
            kx_metric_inc(KX_M_STATE_LOG_CONFLICTS);
            if (++op->conflicts > LOG_MAX_CONFLICTS || log_cmd(r, op, LOG_SYNC))
                kx__redis_log_fail(r, op, -EIO);
            return;
        }
        if (op->phase == LOG_LASTID) { /* no such key: gone since (forgotten): read it all */
            lk_reset(r, lk);
            if (log_next(r, op))
                kx__redis_log_fail(r, op, -EIO);
            return;
        }
        log_error(r, n, "command", reply->str);
        kx__redis_log_fail(r, op, -EPROTO);
        return;
    }
    switch (op->phase) {
    case LOG_FULL:
    case LOG_SYNC:
        on_read(r, n, op, reply);
        return;
    case LOG_REFRESH:
        lk->keep_until = ev_now(r->loop) + (double)stream_ttl_ms(op) / 1000.0;
        if (log_cmd(r, op, LOG_APPEND))
            kx__redis_log_fail(r, op, -EIO);
        return;
    case LOG_APPEND:
        if (reply->type == REDIS_REPLY_NIL) { /* expired or forgotten: start it again */
            lk_reset(r, lk);
            if (log_cmd(r, op, LOG_CREATE))
                kx__redis_log_fail(r, op, -EIO);
            return;
        }
        lk->seq++;
        lk->entries++;
        own_applied(r, op);
        return;
    case LOG_CREATE: {
        uint64_t epoch = 0;
        if (reply->type == REDIS_REPLY_INTEGER) { /* it exists after all: read it */
            if (log_cmd(r, op, LOG_FULL))
                kx__redis_log_fail(r, op, -EIO);
            return;
        }
        uint64_t seq = 0;
        if (reply->type != REDIS_REPLY_STRING || !parse_id(reply->str, reply->len, &epoch, &seq) ||
            epoch == 0) {
            log_error(r, n, "create", "unexpected reply");
            kx__redis_log_fail(r, op, -EPROTO);
            return;
        }
        lk_reset(r, lk);
        lk->epoch = epoch;
        lk->seq = seq;
        lk->entries = 1;
        lk->keep_until = ev_now(r->loop) + (double)stream_ttl_ms(op) / 1000.0;
        own_applied(r, op);
        return;
    }
    case LOG_LASTID: { /* appends go after the stream's last ID, on the same epoch */
        uint64_t epoch = 0, seq = 0;
        for (size_t i = 0; reply->type == REDIS_REPLY_ARRAY && i + 1 < reply->elements; i += 2) {
            const redisReply *k = reply->element[i], *v = reply->element[i + 1];
            if (k->type == REDIS_REPLY_STRING && k->len == 17 &&
                !memcmp(k->str, "last-generated-id", 17) && v->type == REDIS_REPLY_STRING &&
                !parse_id(v->str, v->len, &epoch, &seq))
                epoch = 0;
        }
        if (epoch && epoch == lk->epoch && seq > lk->seq)
            lk->seq = seq;
        else
            lk_reset(r, lk); /* another stream, or no answer: read it all */
        if (log_next(r, op))
            kx__redis_log_fail(r, op, -EIO);
        return;
    }
    case LOG_FORGET: /* gone: the key's next op creates it again */
        lk_reset(r, lk);
        lk->del_pending = false;
        if (!op->forget) { /* an add that had to delete first: now its own steps */
            if (log_next(r, op))
                kx__redis_log_fail(r, op, -EIO);
            return;
        }
        op->lk = NULL;
        kx__redis_op_release(r, op);
        key_release(r, lk);
        return;
    default: /* LOG_KEEP */
        if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
            lk->seq++;
            lk->entries = 1;
        }
        op->lk = NULL;
        kx__redis_op_release(r, op);
        key_release(r, lk);
        return;
    }
}

int kx__redis_log_add(kx_store_redis *r, redis_op *op, const kx_window_add *ops, size_t n)
{
    op->kind = OP_LOG;
    op->conflicts = 0;
    op->qnext = NULL;
    op->tmpl = ops[0];
    op->tmpl.member = NULL;
    op->tmpl.time_ms = 0;
    op->tmpl.evidence = NULL;
    op->tmpl.evidence_len = 0;
    size_t ncond = ops[0].ncond < KX_CMP_MAX_TERMS ? ops[0].ncond : KX_CMP_MAX_TERMS;
    if (ncond)
        memcpy(op->cond, ops[0].cond, ncond * sizeof(*op->cond));
    op->tmpl.cond = op->cond;
    op->tmpl.ncond = ncond;
    log_key *lk = NULL;
    int rc = record_build(r, &op->rec, ops, n);
    if (!rc && !(lk = lk_get(r, ops[0].key)))
        rc = -ENOMEM;
    if (!rc) {
        lk->used_at = ev_now(r->loop);
        lk->ttl_s = (double)ops[0].ttl_ms / 1000.0;
    }
    if (rc) {
        kx__redis_op_release(r, op);
        return rc;
    }
    op->lk = lk;
    op->tmpl.key = lk->key;
    if (lk->busy || lk->qhead) {
        if (lk->qtail)
            lk->qtail->qnext = op;
        else
            lk->qhead = op;
        lk->qtail = op;
    } else {
        lk->busy = op;
        rc = log_next(r, op);
        if (rc) {
            key_idle(r, lk);
            op->lk = NULL;
        }
    }
    return kx__redis_op_accept(r, op, rc);
}

int kx__redis_log_forget(kx_store_redis *r, const char *key)
{
    size_t klen = strlen(key);
    log_key *lk = lk_find(r, key, klen, kx_hash64(key, klen, 0));
    if (!lk)
        return 0;
    if (!lk->busy && !lk->qhead) {
        lk_reset(r, lk);
        return 0;
    }
    if (lk->qtail && lk->qtail->forget)
        return 1; /* one DEL already waits last */
    /* Adds of the key are in flight or waiting: its DEL goes in their order, after them, as
     * the script's DEL follows its calls on one connection. */
    int rc;
    redis_op *op = kx__redis_op_take(r, &rc);
    if (!op) {
        lk->reset_pending = true; /* the DEL goes now, before them: at least forget here */
        return 0;
    }
    op->kind = OP_LOG;
    op->forget = true;
    op->lk = lk;
    op->qnext = NULL;
    op->tmpl = (kx_window_add){.key = lk->key};
    if (lk->qtail)
        lk->qtail->qnext = op;
    else
        lk->qhead = op;
    lk->qtail = op;
    return 1;
}

void kx__redis_log_conn_lost(kx_store_redis *r, uint8_t node)
{
    char name[KX__STORE_MAX_KEY_LEN + 300];
    for (size_t i = 0; r->log_tab && i < r->log_cap; i++)
        for (log_key *lk = r->log_tab[i]; lk; lk = lk->next) {
            if (r->mode == REDIS_MODE_CLUSTER) { /* only the windows that master holds */
                int len = snprintf(name, sizeof(name), "%s{%s}:l", r->prefix, lk->key);
                if (len < 0 || (size_t)len >= sizeof(name) ||
                    r->slot_node[kx__redis_key_slot(name, (size_t)len)] != node)
                    continue;
            }
            lk->keep_until = 0;
            if (lk->busy)
                lk->reset_pending = true;
            else if (lk->epoch)
                lk_reset(r, lk);
        }
}

void kx__redis_log_cancel(kx_store_redis *r)
{
    ev_timer_stop(r->loop, &r->log_sweep);
    if (r->log_tab)
        kx__redis_ev_flush(r); /* the blobs of the last adds, before the connections go */
    for (size_t i = 0; r->log_tab && i < r->log_cap; i++)
        for (log_key *lk = r->log_tab[i]; lk; lk = lk->next)
            while (lk->qhead) {
                redis_op *op = lk->qhead;
                lk->qhead = op->qnext;
                if (!lk->qhead)
                    lk->qtail = NULL;
                op_end(r, op, -ECANCELED);
            }
}

int kx__redis_log_init(kx_store_redis *r)
{
    kx__redis_ev_init(r);
    r->log_cap = 64;
    r->log_max = LOG_MAX_KEYS;
    r->log_compact_min = LOG_COMPACT_MIN;
    r->log_tab = calloc(r->log_cap, sizeof(*r->log_tab));
    r->log_adds = calloc(KX_STORE_MANY_MAX, sizeof(*r->log_adds));
    r->log_off = calloc(KX_STORE_MANY_MAX, sizeof(*r->log_off));
    kx_buf_init(&r->log_names, 0);
    kx_buf_init(&r->log_snap, 0);
    ev_timer_init(&r->log_sweep, sweep_cb, 1.0, 1.0);
    r->log_sweep.data = r;
    ev_timer_start(r->loop, &r->log_sweep);
    if (!r->log_tab || !r->log_adds || !r->log_off ||
        kx__store_memory_create_replica(r->loop, LOG_MAX_KEYS + 1, &r->replica)) {
        kx__redis_log_free(r);
        return -ENOMEM;
    }
    return 0;
}

void kx__redis_log_free(kx_store_redis *r)
{
    for (size_t i = 0; r->log_tab && i < r->log_cap; i++)
        for (log_key *lk = r->log_tab[i], *nx; lk; lk = nx) {
            nx = lk->next;
            free(lk);
        }
    free(r->log_tab);
    r->log_tab = NULL;
    r->log_n = 0;
    r->lru_new = r->lru_old = NULL;
    free(r->log_adds);
    r->log_adds = NULL;
    free(r->log_off);
    r->log_off = NULL;
    kx_buf_fini(&r->log_names);
    kx_buf_fini(&r->log_snap);
    if (r->replica)
        kx_store_destroy(r->replica);
    r->replica = NULL;
    kx__redis_ev_free(r);
    ev_timer_stop(r->loop, &r->log_sweep);
}

size_t kx__store_redis_log_replicas(const kx_store *s)
{
    return ((const kx_store_redis *)s)->log_n;
}

void kx__store_redis_set_log_limits(kx_store *s, size_t compact_min, size_t max_keys)
{
    kx_store_redis *r = (kx_store_redis *)s;
    if (compact_min)
        r->log_compact_min = compact_min;
    if (max_keys)
        r->log_max = max_keys;
}
