/*
 * Redis backend, connections (redis_int.h): one hiredis async connection per server on the
 * caller's libev loop, and whether the store as a whole is up.
 *
 * A connection's life: connect (numeric address only: no blocking name lookup on the loop)
 * -> AUTH (when configured) -> SCRIPT LOAD -> up. When it drops (error, server gone, or no
 * reply within the command timeout) hiredis runs every pending reply callback with a NULL
 * reply (each op fails with -EIO) and a timer reconnects with backoff 100 ms doubling to 5 s.
 * The store is up when its mode is known (the first server answered CLUSTER SLOTS, or said it
 * is no cluster) and every server it needs is up; the state callback hears each change.
 *
 * The store is freed only when hiredis holds none of its contexts: destroy from inside one of
 * our callbacks marks the store, and the outermost of our entry points frees it (`depth`).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/adapters/libev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/metrics.h"
#include "klaxon/secret.h"
#include "state/redis_int.h"
#include "state/redis_scripts.h"

#define REDIS_BACKOFF_MIN_S 0.1
#define REDIS_BACKOFF_MAX_S 5.0

static void node_lost(redis_node *n);

/* ---- lifetime ---- */

static void redis_free(kx_store_redis *r)
{
    ev_timer_stop(r->loop, &r->held_timer);
    ev_timer_stop(r->loop, &r->release_timer);
    for (size_t i = 0; i < r->nnodes; i++) {
        ev_timer_stop(r->loop, &r->nodes[i]->retry_timer);
        ev_timer_stop(r->loop, &r->nodes[i]->watchdog);
        free(r->nodes[i]);
    }
    while (r->free_ops) {
        redis_op *op = r->free_ops;
        r->free_ops = op->next;
        kx_buf_fini(&op->args);
        kx_buf_fini(&op->rec);
        free(op->off);
        free(op->len);
        free(op);
    }
    kx__redis_cluster_free(r);
    kx__redis_log_free(r);
    free(r->many_res);
    free(r->tm_res);
    free(r->tm_since);
    free(r->tm_pl);
    free(r->tm_pl_len);
    free(r->many_ev);
    free(r->many_ev_len);
    free(r->scan_members);
    free(r->scan_lens);
    kx_buf_fini(&r->resp);
    kx_metric_set_store_up(0);
    free(r->prefix);
    free(r->username);
    kx_secret_free(r->password);
    free(r);
}

void kx__redis_enter(kx_store_redis *r)
{
    r->depth++;
}

static bool all_closed(const kx_store_redis *r)
{
    for (size_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->ac)
            return false;
    return true;
}

bool kx__redis_leave(kx_store_redis *r)
{
    r->depth--;
    if (r->depth == 0 && r->destroying && all_closed(r)) {
        redis_free(r);
        return true;
    }
    return false;
}

void kx__redis_watchdog_kick(redis_node *n)
{
    kx_store_redis *r = n->r;
    if (n->npending > 0 || n->script_pending || (n->ac && !n->up)) {
        n->watchdog.repeat = (double)r->timeout_ms / 1000.0;
        ev_timer_again(r->loop, &n->watchdog);
    } else {
        ev_timer_stop(r->loop, &n->watchdog);
    }
}

void kx__redis_update_up(kx_store_redis *r)
{
    bool up = r->mode != REDIS_MODE_UNKNOWN && !r->destroying;
    size_t needed = 0;
    for (size_t i = 0; i < r->nnodes && up; i++) {
        const redis_node *n = r->nodes[i];
        if (!n->in_map)
            continue;
        needed++;
        up = n->up;
    }
    if (!needed)
        up = false;
    /* r->up may have been cleared already (a connection failing its ops): the state
     * callback follows what it was last told, not r->up. */
    kx_metric_set_store_up(up);
    r->up = up;
    const redis_node *seed = r->nodes[0];
    if (up && !r->reported_up) {
        r->reported_up = true;
        if (r->mode == REDIS_MODE_CLUSTER)
            kx_log(KX_LOG_INFO, "state", "redis cluster via %s:%d: connected to %zu masters",
                   seed->host, seed->port, needed);
        else
            kx_log(KX_LOG_INFO, "state", "redis %s:%d: connected", seed->host, seed->port);
        if (r->base.state_cb)
            r->base.state_cb(r->base.state_ud, true);
    } else if (!up && r->reported_up) {
        r->reported_up = false;
        if (r->base.state_cb)
            r->base.state_cb(r->base.state_ud, false);
    }
}

/* ---- one connection ---- */

/* The connection is gone (n->ac already released by hiredis or about to be): announce it,
 * and schedule the next attempt while the store needs the server. */
static void node_lost(redis_node *n)
{
    kx_store_redis *r = n->r;
    bool was_up = n->was_up;
    n->was_up = false;
    n->ac = NULL;
    n->up = false;
    n->script_pending = false;
    ev_timer_stop(r->loop, &n->watchdog);
    if (r->destroying)
        return;
    if (r->log_windows && was_up)
        kx__redis_log_conn_lost(r, n->idx);
    if (n->in_map || r->mode == REDIS_MODE_UNKNOWN) {
        ev_timer_set(&n->retry_timer, n->backoff_s, 0.0);
        ev_timer_start(r->loop, &n->retry_timer);
        n->backoff_s *= 2;
        if (n->backoff_s > REDIS_BACKOFF_MAX_S)
            n->backoff_s = REDIS_BACKOFF_MAX_S;
    }
    if (was_up)
        kx_log(KX_LOG_WARN, "state", "redis %s:%d: connection lost, reconnecting", n->host,
               n->port);
    kx__redis_update_up(r);
    if (r->mode == REDIS_MODE_CLUSTER) {
        /* Ops held for this server fail like those in flight (retried by their caller); a
         * failover moves its slots, which the map tells. */
        kx__redis_fail_held(r, n->idx, -EIO);
        kx__redis_map_refresh(r);
    }
}

/* Drops n's connection from outside hiredis' callbacks or inside one (hiredis then defers the
 * free until the callback returns). Pending replies come back NULL (-EIO). */
void kx__redis_node_drop(redis_node *n)
{
    redisAsyncContext *ac = n->ac;
    if (!ac || (ac->c.flags & REDIS_FREEING))
        return;
    bool connected = (ac->c.flags & REDIS_CONNECTED) != 0;
    bool in_cb = (ac->c.flags & REDIS_IN_CALLBACK) != 0;
    redisAsyncFree(ac);
    /* hiredis only calls onDisconnect for a connected context; otherwise say it here. If
     * the free was deferred (inside a callback), ac is still alive and onDisconnect follows. */
    if (!connected && !in_cb && n->ac == ac)
        node_lost(n);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    redis_node *n = ac->data;
    kx_store_redis *r = n->r;
    if (status == REDIS_OK)
        return;
    kx__redis_enter(r);
    kx_log_limited(&r->rl_err, KX_LOG_WARN, "state", "redis %s:%d: connect failed: %s", n->host,
                   n->port, ac->errstr);
    /* hiredis frees ac right after this returns (no onDisconnect: it never connected), and
     * then runs the AUTH and SCRIPT LOAD callbacks, which read n: a store destroyed meanwhile
     * (from a callback node_lost runs) is freed on the loop's next turn, not here. */
    if (n->ac == ac)
        node_lost(n);
    if (r->destroying && !ev_is_active(&r->release_timer)) {
        kx__redis_enter(r); /* let go by release_cb */
        ev_timer_start(r->loop, &r->release_timer);
    }
    kx__redis_leave(r);
}

static void release_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    kx__redis_leave(t->data);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    redis_node *n = ac->data;
    kx_store_redis *r = n->r;
    kx__redis_enter(r);
    if (status != REDIS_OK && !r->destroying)
        kx_log_limited(&r->rl_err, KX_LOG_WARN, "state", "redis %s:%d: disconnected: %s", n->host,
                       n->port, ac->errstr);
    if (n->ac == ac)
        node_lost(n);
    kx__redis_leave(r);
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    redis_node *n = t->data;
    kx__redis_enter(n->r);
    kx_metric_inc(KX_M_STORE_RECONNECTS);
    kx__redis_node_start(n);
    kx__redis_leave(n->r);
}

static void watchdog_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    redis_node *n = t->data;
    kx_store_redis *r = n->r;
    kx__redis_enter(r);
    kx_log_limited(&r->rl_err, KX_LOG_WARN, "state",
                   "redis %s:%d: no answer in %lld ms, dropping the connection", n->host, n->port,
                   (long long)r->timeout_ms);
    kx__redis_node_drop(n);
    kx__redis_leave(r);
}

/* The AUTH reply. A refusal is a configuration error, not an outage: logged as such (Redis'
 * message names neither the password nor the user) and the connection is dropped; the
 * reconnect backoff asks again, so fixing the ACL on the server heals klaxon. */
static void auth_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redis_node *n = privdata;
    kx_store_redis *r = n->r;
    redisReply *reply = reply_;
    if (ac != n->ac || !reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        kx__redis_enter(r);
        kx_metric_inc(KX_M_STORE_ERRORS);
        kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state",
                       "redis %s:%d: authentication refused%s%s: %.200s", n->host, n->port,
                       r->username ? " for user " : "", r->username ? r->username : "", reply->str);
        kx__redis_node_drop(n);
        kx__redis_leave(r);
    }
}

static void node_ready(redis_node *n)
{
    kx_store_redis *r = n->r;
    n->up = n->was_up = true;
    n->backoff_s = REDIS_BACKOFF_MIN_S;
    if (r->mode == REDIS_MODE_UNKNOWN || r->map_wanted)
        kx__redis_map_refresh(r); /* the store is up once it knows what it talks to */
    kx__redis_update_up(r);
    if (r->mode == REDIS_MODE_CLUSTER)
        kx__redis_flush_held(r);
}

static void cluster_info_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redis_node *n = privdata;
    kx_store_redis *r = n->r;
    redisReply *reply = reply_;
    if (ac != n->ac || !reply)
        return;
    kx__redis_enter(r);
    if (reply->type == REDIS_REPLY_STRING && strstr(reply->str, "cluster_state:ok")) {
        if (!n->up && !r->destroying)
            node_ready(n);
        kx__redis_watchdog_kick(n);
    } else {
        /* Ask again on a new connection after the backoff (100 ms, doubling). */
        kx_log_limited(&r->rl_err, KX_LOG_WARN, "state",
                       "redis %s:%d: cluster state not ok yet: waiting", n->host, n->port);
        kx__redis_node_drop(n);
    }
    kx__redis_leave(r);
}

static void script_cb(redisAsyncContext *ac, void *reply_, void *privdata)
{
    redis_node *n = privdata;
    kx_store_redis *r = n->r;
    redisReply *reply = reply_;
    if (ac != n->ac)
        return; /* a connection already given up (connect failed) */
    kx__redis_enter(r);
    n->script_pending = false;
    if (!reply) {
        n->up = false; /* the connection is being torn down; onDisconnect follows */
    } else if (reply->type == REDIS_REPLY_STRING && reply->len == 40) {
        memcpy(r->sha, reply->str, 40); /* the same on every server: the SHA1 of the text */
        r->sha[40] = '\0';
        bool newly_up = !n->up && !r->destroying;
        /* A cluster's master (back from an outage, say) takes updates once its cluster state
         * is ok: a CLUSTERDOWN then would fail some updates of a slot and not the next ones. */
        if (newly_up && r->mode == REDIS_MODE_CLUSTER) {
            if (redisAsyncCommand(ac, cluster_info_cb, n, "CLUSTER INFO") != REDIS_OK)
                kx__redis_node_drop(n);
        } else if (newly_up) {
            node_ready(n);
        }
        /* After n->up: the timer stops unless something is awaited. */
        kx__redis_watchdog_kick(n);
    } else {
        kx_log_limited(&r->rl_err, KX_LOG_ERROR, "state", "redis %s:%d: SCRIPT LOAD failed: %s",
                       n->host, n->port,
                       reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        kx__redis_node_drop(n);
    }
    kx__redis_leave(r);
}

int kx__redis_script_load(redis_node *n)
{
    if (n->script_pending)
        return 0;
    if (redisAsyncCommand(n->ac, script_cb, n, "SCRIPT LOAD %s", kx__redis_script) != REDIS_OK)
        return -EIO;
    n->script_pending = true;
    if (!ev_is_active(&n->watchdog))
        kx__redis_watchdog_kick(n);
    return 0;
}

void kx__redis_node_start(redis_node *n)
{
    kx_store_redis *r = n->r;
    redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);
    if (!ac || ac->err) {
        kx_log_limited(&r->rl_err, KX_LOG_WARN, "state", "redis %s:%d: connect failed: %s", n->host,
                       n->port, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        node_lost(n);
        return;
    }
    ac->data = n;
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    n->ac = ac;
    n->up = false;
    n->script_pending = false;
    /* Queued now, written once connected: AUTH first, then the script. Binary-safe (%b):
     * a password may hold spaces. */
    int rc = REDIS_OK;
    if (r->password && r->username)
        rc = redisAsyncCommand(ac, auth_cb, n, "AUTH %b %b", r->username, strlen(r->username),
                               r->password, strlen(r->password));
    else if (r->password)
        rc = redisAsyncCommand(ac, auth_cb, n, "AUTH %b", r->password, strlen(r->password));
    if (rc != REDIS_OK || kx__redis_script_load(n) != 0)
        kx__redis_node_drop(n);
    kx__redis_watchdog_kick(n);
}

/* The send buffer kept between calls at most (a batch's call is usually a few KB). */
#define RESP_KEEP_BYTES (1u << 20)

/* "$len\r\n" + p + "\r\n": one RESP bulk string. */
static int resp_bulk(kx_buf *b, const char *p, size_t n)
{
    int rc = kx_buf_putc(b, '$');
    if (!rc)
        rc = kx_buf_put_u64(b, n);
    if (!rc)
        rc = kx_buf_append(b, "\r\n", 2);
    if (!rc)
        rc = kx_buf_append(b, p, n);
    if (!rc)
        rc = kx_buf_append(b, "\r\n", 2);
    return rc;
}

/* EVALSHA sha numkeys args... framed as RESP here, into one reused buffer: hiredis' own
 * framing (redisAsyncCommandArgv) formats each argument's header with a printf-like call and
 * allocates per argument, about a tenth of klaxon's CPU per event at 10,000 groups. */
static int resp_op(kx_buf *b, const char *sha, const redis_op *op)
{
    kx_buf_reset(b);
    if (op->cmd != CMD_EVALSHA) {
        /* the command (and subcommand), then the arguments: the key first */
        static const char *const names[] = {"",    "XADD",  "XRANGE", "PEXPIRE",
                                            "DEL", "XINFO", "SSCAN"};
        const char *name = names[op->cmd];
        bool sub = op->cmd == CMD_XINFO_STREAM;
        int rc = kx_buf_putc(b, '*');
        if (!rc)
            rc = kx_buf_put_u64(b, 1 + (uint64_t)sub + (uint64_t)op->nargs);
        if (!rc)
            rc = kx_buf_append(b, "\r\n", 2);
        if (!rc)
            rc = resp_bulk(b, name, strlen(name));
        if (!rc && sub)
            rc = resp_bulk(b, "STREAM", 6);
        for (int i = 0; i < op->nargs && !rc; i++)
            rc = resp_bulk(b, op->args.data + op->off[i], op->len[i]);
        return rc;
    }
    int rc = kx_buf_putc(b, '*');
    if (!rc)
        rc = kx_buf_put_u64(b, 3 + (uint64_t)op->nargs);
    if (!rc)
        rc = kx_buf_append(b, "\r\n$7\r\nEVALSHA\r\n", 15);
    if (!rc)
        rc = resp_bulk(b, sha, 40);
    _Static_assert(KX__REDIS_NKEYS == 5, "numkeys");
    if (!rc)
        rc = resp_bulk(b, "5", 1);
    for (int i = 0; i < op->nargs && !rc; i++)
        rc = resp_bulk(b, op->args.data + op->off[i], op->len[i]);
    return rc;
}

int kx__redis_node_send(redis_node *n, redis_op *op)
{
    kx_store_redis *r = n->r;
    if (!n->ac)
        return -EIO;
    if (resp_op(&r->resp, r->sha, op) != 0)
        return -ENOMEM;
    /* ASK: the next command only may touch the slot being imported. */
    if (op->ask == n->idx && redisAsyncCommand(n->ac, NULL, NULL, "ASKING") != REDIS_OK)
        return -EIO;
    int sent = redisAsyncFormattedCommand(n->ac, kx__redis_op_cb, op, r->resp.data, r->resp.len);
    /* hiredis has its copy: a buffer grown by a rare huge call is not kept. */
    if (r->resp.cap > RESP_KEEP_BYTES) {
        kx_buf_fini(&r->resp);
        kx_buf_init(&r->resp, 0);
    }
    if (sent != REDIS_OK)
        return -EIO;
    op->node = n->idx;
    n->npending++;
    if (r->slot_inflight) {
        r->slot_inflight[op->slot]++;
        r->slot_sent[op->slot] = n->idx;
    }
    /* The timeout measures time without progress: only replies push it back. */
    if (!ev_is_active(&n->watchdog))
        kx__redis_watchdog_kick(n);
    return 0;
}

redis_node *kx__redis_node(kx_store_redis *r, const char *host, int port)
{
    char num[64];
    if (kx__redis_numeric_host(host, num, sizeof(num)) != 0 || port < 1 || port > 65535)
        return NULL;
    for (size_t i = 0; i < r->nnodes; i++)
        if (r->nodes[i]->port == port && !strcmp(r->nodes[i]->host, num))
            return r->nodes[i];
    if (r->nnodes == REDIS_MAX_NODES) {
        kx_log_limited(&r->rl_map, KX_LOG_ERROR, "state",
                       "redis: more than %d servers: %s:%d is not used", REDIS_MAX_NODES, num,
                       port);
        return NULL;
    }
    redis_node *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->r = r;
    n->idx = (uint8_t)r->nnodes;
    strcpy(n->host, num);
    n->port = port;
    n->backoff_s = REDIS_BACKOFF_MIN_S;
    ev_timer_init(&n->retry_timer, retry_cb, 0.0, 0.0);
    n->retry_timer.data = n;
    ev_init(&n->watchdog, watchdog_cb);
    n->watchdog.data = n;
    r->nodes[r->nnodes++] = n;
    if (r->nnodes > 1) /* the seed is started by create, once the store is complete */
        kx__redis_node_start(n);
    return n;
}

void kx__redis_destroy_nodes(kx_store_redis *r)
{
    ev_timer_stop(r->loop, &r->held_timer);
    kx__redis_fail_held(r, REDIS_NO_NODE, -ECANCELED);
    for (size_t i = 0; i < r->nnodes; i++) {
        redis_node *n = r->nodes[i];
        ev_timer_stop(r->loop, &n->retry_timer);
        ev_timer_stop(r->loop, &n->watchdog);
        /* Pending callbacks run now with -ECANCELED (or right after the hiredis callback we
         * are inside of returns); onDisconnect then clears n->ac. */
        redisAsyncContext *ac = n->ac;
        if (ac && !(ac->c.flags & REDIS_FREEING)) {
            bool in_cb = (ac->c.flags & REDIS_IN_CALLBACK) != 0;
            bool connected = (ac->c.flags & REDIS_CONNECTED) != 0;
            redisAsyncFree(ac);
            if (!in_cb && (!connected || n->ac == ac))
                n->ac = NULL;
        }
    }
}

void kx__redis_conn_init(kx_store_redis *r)
{
    ev_timer_init(&r->release_timer, release_cb, 0.0, 0.0);
    r->release_timer.data = r;
}

int kx__redis_numeric_host(const char *host, char *out, size_t outlen)
{
    unsigned char tmp[16];
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    else if (inet_pton(AF_INET, host, tmp) != 1 && inet_pton(AF_INET6, host, tmp) != 1)
        return -EINVAL;
    if (strlen(host) >= outlen)
        return -EINVAL;
    strcpy(out, host);
    return 0;
}
