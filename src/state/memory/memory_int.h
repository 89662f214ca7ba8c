/*
 * The memory store's private header: its types and the helpers its files share. The files
 * pair with the Redis script's (src/state/lua/) by kind of state:
 *   store_memory.c       the store's life, the key table and expiry, the re-entrancy guard
 *                        and the vtable (store_memory.c's file comment says how)
 *   memory/win.c         a key's containers: the member slice and set, the string heap,
 *                        the evidence list, the value/group array (mem_seen)
 *   memory/window.c      sliding windows and their aggregates    <-> lua/window.lua
 *   memory/first_seen.c  first_seen                              <-> lua/first_seen.lua
 *   memory/baseline.c    baseline                                <-> lua/baseline.lua
 *   memory/absence.c     absence sightings and due questions     <-> lua/absence.lua
 *   memory/closing.c     closing windows ("at most N")           <-> lua/closing.lua
 *   memory/watermark.c   the shared watermark                    <-> lua/watermark.lua
 *   memory/claim.c       alert claims                            <-> lua/claim.lua
 */
#ifndef KLAXON_STATE_MEMORY_INT_H
#define KLAXON_STATE_MEMORY_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "state/store_impl.h"

#define MEM_DEFAULT_MAX_KEYS 1000000u
#define MEM_SWEEP_INTERVAL_S 0.1
#define MEM_SWEEP_BUDGET 4096u
#define MEM_SLOT_EMPTY INT64_MIN

typedef struct mem_entry {
    int64_t t;
    uint64_t h;
    uint64_t vh;  /* the hash of the value (after the first 0x1f): DISTINCT compares these */
    uint32_t off; /* into the window's string heap */
    uint32_t len;
} mem_entry;

typedef struct mem_slot {
    uint64_t h;
    int64_t t; /* MEM_SLOT_EMPTY when free (valid times are > -2^53) */
} mem_slot;

typedef struct mem_ev {
    char *p;
    size_t len;
    size_t cap;
} mem_ev;

/* An entry of a first-seen key (a value and its introducer) or of an absence key (a group
 * and its payload; fired = the last sighting whose silence was reported). */
typedef struct mem_seen {
    uint64_t h;
    int64_t last;
    char *val; /* value (group) bytes, then the introducer's identity (the payload) */
    uint32_t vlen, ilen;
    bool has_fired;
    int64_t fired;
    int64_t fired_wm; /* the watermark the silence was reported at (forgotten keep later) */
    int oc;           /* what the touch that set last reported (kx_absence_outcome) */
    int64_t oc_since;
    /* closing windows: the end of the group's earliest window with events */
    bool has_deadline;
    int64_t deadline;
} mem_seen;

typedef struct mem_win {
    uint64_t kh;
    int64_t expire_at; /* loop ms; expired when now > expire_at (Redis' rule) */
    mem_entry *ent;
    uint32_t head, n, ecap;
    mem_slot *set;
    uint32_t set_cap; /* 0 or a power of two, load <= 1/2 */
    char *str;
    uint32_t str_len, str_cap, str_dead;
    mem_ev *ev;
    uint32_t ev_n, ev_cap;
    /* KX_AGG_FIRST_SEEN (the script's :z and :a): values, an index of entry + 1 by hash */
    struct mem_seen *seen;
    uint32_t seen_n, seen_cap;
    uint32_t *seen_idx;
    uint32_t seen_idx_cap; /* 0 or a power of two, load <= 1/2 */
    /* KX_AGG_BASELINE (the script's :a hash); the members (:z) expire on their own */
    bool bl_has, bl_alerted;
    int64_t bl_folded, bl_n, bl_alerted_k;
    double bl_mean, bl_var;
    int64_t members_expire_at;
    /* closing windows: the largest watermark judged (the script's "|wm" field) */
    bool has_horizon;
    int64_t horizon_wm;
    bool alerted; /* the last window reported as crossed (the Lua script's :a key) */
    bool pruned;  /* horizon is set: the newest time pruned (the script's :h key) */
    int64_t horizon;
    int64_t alert_first, alert_last;
    int64_t nsup; /* crossings passed over since the last reported one (the script's 3rd
                   * number in :a) */
    size_t klen;
    char key[]; /* NUL-terminated */
} mem_win;

typedef struct kx_store_memory {
    kx_store base;
    struct ev_loop *loop;
    ev_timer sweep_timer;
    mem_win **tab; /* tab_cap slots, power of two, load <= 1/2 */
    size_t tab_cap;
    size_t nkeys;
    size_t max_keys;
    size_t sweep_cursor;
    /* The Redis log's replica (redis_log.c): its clock stands still at 0, so keys never expire
     * by time; its owner drops them (the log says when a window starts over). */
    bool replica;
    bool quiet; /* replaying another process's adds: their member-cap drops were logged there */
    int depth;  /* > 0 while a callback runs */
    bool destroy_pending; /* destroy was called from inside a callback */
    kx_ratelimit rl_keys;
    kx_ratelimit rl_members;
    uint32_t *dset; /* DISTINCT scratch: entry index + 1, open addressing, reused */
    size_t dset_cap;
    const char *res_ev[KX__STORE_MAX_EVIDENCE];
    size_t res_ev_len[KX__STORE_MAX_EVIDENCE];
    int64_t res_last[KX_STORE_ABSENCE_DUE_MAX];
    int64_t res_count[KX_STORE_ABSENCE_DUE_MAX];
    uint32_t *due; /* absence_due scratch: entry indexes */
    size_t due_cap;
    /* window_add_many scratch: results, and their evidence copied (later adds of the same
     * call reuse the window's evidence buffers) as offsets into many_ev */
    kx_window_result *many_res;
    size_t many_cap;
    size_t many_i;
    int many_status;
    kx_buf many_ev;
    size_t *many_ev_off;
    size_t *many_ev_len;
    size_t many_ev_n, many_ev_cap;
    const char **many_ev_ptr;
    /* absence_touch_many scratch: a result per touch, with its since and its payload copied
     * (a later touch of the same group may replace the payload a report handed out) */
    struct mem_touch_many {
        kx_absence_result *res;
        int64_t *since;
        size_t *off, *len;
        const char **ptr;
        size_t cap, i;
        int status;
        kx_buf pl;
        const void *ops; /* the call's touches (kx_absence_touch or kx_close_touch) */
    } tm;
} kx_store_memory;

/* An op counted in KX_M_STORE_OPS; a replica's are the Redis store's, counted there. */
static inline void kx__mem_count_op(const kx_store_memory *m)
{
    if (!m->replica)
        kx_metric_inc(KX_M_STORE_OPS);
}

/* store_memory.c */
int64_t kx__mem_loop_now_ms(const kx_store_memory *m);
size_t kx__mem_tab_find(const kx_store_memory *m, const char *key, size_t klen, uint64_t kh);
void kx__mem_tab_del_at(kx_store_memory *m, size_t i);
void kx__mem_free(kx_store_memory *m);
/* The re-entrancy guard around a callback (or a call that runs callbacks): a destroy from
 * inside is carried out at the outermost leave. */
void kx__mem_enter(kx_store_memory *m);
void kx__mem_leave(kx_store_memory *m);
void kx__mem_run_cb(kx_store_memory *m, kx_store_cb cb, void *ud, int status,
                    const kx_window_result *res);
void kx__mem_run_acb(kx_store_memory *m, kx_absence_cb cb, void *ud, int status,
                     const kx_absence_result *res);
int kx__mem_key(kx_store_memory *m, const char *key, int64_t now, int64_t ttl, mem_win **out);
/* kx__mem_key for an update: counts the op; -ENOSPC is counted and logged (rate-limited). */
int kx__mem_update_key(kx_store_memory *m, const char *key, int64_t now, int64_t ttl,
                       mem_win **out);
/* An update refused because the key table is full: counted (op and cap) and logged,
 * rate-limited. */
void kx__mem_key_refused(kx_store_memory *m, const char *key);
mem_win *kx__mem_lookup(kx_store_memory *m, const char *key, int64_t now);

/* memory/win.c */
int kx__mem_member_cmp(const char *a, size_t alen, const char *b, size_t blen);
mem_entry *kx__mem_win_at(mem_win *w, uint32_t i);
uint32_t kx__mem_win_lower(mem_win *w, int64_t t, const char *m, size_t mlen);
uint32_t kx__mem_win_time_bound(mem_win *w, int64_t t, bool strict);
void kx__mem_set_put(mem_slot *set, uint32_t cap, uint64_t h, int64_t t);
int kx__mem_set_resize(mem_win *w, uint32_t cap);
void kx__mem_set_del(mem_win *w, uint64_t h, int64_t t);
const mem_entry *kx__mem_win_find(mem_win *w, uint64_t h, const char *m, size_t mlen);
int kx__mem_str_append(mem_win *w, const char *m, uint32_t mlen, uint32_t *off);
void kx__mem_str_maybe_compact(mem_win *w);
void kx__mem_win_drop_front(mem_win *w, uint32_t k);
int kx__mem_win_insert(mem_win *w, uint64_t h, int64_t t, const char *m, uint32_t mlen);
int kx__mem_win_push_evidence(mem_win *w, const char *p, size_t len, uint32_t max);
mem_win *kx__mem_win_new(const char *key, size_t klen, uint64_t kh);
void kx__mem_win_free(mem_win *w);
void kx__mem_note_pruned(mem_win *w, int64_t t);
void kx__mem_win_remove_range(mem_win *w, uint32_t lo, uint32_t hi);
int32_t kx__mem_seen_find(const mem_win *w, uint64_t h, const char *v, size_t vlen);
int kx__mem_seen_reindex(mem_win *w, uint32_t cap);
void kx__mem_seen_compact(mem_win *w);
int kx__mem_seen_set_intro(mem_seen *e, const char *id, size_t ilen);
int kx__mem_seen_append(mem_win *w, uint64_t h, const char *v, size_t vlen, int32_t *at);
int kx__mem_group_cmp(const void *a, const void *b);
/* The groups of w that is_due(group, arg) finds due, into m->due (grown to fit) in the
 * script's order (kx__mem_group_cmp: by deadline, else by last sighting; then name). */
typedef bool (*kx__mem_due_fn)(const mem_seen *e, const void *arg);
int kx__mem_due_groups(kx_store_memory *m, mem_win *w, bool by_deadline, kx__mem_due_fn is_due,
                       const void *arg, size_t *nd);
/* qsort has no context argument: the groups sorted by kx__mem_group_cmp, and by which
 * time (closing windows' deadline, else an absence group's last sighting). */
extern const mem_win *kx__mem_sort_win;
extern bool kx__mem_sort_by_deadline;

/* memory/window.c */
const char *kx__mem_entry_value(const mem_win *w, const mem_entry *e, size_t *len);
bool kx__mem_agg(kx_store_memory *m, mem_win *w, kx_agg agg, uint32_t lo, uint32_t hi,
                 uint32_t skip, const char *own, size_t own_len, double *out);
int kx__mem_window_add(kx_store *s, const kx_window_add *op, kx_store_cb cb, void *ud);
int kx__mem_window_add_many(kx_store *s, const kx_window_add *ops, size_t n, kx_store_many_cb cb,
                            void *ud);

/* memory/snapshot.c: kx__store_memory_export/import (store_impl.h) */

/* memory/first_seen.c */
int kx__mem_first_seen(kx_store_memory *m, mem_win *w, const kx_window_add *op,
                       kx_window_result *res);

/* memory/baseline.c */
int kx__mem_baseline(kx_store_memory *m, mem_win *w, const kx_window_add *op, int64_t now,
                     kx_window_result *res, bool *added_out);

/* memory/absence.c */
int kx__mem_absence_touch(kx_store *s, const kx_absence_touch *op, kx_absence_cb cb, void *ud);
int kx__mem_absence_touch_many(kx_store *s, const kx_absence_touch *ops, size_t n,
                               kx_absence_many_cb cb, void *ud);
int kx__mem_touch_many(kx_store_memory *m, size_t n,
                       int (*one)(kx_store_memory *m, size_t i, kx_absence_cb cb, void *ud),
                       kx_absence_many_cb cb, void *ud);
int kx__mem_absence_due(kx_store *s, const kx_absence_due *op, kx_absence_cb cb, void *ud);

/* memory/closing.c */
int kx__mem_close_touch(kx_store *s, const kx_close_touch *op, kx_absence_cb cb, void *ud);
int kx__mem_close_touch_many(kx_store *s, const kx_close_touch *ops, size_t n,
                             kx_absence_many_cb cb, void *ud);
int kx__mem_close_due(kx_store *s, const kx_close_due *op, kx_absence_cb cb, void *ud);

/* memory/watermark.c */
int kx__mem_watermark(kx_store *s, const kx_watermark_op *op, kx_watermark_cb cb, void *ud);

/* memory/claim.c */
int kx__mem_claim(kx_store *s, const kx_claim_op *op, kx_claim_cb cb, void *ud);

#endif
