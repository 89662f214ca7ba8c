/*
 * The pipeline after the source: decode -> detect -> state -> alert, for one batch at a time.
 *
 * Accounting: `pending` counts the work a batch caused that is still in flight (state
 * updates issued or queued for retry, alerts handed to the router and not yet done). The
 * batch is done when its messages are all processed and pending is zero; done then runs
 * from an ev_idle watcher, never re-entrantly from kx_pipeline_process.
 *
 * State updates live in kx_op records from a free list, so steady state allocates nothing:
 * an op keeps everything a retry needs (key, member, time, evidence) because the event it
 * came from is reused for the next message as soon as the update is issued.
 *
 * A correlation alert fires when an update brings a window to the crossing count (it
 * satisfies the condition and one less would not). Windows are [e - W, e] for each member
 * time e; the store reports the earliest one, among those ending at or after the event's
 * own time, that this update completed: in time order that is the event's own window, and
 * a late event still completes the later window it belongs to. Re-applying the same events
 * after a store outage gives the same windows and the same dedup_key (rule, group, window
 * start): the router drops the repeat.
 */
#include "klaxon/pipeline.h"
#include "klaxon/timeofday.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "klaxon/groupcap.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"

#define KX_MAX_GROUP_BY KX_RULE_MAX_GROUP_BY
#define KX_MAX_FUTURE_MS (15 * 60 * 1000)
#define KX_MAX_PROTO_RETRIES 10  /* error replies (-EPROTO) retried 0.5 s apart, then dropped */
#define KX_ABSENCE_DUE_BATCH 256 /* groups asked for per due check; a full answer asks again */
#define KX_ABSENCE_TICK_S 1.0    /* due checks while no events arrive (wall-clock watermark) */
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

struct kx_op {
    kx_pipeline *p;
    kx_rule *corr;
    kx_op_kind kind;
    int64_t watermark_ms; /* KX_OP_DUE */
    uint64_t token;       /* KX_OP_DUE, KX_OP_CDUE: the question's identity across retries */
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

typedef struct decoder_entry {
    char *topic; /* NULL = default */
    kx_decoder *dec;
} decoder_entry;

struct kx_pipeline {
    struct ev_loop *loop;
    kx_ruleset *rules;
    kx_store *store;
    kx_router *router;
    kx_pipeline_opts opts;
    decoder_entry *decoders;
    size_t ndecoders;

    kx_event ev;
    kx_buf scratch; /* evidence of single-event alerts */

    /* current batch */
    bool in_batch;
    bool processing;
    size_t pending;
    kx_pipeline_done_cb done;
    void *done_ud;
    ev_idle done_w;

    kx_op *free_ops;
    kx_op *retry_head, *retry_tail;
    bool store_down;
    kx_pipeline_pause_cb pause_cb;
    void *pause_ud;
    bool paused;

    ev_timer retry_w; /* re-issues queued updates while the store is up (-ENOBUFS, errors) */

    kx_ratelimit rl_malformed;
    kx_ratelimit rl_store;
    kx_ratelimit rl_time;
    kx_ratelimit rl_late;
    kx_ratelimit rl_value;
    kx_ratelimit rl_groups;
    kx_ratelimit rl_evicted; /* apart from refusals: each kind is seen under a flood */
    kx_buf chain_ev;         /* evidence of a chained correlation's alert */
    kx_groupcap **groups;    /* per rule index, created on a correlation's first update */
    size_t ngroups;

    /* Watermark rules (absence, at most N) judge by the store's shared watermark (the minimum
     * over the input partitions of their newest event time; see absence_check). Locally: the
     * newest event time this process has read, and whether it has read any. */
    bool wm_known;
    int64_t wm_max_t;
    int64_t wm_checked; /* the newest time at the last per-batch check */
    bool tick;          /* the batch in flight is a due check of our own (no messages) */
    bool final;         /* kx_pipeline_finish: the input has ended */
    bool ticks_stopped; /* kx_pipeline_stop_ticks */
    uint64_t token_base, token_seq; /* due questions: unique tokens (kx_absence_due.token) */
    ev_timer tick_w;                /* 1 s: due checks while no events arrive */
    kx_pipeline_done_cb tick_done;  /* told when such a check is done (kx_pipeline_set_tick_cb) */
    void *tick_ud;
    kx_buf payload; /* scratch for an absence sighting's payload */
    kx_op *reask;   /* due questions to send again from reask_w (counted in pending) */
    /* The newest event time per input partition ("topic/partition"), published to the store's
     * shared watermark at each check. */
    struct wm_part {
        char name[272];  /* "topic/partition", as published */
        char topic[256]; /* "-" for none (files) */
        int32_t partition;
        int64_t max_ms;
        bool live; /* events read from it since the last publish */
    } * parts;
    size_t nparts, parts_cap, last_part;
    bool parts_dirty;  /* a partition moved or was read since the last check */
    bool has_wm_rules; /* the ruleset has absence or at-most-N rules (set with the rules) */
    kx_ratelimit rl_parts;
    bool wm_refresh; /* resumed after a pause: the next publish says our partitions are live */
    kx_watermark_entry *wm_entries; /* scratch for a publish */
    ev_idle reask_w;

    /* Pre-aggregation (opts.preaggregate): while a batch's messages are processed, window
     * updates are collected per key; then each key's updates go to the store as one call. */
    bool collecting;
    struct grp_slot {
        kx_op *head, *tail;
        size_t n;
    } * grp;              /* open addressing by key, grp_cap slots (power of two) */
    size_t grp_cap, ngrp; /* slots in use */
    size_t *grp_order;    /* slot indexes in first-seen order: keys are sent in that order */
    kx_window_add *adds;  /* scratch for one call */
    size_t adds_cap;
};

static int64_t corr_lateness(const kx_pipeline *p, const kx_rule *c)
{
    return c->lateness_ms >= 0 ? c->lateness_ms : p->opts.lateness_ms;
}

static void maybe_finish(kx_pipeline *p)
{
    if (p->in_batch && !p->processing && p->pending == 0 && !ev_is_active(&p->done_w))
        ev_idle_start(p->loop, &p->done_w);
}

static void done_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    kx_pipeline *p = w->data;
    ev_idle_stop(loop, w);
    if (!p->in_batch || p->pending)
        return;
    p->in_batch = false;
    kx_pipeline_done_cb cb = p->done;
    p->done = NULL;
    if (cb)
        cb(p->done_ud);
}

static void set_paused(kx_pipeline *p, bool pause)
{
    if (p->paused == pause)
        return;
    p->paused = pause;
    /* Time spent paused (a store outage) is not silence of our partitions: the next publish
     * of the shared watermark marks them live again. */
    if (!pause)
        p->wm_refresh = true;
    if (p->pause_cb)
        p->pause_cb(p->pause_ud, pause);
}

/* ---- alerts ---- */

static void alert_done(void *ud, int status)
{
    kx_pipeline *p = ud;
    (void)status; /* failures are counted and dead-lettered by the router */
    p->pending--;
    maybe_finish(p);
}

/* The rule's words for the people who get the alert, and whether its events are old news
 * (backfill: catching up after downtime; run only, judged on the wall clock). */
static void describe(kx_pipeline *p, kx_alert *a, const kx_rule *r, bool may_backfill)
{
    a->description = r->description;
    a->runbook = r->runbook;
    a->realert_ms = r->realert_ms;
    a->references = r->references;
    a->nreferences = r->nreferences;
    a->falsepositives = r->falsepositives;
    a->nfalsepositives = r->nfalsepositives;
    int64_t after = kx_router_backfill_after_ms(p->router);
    a->backfill =
        may_backfill && p->opts.wall_clock && after > 0 && kx_now_ms() - a->last_seen_ms > after;
}

static void send_alert(kx_pipeline *p, const kx_alert *a)
{
    p->pending++;
    int rc = kx_router_send(p->router, a, alert_done, p);
    if (rc == -E2BIG && a->nevents > 0) {
        /* Too large to render with all its evidence: an alert with less evidence still
         * pages; one without any is better than none. */
        kx_alert fewer = *a;
        fewer.nevents = a->nevents > 1 ? 1 : 0;
        rc = kx_router_send(p->router, &fewer, alert_done, p);
        if (rc == -E2BIG && fewer.nevents) {
            fewer.nevents = 0;
            rc = kx_router_send(p->router, &fewer, alert_done, p);
        }
        if (rc == 0)
            kx_log(KX_LOG_WARN, "pipeline", "rule %s: alert too large, evidence cut to %zu events",
                   a->rule_id, fewer.nevents);
    }
    if (rc < 0) {
        kx_log(KX_LOG_ERROR, "pipeline", "rule %s: alert could not be routed: %s", a->rule_id,
               strerror(-rc));
        p->pending--;
    }
}

/* Team and category of a correlation default to those of its first referenced rule. */
static const char *corr_team(const kx_rule *c)
{
    if (c->team || !c->nrefs)
        return c->team;
    return c->refs[0]->team;
}

static const char *corr_category(const kx_rule *c)
{
    if (c->category || !c->nrefs)
        return c->category;
    return c->refs[0]->category;
}

static void single_event_alert(kx_pipeline *p, kx_rule *r, const char *degraded)
{
    char event_id[24];
    kx_event_id(&p->ev, event_id, sizeof(event_id));
    kx_buf_reset(&p->scratch);
    if (kx_evidence_render(&p->ev, p->opts.evidence_bytes, &p->scratch))
        kx_buf_reset(&p->scratch);
    const char *evs[1] = {p->scratch.data};
    size_t evl[1] = {p->scratch.len};
    kx_alert a = {
        .rule_id = r->id,
        .rule_title = r->title,
        .rule_level = r->level,
        .team = r->team,
        .tenant = p->ev.tenant,
        .category = r->category,
        .count = 1,
        .window_s = 0,
        .event_id = event_id,
        .first_seen_ms = p->ev.time_ms,
        .last_seen_ms = p->ev.time_ms,
        .degraded = degraded,
        .tags = r->tags,
        .ntags = r->ntags,
        .events = evs,
        .events_len = evl,
        .nevents = p->scratch.len ? 1 : 0,
    };
    /* The values of the rule's `fields` (first occurrence each), for whoever reads it. */
    kx_kv fields[32];
    for (size_t i = 0; i < r->nfields && a.nfields < 32; i++) {
        const kx_field *f = kx_event_get(&p->ev, r->fields[i]);
        if (f)
            fields[a.nfields++] = (kx_kv){r->fields[i], f->value};
    }
    a.fields = fields;
    /* A time-of-day rule: when it happened where the rule's window is judged. */
    char local[40];
    if (r->timezone &&
        kx_local_time_format(r->timezone, p->ev.time_ms, local, sizeof(local)) == 0) {
        a.local_time = local;
        a.timezone = r->timezone;
    }
    describe(p, &a, r, true);
    send_alert(p, &a);
}

/* ---- state ---- */

static kx_op *op_get(kx_pipeline *p)
{
    kx_op *op = p->free_ops;
    if (op) {
        p->free_ops = op->next;
    } else {
        op = calloc(1, sizeof(*op));
        if (!op)
            return NULL;
        kx_buf_init(&op->strs, 0);
        kx_buf_init(&op->evidence, 0);
        kx_buf_init(&op->member, 0);
    }
    op->p = p;
    op->next = NULL;
    op->proto_errors = 0;
    op->kind = KX_OP_WINDOW;
    op->touch_mode = KX_TOUCH_PLAIN;
    op->has_prev_af = false;
    kx_buf_reset(&op->strs);
    kx_buf_reset(&op->evidence);
    kx_buf_reset(&op->member);
    return op;
}

static void op_put(kx_pipeline *p, kx_op *op)
{
    op->next = p->free_ops;
    p->free_ops = op;
}

static void op_issue(kx_op *op);

static void wm_mark_live(kx_op *op);

static void retry_push(kx_pipeline *p, kx_op *op)
{
    if (op->kind == KX_OP_WM)
        wm_mark_live(op);
    op->next = NULL;
    if (p->retry_tail)
        p->retry_tail->next = op;
    else
        p->retry_head = op;
    p->retry_tail = op;
}

static void retry_flush(kx_pipeline *p)
{
    kx_op *op = p->retry_head;
    p->retry_head = p->retry_tail = NULL;
    /* Re-issue in the original order; an op that fails again re-queues itself. */
    while (op) {
        kx_op *next = op->next;
        op->next = NULL;
        op_issue(op);
        op = next;
    }
}

/* Entries of a correlation's alert group: its group-by fields, then for first_seen the
 * watched value fields (the alert is about one new value of its group). */
static size_t corr_ngroup(const kx_rule *c)
{
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    if (c->corr_type == KX_CORR_FIRST_SEEN)
        ng += c->nvalue_fields < KX_MAX_GROUP_BY ? c->nvalue_fields : KX_MAX_GROUP_BY;
    return ng;
}

static const char *corr_group_name(const kx_rule *c, size_t i)
{
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    return i < ng ? c->group_by[i] : c->value_names[i - ng];
}

static kx_agg corr_agg(kx_corr_type t)
{
    switch (t) {
    case KX_CORR_EVENT_COUNT:
        return KX_AGG_COUNT;
    case KX_CORR_VALUE_COUNT:
    case KX_CORR_TEMPORAL:
        return KX_AGG_DISTINCT; /* temporal: distinct rule positions */
    case KX_CORR_TEMPORAL_ORDERED:
        return KX_AGG_ORDERED;
    case KX_CORR_VALUE_SUM:
        return KX_AGG_SUM;
    case KX_CORR_VALUE_AVG:
        return KX_AGG_AVG;
    case KX_CORR_FIRST_SEEN:
        return KX_AGG_FIRST_SEEN;
    case KX_CORR_BASELINE:
        return KX_AGG_BASELINE;
    default:
        return KX_AGG_SHARE;
    }
}

static void corr_feed_alert(kx_pipeline *p, kx_rule *parent, const kx_rule *child, const kx_op *cop,
                            const kx_window_result *res);

static void corr_alert(kx_op *op, const kx_window_result *res, const kx_kv *group, size_t ng);

static void corr_fire(kx_op *op, const kx_window_result *res)
{
    kx_pipeline *p = op->p;
    kx_rule *c = op->corr;
    kx_kv group[2 * KX_MAX_GROUP_BY];
    size_t ng = corr_ngroup(c);
    for (size_t i = 0; i < ng; i++) {
        group[i].key = corr_group_name(c, i);
        group[i].value = op->strs.data + op->val_off[i];
    }
    c->matches++;
    if (c->generate)
        corr_alert(op, res, group, ng);
    /* Chaining: this correlation's alert is an event for the correlations that reference it,
     * whether or not it is generated as an alert of its own (Sigma `generate`). */
    for (size_t i = 0; i < c->ncorrelations; i++)
        corr_feed_alert(p, (kx_rule *)c->correlations[i], c, op, res);
}

static void corr_alert(kx_op *op, const kx_window_result *res, const kx_kv *group, size_t ng)
{
    kx_pipeline *p = op->p;
    kx_rule *c = op->corr;
    /* The store gives evidence most recent first; alerts list it in time order. */
    const char *evs[64];
    size_t evl[64];
    size_t ne = res->nevidence < 64 ? res->nevidence : 64;
    /* The store keeps the key's most recent evidence, which can reach back past this
     * window (an earlier incident of the same group): keep only as many as were counted. */
    if ((uint64_t)ne > (uint64_t)res->cross_count)
        ne = (size_t)res->cross_count;
    for (size_t i = 0; i < ne; i++) {
        evs[i] = res->evidence[ne - 1 - i];
        evl[i] = res->evidence_len[ne - 1 - i];
    }
    bool first_seen = c->corr_type == KX_CORR_FIRST_SEEN;
    if (first_seen) {
        /* One event is the whole story: the store keeps no evidence for it, the op does. */
        ne = op->evidence.len ? 1 : 0;
        evs[0] = op->evidence.data;
        evl[0] = op->evidence.len;
    }
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = c->title,
        .rule_level = c->level,
        .team = corr_team(c),
        .tenant = op->strs.data + op->tenant_off,
        .category = corr_category(c),
        .group = group,
        .ngroup = ng,
        .count = first_seen ? 1 : res->cross_count,
        .has_value = c->corr_type != KX_CORR_EVENT_COUNT && !first_seen,
        .value = res->cross_value,
        .window_s = c->timespan_ms / 1000,
        .first_seen_ms = res->cross_first_ms,
        .last_seen_ms = res->cross_last_ms,
        .suppressed = res->suppressed,
        .tags = c->tags,
        .ntags = c->ntags,
        .events = evs,
        .events_len = evl,
        .nevents = ne,
    };
    describe(p, &a, c, true);
    send_alert(p, &a);
}

/* Transient failures: the update is queued and re-issued, never dropped. */
static bool transient(int status)
{
    return status == -EIO || status == -EAGAIN || status == -ENOTCONN || status == -ENOBUFS ||
           status == -EPROTO;
}

static void op_done(kx_op *op)
{
    kx_pipeline *p = op->p;
    op_put(p, op);
    p->pending--;
    maybe_finish(p);
}

/* Failures every kind of op handles alike. True when the op was taken care of: queued for
 * a retry (transient) or dropped after too many error replies. */
static bool op_failed(kx_op *op, int status)
{
    kx_pipeline *p = op->p;
    if (status == -EPROTO && ++op->proto_errors > KX_MAX_PROTO_RETRIES) {
        /* An error reply that persists (a key of the wrong type, a script error) is not an
         * outage: after a few retries the update is dropped, counted and logged. */
        kx_metric_inc(KX_M_STORE_ERRORS);
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "pipeline",
                       "rule %s: state update failed %d times with an error reply; event not "
                       "counted",
                       op->corr->id, op->proto_errors);
        op_done(op);
        return true;
    }
    if (transient(status)) {
        kx_metric_inc(KX_M_STORE_ERRORS);
        kx_log_limited(&p->rl_store, KX_LOG_WARN, "pipeline",
                       "state update failed (%s): queued for retry, consumption paused",
                       strerror(-status));
        if (!kx_store_is_up(p->store))
            p->store_down = true;
        retry_push(p, op);
        set_paused(p, true);
        /* With the store up (an error reply, a full pipeline) nothing will announce it
         * back: the retry timer re-issues the queue. */
        if (!p->store_down && !ev_is_active(&p->retry_w))
            ev_timer_start(p->loop, &p->retry_w);
        return true;
    }
    return false;
}

static void resolve_track(const kx_op *op, const kx_window_result *res);

static void op_cb(void *ud, int status, const kx_window_result *res)
{
    kx_op *op = ud;
    kx_pipeline *p = op->p;
    if (op_failed(op, status))
        return;
    if (status == 0 && res->late) {
        kx_metric_inc(KX_M_EVENTS_LATE);
        char t[40];
        kx_time_format(op->time_ms, t, sizeof(t));
        kx_log_limited(&p->rl_late, KX_LOG_WARN, "pipeline",
                       "rule %s: event at %s is later than the allowed lateness for its group "
                       "(%llds after its window): not counted",
                       op->corr->id, t, (long long)(corr_lateness(p, op->corr) / 1000));
    } else if (status == 0 && res->crossed)
        corr_fire(op, res);
    else if (status == -ENOSPC)
        kx_log_limited(&p->rl_store, KX_LOG_WARN, "pipeline",
                       "rule %s: state key cap reached, event not counted", op->corr->id);
    else if (status && status != -ECANCELED)
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "pipeline", "rule %s: state update failed: %s",
                       op->corr->id, strerror(-status));
    if (status == 0 && !res->late && op->corr->resolve_auto && op->corr->generate)
        resolve_track(op, res);
    op_done(op);
}

/* ---- absence ---- */

static void absence_cb(void *ud, int status, const kx_absence_result *res);

/* The groups of one absence rule live under one key (the tenant is part of each group). */
static void absence_key(const kx_rule *c, char *out, size_t len)
{
    /* The id in full (hashed; readable prefix for operators); a closing rule's windows depend
     * on its timespan, so a reload that changes it starts a new key set. */
    unsigned long long h = (unsigned long long)kx_hash64(c->id, strlen(c->id), 5);
    if (c->closing)
        snprintf(out, len, "%.40s|%016llx|close|%lld", c->id, h, (long long)c->timespan_ms);
    else if (c->resolve_auto)
        snprintf(out, len, "%.40s|%016llx|resolve", c->id, h);
    else
        snprintf(out, len, "%.40s|%016llx|absence", c->id, h);
}

/* Rules judged by the watermark: absence, event_count conditions that hold for an empty
 * window ("at most N", judged when windows close), and `resolve: auto` (resolved once the
 * condition has not held for a timespan). */
static bool judged_by_watermark(const kx_rule *c)
{
    return c->kind == KX_RULE_CORRELATION &&
           (c->corr_type == KX_CORR_ABSENCE || c->closing || c->resolve_auto);
}

/* Keys of closing windows live until their windows can be judged, and some more. */
static int64_t close_ttl(const kx_pipeline *p, const kx_rule *c)
{
    return 2 * c->timespan_ms + corr_lateness(p, c) + 600000;
}

/* A due question for rule c at watermark wm, counted in pending (NULL: out of memory). */
static kx_op *absence_due_make(kx_pipeline *p, kx_rule *c, int64_t wm)
{
    kx_op *op = op_get(p);
    if (!op) {
        kx_log(KX_LOG_ERROR, "pipeline", "out of memory: rule %s not checked", c->id);
        return NULL;
    }
    op->kind = c->closing ? KX_OP_CDUE : KX_OP_DUE;
    op->corr = c;
    op->watermark_ms = wm;
    op->token = p->token_base ^ ++p->token_seq; /* kept across the op's retries */
    if (!op->token)
        op->token = ++p->token_seq;
    absence_key(c, op->key, sizeof(op->key));
    p->pending++;
    return op;
}

static void absence_due_issue(kx_pipeline *p, kx_rule *c, int64_t wm)
{
    kx_op *op = absence_due_make(p, c, wm);
    if (op)
        op_issue(op);
}

/* More groups are due than one answer holds: ask again from the loop, not from inside the
 * answer's callback (with the memory store that would nest one call per answer). */
static void absence_reask(kx_pipeline *p, kx_rule *c, int64_t wm)
{
    kx_op *op = absence_due_make(p, c, wm);
    if (!op)
        return;
    op->next = p->reask;
    p->reask = op;
    ev_idle_start(p->loop, &p->reask_w);
}

static void reask_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    kx_pipeline *p = w->data;
    ev_idle_stop(loop, w);
    kx_op *op = p->reask;
    p->reask = NULL;
    while (op) {
        kx_op *next = op->next;
        op->next = NULL;
        op_issue(op);
        op = next;
    }
}

/* Asks the store for the groups of every absence rule whose silence the watermark has passed. */
static void absence_check(kx_pipeline *p)
{
    if (!p->wm_known)
        return; /* nothing to judge by yet */
    if (p->store_down) {
        /* The next check asks again once the store is back; at the end of the input there is
         * no next check, so say what is not judged. */
        if (p->final)
            kx_log(KX_LOG_WARN, "pipeline",
                   "state store down at the end of the input: absence and at-most-N rules are "
                   "not judged");
        return;
    }
    p->wm_checked = p->wm_max_t;
    p->parts_dirty = false;
    if (!p->opts.wall_clock) {
        /* replay: this process's own event time; a replay's files must not move (or be held
         * back by) the watermark live processes share in the store. */
        for (size_t i = 0; i < kx_ruleset_size(p->rules); i++) {
            kx_rule *c = kx_ruleset_at(p->rules, i);
            if (judged_by_watermark(c))
                absence_due_issue(p, c, p->wm_max_t - (p->final ? 0 : corr_lateness(p, c)));
        }
        return;
    }
    /* First the shared watermark (our partitions in, the minimum over all out); the due
     * questions follow in its callback. */
    kx_op *op = op_get(p);
    if (!op) {
        kx_log(KX_LOG_ERROR, "pipeline", "out of memory: watermark rules not checked");
        return;
    }
    op->kind = KX_OP_WM;
    op->corr = NULL; /* (logs of a failure name a rule: the first judged by the watermark) */
    for (size_t i = 0; i < kx_ruleset_size(p->rules) && !op->corr; i++)
        if (judged_by_watermark(kx_ruleset_at(p->rules, i)))
            op->corr = kx_ruleset_at(p->rules, i);
    if (!op->corr) {
        op_put(p, op);
        return;
    }
    op->watermark_ms = p->final ? 1 : 0; /* judged at the end of the input */
    /* Each entry: the name in strs; its newest time and whether it is live in evidence. */
    for (size_t i = 0; i < p->nparts; i++) {
        unsigned char live = p->parts[i].live || p->wm_refresh;
        if (kx_buf_append(&op->strs, p->parts[i].name, strlen(p->parts[i].name) + 1) ||
            kx_buf_append(&op->evidence, &p->parts[i].max_ms, sizeof(int64_t)) ||
            kx_buf_append(&op->evidence, &live, 1)) {
            kx_log(KX_LOG_ERROR, "pipeline", "out of memory: watermark rules not checked");
            op_put(p, op);
            return;
        }
    }
    for (size_t i = 0; i < p->nparts; i++)
        p->parts[i].live = false;
    p->wm_refresh = false;
    p->pending++;
    op_issue(op);
}

#define WM_ENTRY_BYTES (sizeof(int64_t) + 1)

/* A publish queued for a retry: by the time it goes out our partitions have been waiting
 * for the store, which is not silence of theirs. */
static void wm_mark_live(kx_op *op)
{
    for (size_t at = sizeof(int64_t); at < op->evidence.len; at += WM_ENTRY_BYTES)
        op->evidence.data[at] = 1;
}

/* The shared watermark is known: ask each watermark rule for what it passed. */
static void wm_cb(void *ud, int status, bool known, int64_t wm)
{
    kx_op *op = ud;
    kx_pipeline *p = op->p;
    if (op_failed(op, status))
        return;
    if (status && status != -ECANCELED)
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "pipeline", "watermark update failed: %s",
                       strerror(-status));
    if (status == 0) {
        bool final = op->watermark_ms == 1;
        int64_t base = known ? wm : p->wm_max_t;
        for (size_t i = 0; i < kx_ruleset_size(p->rules); i++) {
            kx_rule *c = kx_ruleset_at(p->rules, i);
            if (judged_by_watermark(c))
                absence_due_issue(p, c, base - (final ? 0 : corr_lateness(p, c)));
        }
    }
    op_done(op);
}

static int op_issue_wm(kx_op *op)
{
    kx_pipeline *p = op->p;
    if (p->store_down)
        return -EAGAIN;
    size_t n = op->evidence.len / WM_ENTRY_BYTES, at = 0;
    if (n > KX_STORE_ABSENCE_DUE_MAX)
        n = KX_STORE_ABSENCE_DUE_MAX;
    for (size_t i = 0; i < n; i++) {
        p->wm_entries[i].name = op->strs.data + at;
        memcpy(&p->wm_entries[i].max_ms, op->evidence.data + i * WM_ENTRY_BYTES, sizeof(int64_t));
        p->wm_entries[i].live = op->evidence.data[i * WM_ENTRY_BYTES + sizeof(int64_t)] != 0;
        at += strlen(op->strs.data + at) + 1;
    }
    kx_watermark_op w = {
        .key = "watermark",
        .mine = p->wm_entries,
        .n = n,
        .now_ms = kx_now_ms(),
        /* A partition quiet this long moves on with the wall clock (run); in a replay only
         * event time counts. */
        .quiet_ms = !p->opts.wall_clock   ? (int64_t)1 << 50
                    : p->opts.wm_quiet_ms ? p->opts.wm_quiet_ms
                                          : KX_WM_QUIET_MS,
        .ttl_ms = KX_WM_TTL_MS,
    };
    return kx_store_watermark(p->store, &w, wm_cb, op);
}

/* A sighting's payload: the tenant and each group value as a 4-byte little-endian length and
 * the bytes (a value may hold any byte), then the event's evidence (JSON) to the end. */
static void payload_group(kx_buf *b, const kx_op *op, size_t ng);

static void payload_put(kx_buf *b, const char *v, size_t len)
{
    unsigned char n[4] = {(unsigned char)len, (unsigned char)(len >> 8), (unsigned char)(len >> 16),
                          (unsigned char)(len >> 24)};
    kx_buf_append(b, n, 4);
    kx_buf_append(b, v, len);
}

/* The start of a sighting's payload: op's tenant and its ng group values (from strs; lengths
 * from the offsets, as a value may hold a NUL byte). */
static void payload_group(kx_buf *b, const kx_op *op, size_t ng)
{
    payload_put(b, op->strs.data, (ng ? op->val_off[0] : op->strs.len) - 1);
    for (size_t i = 0; i < ng; i++) {
        size_t end = i + 1 < ng ? op->val_off[i + 1] : op->strs.len;
        payload_put(b, op->strs.data + op->val_off[i], end - op->val_off[i] - 1);
    }
}

/* Splits a payload into NUL-terminated strings in out (tenant, then ng values) and the
 * evidence; false when it is damaged. */
static bool payload_split(const char *payload, size_t len, size_t ng, kx_buf *out, size_t *offs,
                          const char **evidence, size_t *evidence_len)
{
    size_t at = 0;
    kx_buf_reset(out);
    for (size_t i = 0; i <= ng; i++) {
        if (len - at < 4)
            return false;
        const unsigned char *n = (const unsigned char *)payload + at;
        size_t l = (size_t)n[0] | (size_t)n[1] << 8 | (size_t)n[2] << 16 | (size_t)n[3] << 24;
        at += 4;
        if (len - at < l)
            return false;
        offs[i] = out->len;
        kx_buf_append(out, payload + at, l);
        kx_buf_putc(out, '\0');
        at += l;
    }
    *evidence = payload + at;
    *evidence_len = len - at;
    return true;
}

/* An absence alert from a payload as the sighting stored it. status: "firing" (the group went
 * silent) or "resolved" (it came back at until_ms). */
static void absence_alert(kx_pipeline *p, kx_rule *c, const char *payload, size_t len,
                          int64_t since_ms, int64_t until_ms, const char *status,
                          const char *evidence, size_t evidence_len, int64_t count)
{
    kx_kv group[KX_MAX_GROUP_BY];
    size_t offs[KX_MAX_GROUP_BY + 1];
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    const char *stored_ev;
    size_t stored_len;
    if (!payload_split(payload, len, ng, &p->payload, offs, &stored_ev, &stored_len)) {
        kx_log(KX_LOG_ERROR, "pipeline", "rule %s: stored group of an absence is damaged", c->id);
        return;
    }
    const char *tenant = p->payload.data + offs[0];
    for (size_t i = 0; i < ng; i++) {
        group[i].key = c->group_by[i];
        group[i].value = p->payload.data + offs[i + 1];
    }
    if (!evidence) {
        evidence = stored_ev;
        evidence_len = stored_len;
    }
    const char *evs[1] = {evidence};
    size_t evl[1] = {evidence_len};
    c->matches++;
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = c->title,
        .rule_level = c->level,
        .team = corr_team(c),
        .tenant = tenant,
        .category = corr_category(c),
        .group = group,
        .ngroup = ng,
        .count = count,
        .window_s = c->timespan_ms / 1000,
        .first_seen_ms = since_ms,
        .last_seen_ms = until_ms,
        .status = status,
        .tags = c->tags,
        .ntags = c->ntags,
        .events = evs,
        .events_len = evl,
        .nevents = evidence && evidence_len ? 1 : 0,
    };
    /* An absence is about a silence, whose last event is old by design: never backfill. */
    describe(p, &a, c, false);
    send_alert(p, &a);
}

/* ---- resolve: auto ----
 * An alerted group of a sliding-window rule is an open incident, kept as an absence-like
 * sighting under the rule's resolve key: its time is the last time the condition held, its
 * payload the group and the alert's first_seen and count. The watermark passing a timespan
 * after that time resolves it (a due question, as for absence); a new alert of the group
 * while it is open replaces it and resolves it at once. */

/* The firing alert a resolve payload holds: "first_seen count" after the group. */
static bool resolve_payload_alert(const char *payload, size_t len, size_t ng, kx_buf *scratch,
                                  int64_t *af, int64_t *count)
{
    size_t offs[KX_MAX_GROUP_BY + 1];
    const char *ev;
    size_t evl;
    char num[48];
    if (!payload_split(payload, len, ng, scratch, offs, &ev, &evl) || evl >= sizeof(num))
        return false;
    memcpy(num, ev, evl);
    num[evl] = '\0';
    long long a, n;
    if (sscanf(num, "%lld %lld", &a, &n) != 2)
        return false;
    *af = a;
    *count = n;
    return true;
}

/* The incident the payload holds is over; last_ms: the last time its condition held.
 * af_override: its first_seen when the caller knows it better than the payload. */
static void resolve_alert(kx_pipeline *p, kx_rule *c, const char *payload, size_t len,
                          int64_t last_ms, const int64_t *af_override)
{
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    int64_t af, count;
    size_t offs[KX_MAX_GROUP_BY + 1];
    const char *ev;
    size_t evl;
    if (!resolve_payload_alert(payload, len, ng, &p->payload, &af, &count) ||
        !payload_split(payload, len, ng, &p->payload, offs, &ev, &evl)) {
        kx_log(KX_LOG_ERROR, "pipeline", "rule %s: stored incident is damaged: not resolved",
               c->id);
        return;
    }
    if (af_override)
        af = *af_override;
    kx_kv group[KX_MAX_GROUP_BY];
    for (size_t i = 0; i < ng; i++) {
        group[i].key = c->group_by[i];
        group[i].value = p->payload.data + offs[i + 1];
    }
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = c->title,
        .rule_level = c->level,
        .team = corr_team(c),
        .tenant = p->payload.data + offs[0],
        .category = corr_category(c),
        .group = group,
        .ngroup = ng,
        .count = count,
        .window_s = c->timespan_ms / 1000,
        .first_seen_ms = af, /* the firing alert's: the same dedup_key */
        .last_seen_ms = last_ms,
        .status = "resolved",
        .tags = c->tags,
        .ntags = c->ntags,
    };
    /* Never backfill a resolve: the incident it closes may have been paged. */
    describe(p, &a, c, false);
    send_alert(p, &a);
}

/* After a window update of a `resolve: auto` rule: a crossing opens an incident (replacing
 * the group's open one), an event that keeps the condition met extends the open one. */
static void resolve_track(const kx_op *op, const kx_window_result *res)
{
    kx_pipeline *p = op->p;
    kx_rule *c = op->corr;
    if (!res->met || (!res->crossed && !res->prev_alerted))
        return;
    kx_op *t = op_get(p);
    if (!t) {
        kx_log(KX_LOG_ERROR, "pipeline",
               "out of memory: rule %s: incident not kept for its resolve", c->id);
        return;
    }
    t->kind = KX_OP_TOUCH;
    t->corr = c;
    t->time_ms = res->met_ms;
    absence_key(c, t->key, sizeof(t->key));
    kx_buf_puts(&t->member, op->group);
    if (res->crossed) {
        t->touch_mode = KX_TOUCH_REPLACE;
        t->has_prev_af = res->prev_alerted && res->prev_alert_first_ms != res->cross_first_ms;
        t->prev_af_ms = res->prev_alert_first_ms;
        payload_group(&t->evidence, op,
                      c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY);
        kx_buf_printf(&t->evidence, "%lld %lld", (long long)res->cross_first_ms,
                      (long long)res->cross_count);
    } else {
        t->touch_mode = KX_TOUCH_EXTEND; /* the payload stays the incident's */
    }
    p->pending++;
    op_issue(t);
}

/* A touch or due answer for a `resolve: auto` rule. */
static void resolve_answer(kx_op *op, const kx_absence_result *res)
{
    kx_pipeline *p = op->p;
    kx_rule *c = op->corr;
    if (op->kind == KX_OP_TOUCH && res->n &&
        (res->outcome == KX_ABSENCE_REPLACED || res->outcome == KX_ABSENCE_GAP)) {
        /* A new incident while the last one was open (or drained, unreported): that one is
         * over. Its first_seen is the one the window reported before this crossing when
         * known (a retried touch is answered with the new payload); a replay of the same
         * crossing replaces nothing. */
        size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
        int64_t old_af, new_af, n;
        if (!resolve_payload_alert(op->evidence.data, op->evidence.len, ng, &p->payload, &new_af,
                                   &n) ||
            !resolve_payload_alert(res->payload[0], res->payload_len[0], ng, &p->payload, &old_af,
                                   &n))
            old_af = new_af = 0;
        if (op->has_prev_af)
            old_af = op->prev_af_ms;
        if (old_af != new_af)
            resolve_alert(p, c, res->payload[0], res->payload_len[0], res->since_ms, &old_af);
    } else if (op->kind == KX_OP_DUE) {
        for (size_t i = 0; i < res->n; i++)
            resolve_alert(p, c, res->payload[i], res->payload_len[i], res->last_ms[i], NULL);
        if (res->n == KX_ABSENCE_DUE_BATCH) /* more may be due */
            absence_reask(p, c, op->watermark_ms);
    }
}

static void absence_cb(void *ud, int status, const kx_absence_result *res)
{
    kx_op *op = ud;
    kx_pipeline *p = op->p;
    kx_rule *c = op->corr;
    if (op_failed(op, status))
        return;
    if (status == -ENOSPC)
        kx_log_limited(&p->rl_store, KX_LOG_WARN, "pipeline",
                       "rule %s: state key cap reached, sighting not recorded", c->id);
    else if (status && status != -ECANCELED)
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "pipeline", "rule %s: absence update failed: %s",
                       c->id, strerror(-status));
    if (status) {
        op_done(op);
        return;
    }
    if (c->resolve_auto) {
        resolve_answer(op, res);
        op_done(op);
        return;
    }
    if (op->kind == KX_OP_TOUCH && res->outcome != KX_ABSENCE_NONE && c->generate) {
        /* The new sighting's own evidence (the end of its payload) shows the return. */
        if (res->outcome == KX_ABSENCE_GAP) /* the silence nobody reported yet */
            absence_alert(p, c, res->payload[0], res->payload_len[0], res->since_ms, res->since_ms,
                          "firing", NULL, 0, 0);
        absence_alert(p, c, op->evidence.data, op->evidence.len, res->since_ms, op->time_ms,
                      "resolved", NULL, 0, 0);
    } else if (op->kind == KX_OP_DUE) {
        for (size_t i = 0; i < res->n && c->generate; i++)
            absence_alert(p, c, res->payload[i], res->payload_len[i], res->last_ms[i],
                          res->last_ms[i], "firing", NULL, 0, 0);
        if (res->n == KX_ABSENCE_DUE_BATCH) /* more may be due */
            absence_reask(p, c, op->watermark_ms);
    } else if (op->kind == KX_OP_CTOUCH && res->late) {
        kx_metric_inc(KX_M_EVENTS_LATE);
        char t[40];
        kx_time_format(op->time_ms, t, sizeof(t));
        kx_log_limited(&p->rl_late, KX_LOG_WARN, "pipeline",
                       "rule %s: event at %s is in a window already closed: not counted", c->id, t);
    } else if (op->kind == KX_OP_CDUE) {
        /* A closed window whose count met the condition: [start, start + timespan). */
        for (size_t i = 0; i < res->n && c->generate; i++)
            absence_alert(p, c, res->payload[i], res->payload_len[i], res->last_ms[i],
                          res->last_ms[i] + c->timespan_ms - 1, NULL, NULL, 0, res->count[i]);
        if (res->more || res->n == KX_ABSENCE_DUE_BATCH)
            absence_reask(p, c, op->watermark_ms);
    }
    op_done(op);
}

/* The partition of message m moved to t (the newest event time read from it). */
/* Same partition? No formatting per event: the partition number, then the topic's bytes. */
static bool part_is(const struct wm_part *e, const kx_msg *m)
{
    return e->partition == m->partition &&
           strncmp(e->topic, m->topic ? m->topic : "-", sizeof(e->topic) - 1) == 0;
}

static void part_seen(kx_pipeline *p, const kx_msg *m, int64_t t)
{
    size_t i = p->last_part;
    if (i >= p->nparts || !part_is(&p->parts[i], m)) {
        for (i = 0; i < p->nparts && !part_is(&p->parts[i], m); i++)
            ;
        if (i == p->nparts) {
            char name[272];
            snprintf(name, sizeof(name), "%.250s/%d", m->topic ? m->topic : "-", (int)m->partition);
            for (char *c = name; *c; c++)
                if (*c == ' ')
                    *c = '_';
            if (p->nparts == KX_STORE_ABSENCE_DUE_MAX) {
                kx_log_limited(&p->rl_parts, KX_LOG_WARN, "pipeline",
                               "more than %d input partitions: %s does not count in the "
                               "watermark",
                               KX_STORE_ABSENCE_DUE_MAX, name);
                return;
            }
            if (p->nparts == p->parts_cap) {
                size_t cap = p->parts_cap ? p->parts_cap * 2 : 16;
                struct wm_part *np = realloc(p->parts, cap * sizeof(*np));
                kx_watermark_entry *ne = realloc(p->wm_entries, cap * sizeof(*ne));
                if (np)
                    p->parts = np;
                if (ne)
                    p->wm_entries = ne;
                if (!np || !ne) {
                    kx_log_limited(&p->rl_parts, KX_LOG_ERROR, "pipeline",
                                   "out of memory: %s does not count in the watermark", name);
                    return;
                }
                p->parts_cap = cap;
            }
            snprintf(p->parts[i].name, sizeof(p->parts[i].name), "%s", name);
            snprintf(p->parts[i].topic, sizeof(p->parts[i].topic), "%s", m->topic ? m->topic : "-");
            p->parts[i].partition = m->partition;
            p->parts[i].max_ms = t;
            p->parts[i].live = false;
            p->nparts++;
        }
        p->last_part = i;
    }
    if (t > p->parts[i].max_ms)
        p->parts[i].max_ms = t;
    p->parts[i].live = true;
    p->parts_dirty = true;
}

static int op_issue_absence(kx_op *op)
{
    kx_pipeline *p = op->p;
    const kx_rule *c = op->corr;
    if (p->store_down)
        return -EAGAIN;
    if (op->kind == KX_OP_CTOUCH) {
        kx_close_touch t = {
            .key = op->key,
            .group = op->group,
            .identity = op->member.data,
            .payload = op->evidence.data,
            .payload_len = op->evidence.len,
            .time_ms = op->time_ms,
            .timespan_ms = c->timespan_ms,
            .ttl_ms = close_ttl(p, c),
        };
        return kx_store_close_touch(p->store, &t, absence_cb, op);
    }
    if (op->kind == KX_OP_CDUE) {
        kx_close_due d = {
            .key = op->key,
            .watermark_ms = op->watermark_ms,
            .timespan_ms = c->timespan_ms,
            .ttl_ms = close_ttl(p, c),
            .cond = c->cond, /* the rule's own terms (klaxon/compare.h) */
            .ncond = c->ncond,
            .limit = KX_ABSENCE_DUE_BATCH,
            .token = op->token,
        };
        return kx_store_close_due(p->store, &d, absence_cb, op);
    }
    if (op->kind == KX_OP_TOUCH) {
        kx_absence_touch t = {
            .key = op->key,
            .group = op->member.data,
            .payload = op->evidence.data,
            .payload_len = op->evidence.len,
            .time_ms = op->time_ms,
            .timespan_ms = c->timespan_ms,
            .keep_ms = c->keep_ms,
            .mode = op->touch_mode,
        };
        return kx_store_absence_touch(p->store, &t, absence_cb, op);
    }
    kx_absence_due d = {
        .key = op->key,
        .watermark_ms = op->watermark_ms,
        .timespan_ms = c->timespan_ms,
        .keep_ms = c->keep_ms,
        .limit = KX_ABSENCE_DUE_BATCH,
        .token = op->token,
    };
    return kx_store_absence_due(p->store, &d, absence_cb, op);
}

/* The store call for a window update. */
static void window_add_of(const kx_op *op, kx_window_add *out)
{
    const kx_pipeline *p = op->p;
    const kx_rule *c = op->corr;
    *out = (kx_window_add){
        .key = op->key,
        .member = op->member.data,
        .time_ms = op->time_ms,
        .window_ms = c->timespan_ms,
        .ttl_ms = c->timespan_ms + corr_lateness(p, c),
        .evidence = op->evidence.len ? op->evidence.data : NULL,
        .evidence_len = op->evidence.len,
        .max_evidence = kx_router_max_evidence(p->router),
        .agg = corr_agg(c->corr_type),
        .cond = c->cond, /* the rule's own terms (klaxon/compare.h) */
        .ncond = c->ncond,
        .suppress_ms = c->suppress_ms,
        .deviations = c->deviations,
        .history = c->history,
        .evidence_if_crossed = true,
    };
}

static int op_issue_window(kx_op *op)
{
    kx_pipeline *p = op->p;
    kx_window_add add;
    window_add_of(op, &add);
    return p->store_down ? -EAGAIN : kx_store_window_add(p->store, &add, op_cb, op);
}

static void op_not_issued(kx_op *op, int rc);
static bool grp_collect(kx_op *op);

static int op_issue_wm(kx_op *op);

static void op_issue(kx_op *op)
{
    if (op->kind == KX_OP_WINDOW && grp_collect(op))
        return; /* sent with its key's other updates at the end of the batch */
    int rc = op->kind == KX_OP_WINDOW ? op_issue_window(op)
             : op->kind == KX_OP_WM   ? op_issue_wm(op)
                                      : op_issue_absence(op);
    if (rc >= 0)
        return;
    op_not_issued(op, rc);
}

/* An update the store would not take (the callback will not run). */
static void op_not_issued(kx_op *op, int rc)
{
    kx_pipeline *p = op->p;
    kx_metric_inc(KX_M_STORE_ERRORS);
    if (!transient(rc)) {
        /* A refused update (too large, invalid) will never succeed: count, log, drop it
         * rather than hold the stream forever. */
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "pipeline",
                       "rule %s: state update refused (%s), event not counted", op->corr->id,
                       strerror(-rc));
        op_put(p, op);
        p->pending--;
        maybe_finish(p);
        return;
    }
    /* Not issued: the callback will not run, so queue it here and hold the source until
     * the store takes updates again. */
    if (rc == -EAGAIN && !kx_store_is_up(p->store))
        p->store_down = true;
    retry_push(p, op);
    set_paused(p, true);
    if (!p->store_down && !ev_is_active(&p->retry_w))
        ev_timer_start(p->loop, &p->retry_w);
}

/* ---- pre-aggregation ---- */

/* True when op was queued with the other updates of its key in this batch. Only the sliding
 * windows (COUNT .. ORDERED) merge: the store applies several adds of a key in order, as one
 * call, with the results they would have had one by one. */
static bool grp_collect(kx_op *op)
{
    kx_pipeline *p = op->p;
    if (!p->collecting || corr_agg(op->corr->corr_type) > KX_AGG_ORDERED)
        return false;
    if ((p->ngrp + 1) * 2 > p->grp_cap) {
        size_t cap = p->grp_cap ? p->grp_cap * 2 : 256;
        struct grp_slot *g = calloc(cap, sizeof(*g));
        size_t *order = malloc(cap * sizeof(*order));
        if (!g || !order) {
            free(g);
            free(order);
            return false; /* out of memory: send it alone */
        }
        for (size_t k = 0; k < p->ngrp; k++) {
            struct grp_slot *o = &p->grp[p->grp_order[k]];
            size_t i = (size_t)kx_hash64(o->head->key, strlen(o->head->key), 9) & (cap - 1);
            while (g[i].head)
                i = (i + 1) & (cap - 1);
            g[i] = *o;
            order[k] = i;
        }
        free(p->grp);
        free(p->grp_order);
        p->grp = g;
        p->grp_order = order;
        p->grp_cap = cap;
    }
    size_t i = (size_t)kx_hash64(op->key, strlen(op->key), 9) & (p->grp_cap - 1);
    while (p->grp[i].head && strcmp(p->grp[i].head->key, op->key))
        i = (i + 1) & (p->grp_cap - 1);
    struct grp_slot *g = &p->grp[i];
    op->grp_next = NULL;
    if (!g->head) {
        g->head = op;
        p->grp_order[p->ngrp++] = i;
    } else {
        g->tail->grp_next = op;
    }
    g->tail = op;
    g->n++;
    return true;
}

/* One call's results, in the order of its updates. */
static void grp_cb(void *ud, int status, const kx_window_result *res, size_t n)
{
    kx_op *op = ud;
    for (size_t i = 0; op; i++) {
        kx_op *next = op->grp_next;
        op->grp_next = NULL;
        if (status == 0 && i < n)
            op_cb(op, 0, &res[i]);
        else
            op_cb(op, status ? status : -EPROTO, NULL);
        op = next;
    }
}

/* Sends every collected key: one store call per key (chunks of KX_STORE_MANY_MAX). */
static void grp_flush(kx_pipeline *p)
{
    p->collecting = false;
    for (size_t k = 0; k < p->ngrp; k++) {
        struct grp_slot *g = &p->grp[p->grp_order[k]];
        kx_op *op = g->head;
        *g = (struct grp_slot){0};
        while (op) {
            /* Up to KX_STORE_MANY_MAX updates, cut off from the rest of the chain. */
            kx_op *first = op, *last = op;
            size_t n = 1;
            while (last->grp_next && n < KX_STORE_MANY_MAX) {
                last = last->grp_next;
                n++;
            }
            op = last->grp_next;
            last->grp_next = NULL;
            if (n == 1) {
                op_issue(first);
                continue;
            }
            if (n > p->adds_cap) {
                kx_window_add *a = realloc(p->adds, n * sizeof(*a));
                if (!a) {
                    for (kx_op *o = first; o;) {
                        kx_op *nx = o->grp_next;
                        o->grp_next = NULL;
                        op_issue(o);
                        o = nx;
                    }
                    continue;
                }
                p->adds = a;
                p->adds_cap = n;
            }
            size_t i = 0;
            for (kx_op *o = first; o; o = o->grp_next)
                window_add_of(o, &p->adds[i++]);
            int rc = p->store_down ? -EAGAIN
                                   : kx_store_window_add_many(p->store, p->adds, n, grp_cb, first);
            if (rc >= 0)
                continue;
            for (kx_op *o = first; o;) {
                kx_op *nx = o->grp_next;
                o->grp_next = NULL;
                /* Refused as a whole (one bad update?): alone, only that one is refused. */
                if (transient(rc))
                    op_not_issued(o, rc);
                else
                    op_issue(o);
                o = nx;
            }
        }
    }
    p->ngrp = 0;
}

static void retry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    kx_pipeline *p = w->data;
    ev_timer_stop(loop, w);
    if (p->store_down || !p->retry_head)
        return;
    retry_flush(p);
    if (!p->store_down && !p->retry_head)
        set_paused(p, false);
}

/* The smallest count of events that can meet a count-like condition (event_count "at least
 * N", value_count, temporal*): how far a group is from firing. 0 where a count does not
 * tell (sums, averages, first_seen, baseline, absence, "at most N"). */
static uint32_t corr_need(const kx_rule *c)
{
    bool counted = (c->corr_type == KX_CORR_EVENT_COUNT && !c->closing) ||
                   c->corr_type == KX_CORR_VALUE_COUNT || c->corr_type == KX_CORR_TEMPORAL ||
                   c->corr_type == KX_CORR_TEMPORAL_ORDERED;
    if (!counted)
        return 0;
    double need = 1;
    for (size_t i = 0; i < c->ncond; i++) {
        double v = c->cond[i].value;
        double lo = c->cond[i].op == KX_CMP_GTE  ? v
                    : c->cond[i].op == KX_CMP_GT ? (double)(long long)v + 1
                    : c->cond[i].op == KX_CMP_EQ ? v
                                                 : 1;
        if (lo > need)
            need = lo;
    }
    return need > 1e6 ? 1000000u : (uint32_t)need;
}

#define KX_DEGRADED_PERIOD_MS (3600 * 1000LL) /* one "detection degraded" alert per hour */

/* The cap has evicted or refused groups of (rule, tenant): tell the rule's team, at most once
 * an hour, that the rule is running degraded. */
static void degraded_alert(kx_pipeline *p, const kx_rule *c, const char *tenant, size_t cap,
                           uint64_t evicted, uint64_t refused, int64_t now_ms)
{
    char title[320], capv[24], desc[640];
    snprintf(title, sizeof(title), "Detection degraded: %s", c->title);
    snprintf(capv, sizeof(capv), "%zu", cap);
    snprintf(desc, sizeof(desc),
             "klaxon reached this rule's group cap (max_groups %zu) for tenant \"%s\": %llu "
             "groups far from the threshold were dropped to make room for new ones, and %llu new "
             "groups were refused because no group could make room (halfway to the threshold, or "
             "as active as the new one). An attack spread over more groups than the cap can be "
             "missed: raise max_groups, or narrow the rule.",
             cap, tenant, (unsigned long long)evicted, (unsigned long long)refused);
    kx_kv group[1] = {{"max_groups", capv}};
    kx_alert a = {
        .rule_id = c->id,
        .rule_title = title,
        .rule_level = c->level,
        .team = corr_team(c),
        .tenant = tenant,
        .category = "detection-degraded",
        .group = group,
        .ngroup = 1,
        .count = (int64_t)(evicted + refused),
        .window_s = KX_DEGRADED_PERIOD_MS / 1000,
        /* One incident per hour of wall time: the same dedup_key for any process. */
        .first_seen_ms = now_ms - now_ms % KX_DEGRADED_PERIOD_MS,
        .last_seen_ms = now_ms,
        .description = desc,
        .tags = c->tags,
        .ntags = c->ntags,
    };
    send_alert(p, &a);
}

/* The per-rule, per-tenant cap on live groups (klaxon/groupcap.h). A new group past it takes
 * the place of the group furthest from firing, whose state is dropped; false when none may
 * go (every group sampled is close to firing, or progress is unknown). Both are counted,
 * logged, and reported to the rule's team as a "detection degraded" alert. */
static bool group_admit(kx_pipeline *p, const kx_rule *c, const char *tenant, uint64_t h1,
                        uint64_t h2, int64_t time_ms)
{
    if (c->index >= p->ngroups)
        return true; /* not reached: sized to the ruleset */
    size_t cap = c->max_groups > 0 ? (size_t)c->max_groups : p->opts.max_groups;
    if (!p->groups[c->index] && !(p->groups[c->index] = kx_groupcap_create(cap)))
        return true; /* out of memory: count the event rather than drop it */
    int64_t now = (int64_t)(ev_now(p->loop) * 1000.0);
    /* An absence group is remembered for keep after its silence was reported. */
    int64_t live = c->timespan_ms + (c->corr_type == KX_CORR_ABSENCE ? c->keep_ms : 0);
    kx_group_touch t = {.tenant = tenant,
                        .id = {h1, h2},
                        .now_ms = now,
                        .ttl_ms = live + corr_lateness(p, c),
                        .event_ms = time_ms,
                        .window_ms = c->timespan_ms,
                        .need = corr_need(c)};
    kx_group_id victim;
    kx_groupcap *g = p->groups[c->index];
    int rc = kx_groupcap_touch(g, &t, &victim);
    if (rc == KX_GC_KNOWN)
        return true;
    if (rc == KX_GC_NEW) {
        if (kx_groupcap_shared(g, tenant))
            kx_log_limited(&p->rl_groups, KX_LOG_WARN, "pipeline",
                           "rule %s: more than %d tenants: tenant \"%s\" shares one group cap "
                           "with the later ones",
                           c->id, KX_GROUPCAP_TENANTS, tenant);
        return true;
    }
    if (rc < 0)
        return true; /* out of memory: count the event */
    if (rc == KX_GC_EVICTED) {
        /* The victim's window goes with it: the cap bounds the state, not just the set. */
        char key[96];
        snprintf(key, sizeof(key), "%.32s|%.24s|%016llx%016llx", tenant, c->id,
                 (unsigned long long)victim.h1, (unsigned long long)victim.h2);
        kx_store_forget(p->store, key);
        kx_metric_inc(KX_M_GROUPS_EVICTED);
        kx_log_limited(&p->rl_evicted, KX_LOG_WARN, "pipeline",
                       "rule %s, tenant %s: %zu groups are active (max_groups): the group furthest "
                       "from the threshold was dropped for a new one",
                       c->id, tenant, cap);
    } else {
        kx_metric_inc(KX_M_GROUPS_CAPPED);
        kx_log_limited(&p->rl_groups, KX_LOG_WARN, "pipeline",
                       "rule %s, tenant %s: %zu groups are active (max_groups) and none may make "
                       "room (halfway to the threshold, or as active as the new group): a new "
                       "group is not counted",
                       c->id, tenant, cap);
    }
    uint64_t evicted, refused;
    if (kx_groupcap_notice(g, tenant, now, KX_DEGRADED_PERIOD_MS, &evicted, &refused))
        degraded_alert(p, c, tenant, cap, evicted, refused, now);
    return rc == KX_GC_EVICTED;
}

static void groups_reset(kx_pipeline *p, size_t n)
{
    for (size_t i = 0; i < p->ngroups; i++)
        kx_groupcap_destroy(p->groups[i]);
    free(p->groups);
    p->groups = n ? calloc(n, sizeof(*p->groups)) : NULL;
    p->ngroups = p->groups ? n : 0;
}

/* Values a correlation update reads: from an event, or from a chained correlation's alert
 * (its group). */
typedef struct corr_src {
    const kx_event *ev;    /* or NULL: */
    const kx_rule *child;  /* the referenced correlation that fired */
    const kx_op *child_op; /* its group values */
} corr_src;

static bool src_get(const corr_src *s, const char *field, const char **v, size_t *vl)
{
    if (s->ev) {
        const kx_field *f = kx_event_get(s->ev, field);
        if (!f)
            return false;
        *v = f->value;
        *vl = f->value_len;
        return true;
    }
    for (size_t i = 0; i < corr_ngroup(s->child); i++) {
        if (!strcmp(corr_group_name(s->child, i), field)) {
            *v = s->child_op->strs.data + s->child_op->val_off[i];
            *vl = strlen(*v);
            return true;
        }
    }
    return false;
}

/* Appends the value this update carries after 0x1f in its member; false when the source lacks
 * what the rule aggregates (counted, logged, not counted in the window). */
static bool member_value(kx_pipeline *p, const kx_rule *c, int ref, const corr_src *src,
                         kx_buf *out)
{
    const char *v;
    size_t vl;
    char num[40];
    size_t start = out->len;
    kx_buf_putc(out, 0x1f);
    switch (c->corr_type) {
    case KX_CORR_TEMPORAL:
    case KX_CORR_TEMPORAL_ORDERED:
        kx_buf_printf(out, "%d", ref);
        return true;
    case KX_CORR_VALUE_SUM:
    case KX_CORR_VALUE_AVG: {
        const char *fname = c->value_fields[(size_t)ref * c->nvalue_fields];
        if (!src_get(src, fname, &v, &vl) || vl == 0 || vl >= sizeof(num))
            goto missing;
        memcpy(num, v, vl);
        num[vl] = '\0';
        char *end;
        double d = strtod(num, &end);
        if (*end || d != d || d > 9e15 || d < -9e15)
            goto missing;
        /* %.17g: the store parses back the exact double (both backends). */
        kx_buf_printf(out, "%.17g", d);
        return true;
    }
    default: /* value_count (a tuple of fields), value_percentile */
        for (size_t k = 0; k < c->nvalue_fields; k++) {
            const char *fname = c->value_fields[(size_t)ref * c->nvalue_fields + k];
            if (!src_get(src, fname, &v, &vl))
                goto missing;
            if (k)
                kx_buf_putc(out, 0x1e);
            /* Long values are hashed: distinctness is kept, the member stays small. */
            if (vl > 128)
                kx_buf_printf(out, "#%016llx%016llx", (unsigned long long)kx_hash64(v, vl, 1),
                              (unsigned long long)kx_hash64(v, vl, 2));
            else
                kx_buf_append(out, v, vl);
        }
        return true;
    }
missing:
    out->len = start;
    kx_metric_inc(KX_M_CORR_SKIPPED);
    kx_log_limited(&p->rl_value, KX_LOG_WARN, "pipeline",
                   "rule %s: field \"%s\" missing or not a number: event not counted", c->id,
                   c->value_fields[(size_t)ref * c->nvalue_fields]);
    return false;
}

static void corr_update(kx_pipeline *p, kx_rule *c, const kx_rule *ref_rule, const corr_src *src,
                        const char *tenant, int64_t time_ms, const char *identity,
                        const kx_buf *evidence)
{
    int ref = kx_corr_ref_index(c, ref_rule);
    if (ref < 0)
        return;
    kx_op *op = op_get(p);
    if (!op) {
        kx_log(KX_LOG_ERROR, "pipeline", "out of memory: correlation %s not updated", c->id);
        return;
    }
    op->corr = c;
    op->time_ms = time_ms;
    kx_buf_puts(&op->member, identity);
    if (c->corr_type != KX_CORR_EVENT_COUNT && c->corr_type != KX_CORR_BASELINE &&
        c->corr_type != KX_CORR_ABSENCE && !member_value(p, c, ref, src, &op->member)) {
        op_put(p, op);
        return;
    }
    /* Group values in order, NUL-separated; a missing field groups as "". */
    op->tenant_off = 0;
    kx_buf_append(&op->strs, tenant, strlen(tenant) + 1);
    uint64_t h1 = kx_hash64(c->id, strlen(c->id), 1), h2 = kx_hash64(c->id, strlen(c->id), 2);
    size_t ng = c->ngroup_by < KX_MAX_GROUP_BY ? c->ngroup_by : KX_MAX_GROUP_BY;
    for (size_t i = 0; i < ng; i++) {
        const char *v = "";
        size_t vl = 0;
        if (!src_get(src, c->group_fields[(size_t)ref * c->ngroup_by + i], &v, &vl)) {
            v = "";
            vl = 0;
        }
        op->val_off[i] = op->strs.len;
        kx_buf_append(&op->strs, v, vl);
        kx_buf_append(&op->strs, "", 1);
        h1 = kx_hash64(v, vl + 1, h1);
        h2 = kx_hash64(v, vl + 1, h2);
    }
    /* The tenant is hashed too: the readable prefix below is truncated, and two tenants
     * must never share a window. */
    h1 = kx_hash64(tenant, strlen(tenant) + 1, h1);
    h2 = kx_hash64(tenant, strlen(tenant) + 1, h2);
    if (c->corr_type >= KX_CORR_FIRST_SEEN) {
        /* These keep other Redis types under the same names: a rule id reused with another
         * type must not meet its old keys (WRONGTYPE). */
        h1 = kx_hash64(&c->corr_type, sizeof(c->corr_type), h1);
        h2 = kx_hash64(&c->corr_type, sizeof(c->corr_type), h2);
    }
    /* first_seen: the watched values join the alert's group (not the key). */
    for (size_t k = 0; c->corr_type == KX_CORR_FIRST_SEEN && k < corr_ngroup(c) - ng; k++) {
        const char *v = "";
        size_t vl = 0;
        if (!src_get(src, c->value_fields[(size_t)ref * c->nvalue_fields + k], &v, &vl)) {
            v = "";
            vl = 0;
        }
        op->val_off[ng + k] = op->strs.len;
        kx_buf_append(&op->strs, v, vl);
        kx_buf_append(&op->strs, "", 1);
    }
    /* Key: tenant and rule readable for operators, the group hashed to bound its length. */
    snprintf(op->key, sizeof(op->key), "%.32s|%.24s|%016llx%016llx", tenant, c->id,
             (unsigned long long)h1, (unsigned long long)h2);
    if (!group_admit(p, c, tenant, h1, h2, time_ms)) {
        op_put(p, op);
        return;
    }
    if (c->resolve_auto) /* the group's identity under the rule's resolve key */
        snprintf(op->group, sizeof(op->group), "%016llx%016llx", (unsigned long long)h1,
                 (unsigned long long)h2);
    if (c->corr_type == KX_CORR_ABSENCE || c->closing) {
        /* A sighting of the group: its identity is the group's hash, its payload what an alert
         * about the group needs (tenant, values, this event as evidence), for whichever
         * process judges it. Closing windows also count the event by its identity. */
        absence_key(c, op->key, sizeof(op->key));
        if (c->closing) {
            op->kind = KX_OP_CTOUCH;
            snprintf(op->group, sizeof(op->group), "%016llx%016llx", (unsigned long long)h1,
                     (unsigned long long)h2);
        } else {
            op->kind = KX_OP_TOUCH;
            kx_buf_reset(&op->member);
            kx_buf_printf(&op->member, "%016llx%016llx", (unsigned long long)h1,
                          (unsigned long long)h2);
        }
        payload_group(&op->evidence, op, ng);
        /* The whole payload must fit what the store keeps: the evidence is left out first
         * (a group too large even without it is refused and logged like any update). */
        if (evidence && op->evidence.len + evidence->len > KX_STORE_MAX_EVIDENCE_BYTES) {
            kx_log_limited(&p->rl_value, KX_LOG_WARN, "pipeline",
                           "rule %s: evidence too large to keep with an absence sighting: left "
                           "out",
                           c->id);
            evidence = NULL;
        }
    }
    if (evidence && evidence->len)
        kx_buf_append(&op->evidence, evidence->data, evidence->len);
    p->pending++;
    op_issue(op);
}

static void corr_update_event(kx_pipeline *p, kx_rule *c, const kx_rule *matched,
                              const char *degraded)
{
    char id[24];
    kx_event_id(&p->ev, id, sizeof(id));
    /* The store keeps evidence blobs up to KX_STORE_MAX_EVIDENCE_BYTES: render within it. */
    size_t ev_cap = p->opts.evidence_bytes < KX_STORE_MAX_EVIDENCE_BYTES
                        ? p->opts.evidence_bytes
                        : KX_STORE_MAX_EVIDENCE_BYTES;
    kx_buf_reset(&p->scratch);
    if (kx_evidence_render_degraded(&p->ev, degraded, ev_cap, &p->scratch))
        kx_buf_reset(&p->scratch);
    corr_src src = {.ev = &p->ev};
    corr_update(p, c, matched, &src, p->ev.tenant, p->ev.time_ms, id, &p->scratch);
}

/* A referenced correlation fired: its alert counts as one event of the parent, identified by
 * (rule, tenant, group, window) so a replayed crossing is the same member, at the time the
 * window ended, carrying a small summary as evidence. */
static void corr_feed_alert(kx_pipeline *p, kx_rule *parent, const kx_rule *child, const kx_op *cop,
                            const kx_window_result *res)
{
    uint64_t h = kx_hash64(child->id, strlen(child->id), 3);
    h = kx_hash64(cop->strs.data, cop->strs.len, h);
    h = kx_hash64(&res->cross_first_ms, sizeof(res->cross_first_ms), h);
    char id[24];
    snprintf(id, sizeof(id), "c%016llx", (unsigned long long)h);
    kx_buf_reset(&p->chain_ev);
    char first[40], last[40];
    kx_time_format(res->cross_first_ms, first, sizeof(first));
    kx_time_format(res->cross_last_ms, last, sizeof(last));
    kx_buf_puts(&p->chain_ev, "{\"correlation\":");
    kx_buf_json_str(&p->chain_ev, child->id, strlen(child->id));
    kx_buf_puts(&p->chain_ev, ",\"group\":{");
    for (size_t i = 0; i < corr_ngroup(child); i++) {
        const char *v = cop->strs.data + cop->val_off[i];
        const char *name = corr_group_name(child, i);
        if (i)
            kx_buf_putc(&p->chain_ev, ',');
        kx_buf_json_str(&p->chain_ev, name, strlen(name));
        kx_buf_putc(&p->chain_ev, ':');
        kx_buf_json_str(&p->chain_ev, v, strlen(v));
    }
    kx_buf_printf(&p->chain_ev, "},\"count\":%lld,\"first_seen\":\"%s\",\"last_seen\":\"%s\"}",
                  (long long)res->cross_count, first, last);
    corr_src src = {.child = child, .child_op = cop};
    corr_update(p, parent, child, &src, cop->strs.data + cop->tenant_off, res->cross_last_ms, id,
                &p->chain_ev);
}

static void on_store_state(void *ud, bool up)
{
    kx_pipeline *p = ud;
    if (!up) {
        p->store_down = true;
        if (p->in_batch)
            set_paused(p, true);
        return;
    }
    kx_log(KX_LOG_INFO, "pipeline", "state store is up: re-issuing queued updates");
    p->store_down = false;
    retry_flush(p);
    if (!p->store_down && !p->retry_head)
        set_paused(p, false);
}

/* ---- per message ---- */

static void on_match(kx_rule *r, void *ud)
{
    kx_pipeline *p = ud;
    kx_metric_inc(KX_M_RULE_MATCHES);
    const char *degraded = kx_ruleset_match_reason(p->rules);
    if (r->generate)
        single_event_alert(p, r, degraded);
    for (size_t i = 0; i < r->ncorrelations; i++)
        corr_update_event(p, (kx_rule *)r->correlations[i], r, degraded);
}

static kx_decoder *decoder_for(kx_pipeline *p, const char *topic)
{
    kx_decoder *def = NULL;
    for (size_t i = 0; i < p->ndecoders; i++) {
        if (!p->decoders[i].topic)
            def = p->decoders[i].dec;
        else if (topic && !strcmp(p->decoders[i].topic, topic))
            return p->decoders[i].dec;
    }
    return def;
}

static void malformed(kx_pipeline *p, const kx_msg *m, const char *why)
{
    kx_metric_inc(KX_M_EVENTS_MALFORMED);
    if (m->topic)
        kx_log_limited(&p->rl_malformed, KX_LOG_WARN, "decode",
                       "malformed event skipped (%s [%d] offset %lld): %s", m->topic,
                       (int)m->partition, (long long)m->offset, why);
    else
        kx_log_limited(&p->rl_malformed, KX_LOG_WARN, "decode",
                       "malformed event skipped (line %lld): %s", (long long)m->offset, why);
}

static void process_one(kx_pipeline *p, const kx_msg *m)
{
    if (m->oversize || m->len > p->opts.max_event_bytes) {
        malformed(p, m, "event larger than limits.max_event_bytes");
        return;
    }
    kx_decoder *d = decoder_for(p, m->topic);
    if (!d) {
        malformed(p, m, "no input is configured for this topic");
        return;
    }
    kx_event_reset(&p->ev);
    p->ev.topic = m->topic;
    p->ev.partition = m->partition;
    p->ev.offset = m->offset;
    const char *why = "malformed";
    if (kx_decode(d, m->payload, m->len, m->timestamp_ms, &p->ev, &why)) {
        malformed(p, m, why);
        return;
    }
    kx_metric_inc(KX_M_EVENTS_DECODED);
    /* An event dated far ahead of its arrival (a skewed clock, or a forged timestamp) would
     * push every window of its group forward and hide the real events after it: such a
     * time is replaced by the arrival time, and said so. */
    if (p->ev.time_from_log && p->ev.time_ms > m->timestamp_ms + KX_MAX_FUTURE_MS) {
        char t[40];
        kx_time_format(p->ev.time_ms, t, sizeof(t));
        kx_log_limited(&p->rl_time, KX_LOG_WARN, "decode",
                       "event time %s is more than %ds ahead of its arrival: using arrival time", t,
                       KX_MAX_FUTURE_MS / 1000);
        kx_metric_inc(KX_M_EVENTS_TIME_CLAMPED);
        p->ev.time_ms = m->timestamp_ms;
    }
    /* In run, an event dated ahead of the clock (allowed up to KX_MAX_FUTURE_MS, or a Kafka
     * timestamp) must not push every tenant's silences forward. */
    int64_t wm_t = p->ev.time_ms;
    if (p->opts.wall_clock && wm_t > (int64_t)(ev_now(p->loop) * 1000.0))
        wm_t = (int64_t)(ev_now(p->loop) * 1000.0);
    if (!p->wm_known || wm_t > p->wm_max_t)
        p->wm_max_t = wm_t;
    part_seen(p, m, wm_t);
    p->wm_known = true;
    if (kx_ruleset_match(p->rules, &p->ev, on_match, p))
        kx_metric_inc(KX_M_EVENTS_MATCHED);
}

static bool has_absence(const kx_pipeline *p)
{
    return p->has_wm_rules;
}

/* Once per ruleset (not per batch): does any rule judge by the watermark? */
static bool any_judged_by_watermark(kx_ruleset *rules)
{
    for (size_t i = 0; i < kx_ruleset_size(rules); i++)
        if (judged_by_watermark(kx_ruleset_at(rules, i)))
            return true;
    return false;
}

/* Starts a batch (with messages, or the end-of-input check). A due check of our own still in
 * flight joins it: the batch is done when that work is too. */
static int batch_begin(kx_pipeline *p, kx_pipeline_done_cb done, void *ud)
{
    if (p->in_batch && !p->tick)
        return -EBUSY;
    p->tick = false;
    ev_idle_stop(p->loop, &p->done_w);
    p->in_batch = true;
    p->processing = true;
    p->done = done;
    p->done_ud = ud;
    return 0;
}

int kx_pipeline_process(kx_pipeline *p, const kx_msg *msgs, size_t n, kx_pipeline_done_cb done,
                        void *ud)
{
    if (batch_begin(p, done, ud))
        return -EBUSY;
    p->collecting = p->opts.preaggregate;
    for (size_t i = 0; i < n; i++)
        process_one(p, &msgs[i]);
    grp_flush(p);
    /* Absence: each batch that moved the watermark asks for the silences it passed. */
    if (p->wm_known && has_absence(p) &&
        (p->opts.wall_clock ? p->parts_dirty : p->wm_max_t != p->wm_checked))
        absence_check(p);
    p->processing = false;
    maybe_finish(p);
    return 0;
}

/* No events for a while: the watermark moves on with the wall clock (opts.wall_clock), so
 * check for silences as a batch of our own, without messages. */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kx_pipeline *p = w->data;
    if (p->in_batch || p->paused || p->ticks_stopped || !p->wm_known || !has_absence(p))
        return;
    p->in_batch = true;
    p->tick = true;
    p->done = p->tick_done;
    p->done_ud = p->tick_ud;
    p->processing = true;
    absence_check(p);
    p->processing = false;
    maybe_finish(p);
}

int kx_pipeline_finish(kx_pipeline *p, kx_pipeline_done_cb done, void *ud)
{
    if (batch_begin(p, done, ud))
        return -EBUSY;
    p->final = true;
    if (has_absence(p))
        absence_check(p);
    p->processing = false;
    maybe_finish(p);
    return 0;
}

bool kx_pipeline_busy(const kx_pipeline *p)
{
    return p->in_batch;
}

int kx_pipeline_set_rules(kx_pipeline *p, kx_ruleset *rules)
{
    if (p->in_batch || p->retry_head)
        return -EBUSY;
    p->rules = rules;
    p->has_wm_rules = any_judged_by_watermark(rules);
    /* Rule indexes change with the set: the caps start over (the groups' state in the store
     * does not). */
    groups_reset(p, kx_ruleset_size(rules));
    return 0;
}

int kx_pipeline_create(struct ev_loop *loop, kx_ruleset *rules, kx_store *store, kx_router *router,
                       const kx_pipeline_opts *opts, kx_pipeline **out)
{
    kx_pipeline *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->rules = rules;
    p->store = store;
    p->router = router;
    p->opts = *opts;
    if (!p->opts.max_event_bytes)
        p->opts.max_event_bytes = 1 << 20;
    if (!p->opts.evidence_bytes)
        p->opts.evidence_bytes = 16 << 10;
    if (!p->opts.max_groups)
        p->opts.max_groups = 100000;
    p->has_wm_rules = any_judged_by_watermark(rules);
    groups_reset(p, kx_ruleset_size(rules));
    kx_event_init(&p->ev);
    kx_buf_init(&p->scratch, 0);
    kx_buf_init(&p->chain_ev, 0);
    ev_idle_init(&p->done_w, done_cb);
    p->done_w.data = p;
    ev_timer_init(&p->retry_w, retry_timer_cb, 0.5, 0);
    p->retry_w.data = p;
    kx_buf_init(&p->payload, 0);
    ev_idle_init(&p->reask_w, reask_cb);
    p->reask_w.data = p;
    /* Tokens of due questions must not repeat across processes or restarts within the 10
     * minutes the store remembers an answer. */
    uint64_t seed[3] = {(uint64_t)kx_now_ms(), (uint64_t)getpid(), 0};
    if (getrandom(&seed[2], sizeof(seed[2]), GRND_NONBLOCK) != (ssize_t)sizeof(seed[2]))
        seed[2] = (uint64_t)(uintptr_t)p; /* no entropy yet: at least the address */
    p->token_base = kx_hash64(seed, sizeof(seed), 11);
    ev_timer_init(&p->tick_w, tick_cb, KX_ABSENCE_TICK_S, KX_ABSENCE_TICK_S);
    p->tick_w.data = p;
    if (p->opts.wall_clock)
        ev_timer_start(loop, &p->tick_w);
    p->store_down = !kx_store_is_up(store);
    kx_store_set_state_cb(store, on_store_state, p);
    *out = p;
    return 0;
}

int kx_pipeline_add_decoder(kx_pipeline *p, const char *topic, kx_decoder *d)
{
    decoder_entry *nd = realloc(p->decoders, (p->ndecoders + 1) * sizeof(*nd));
    if (!nd) {
        kx_decoder_destroy(d);
        return -ENOMEM;
    }
    p->decoders = nd;
    char *t = NULL;
    if (topic && !(t = strdup(topic))) {
        kx_decoder_destroy(d);
        return -ENOMEM;
    }
    p->decoders[p->ndecoders].topic = t;
    p->decoders[p->ndecoders].dec = d;
    p->ndecoders++;
    return 0;
}

static void prepare_logsource(const char *product, const char *service, const char *category,
                              void *ud)
{
    (void)kx_ruleset_prepare(ud, product, service, category); /* else built on first sight */
}

void kx_pipeline_prepare_rules(kx_pipeline *p, kx_ruleset *rules)
{
    for (size_t i = 0; i < p->ndecoders; i++)
        kx_decoder_logsources(p->decoders[i].dec, prepare_logsource, rules);
}

void kx_pipeline_stop_ticks(kx_pipeline *p)
{
    p->ticks_stopped = true;
    ev_timer_stop(p->loop, &p->tick_w);
}

void kx_pipeline_set_tick_cb(kx_pipeline *p, kx_pipeline_done_cb cb, void *ud)
{
    p->tick_done = cb;
    p->tick_ud = ud;
}

void kx_pipeline_set_pause_cb(kx_pipeline *p, kx_pipeline_pause_cb cb, void *ud)
{
    p->pause_cb = cb;
    p->pause_ud = ud;
}

static void free_ops(kx_op *op)
{
    while (op) {
        kx_op *n = op->next;
        kx_buf_fini(&op->strs);
        kx_buf_fini(&op->evidence);
        kx_buf_fini(&op->member);
        free(op);
        op = n;
    }
}

void kx_pipeline_destroy(kx_pipeline *p)
{
    if (!p)
        return;
    ev_idle_stop(p->loop, &p->done_w);
    ev_timer_stop(p->loop, &p->retry_w);
    ev_timer_stop(p->loop, &p->tick_w);
    ev_idle_stop(p->loop, &p->reask_w);
    free_ops(p->reask);
    free(p->parts);
    free(p->wm_entries);
    kx_buf_fini(&p->payload);
    free(p->grp);
    free(p->grp_order);
    free(p->adds);
    free_ops(p->free_ops);
    free_ops(p->retry_head);
    for (size_t i = 0; i < p->ndecoders; i++) {
        free(p->decoders[i].topic);
        kx_decoder_destroy(p->decoders[i].dec);
    }
    free(p->decoders);
    kx_buf_fini(&p->scratch);
    kx_buf_fini(&p->chain_ev);
    groups_reset(p, 0);
    kx_event_fini(&p->ev);
    free(p);
}
