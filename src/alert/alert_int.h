/*
 * Private to the alert stage: the sink interface the router drives, the in-flight send
 * record shared by all sinks an alert goes to, and hooks the unit tests use.
 *
 * A kx__send is created by kx_router_send with the rendered alert JSON inside it and is
 * freed by the router when the last of its sinks calls kx__send_finish. Sinks borrow the
 * payload until they call kx__send_finish; they never free a send themselves.
 */
#ifndef KX_ALERT_INT_H
#define KX_ALERT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/alert.h"
#include "klaxon/log.h"
#include "klaxon/yaml.h"

#define KX__ALERT_MODULE "alert"

typedef struct kx__sink kx__sink;
typedef struct kx__send kx__send;

struct kx__send {
    kx_router *router;
    kx__send *prev, *next; /* the router's in-flight list */
    kx_router_done_cb done;
    void *ud;
    unsigned remaining; /* sinks (plus the router's own token) still to finish */
    int status;         /* first failure, or 0 */
    char key[33];       /* dedup_key, the Kafka message key */
    size_t len;
    char payload[]; /* alert JSON, NUL-terminated, no newline */
};

typedef struct kx__sink_ops {
    const char *type;
    /* Starts delivering s. The sink calls kx__send_finish(s, ...) exactly once, possibly
     * before deliver returns. */
    void (*deliver)(kx__sink *sink, kx__send *s);
    /* Cancels what is in flight (each finished with -ECANCELED unless it completes within
     * the sink's bounded shutdown) and frees the sink. */
    void (*destroy)(kx__sink *sink);
} kx__sink_ops;

struct kx__sink {
    const kx__sink_ops *ops;
    char *name; /* owned by the sink, freed by kx__sink_base_fini */
    struct ev_loop *loop;
    uint64_t delivered;
    uint64_t failed;
};

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

/* Fills the common part; returns -ENOMEM if the name cannot be copied. */
int kx__sink_base_init(kx__sink *sink, const kx__sink_ops *ops, struct ev_loop *loop,
                       const char *name);
void kx__sink_base_fini(kx__sink *sink);

/* A sink reports the outcome of one delivery: 0 = acknowledged, < 0 = gave up. Counts the
 * delivery (KX_M_ALERTS_DELIVERED / KX_M_ALERTS_FAILED); the last sink to finish completes
 * the send (dead-letter, done callback, free). */
void kx__send_finish(kx__send *s, kx__sink *sink, int status);

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
