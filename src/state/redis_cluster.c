/*
 * Redis backend, Redis Cluster (redis_int.h). Every op's keys share one hash tag
 * (PREFIX{KEY}:z, :e, :a, :h), so an op is one slot and runs whole on the master serving it;
 * nothing here splits an op.
 *
 * The slot map comes from CLUSTER SLOTS, asked of the seed when it first connects (an error
 * there means a single server: the store never looks at slots again), again after a MOVED or
 * a lost master. An op goes to the master of its slot; MOVED updates that slot and resends;
 * ASK resends once to the named master behind ASKING; TRYAGAIN (a slot's keys half migrated)
 * and CLUSTERDOWN hold the op 20 ms and 100 ms and resend it, up to the command timeout
 * (then it fails -EIO and its caller retries). A redirection followed at most
 * REDIS_MAX_REDIRECTS times per op. A master that (re)connects takes ops once its CLUSTER INFO
 * says the cluster is ok (redis_conn.c).
 *
 * Order: ops of one slot reach Redis in the order they were issued, across redirections. An op
 * waits in the held list (sorted by issue order) while its slot has held ops, while ops of its
 * slot are in flight to another master than its own (the map changed under them), while its
 * master is connecting, or during a TRYAGAIN delay. A slot's held ops go as soon as it drains.
 * The exception: ops already in flight behind one that gets TRYAGAIN are not called back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "state/redis_int.h"

#define TRYAGAIN_DELAY_S 0.02
#define WALK_FAILED 0x80000000u /* kx__redis_flush_held: a slot whose op failed in this walk */
#define CLUSTERDOWN_DELAY_S 0.1

/* ---- slots ---- */

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial 0), as Redis Cluster defines it. */
static uint16_t crc16(const char *p, size_t n)
{
    static uint16_t tab[256];
    if (!tab[1]) {
        for (unsigned i = 0; i < 256; i++) {
            uint16_t c = (uint16_t)(i << 8);
            for (int b = 0; b < 8; b++)
                c = (uint16_t)(c & 0x8000 ? (c << 1) ^ 0x1021 : c << 1);
            tab[i] = c;
        }
    }
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++)
        crc = (uint16_t)((crc << 8) ^ tab[((crc >> 8) ^ (uint8_t)p[i]) & 0xff]);
    return crc;
}

redis_node *kx__redis_key_node(kx_store_redis *r, const char *key, size_t len)
{
    redis_node *n = r->nodes[0];
    if (r->mode == REDIS_MODE_CLUSTER) {
        uint8_t t = r->slot_node[kx__redis_key_slot(key, len)];
        n = t == REDIS_NO_NODE ? NULL : r->nodes[t];
    }
    return n && n->up && n->ac ? n : NULL;
}

uint16_t kx__redis_key_slot(const char *key, size_t len)
{
    /* The hash tag: between the first '{' and the first '}' after it, when not empty. */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(key + from, '}', len - from);
        if (close && close > key + from)
            return crc16(key + from, (size_t)(close - (key + from))) & (REDIS_SLOTS - 1);
    }
    return crc16(key, len) & (REDIS_SLOTS - 1);
}

/* ---- the held list ---- */

static uint8_t target_of(const kx_store_redis *r, const redis_op *op)
{
    return op->ask != REDIS_NO_NODE ? op->ask : r->slot_node[op->slot];
}

static bool may_send(const kx_store_redis *r, const redis_op *op, uint8_t t, double now)
{
    const redis_node *n = r->nodes[t];
    if (!n->up || !n->ac || op->not_before > now)
        return false;
    return r->slot_inflight[op->slot] == 0 || r->slot_sent[op->slot] == t;
}

static void append(redis_op **head, redis_op **tail, redis_op *op)
{
    op->next = NULL;
    if (*tail)
        (*tail)->next = op;
    else
        *head = op;
    *tail = op;
}

/* Into the held list by issue order: new ops at the tail, redirected ones where they were. */
static void hold(kx_store_redis *r, redis_op *op)
{
    r->slot_held[op->slot]++;
    if (!r->held_tail || r->held_tail->seq < op->seq) {
        append(&r->held_head, &r->held_tail, op);
        return;
    }
    redis_op **pp = &r->held_head;
    while ((*pp)->seq < op->seq)
        pp = &(*pp)->next;
    op->next = *pp;
    *pp = op;
}

static void arm_timer(kx_store_redis *r, double at)
{
    double now = ev_now(r->loop);
    if (ev_is_active(&r->held_timer) && ev_timer_remaining(r->loop, &r->held_timer) <= at - now)
        return;
    ev_timer_stop(r->loop, &r->held_timer);
    ev_timer_set(&r->held_timer, at > now ? at - now : 0.0, 0.0);
    ev_timer_start(r->loop, &r->held_timer);
}

void kx__redis_flush_held(kx_store_redis *r)
{
    if (r->flushing || !r->held_head)
        return;
    r->flushing = true;
    if (++r->walk_gen >= WALK_FAILED) {
        memset(r->slot_walk, 0, REDIS_SLOTS * sizeof(*r->slot_walk));
        r->walk_gen = 1;
    }
    /* A slot's mark in this walk: blocked (its later ops wait) or failed (they fail too, so
     * the caller's retries keep their order). */
    const uint32_t blocked = r->walk_gen, failing = r->walk_gen | WALK_FAILED;
    double now = ev_now(r->loop), wake = 0;
    redis_op *op = r->held_head, *kept = NULL, *kept_tail = NULL, *failed = NULL,
             *failed_tail = NULL;
    while (op) {
        redis_op *next = op->next;
        uint16_t s = op->slot;
        uint8_t t = target_of(r, op);
        uint32_t mark = r->slot_walk[s];
        bool fail = mark == failing || (mark != blocked && t == REDIS_NO_NODE);
        if (!fail && mark != blocked && may_send(r, op, t, now)) {
            if (kx__redis_node_send(r->nodes[t], op) == 0) {
                r->slot_held[s]--;
                op = next;
                continue;
            }
            fail = true;
        }
        if (fail) { /* no master serves the slot, or the send failed: retried by the caller */
            r->slot_held[s]--;
            r->slot_walk[s] = failing;
            append(&failed, &failed_tail, op);
        } else {
            r->slot_walk[s] = blocked; /* later ops of the slot wait behind this one */
            if (op->not_before > now && (!wake || op->not_before < wake))
                wake = op->not_before;
            append(&kept, &kept_tail, op);
        }
        op = next;
    }
    r->held_head = kept;
    r->held_tail = kept_tail;
    if (wake)
        arm_timer(r, wake);
    r->flushing = false;
    while (failed) {
        redis_op *f = failed;
        failed = f->next;
        kx__redis_op_finish(r, f, -EIO);
    }
}

void kx__redis_fail_held(kx_store_redis *r, uint8_t idx, int status)
{
    if (!r->held_head)
        return;
    redis_op *op = r->held_head, *kept = NULL, *kept_tail = NULL, *failed = NULL,
             *failed_tail = NULL;
    while (op) {
        redis_op *next = op->next;
        if (idx == REDIS_NO_NODE || target_of(r, op) == idx) {
            r->slot_held[op->slot]--;
            append(&failed, &failed_tail, op); /* in issue order: their retries keep it */
        } else {
            append(&kept, &kept_tail, op);
        }
        op = next;
    }
    r->held_head = kept;
    r->held_tail = kept_tail;
    while (failed) {
        redis_op *f = failed;
        failed = f->next;
        kx__redis_op_finish(r, f, status);
    }
}

static void held_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    kx_store_redis *r = t->data;
    kx__redis_enter(r);
    kx__redis_flush_held(r);
    kx__redis_leave(r);
}

/* ---- routing ---- */

int kx__redis_route(kx_store_redis *r, redis_op *op)
{
    if (r->mode != REDIS_MODE_CLUSTER) {
        redis_node *n = r->nodes[0];
        return n->up ? kx__redis_node_send(n, op) : -EAGAIN;
    }
    uint8_t t = target_of(r, op);
    if (t == REDIS_NO_NODE) {
        kx__redis_map_refresh(r);
        return -EAGAIN;
    }
    if (!r->slot_held[op->slot] && may_send(r, op, t, ev_now(r->loop)))
        return kx__redis_node_send(r->nodes[t], op);
    hold(r, op);
    return 0;
}

void kx__redis_answered(kx_store_redis *r, redis_op *op)
{
    if (r->slot_inflight && r->slot_inflight[op->slot] > 0 && !--r->slot_inflight[op->slot] &&
        r->slot_held[op->slot])
        r->flush_due = true;
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ...": the slot and the master (the last ':' splits an
 * IPv6 address from its port). */
static bool parse_redirect(const char *s, unsigned *slot, char *host, size_t hostlen, int *port)
{
    const char *sp = strchr(s, ' ');
    if (!sp)
        return false;
    char *end;
    unsigned long v = strtoul(sp + 1, &end, 10);
    if (end == sp + 1 || *end != ' ' || v >= REDIS_SLOTS)
        return false;
    const char *addr = end + 1, *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= hostlen || colon == addr)
        return false;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 1 || p > 65535)
        return false;
    *slot = (unsigned)v;
    *port = (int)p;
    return true;
}

bool kx__redis_redirect(kx_store_redis *r, redis_op *op, const redisReply *reply)
{
    if (r->mode != REDIS_MODE_CLUSTER)
        return false;
    const char *e = reply->str;
    bool moved = !strncmp(e, "MOVED ", 6), ask = !strncmp(e, "ASK ", 4);
    double now = ev_now(r->loop);
    if (moved || ask) {
        unsigned slot;
        char host[64];
        int port;
        redis_node *n = NULL;
        if (!parse_redirect(e, &slot, host, sizeof(host), &port) ||
            ++op->redirects > REDIS_MAX_REDIRECTS || !(n = kx__redis_node(r, host, port))) {
            kx_log_limited(&r->rl_map, KX_LOG_WARN, "state", "redis cluster: %.120s: not followed",
                           e);
            kx__redis_op_finish(r, op, -EIO);
            return true;
        }
        /* A master known from before whose connection was given up: connect again. */
        if (!n->ac && !ev_is_active(&n->retry_timer))
            kx__redis_node_start(n);
        if (!n->ac) {
            kx__redis_op_finish(r, op, -EIO);
            return true;
        }
        kx_metric_inc(KX_M_STORE_REDIRECTS);
        if (moved) {
            if (r->slot_node[slot] != n->idx)
                kx_log_limited(&r->rl_map, KX_LOG_INFO, "state",
                               "redis cluster: slot %u moved to %s:%d: following it", slot, n->host,
                               n->port);
            r->slot_node[slot] = n->idx;
            n->in_map = true;
            op->ask = REDIS_NO_NODE;
            kx__redis_update_up(r); /* down until a new master is up */
            kx__redis_map_refresh(r);
        } else {
            op->ask = n->idx;
        }
        hold(r, op);
        kx__redis_flush_held(r);
        return true;
    }
    bool down = !strncmp(e, "CLUSTERDOWN", 11);
    if (down || !strncmp(e, "TRYAGAIN", 8)) {
        /* Held in its place (later ops of its slot wait behind it), then resent. */
        if (down) {
            kx_log_limited(&r->rl_map, KX_LOG_WARN, "state", "redis cluster: %.120s: waiting", e);
            kx__redis_map_refresh(r);
        } else {
            kx_metric_inc(KX_M_STORE_REDIRECTS);
        }
        if (!op->tryagain_until) {
            op->tryagain_until = now + (double)r->timeout_ms / 1000.0;
        } else if (now > op->tryagain_until) {
            kx__redis_op_finish(r, op, -EIO);
            return true;
        }
        op->not_before = now + (down ? CLUSTERDOWN_DELAY_S : TRYAGAIN_DELAY_S);
        hold(r, op);
        arm_timer(r, op->not_before);
        return true;
    }
    return false;
}

/* ---- the slot map ---- */

static int cluster_init(kx_store_redis *r)
{
    r->slot_node = malloc(REDIS_SLOTS * sizeof(*r->slot_node));
    r->slot_inflight = calloc(REDIS_SLOTS, sizeof(*r->slot_inflight));
    r->slot_sent = calloc(REDIS_SLOTS, sizeof(*r->slot_sent));
    r->slot_held = calloc(REDIS_SLOTS, sizeof(*r->slot_held));
    r->slot_walk = calloc(REDIS_SLOTS, sizeof(*r->slot_walk));
    if (!r->slot_node || !r->slot_inflight || !r->slot_sent || !r->slot_held || !r->slot_walk) {
        kx__redis_cluster_free(r);
        return -ENOMEM;
    }
    memset(r->slot_node, REDIS_NO_NODE, REDIS_SLOTS);
    ev_timer_init(&r->held_timer, held_timer_cb, 0.0, 0.0);
    r->held_timer.data = r;
    return 0;
}

void kx__redis_cluster_free(kx_store_redis *r)
{
    free(r->slot_node);
    free(r->slot_inflight);
    free(r->slot_sent);
    free(r->slot_held);
    free(r->slot_walk);
    r->slot_node = NULL;
    r->slot_inflight = NULL;
    r->slot_sent = NULL;
    r->slot_held = NULL;
    r->slot_walk = NULL;
}

/* CLUSTER SLOTS: {start, end, {ip, port, id...}, replicas...}... into map. An empty ip is the
 * server asked. */
static int parse_slots(kx_store_redis *r, const redis_node *asked, const redisReply *reply,
                       uint8_t *map)
{
    if (reply->type != REDIS_REPLY_ARRAY)
        return -EPROTO;
    memset(map, REDIS_NO_NODE, REDIS_SLOTS);
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2 ||
            e->element[2]->element[0]->type != REDIS_REPLY_STRING ||
            e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
            return -EPROTO;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        if (lo < 0 || hi < lo || hi >= REDIS_SLOTS)
            return -EPROTO;
        const redisReply *ip = e->element[2]->element[0];
        char host[64];
        if (ip->len >= sizeof(host))
            return -EPROTO;
        memcpy(host, ip->str, ip->len);
        host[ip->len] = '\0';
        redis_node *n = kx__redis_node(r, host[0] ? host : asked->host,
                                       (int)e->element[2]->element[1]->integer);
        if (!n)
            return -EINVAL;
        memset(map + lo, n->idx, (size_t)(hi - lo + 1));
    }
    return 0;
}

static void map_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    (void)ac;
    redis_node *asked = privdata;
    kx_store_redis *r = asked->r;
    redisReply *reply = reply_;
    kx__redis_enter(r);
    asked->npending--;
    r->map_pending = false;
    if (!reply || r->destroying) {
        r->map_wanted = !r->destroying;
        goto out;
    }
    kx__redis_watchdog_kick(asked);
    if (reply->type == REDIS_REPLY_ERROR) {
        if (r->mode == REDIS_MODE_UNKNOWN && (strstr(reply->str, "cluster support disabled") ||
                                              !strncmp(reply->str, "ERR unknown command", 19) ||
                                              !strncmp(reply->str, "NOPERM", 6))) {
            /* No cluster (or CLUSTER renamed away, or not allowed): a single server. */
            r->mode = REDIS_MODE_SINGLE;
            r->nodes[0]->in_map = true;
            kx__redis_update_up(r);
        } else if (r->mode == REDIS_MODE_UNKNOWN) {
            /* Loading, busy...: ask again on a new connection, after the backoff. */
            kx_log_limited(&r->rl_map, KX_LOG_WARN, "state", "redis %s:%d: CLUSTER SLOTS: %.200s",
                           asked->host, asked->port, reply->str);
            kx__redis_node_drop(asked);
        } else {
            kx_log_limited(&r->rl_map, KX_LOG_WARN, "state", "redis %s:%d: CLUSTER SLOTS: %.200s",
                           asked->host, asked->port, reply->str);
        }
        goto out;
    }
    if (r->mode == REDIS_MODE_SINGLE)
        goto out; /* not reached: a single server is never asked again */
    uint8_t *map = malloc(REDIS_SLOTS);
    int rc = map ? parse_slots(r, asked, reply, map) : -ENOMEM;
    if (!rc && r->mode == REDIS_MODE_UNKNOWN && !(rc = cluster_init(r)))
        r->mode = REDIS_MODE_CLUSTER;
    if (rc) {
        kx_log_limited(&r->rl_map, KX_LOG_ERROR, "state",
                       "redis %s:%d: CLUSTER SLOTS: %s: the slot map is unchanged", asked->host,
                       asked->port, rc == -EPROTO ? "unexpected reply" : strerror(-rc));
        free(map);
        if (r->mode == REDIS_MODE_UNKNOWN)
            kx__redis_node_drop(asked); /* no map yet: ask again after the backoff */
        goto out;
    }
    memcpy(r->slot_node, map, REDIS_SLOTS);
    free(map);
    size_t uncovered = 0;
    for (size_t i = 0; i < r->nnodes; i++)
        r->nodes[i]->in_map = false;
    for (size_t s = 0; s < REDIS_SLOTS; s++) {
        if (r->slot_node[s] == REDIS_NO_NODE)
            uncovered++;
        else
            r->nodes[r->slot_node[s]]->in_map = true;
    }
    if (uncovered)
        kx_log_limited(&r->rl_map, KX_LOG_WARN, "state",
                       "redis cluster via %s:%d: %zu slots have no master: their updates wait",
                       asked->host, asked->port, uncovered);
    /* A master back in the map after it was lost and left alone: connect again. */
    for (size_t i = 0; i < r->nnodes; i++) {
        redis_node *n = r->nodes[i];
        if (n->in_map && !n->ac && !ev_is_active(&n->retry_timer))
            kx__redis_node_start(n);
    }
    kx__redis_update_up(r);
    kx__redis_flush_held(r);
out:
    kx__redis_leave(r);
}

void kx__redis_map_refresh(kx_store_redis *r)
{
    if (r->map_pending || r->destroying || r->mode == REDIS_MODE_SINGLE)
        return;
    redis_node *n = NULL;
    for (size_t i = 0; i < r->nnodes && !n; i++)
        if (r->nodes[i]->up && r->nodes[i]->ac)
            n = r->nodes[i];
    if (!n || redisAsyncCommand(n->ac, map_cb, n, "CLUSTER SLOTS") != REDIS_OK) {
        r->map_wanted = true;
        return;
    }
    r->map_pending = true;
    r->map_wanted = false;
    n->npending++;
    if (!ev_is_active(&n->watchdog))
        kx__redis_watchdog_kick(n);
}
