/*
 * The Redis backend's parts and what they share:
 *   store_redis.c    the kx_store ops: arguments, EVALSHA, replies
 *   redis_conn.c     one connection per server: connect, AUTH, SCRIPT LOAD, timeouts,
 *                    reconnect with backoff; whether the store as a whole is up
 *   redis_cluster.c  Redis Cluster: the slot of a key, the slot map (CLUSTER SLOTS), MOVED,
 *                    ASK and TRYAGAIN, and the per-slot order of ops across redirections
 *
 * A store talks to one server (nodes[0], from the URL) or, when that server answers
 * CLUSTER SLOTS, to every master of its cluster. Ownership: the store owns its nodes and ops;
 * an op in flight is owned by hiredis' callback queue of its node until its callback runs; a
 * held op (cluster: waiting for its slot's earlier ops, a node, or a TRYAGAIN delay) by the
 * store's held list. Not thread-safe (one loop).
 */
#ifndef KLAXON_STATE_REDIS_INT_H
#define KLAXON_STATE_REDIS_INT_H

#include <ev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "klaxon/common.h"
#include "klaxon/log.h"
#include "state/store_impl.h"

#define REDIS_SLOTS 16384
#define REDIS_MAX_NODES 64 /* masters of one cluster klaxon talks to */
#define REDIS_NO_NODE 255
#define REDIS_MAX_REDIRECTS 5 /* MOVED/ASK per op before it fails (and is retried) */

typedef struct kx_store_redis kx_store_redis;

typedef enum {
    OP_WINDOW = 0,
    OP_TOUCH,
    OP_DUE,
    OP_MANY,
    OP_CTOUCH,
    OP_CDUE,
    OP_WM,
    OP_CLAIM,
    OP_TOUCH_MANY,
    OP_CTOUCH_MANY,
    OP_LOG, /* a sliding-window add through the key's log (redis_log.c) */
    OP_SCAN /* one SSCAN page of a live list's set (kx_store_set_scan) */
} op_kind;

/* What an op's arguments are for: EVALSHA of klaxon's script (5 keys first), or a plain
 * command of the window log. */
typedef enum {
    CMD_EVALSHA = 0,
    CMD_XADD,
    CMD_XRANGE,
    CMD_PEXPIRE,
    CMD_DEL,
    CMD_XINFO_STREAM,
    CMD_SSCAN
} redis_cmd;

typedef struct log_key log_key;

typedef struct redis_op {
    struct redis_op *next; /* the free list, or the held list */
    kx_store_redis *r;
    op_kind kind;
    kx_absence_cb acb;      /* OP_TOUCH, OP_DUE, OP_CTOUCH, OP_CDUE */
    kx_store_cb cb;         /* OP_WINDOW */
    kx_store_many_cb mcb;   /* OP_MANY */
    kx_absence_many_cb tcb; /* OP_TOUCH_MANY, OP_CTOUCH_MANY */
    kx_watermark_cb wcb;    /* OP_WM */
    kx_claim_cb ccb;        /* OP_CLAIM */
    kx_set_scan_cb scb;     /* OP_SCAN */
    void *ud;
    int tries;    /* NOSCRIPT resends */
    size_t nmany; /* OP_MANY, OP_TOUCH_MANY, OP_CTOUCH_MANY: the updates sent (= replies) */
    int nargs;
    kx_buf args; /* the arguments back to back; kept for a resend */
    size_t *off; /* argcap entries: OP_NARGS, more for OP_MANY */
    size_t *len;
    size_t argcap;
    bool counted;          /* accepted: counted in r->npending */
    uint64_t seq;          /* issue order (cluster: the held list's order) */
    uint16_t slot;         /* cluster: the slot of its keys */
    uint8_t node;          /* the node it was last sent to */
    uint8_t ask;           /* REDIS_NO_NODE, or the node an ASK named (ASKING first) */
    uint8_t redirects;     /* MOVED and ASK followed */
    double not_before;     /* TRYAGAIN: held until this loop time */
    double tryagain_until; /* TRYAGAIN: fails (-EIO) after this loop time */
    redis_cmd cmd;
    /* OP_LOG: the key's log, the step in flight, the adds as a record, and their shared
     * parameters (the template the record's adds are applied with) */
    log_key *lk;
    struct redis_op *qnext; /* the key's queue of ops waiting for the one in flight */
    int phase;
    int conflicts;
    bool single; /* kx_store_window_add (cb), not _many (mcb) */
    bool forget; /* kx_store_forget of its key, in the key's order (no callback) */
    kx_buf rec;
    kx_window_add tmpl;
    kx_cmp_term cond[KX_CMP_MAX_TERMS];
    struct ev_wait *evw; /* its answers, while their evidence is read (redis_log_evidence.c) */
} redis_op;

typedef struct redis_node {
    kx_store_redis *r;
    uint8_t idx;
    char host[64];
    int port;
    redisAsyncContext *ac; /* NULL when no connection exists */
    bool up;               /* connected, authenticated, script loaded */
    bool script_pending;   /* a SCRIPT LOAD is in flight */
    bool in_map;           /* serves slots (or is the only server): the store needs it up */
    bool was_up;           /* up since the last loss: a loss to log */
    ev_timer retry_timer;
    ev_timer watchdog; /* command / connect timeout */
    double backoff_s;
    size_t npending; /* replies awaited on this connection */
} redis_node;

typedef enum { REDIS_MODE_UNKNOWN = 0, REDIS_MODE_SINGLE, REDIS_MODE_CLUSTER } redis_mode;

struct kx_store_redis {
    kx_store base;
    struct ev_loop *loop;
    char *prefix;
    char *username; /* ACL user, or NULL (the default user) */
    char *password; /* AUTH on every connection, or NULL; a secret: never logged */
    redis_mode mode;
    redis_node *nodes[REDIS_MAX_NODES]; /* nodes[0]: the server of the URL */
    size_t nnodes;
    bool up;          /* every node the store needs is up, and the mode is known */
    bool reported_up; /* what the state callback was last told */
    char sha[41];
    int64_t timeout_ms;
    size_t npending; /* ops accepted and not finished: in flight or held */
    uint64_t seq;
    redis_op *free_ops;
    int depth;       /* > 0 while one of our entry points runs */
    bool destroying; /* kx_store_destroy was called */
    kx_ratelimit rl_err;
    kx_ratelimit rl_cap;
    kx_ratelimit rl_map;
    /* Cluster (allocated when the seed answers CLUSTER SLOTS). */
    uint8_t *slot_node;      /* slot -> node, REDIS_NO_NODE when no master serves it */
    uint32_t *slot_inflight; /* ops sent to a node and not answered, per slot */
    uint8_t *slot_sent;      /* the node they were sent to */
    uint32_t *slot_held;     /* held ops, per slot */
    uint32_t *slot_walk;     /* redis_flush_held: the walk that found the slot blocked */
    uint32_t walk_gen;
    redis_op *held_head, *held_tail;
    bool flushing;
    ev_timer held_timer;    /* TRYAGAIN delays */
    ev_timer release_timer; /* frees a store destroyed during a failed connect (redis_conn.c) */
    bool flush_due;         /* a reply drained a slot with held ops */
    bool map_pending;       /* a CLUSTER SLOTS in flight */
    bool map_wanted;        /* ask again once a node is up */
    /* Replies: evidence and absence results, pointing into the reply being handled. */
    const char *res_ev[KX__STORE_MAX_EVIDENCE];
    size_t res_ev_len[KX__STORE_MAX_EVIDENCE];
    kx_window_result *many_res;
    size_t many_cap;
    const char **many_ev;
    size_t *many_ev_len;
    size_t many_ev_cap;
    /* OP_TOUCH_MANY replies: a result per touch, its since and its payload (borrowed) */
    kx_absence_result *tm_res;
    int64_t *tm_since;
    const char **tm_pl;
    size_t *tm_pl_len;
    size_t tm_cap;
    kx_buf resp;               /* the RESP of one send, reused (grown to the longest op) */
    const char **scan_members; /* OP_SCAN replies: the members of a page (borrowed) */
    size_t *scan_lens;
    size_t scan_cap;
    int64_t res_last[KX_STORE_ABSENCE_DUE_MAX];
    int64_t res_count[KX_STORE_ABSENCE_DUE_MAX];
    /* The window log (redis_log.c): sliding windows kept as a log of adds in Redis and
     * replayed into a local memory store, the replica. */
    bool log_windows;
    kx_store *replica;
    log_key **log_tab; /* log_cap chains, power of two */
    size_t log_cap, log_n, log_max;
    size_t log_compact_min;     /* records a snapshot must save (LOG_COMPACT_MIN; tests lower it) */
    log_key *lru_new, *lru_old; /* least recently used last */
    kx_buf log_names;           /* decoded members, NUL-ended */
    kx_window_add *log_adds;    /* KX_STORE_MANY_MAX */
    size_t *log_off;            /* KX_STORE_MANY_MAX: where each member is in log_names */
    kx_buf log_snap;
    kx_ratelimit rl_log;
    /* The window log's evidence pages (redis_log_evidence.c): the blobs of this process's
     * adds, written once per loop iteration as PREFIX ev:{PROC}:PAGE; records hold refs. */
    uint64_t ev_proc;
    uint64_t ev_page_no; /* the page the pending blobs will be */
    int64_t ev_page_ttl; /* the longest ttl among the windows of the pending blobs */
    kx_buf ev_pending;
    ev_prepare ev_flush;
    ev_timer log_sweep; /* drops replicas unused for their ttl (redis_log.c) */
    kx_ratelimit rl_ev;
};

/* store_redis.c */
void kx__redis_op_cb(redisAsyncContext *ac, void *reply, void *privdata);
/* Ends op with a failure status: its callback runs (OP_LOG: redis_log.c's ending). */
void kx__redis_op_finish(kx_store_redis *r, redis_op *op, int status);
/* An op issued (rc 0: counted in the pending ops and KX_M_STORE_OPS) or refused (rc < 0: back
 * to the free list, -EAGAIN counted as a store error); returns rc. */
int kx__redis_op_accept(kx_store_redis *r, redis_op *op, int rc);
/* An op from the free list (uncounted), or NULL with *rc set when none may be sent now. */
redis_op *kx__redis_op_take(kx_store_redis *r, int *rc);
/* Back to the free list, uncounted, without a callback. */
void kx__redis_op_release(kx_store_redis *r, redis_op *op);
int kx__redis_op_arg(redis_op *op, const char *p, size_t n);
int kx__redis_op_arg_i64(redis_op *op, int64_t v);
/* PREFIX{KEY}:kind -- the hash tag keeps all of a window's keys in one cluster slot. */
int kx__redis_op_arg_key(redis_op *op, const char *prefix, const char *key, char kind);
/* Sends op's command (again): a new step of an op already counted; op->args[0] is a key. */
int kx__redis_op_send(kx_store_redis *r, redis_op *op);

/* redis_log.c: sliding windows as a log of adds (docs/internals/state.md, "Window log") */
int kx__redis_log_init(kx_store_redis *r);
/* Takes op (taken, with its callback set) for the adds ops[0..n): 0, or a failure status
 * with op released. */
int kx__redis_log_add(kx_store_redis *r, redis_op *op, const kx_window_add *ops, size_t n);
void kx__redis_log_reply(kx_store_redis *r, redis_node *n, redis_op *op, redisReply *reply);
void kx__redis_log_fail(kx_store_redis *r, redis_op *op, int status);
/* 1 when the key's stream is deleted behind the key's ops issued before (the caller deletes
 * the script's keys only), 0 when the caller deletes it now with them. */
int kx__redis_log_forget(kx_store_redis *r, const char *key);
/* The connection to node, up until now, was lost: a write it acknowledged may be lost too (a
 * failover, a restart), so every replica of a window it holds reads its stream again before
 * its next append. */
void kx__redis_log_conn_lost(kx_store_redis *r, uint8_t node);
/* Fails the ops waiting behind others with -ECANCELED (destroy). */
void kx__redis_log_cancel(kx_store_redis *r);
void kx__redis_log_free(kx_store_redis *r);
/* An own op's answers are out (or failed): snapshot if due, then the key's next op. */
void kx__redis_log_delivered(kx_store_redis *r, redis_op *op);

/* redis_log_evidence.c: evidence out of the per-event path */
#define KX__REDIS_EV_REF 28u /* bytes of a reference: proc, page, offset (u64), length (u32) */
int kx__redis_ev_init(kx_store_redis *r);
void kx__redis_ev_free(kx_store_redis *r);
/* Puts blob on this process's page (sent at the end of the loop iteration, or before a
 * read) and appends its reference to out. */
int kx__redis_ev_put(kx_store_redis *r, const char *p, size_t n, int64_t ttl_ms, kx_buf *out);
/* Sends the pending blobs now as the next page (SET PX; no reply awaited). */
void kx__redis_ev_flush(kx_store_redis *r);
/* op's own answers (res[0..n), borrowed) whose evidence are references: 0 when none has any
 * (the caller delivers them as they are); 1 when they were copied and are being read: cb or
 * mcb gets them with the blobs, then kx__redis_log_delivered(op); 2 when none could be read
 * and cb or mcb already got them (the caller goes on). */
int kx__redis_ev_resolve(kx_store_redis *r, redis_op *op, const kx_window_result *res, size_t n,
                         kx_store_cb cb, kx_store_many_cb mcb, void *ud);

/* redis_conn.c */
void kx__redis_enter(kx_store_redis *r);
bool kx__redis_leave(kx_store_redis *r); /* true when r is gone */
/* A node for host:port (numeric), created (and connecting) when new; NULL past
 * REDIS_MAX_NODES or out of memory. */
redis_node *kx__redis_node(kx_store_redis *r, const char *host, int port);
void kx__redis_node_start(redis_node *n);
/* Drops n's connection (pending replies come back NULL); reconnects after the backoff. */
void kx__redis_node_drop(redis_node *n);
/* Sends op's EVALSHA on n (ASKING first when op->ask). */
int kx__redis_node_send(redis_node *n, redis_op *op);
int kx__redis_script_load(redis_node *n);
void kx__redis_watchdog_kick(redis_node *n);
/* Recomputes r->up from the nodes and the mode; tells the state callback on a change. */
void kx__redis_update_up(kx_store_redis *r);
void kx__redis_destroy_nodes(kx_store_redis *r);
void kx__redis_conn_init(kx_store_redis *r);
/* Numeric address only: a name lookup would block the loop. */
int kx__redis_numeric_host(const char *host, char *out, size_t outlen);

/* redis_cluster.c */
/* The slot of a key (CRC16 of its hash tag, as Redis computes it). */
uint16_t kx__redis_key_slot(const char *key, size_t len);
/* The node serving key's slot when it is up (the one server outside a cluster), else NULL:
 * for commands sent directly, outside the per-slot order (no reply awaited, or their own). */
redis_node *kx__redis_key_node(kx_store_redis *r, const char *key, size_t len);
/* Sends op to the node serving its slot, or holds it until it may go (cluster). */
int kx__redis_route(kx_store_redis *r, redis_op *op);
/* A reply on n for op arrived (before it is looked at): per-slot accounting. */
void kx__redis_answered(kx_store_redis *r, redis_op *op);
/* Handles a MOVED, ASK, TRYAGAIN or CLUSTERDOWN reply: true when op was resent or held. */
bool kx__redis_redirect(kx_store_redis *r, redis_op *op, const redisReply *reply);
/* Sends the held ops that may go now. */
void kx__redis_flush_held(kx_store_redis *r);
/* Fails the held ops bound for node idx (REDIS_NO_NODE: all) with status. */
void kx__redis_fail_held(kx_store_redis *r, uint8_t idx, int status);
/* Asks a node that is up for the slot map (the seed first), once at a time. */
void kx__redis_map_refresh(kx_store_redis *r);
void kx__redis_cluster_free(kx_store_redis *r);

#endif
