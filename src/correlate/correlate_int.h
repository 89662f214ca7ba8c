/*
 * The correlate stage's private header: the op record every store call of the stage is made
 * of, the correlator's state, and the helpers its files share (kx__). The files:
 *   correlator.c  the correlator: its life, the ops' pool and lifecycle, retries across a
 *                 store outage, the batch entry points
 *   update.c      an event (or a chained correlation's alert) into a window update: key,
 *                 member, group values, evidence
 *   groups.c      the per-rule, per-tenant group caps and the "detection degraded" alert
 *   groupcap.c    their table (groupcap.h)
 *   fire.c        window updates and the alerts of their crossings
 *   watermark.c   absence, "at most N" windows and the shared watermark they are judged by
 *   resolve.c     `resolve: auto`: alerted groups kept as open incidents, and their resolves
 *   preagg.c      a batch's updates of one key merged into one store call
 * docs/internals/correlate.md walks an op through them.
 */
#ifndef KLAXON_CORRELATE_INT_H
#define KLAXON_CORRELATE_INT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "correlate/groupcap.h"
#include "klaxon/correlate.h"
#include "klaxon/log.h"

#define KX_MAX_GROUP_BY KX_RULE_MAX_GROUP_BY
#define KX_MAX_PROTO_RETRIES 10  /* error replies (-EPROTO) retried 0.5 s apart, then dropped */
#define KX_ABSENCE_DUE_BATCH 256 /* groups asked for per due check; a full answer asks again */
#define KX_WM_QUIET_MS 30000     /* a partition not moving this long moves with the wall clock */
#define KX_WM_TTL_MS (7LL * 24 * 3600 * 1000) /* a partition silent a week is forgotten */

typedef struct kx_op kx_op;
/* What an op asks of the store: a window update, or (absence rules) a sighting or a
 * question for the groups whose silence is due. */
typedef enum {
    KX_OP_WINDOW = 0,
    KX_OP_TOUCH,
    KX_OP_DUE,
    KX_OP_CTOUCH,
    KX_OP_CDUE,
    KX_OP_WM
} kx_op_kind;

/* One store call and everything a retry needs (key, member, time, evidence): the event it
 * came from is reused for the next message as soon as the call is issued. From a free list,
 * so steady state allocates nothing. */
struct kx_op {
    kx_correlator *p;
    kx_rule *corr;
    kx_op_kind kind;
    int64_t watermark_ms; /* KX_OP_DUE */
    uint64_t token;       /* KX_OP_DUE, KX_OP_CDUE, KX_OP_TOUCH: its identity across retries */
    char group[40];       /* KX_OP_CTOUCH, and windows of `resolve: auto` rules: the group's hash */
    kx_touch_mode touch_mode; /* KX_OP_TOUCH */
    /* KX_OP_TOUCH of `resolve: auto`: the first_seen of the group's alert before this one */
    bool has_prev_af;
    int64_t prev_af_ms;
    kx_op *grp_next;  /* pre-aggregation: the next update of the same key in this batch */
    kx_op *next;      /* free list or retry queue */
    int proto_errors; /* error replies so far: a persistent one must not hold the stream */
    int64_t time_ms;
    kx_buf member; /* event identity [0x1f value] (klaxon/store.h) */
    char key[96];
    /* group values and tenant, NUL-separated in strs; offsets into it */
    kx_buf strs;
    size_t tenant_off;
    size_t val_off[2 * KX_MAX_GROUP_BY]; /* group-by values, then first_seen's value fields */
    kx_buf evidence;
};

/* The newest event time of one input partition ("topic/partition"), published to the store's
 * shared watermark at each check. */
struct wm_part {
    char name[272];  /* "topic/partition", as published */
    char topic[256]; /* "-" for none (files) */
    int32_t partition;
    int64_t max_ms;
    bool live; /* events read from it since the last publish */
};

struct kx_correlator {
    struct ev_loop *loop;
    kx_ruleset *rules;
    kx_store *store;
    kx_correlate_opts opts;
    kx_correlate_host host;

    size_t pending; /* ops issued, queued for retry or to re-ask */
    bool in_batch;  /* between batch_begin (or a tick) and batch_done */
    bool paused;    /* holding the source for the store */

    kx_op *free_ops;
    kx_op *retry_head, *retry_tail;
    bool store_down;
    ev_timer retry_w; /* re-issues queued updates while the store is up (-ENOBUFS, errors) */

    kx_buf scratch;  /* an event's evidence */
    kx_buf chain_ev; /* evidence of a chained correlation's alert */
    kx_ratelimit rl_store;
    kx_ratelimit rl_late;
    kx_ratelimit rl_value;
    kx_ratelimit rl_groups;
    kx_ratelimit rl_evicted; /* apart from refusals: each kind is seen under a flood */
    kx_ratelimit rl_parts;
    kx_groupcap **groups; /* per rule index, created on a correlation's first update */
    size_t ngroups;

    /* Watermark rules (absence, at most N, resolve: auto) judge by the store's shared
     * watermark (the minimum over the input partitions of their newest event time; see
     * kx__absence_check). Locally: the newest event time this process has read, and whether
     * it has read any. */
    bool wm_known;
    int64_t wm_max_t;
    int64_t wm_checked;             /* the newest time at the last per-batch check */
    bool final;                     /* kx_correlate_finish: the input has ended */
    uint64_t token_base, token_seq; /* due questions: unique tokens (kx_absence_due.token) */
    kx_buf payload;                 /* scratch for an absence sighting's payload */
    kx_op *reask;                   /* due questions to send again from reask_w (in pending) */
    ev_idle reask_w;
    struct wm_part *parts;
    size_t nparts, parts_cap, last_part;
    bool parts_dirty;  /* a partition moved or was read since the last check */
    bool has_wm_rules; /* the ruleset has watermark rules (set with the rules) */
    bool wm_refresh;   /* resumed after a pause: the next publish says our partitions are live */
    kx_watermark_entry *wm_entries; /* scratch for a publish */

    /* Pre-aggregation (opts.preaggregate): while a batch's messages are processed, window
     * updates and absence sightings are collected per key (and kind); then each key's go to
     * the store as one call. */
    bool collecting;
    struct grp_slot {
        kx_op *head, *tail;
        size_t n;
    } * grp;              /* open addressing by key, grp_cap slots (power of two) */
    size_t grp_cap, ngrp; /* slots in use */
    size_t *grp_order;    /* slot indexes in first-seen order: keys are sent in that order */
    kx_window_add *adds;  /* scratch for one call */
    size_t adds_cap;
    kx_absence_touch *touches; /* the same, for sightings */
    size_t touches_cap;
    kx_close_touch *ctouches; /* and for closing-window touches */
    size_t ctouches_cap;
};

/* correlator.c */
int64_t kx__corr_lateness(const kx_correlator *p, const kx_rule *c);
kx_op *kx__op_get(kx_correlator *p);
void kx__op_put(kx_correlator *p, kx_op *op);
void kx__op_issue(kx_op *op);
void kx__op_done(kx_op *op);
bool kx__op_failed(kx_op *op, int status);
bool kx__op_transient(int status);
void kx__op_not_issued(kx_op *op, int rc);
void kx__retry_push(kx_correlator *p, kx_op *op);
void kx__corr_pause(kx_correlator *p, bool pause);
void kx__corr_maybe_idle(kx_correlator *p);
void kx__corr_send(kx_correlator *p, kx_alert *a, const kx_rule *r, bool may_backfill);

/* fire.c */
const char *kx__corr_team(const kx_rule *c);
const char *kx__corr_category(const kx_rule *c);
size_t kx__corr_ngroup(const kx_rule *c);
const char *kx__corr_group_name(const kx_rule *c, size_t i);
kx_agg kx__corr_agg(kx_corr_type t);
void kx__window_add_of(const kx_op *op, kx_window_add *out);
int kx__window_issue(kx_op *op);
void kx__window_cb(void *ud, int status, const kx_window_result *res);

/* update.c */
void kx__corr_feed_alert(kx_correlator *p, kx_rule *parent, const kx_rule *child, const kx_op *cop,
                         const kx_window_result *res);

/* groups.c */
/* A group's state key: tenant and rule readable for operators, the group hashed to bound its
 * length (out: at least 96 bytes). */
void kx__group_key(char *out, size_t len, const char *tenant, const kx_rule *c, uint64_t h1,
                   uint64_t h2);
bool kx__group_admit(kx_correlator *p, const kx_rule *c, const char *tenant, uint64_t h1,
                     uint64_t h2, int64_t time_ms);
void kx__groups_reset(kx_correlator *p, size_t n);

/* watermark.c */
void kx__absence_key(const kx_rule *c, char *out, size_t len);
bool kx__judged_by_watermark(const kx_rule *c);
bool kx__any_judged_by_watermark(kx_ruleset *rules);
void kx__absence_check(kx_correlator *p);
void kx__absence_reask(kx_correlator *p, kx_rule *c, int64_t wm);
void kx__reask_cb(struct ev_loop *loop, ev_idle *w, int revents);
void kx__absence_cb(void *ud, int status, const kx_absence_result *res);
int kx__absence_issue(kx_op *op);
void kx__touch_of(const kx_op *op, kx_absence_touch *out);
/* A new non-zero token: a due question's or a sighting's identity across its retries. */
uint64_t kx__op_token(kx_correlator *p);
void kx__ctouch_of(const kx_op *op, kx_close_touch *out);
int kx__wm_issue(kx_op *op);
void kx__wm_mark_live(kx_op *op);
void kx__part_seen(kx_correlator *p, const kx_msg *m, int64_t t);
void kx__payload_group(kx_buf *b, const kx_op *op, size_t ng);
bool kx__payload_split(const char *payload, size_t len, size_t ng, kx_buf *out, size_t *offs,
                       const char **evidence, size_t *evidence_len);

/* resolve.c */
void kx__resolve_track(const kx_op *op, const kx_window_result *res);
void kx__resolve_answer(kx_op *op, const kx_absence_result *res);

/* preagg.c */
bool kx__grp_collect(kx_op *op);
void kx__grp_flush(kx_correlator *p);

#endif
