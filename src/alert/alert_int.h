/*
 * Private to the alert stage: the objects of one alert's way out, and the sink interface.
 *
 *   kx__send      one routed alert: its JSON, dedup_key, spool sequence number and the sinks
 *                 it goes to. Created by kx_router_send (or read back from the spool), freed
 *                 by the router when its last delivery ended.
 *   kx__delivery  that alert to one sink: attempts, next attempt time, last error. Owned by
 *                 the sink's queue (queue.c) from push to its end.
 *   kx__queue     one sink's queue: concurrency, retry schedule with jitter, circuit breaker,
 *                 retry_for bound (queue.c). A slow or dead sink delays only its own queue.
 *
 * A sink only makes attempts: kx__sink_ops.attempt starts one delivery attempt and the sink
 * reports its outcome with kx__attempt_done exactly once (possibly before attempt returns).
 * What happens next (retry, breaker, dead letter, spool ack) is the queue's and router's.
 * Sinks borrow the send's payload until they report.
 */
#ifndef KX_ALERT_INT_H
#define KX_ALERT_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/alert.h"
#include "klaxon/log.h"
#include "klaxon/spool.h"
#include "klaxon/yaml.h"

#define KX__ALERT_MODULE "alert"

typedef struct kx__sink kx__sink;
typedef struct kx__send kx__send;
typedef struct kx__delivery kx__delivery;
typedef struct kx__queue kx__queue;
typedef struct kx__claims kx__claims;

struct kx__send {
    kx_router *router;
    kx__send *prev, *next;  /* the router's live sends */
    kx__send *wait_next;    /* the router's list of sends waiting for the spool */
    uint64_t seq;           /* spool sequence number; 0 until appended */
    kx_router_done_cb done; /* runs once the alert is in the spool (durable: synced) */
    void *ud;
    unsigned remaining;                   /* deliveries not ended (plus setup tokens) */
    unsigned nsinks;                      /* the route's sinks, in order: spool ack positions */
    uint16_t sink_ix[KX_SPOOL_MAX_SINKS]; /* router sink index of position i */
    int64_t created_ms;                   /* wall clock */
    bool resolved;                        /* status "resolved" (claims keep it apart) */
    uint16_t team;                        /* index in the router's team counters (teams.c) */
    int64_t realert_ms; /* its routes' longest `realert` (claims keep "done" this long); 0 = the
                         * default (also after a spool read-back) */
    char key[33];       /* dedup_key, the Kafka message key */
    size_t len;
    char payload[]; /* alert JSON, NUL-terminated, no newline */
};

struct kx__delivery {
    kx__send *send;
    kx__queue *q;
    kx__delivery *prev, *next; /* the queue's FIFO */
    unsigned pos;              /* position in send's sinks (the spool ack index) */
    unsigned attempts;
    bool inflight;
    bool claimed;              /* this process holds the incident's claim for the sink (claim.c) */
    bool elsewhere;            /* ended because the claim said another process delivered it */
    int64_t first_ms, next_ms; /* monotonic: when queued, earliest next attempt */
    long last_status;          /* HTTP status of the last attempt, 0 if none */
    const char *why;           /* why it ended undelivered (static string) */
    char last_error[160];
};

typedef enum {
    KX__ATTEMPT_OK = 0, /* acknowledged: 2xx, delivery report, written and synced */
    KX__ATTEMPT_RETRY,  /* may succeed later: 5xx, 408, 429, transport errors, full disk */
    KX__ATTEMPT_FAIL,   /* will not succeed as it is: other 4xx; dead-lettered at once */
    KX__ATTEMPT_DEFER,  /* not attempted: another process holds the claim; ask again after
                         * retry_after_ms (no retry counted, breaker and retry_for untouched) */
} kx__attempt_kind;

typedef struct kx__outcome {
    kx__attempt_kind kind;
    long status;            /* HTTP status, 0 when there was none */
    int64_t retry_after_ms; /* >= 0: the receiver asked to wait this long (Retry-After) */
    const char *error;      /* short reason for logs and dead letters; copied */
    /* The outcome of a request already reported for another delivery (an email digest's
     * other alerts): the circuit breaker counts it once. */
    bool shared;
} kx__outcome;

typedef struct kx__sink_ops {
    const char *type;
    /* Starts one attempt to deliver d->send. The sink calls kx__attempt_done(d, ...) exactly
     * once, possibly before attempt returns. */
    void (*attempt)(kx__sink *sink, kx__delivery *d);
    /* Cancels what is in flight and frees the sink. Attempts it ends meanwhile may still be
     * reported (a kafka flush): a success is recorded, anything else is left in the spool. */
    void (*destroy)(kx__sink *sink);
    /* Optional: reopen files after a SIGHUP (log rotation). */
    void (*reopen)(kx__sink *sink);
    /* Optional: attempts the sink holds back (a digest waiting for its period) start now:
     * the router is draining for shutdown. */
    void (*flush)(kx__sink *sink);
} kx__sink_ops;

struct kx__sink {
    const kx__sink_ops *ops;
    char *name; /* owned by the sink, freed by kx__sink_base_fini */
    struct ev_loop *loop;
    /* > 0: the sink gathers this many attempts into one send (an email digest): its queue's
     * concurrency, unless the config sets one. */
    unsigned batch;
};

/* Reports the outcome of one attempt (see kx__sink_ops.attempt). */
void kx__attempt_done(kx__delivery *d, const kx__outcome *o);
void kx__attempt_ok(kx__delivery *d);

/* ---- the flood valve (flood.c) ---- */

typedef struct kx__flood_cfg {
    bool on;
    uint64_t max;   /* alerts of one rule per window on one route ... */
    int64_t per_ms; /* ... the window */
} kx__flood_cfg;

typedef enum {
    KX__FLOOD_PASS,  /* send it */
    KX__FLOOD_START, /* the limit is crossed: send the flood notice instead */
    KX__FLOOD_MUTE,  /* muted (counted) */
} kx__flood_verdict;

typedef struct kx__flood kx__flood;

/* `flood: {max: N, per: D}` or `flood: off` (cfg->on false). */
int kx__flood_parse(const kx_yaml_node *n, const char *file, kx__flood_cfg *out, kx_err *err);
kx__flood *kx__flood_create(void);
void kx__flood_destroy(kx__flood *f);
/* Counts alert a on route; now is monotonic ms. */
kx__flood_verdict kx__flood_check(kx__flood *f, const kx__flood_cfg *cfg, uint16_t route,
                                  const kx_alert *a, int64_t now);
/* After KX__FLOOD_START: builds the "muted" notice of a's rule on route and calls send. */
void kx__flood_notice(kx__flood *f, const kx__flood_cfg *cfg, uint16_t route, const kx_alert *a,
                      void (*send)(void *ud, uint16_t route, const kx_alert *notice), void *ud);
/* Closes windows that are over; a flood that calmed down gets its summary notice through
 * send. Returns how many floods are still muting. */
size_t kx__flood_sweep(kx__flood *f, const kx__flood_cfg *(*cfg_of)(void *ud, uint16_t route),
                       int64_t now, void (*send)(void *ud, uint16_t route, const kx_alert *n),
                       void *ud);

/* ---- routing (routing.c) ---- */

typedef struct kx__routing kx__routing;

/* What routes match on: the alert's fields (tags: any of them). */
typedef struct kx__route_view {
    const char *team, *severity, *level, *tenant, *category, *rule, *status;
    const char *const *tags;
    size_t ntags;
} kx__route_view;

/* routes: the `routes:` list; sinks: the router's, which routes name. */
int kx__routing_parse(const kx_yaml_node *routes, kx__sink *const *sinks, size_t nsinks,
                      const char *file, kx__routing **out, kx_err *err);
void kx__routing_destroy(kx__routing *t);
/* The sinks (indices, each once, at most KX_SPOOL_MAX_SINKS) an alert goes to at now_ms;
 * taken (may be NULL, room for every route): the indices of the routes that took it. */
size_t kx__routing_eval(const kx__routing *t, const kx__route_view *v, int64_t now_ms,
                        uint16_t *sinks, int *taken, size_t *ntaken);
size_t kx__routing_size(const kx__routing *t);
/* Route i's sinks, and its flood valve (NULL: the `alerting.flood` default applies). */
const uint16_t *kx__routing_sinks_of(const kx__routing *t, size_t i, size_t *n);
const kx__flood_cfg *kx__routing_flood_of(const kx__routing *t, size_t i);
/* Route i's `realert` in ms (0: not set). */
int64_t kx__routing_realert_of(const kx__routing *t, size_t i);
void kx__routing_describe(const kx__routing *t, size_t i, int *line, int *col, bool *is_default,
                          bool *cont);

/* ---- per-team counters (teams.c) ---- */

#define KX__TEAMS_MAX 64 /* teams counted by name; later ones as "other" */
typedef struct kx__teams kx__teams;

kx__teams *kx__teams_create(size_t nsinks);
void kx__teams_destroy(kx__teams *t);
/* The counters' index of team (NULL: "default"), interned on first sight. */
uint16_t kx__teams_index(kx__teams *t, const char *team);
/* The same for a rendered alert (its "team"): spool read-back, requeued dead letters. */
uint16_t kx__teams_index_json(kx__teams *t, const char *json, size_t len);
void kx__teams_raised(kx__teams *t, uint16_t team);
void kx__teams_ended(kx__teams *t, uint16_t team, size_t sink, bool delivered);
/* klaxon_team_alerts_raised_total{team}, klaxon_team_delivered_total{team,sink},
 * klaxon_team_dead_letters_total{team,sink}; sinks: the sink names by index. */
int kx__teams_render(const kx__teams *t, const char *const *sinks, kx_buf *out);

/* ---- claims (claim.c): one page per incident across processes ---- */

typedef struct kx__claims_cfg {
    bool on;
    int64_t lease_ms; /* how long a holder may take before another takes over */
    int64_t keep_ms;  /* how long "delivered" is remembered */
    int64_t wait_ms;  /* how long a delivery waits for a store that is not connected */
} kx__claims_cfg;

/* `alerting.claims`: off, or {lease, keep, wait}; n NULL: the defaults (on, 2m, 24h, 10s). */
int kx__claims_parse(const kx_yaml_node *n, const char *file, kx__claims_cfg *out, kx_err *err);
kx__claims *kx__claims_create(kx_router *r, const kx__claims_cfg *cfg);
/* Store calls still out (a drain waits for them: a "done" lost at shutdown would leave the
 * incident claimed until its lease runs out). Bounded by the store's command timeout. */
bool kx__claims_settling(const kx__claims *c);
/* The holder's name: host and spool directory (the same after a restart), or without one
 * (NULL) host, pid and a random part. */
void kx__claims_set_holder(kx__claims *c, const char *spool_dir);
/* The store claims live in (NULL: no claims are made). */
void kx__claims_set_store(kx__claims *c, struct kx_store *store);
/* Detaches the store calls still out (their answers are dropped) and frees c. */
void kx__claims_destroy(kx__claims *c);
/* Whether q's attempts go through a claim. */
bool kx__claims_apply(const kx__claims *c, const kx__queue *q);
/* Instead of q's sink attempt: claims first, then attempts, defers, or ends d delivered. */
void kx__claims_attempt(kx__claims *c, kx__queue *q, kx__delivery *d);
/* d ended: a claim it holds becomes done (delivered) or is released (dead). */
void kx__claims_end(kx__claims *c, kx__queue *q, const kx__delivery *d, bool delivered);

/* ---- queues (queue.c) ---- */

typedef struct kx__queue_cfg {
    unsigned concurrency;      /* attempts in flight at once */
    bool ordered;              /* strictly in order: a retry holds up everything behind it */
    bool backfill;             /* takes backfill alerts (paging sinks do not by default) */
    int64_t retry_for_ms;      /* an alert is retried this long, then dead-lettered */
    int64_t backoff_ms;        /* first retry delay; doubles per attempt ... */
    int64_t backoff_max_ms;    /* ... up to this (also the breaker's longest pause) */
    unsigned breaker_failures; /* failed attempts in a row that open the circuit; 0 = never */
    bool claim;                /* claims the incident in the state store first (claim.c) */
} kx__queue_cfg;

/* Delivery latency histogram bounds, in seconds (klaxon_sink_delivery_seconds). */
#define KX__LAT_NB 12
extern const double kx__lat_bounds[KX__LAT_NB];

/* The queue keys every sink accepts (besides its own), for kx_yaml_check_keys lists. */
#define KX__QUEUE_KEYS                                                                             \
    "concurrency", "ordered", "backfill", "retry_for", "backoff", "backoff_max",                   \
        "breaker_failures", "claim"

/* A doubly linked list of deliveries (kx__delivery.prev/next). */
typedef struct kx__dlist {
    kx__delivery *head, *tail;
    size_t n;
} kx__dlist;

struct kx__queue {
    kx_router *router;
    kx__claims *claims; /* the router's; NULL without claims */
    kx__sink *sink;
    char name[256]; /* the sink's, kept past its destroy (dead letters at shutdown) */
    unsigned index; /* in the router's sinks */
    struct ev_loop *loop;
    kx__queue_cfg cfg;
    /* ready: may be attempted now, oldest first; waiting: until their next_ms (retries);
     * inflight: an attempt is out. Every delivery of the queue is in exactly one. */
    kx__dlist ready, waiting, inflight;
    int64_t wait_min; /* earliest next_ms in waiting (INT64_MAX when empty) */
    size_t depth;     /* all three */
    bool pumping, stopped, closing;
    /* circuit breaker: open while fails >= cfg.breaker_failures, probing once per cooldown */
    unsigned fails;
    int64_t open_until, cooldown_ms;
    ev_timer timer;
    uint64_t delivered, dead, retried;
    /* claims: taken, held by another process, delivered elsewhere, store unavailable */
    uint64_t claim_taken, claim_held, claim_elsewhere, claim_unavailable;
    /* delivery latency, alert created -> acknowledged: counts per KX__LAT_BUCKETS bound */
    uint64_t lat_count[KX__LAT_NB + 1];
    double lat_sum;
    kx_ratelimit rl;
};

/* Reads the queue keys of a sink's map over defaults d. */
int kx__queue_parse(const kx_yaml_node *cfg, const char *file, const kx__queue_cfg *d,
                    kx__queue_cfg *out, kx_err *err);
void kx__queue_init(kx__queue *q, kx_router *r, kx__sink *sink, unsigned index,
                    struct ev_loop *loop, const kx__queue_cfg *cfg);
/* Takes d (send, pos set) and starts what the queue allows. */
void kx__queue_push(kx__queue *q, kx__delivery *d);
/* Starts what the queue allows now and arms its timer for the rest. */
void kx__queue_pump(kx__queue *q);
/* No new attempts (shutdown with a durable spool: what is left stays spooled). */
void kx__queue_stop(kx__queue *q);
/* Visits every delivery still in the queue (ready, waiting, in flight). */
void kx__queue_each(const kx__queue *q, void (*fn)(void *ud, const kx__delivery *d), void *ud);
/* Frees the queued deliveries (call after the sink is destroyed). */
void kx__queue_fini(kx__queue *q);

/* The router hears each delivery's end: delivered, or dead (retry_for spent, a permanent
 * failure, the sink removed). It acks the spool, dead-letters, frees the send when done. */
void kx__router_delivery_end(kx_router *r, kx__delivery *d, bool delivered);
/* Requeued dead letters (requeue.c): an alert sent again to one sink, spooled like a new
 * one without the dedup check (an operator asked for it). -ENOENT: no such sink; other
 * errors: not spooled (full, disk). */
int kx__router_resend(kx_router *r, const char *sink, const char *key, const char *alert,
                      size_t len);
/* Writes a dead letter for an alert that has no delivery (a requeued one). */
void kx__router_dead_letter(kx_router *r, const char *sink, const char *why, const char *key,
                            const char *alert, size_t len);
/* Makes the spool durable now. 0 or -errno. */
int kx__router_sync(kx_router *r);
/* Takes the requeue files of dir (requeue.c). */
void kx__requeue_scan(kx_router *r, const char *dir);
/* An attempt ended without ending its delivery (a retry): the router may be drained now. */
void kx__router_attempt_settled(kx_router *r);

/* Every sink constructor: cfg is the sink's map (its `type` already checked by the router),
 * name the key it was declared under. New sink on success, caller destroys via ops. */
typedef int (*kx__sink_create_fn)(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                                  const char *file, kx__sink **out, kx_err *err);

int kx__sink_stdout_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                           const char *file, kx__sink **out, kx_err *err);
int kx__sink_file_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                         const char *file, kx__sink **out, kx_err *err);
int kx__sink_webhook_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                            const char *file, kx__sink **out, kx_err *err);
int kx__sink_kafka_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err);
int kx__sink_pagerduty_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                              const char *file, kx__sink **out, kx_err *err);
int kx__sink_slack_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err);
int kx__sink_email_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err);

/* Shared by the HTTP sinks (sink_webhook.c): url or url_file (a secret, never printed),
 * http(s) only; and timeout (1ms..1h) into *out when given. */
int kx__sink_parse_url(const kx_yaml_node *cfg, const char *file, const char *name, char **out,
                       kx_err *err);
int kx__sink_parse_timeout(const kx_yaml_node *cfg, const char *file, long *out, kx_err *err);

/* Set by the router while it creates sinks for `klaxon config check` / `klaxon route`:
 * sinks validate their config but open nothing (files, producers). Loop thread only. */
extern bool kx__sinks_dry_run;
/* ... and with this also true, a file sink checks that its file can be written. */
extern bool kx__sinks_check_files;

/* Fills the common part; returns -ENOMEM if the name cannot be copied. */
int kx__sink_base_init(kx__sink *sink, const kx__sink_ops *ops, struct ev_loop *loop,
                       const char *name);
void kx__sink_base_fini(kx__sink *sink);

/* "k=v, k=v" of a rendered alert's group object into b (values that are not strings as
 * JSON), for the sinks that write for people. */
struct json_t;
void kx__alert_group_text(kx_buf *b, struct json_t *group);
/* Whether a rendered alert's status is "resolved" (read where the renderer put it, not
 * anywhere in the evidence). */
bool kx__alert_json_resolved(const char *json);
/* The two 64-bit halves of the dedup_key (the router's dedup cache keys on them). */
void kx__alert_dedup_hash(const kx_alert *a, uint64_t *h1, uint64_t *h2);
/* The category the alert is rendered with (rule's, else derived from tags). Borrowed from a
 * or static storage; never NULL. Writes a derived tactic into buf (>= 64 bytes). */
const char *kx__alert_category(const kx_alert *a, char *buf, size_t buflen);

/* Bounded memory of recently sent dedup_keys: a hash table (linear probing) indexed by the
 * key's first half, plus a ring in insertion order so that when `cap` keys are held the
 * oldest is evicted (and counted) to make room. Sized once at init; no allocation later. */
typedef struct kx__dedup_slot {
    uint64_t h1, h2;
    int64_t seen_ms;
    int used;
} kx__dedup_slot;

typedef struct kx__dedup {
    kx__dedup_slot *table;
    size_t mask; /* table size - 1 (a power of two >= 2 * cap) */
    uint64_t (*ring)[2];
    size_t cap, head, count;
    uint64_t evictions;
} kx__dedup;

int kx__dedup_init(kx__dedup *d, size_t cap);
void kx__dedup_fini(kx__dedup *d);
/* True when (h1, h2) was recorded less than window_ms before now_ms (the record is left as
 * it is). Otherwise records it as seen at now_ms and returns false. */
bool kx__dedup_check(kx__dedup *d, uint64_t h1, uint64_t h2, int64_t now_ms, int64_t window_ms);

/* Test hooks. */
uint64_t kx__router_dedup_evictions(const kx_router *r);
size_t kx__router_dedup_size(const kx_router *r);

#endif
