/*
 * Private to src/state: the backend vtable behind kx_store, the limits both backends share
 * (so `memory` and `redis` give the same answer for the same calls), and test-only hooks.
 * Unit tests include this header; nothing outside src/state and tests/unit may.
 */
#ifndef KLAXON_STATE_STORE_IMPL_H
#define KLAXON_STATE_STORE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "klaxon/store.h"

/* Members kept per window key. Past it the oldest (by time, then member bytes) are dropped,
 * counted in KX_M_STATE_KEYS_CAPPED and logged: a hostile stream of distinct members cannot
 * grow one key without bound. Same cap, same order, in both backends. */
#define KX__STORE_MEMBER_CAP 100000u
/* Values kept per first-seen key (KX_AGG_FIRST_SEEN): past it the least recently seen are
 * dropped (counted in KX_M_STATE_KEYS_CAPPED and logged); a dropped value is "new" again. */
#define KX__STORE_SEEN_CAP 10000u
/* Evidence blobs kept per key, whatever max_evidence asks for. */
#define KX__STORE_MAX_EVIDENCE 1024u
/* Larger evidence blobs are refused with -EMSGSIZE (the caller's bug, not ours to store). */
#define KX__STORE_MAX_EVIDENCE_LEN ((size_t)KX_STORE_MAX_EVIDENCE_BYTES)
/* Keys and members longer than this are refused with -EMSGSIZE. */
#define KX__STORE_MAX_KEY_LEN 4096u
/* Event times must be exact in a double (Redis scores): |time| < 2^53. */
#define KX__STORE_MAX_TIME ((int64_t)1 << 53)

typedef struct kx__store_vtbl {
    const char *kind;
    int (*window_add)(kx_store *s, const kx_window_add *op, kx_store_cb cb, void *ud);
    int (*window_add_many)(kx_store *s, const kx_window_add *ops, size_t n, kx_store_many_cb cb,
                           void *ud);
    int (*absence_touch)(kx_store *s, const kx_absence_touch *op, kx_absence_cb cb, void *ud);
    int (*absence_touch_many)(kx_store *s, const kx_absence_touch *ops, size_t n,
                              kx_absence_many_cb cb, void *ud);
    int (*absence_due)(kx_store *s, const kx_absence_due *op, kx_absence_cb cb, void *ud);
    int (*close_touch)(kx_store *s, const kx_close_touch *op, kx_absence_cb cb, void *ud);
    int (*close_touch_many)(kx_store *s, const kx_close_touch *ops, size_t n, kx_absence_many_cb cb,
                            void *ud);
    int (*close_due)(kx_store *s, const kx_close_due *op, kx_absence_cb cb, void *ud);
    int (*watermark)(kx_store *s, const kx_watermark_op *op, kx_watermark_cb cb, void *ud);
    int (*claim)(kx_store *s, const kx_claim_op *op, kx_claim_cb cb, void *ud);
    int (*forget)(kx_store *s, const char *key);
    int (*set_scan)(kx_store *s, const char *key, const char *cursor, kx_set_scan_cb cb,
                    void *ud); /* NULL: no sets (memory) */
    bool (*is_up)(const kx_store *s);
    size_t (*pending)(const kx_store *s);
    void (*destroy)(kx_store *s);
} kx__store_vtbl;

/* Embedded first in each backend's struct. */
struct kx_store {
    const kx__store_vtbl *vt;
    kx_store_state_cb state_cb;
    void *state_ud;
    uint32_t member_cap; /* KX__STORE_MEMBER_CAP unless a test lowers it */
};

void kx__store_base_init(kx_store *s, const kx__store_vtbl *vt);
/* Checks an add for both backends: 0, -EINVAL or -EMSGSIZE. */
int kx__store_validate(const kx_window_add *op);
/* Checks a multi-add: each add as kx__store_validate, n in 1..KX_STORE_MANY_MAX, one key and
 * the same parameters throughout, a sliding-window aggregate (not first_seen, baseline). */
int kx__store_validate_many(const kx_window_add *ops, size_t n);
/* Checks absence ops for both backends: 0, -EINVAL or -EMSGSIZE. */
int kx__store_validate_touch(const kx_absence_touch *op);
int kx__store_validate_touch_many(const kx_absence_touch *ops, size_t n);
int kx__store_validate_due(const kx_absence_due *op);
int kx__store_validate_close_touch(const kx_close_touch *op);
int kx__store_validate_close_touch_many(const kx_close_touch *ops, size_t n);
int kx__store_validate_close_due(const kx_close_due *op);
int kx__store_validate_watermark(const kx_watermark_op *op);
int kx__store_validate_claim(const kx_claim_op *op);
/* The window index of a closing window: floor(t / timespan), as the script computes it. */
int64_t kx__store_close_window(int64_t t, int64_t timespan);
/* The add's crossing condition (cross_at turned into its general form) into out
 * (KX_CMP_MAX_TERMS); returns the number of terms, 0 for no crossing scan. */
size_t kx__store_cond(const kx_window_add *op, kx_cmp_term *out);

/* ---- the memory store as a replica of a Redis window log (redis_log.c) ---- */

/* A memory store whose keys never expire by time (its owner forgets them) and that nothing
 * sweeps: the local copy of windows whose truth is a log in Redis. */
int kx__store_memory_create_replica(struct ev_loop *loop, size_t max_keys, kx_store **out);
/* Appends the sliding-window state of key (members, evidence, the last reported window, the
 * pruned horizon; empty when the key does not exist) to out, in the form
 * kx__store_memory_import reads. */
int kx__store_memory_export(kx_store *s, const char *key, kx_buf *out);
/* Replaces key's state with an exported one (ttl as the adds give it). -EPROTO when p is not
 * one; the key is then absent. */
int kx__store_memory_import(kx_store *s, const char *key, int64_t ttl_ms, const char *p, size_t n);
/* While quiet, the member cap's drops are neither counted nor logged (the process that made
 * the adds did that). */
void kx__store_memory_set_quiet(kx_store *s, bool quiet);
/* Members kept by key, 0 when it does not exist. */
size_t kx__store_memory_members(kx_store *s, const char *key);

/* ---- test-only hooks ---- */

/* Lowers the per-key member cap (both backends), so tests need not add 100000 members. */
void kx__store_set_member_cap(kx_store *s, uint32_t cap);

/* Memory backend: expires keys whose TTL has passed at now_ms (loop time in ms), examining at
 * most budget table slots (0 = the whole table). Returns the number of keys removed. */
size_t kx__store_memory_sweep(kx_store *s, int64_t now_ms, size_t budget);
/* Memory backend: remaining TTL in ms at now_ms, or -2 when the key does not exist (as PTTL). */
int64_t kx__store_memory_pttl(kx_store *s, const char *key, int64_t now_ms);
/* Memory backend: live keys (expired ones not yet swept included). */
size_t kx__store_memory_nkeys(const kx_store *s);

/* Redis window log (kx_store_redis_use_log first): a snapshot once the records since the last
 * outnumber the members by compact_min (default 256), and at most max_keys replicas (default
 * 262144); 0 keeps a limit as it is. */
void kx__store_redis_set_log_limits(kx_store *s, size_t compact_min, size_t max_keys);
/* Redis window log: the windows this process holds a replica of. */
size_t kx__store_redis_log_replicas(const kx_store *s);

/* Redis backend: command timeout (default 5000 ms); no reply within it counts as a lost
 * connection. */
void kx__store_redis_set_timeout(kx_store *s, int64_t timeout_ms);

#endif
