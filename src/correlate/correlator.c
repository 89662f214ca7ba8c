/*
 * The correlator (klaxon/correlate.h): its life, the pool and lifecycle of its ops, their
 * retries across a store outage, and the batch entry points.
 *
 * An op is taken from the free list, filled (update.c, watermark.c, resolve.c), counted in
 * `pending` and issued: to the store at once, or collected for the batch's end (preagg.c).
 * Its callback (fire.c, watermark.c) acts on the answer and gives the op back (kx__op_done);
 * when `pending` comes back to zero the host hears that the correlator is idle. A transient
 * failure (the store down, an error reply, a full pipeline) queues the op for a retry and
 * holds the source (the host's pause) until the store takes updates again: updates are
 * idempotent per event identity, so a retry never counts twice. An error reply that persists
 * drops the op after KX_MAX_PROTO_RETRIES, counted and logged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "correlate/correlate_int.h"
#include "klaxon/metrics.h"

int64_t kx__corr_lateness(const kx_correlator *p, const kx_rule *c)
{
    return c->lateness_ms >= 0 ? c->lateness_ms : p->opts.lateness_ms;
}

kx_op *kx__op_get(kx_correlator *p)
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

void kx__op_put(kx_correlator *p, kx_op *op)
{
    op->next = p->free_ops;
    p->free_ops = op;
}

void kx__retry_push(kx_correlator *p, kx_op *op)
{
    if (op->kind == KX_OP_WM)
        kx__wm_mark_live(op);
    op->next = NULL;
    if (p->retry_tail)
        p->retry_tail->next = op;
    else
        p->retry_head = op;
    p->retry_tail = op;
}

static void retry_flush(kx_correlator *p)
{
    kx_op *op = p->retry_head;
    p->retry_head = p->retry_tail = NULL;
    /* Re-issue in the original order; an op that fails again re-queues itself. */
    while (op) {
        kx_op *next = op->next;
        op->next = NULL;
        kx__op_issue(op);
        op = next;
    }
}

/* Transient failures: the update is queued and re-issued, never dropped. */
bool kx__op_transient(int status)
{
    return status == -EIO || status == -EAGAIN || status == -ENOTCONN || status == -ENOBUFS ||
           status == -EPROTO;
}

void kx__op_done(kx_op *op)
{
    kx_correlator *p = op->p;
    kx__op_put(p, op);
    p->pending--;
    kx__corr_maybe_idle(p);
}

/* Failures every kind of op handles alike. True when the op was taken care of: queued for
 * a retry (kx__op_transient) or dropped after too many error replies. */
bool kx__op_failed(kx_op *op, int status)
{
    kx_correlator *p = op->p;
    if (status == -EPROTO && ++op->proto_errors > KX_MAX_PROTO_RETRIES) {
        /* An error reply that persists (a key of the wrong type, a script error) is not an
         * outage: after a few retries the update is dropped, counted and logged. */
        kx_metric_inc(KX_M_STORE_ERRORS);
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "correlate",
                       "rule %s: state update failed %d times with an error reply; event not "
                       "counted",
                       op->corr->id, op->proto_errors);
        kx__op_done(op);
        return true;
    }
    if (kx__op_transient(status)) {
        kx_metric_inc(KX_M_STORE_ERRORS);
        kx_log_limited(&p->rl_store, KX_LOG_WARN, "correlate",
                       "state update failed (%s): queued for retry, consumption paused",
                       strerror(-status));
        if (!kx_store_is_up(p->store))
            p->store_down = true;
        kx__retry_push(p, op);
        kx__corr_pause(p, true);
        /* With the store up (an error reply, a full pipeline) nothing will announce it
         * back: the retry timer re-issues the queue. */
        if (!p->store_down && !ev_is_active(&p->retry_w))
            ev_timer_start(p->loop, &p->retry_w);
        return true;
    }
    return false;
}

void kx__op_issue(kx_op *op)
{
    if ((op->kind == KX_OP_WINDOW || op->kind == KX_OP_TOUCH || op->kind == KX_OP_CTOUCH) &&
        kx__grp_collect(op))
        return; /* sent with its key's other updates at the end of the batch */
    int rc = op->kind == KX_OP_WINDOW ? kx__window_issue(op)
             : op->kind == KX_OP_WM   ? kx__wm_issue(op)
                                      : kx__absence_issue(op);
    if (rc >= 0)
        return;
    kx__op_not_issued(op, rc);
}

/* An update the store would not take (the callback will not run). */
void kx__op_not_issued(kx_op *op, int rc)
{
    kx_correlator *p = op->p;
    kx_metric_inc(KX_M_STORE_ERRORS);
    if (!kx__op_transient(rc)) {
        /* A refused update (too large, invalid) will never succeed: count, log, drop it
         * rather than hold the stream forever. */
        kx_log_limited(&p->rl_store, KX_LOG_ERROR, "correlate",
                       "rule %s: state update refused (%s), event not counted", op->corr->id,
                       strerror(-rc));
        kx__op_put(p, op);
        p->pending--;
        kx__corr_maybe_idle(p);
        return;
    }
    /* Not issued: the callback will not run, so queue it here and hold the source until
     * the store takes updates again. */
    if (rc == -EAGAIN && !kx_store_is_up(p->store))
        p->store_down = true;
    kx__retry_push(p, op);
    kx__corr_pause(p, true);
    if (!p->store_down && !ev_is_active(&p->retry_w))
        ev_timer_start(p->loop, &p->retry_w);
}

static void retry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    kx_correlator *p = w->data;
    ev_timer_stop(loop, w);
    if (p->store_down || !p->retry_head)
        return;
    retry_flush(p);
    if (!p->store_down && !p->retry_head)
        kx__corr_pause(p, false);
}

static void on_store_state(void *ud, bool up)
{
    kx_correlator *p = ud;
    if (!up) {
        p->store_down = true;
        if (p->in_batch)
            kx__corr_pause(p, true);
        return;
    }
    kx_log(KX_LOG_INFO, "correlate", "state store is up: re-issuing queued updates");
    p->store_down = false;
    retry_flush(p);
    if (!p->store_down && !p->retry_head)
        kx__corr_pause(p, false);
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

void kx__corr_pause(kx_correlator *p, bool pause)
{
    if (pause && !p->in_batch)
        return; /* nothing to hold: the next batch meets the outage itself */
    if (p->paused == pause)
        return;
    p->paused = pause;
    /* Time spent paused (a store outage) is not silence of our partitions: the next publish
     * of the shared watermark marks them live again. */
    if (!pause)
        p->wm_refresh = true;
    if (p->host.pause)
        p->host.pause(p->host.ud, pause);
}

void kx__corr_maybe_idle(kx_correlator *p)
{
    if (p->pending == 0 && p->host.idle)
        p->host.idle(p->host.ud);
}

void kx__corr_send(kx_correlator *p, kx_alert *a, const kx_rule *r, bool may_backfill)
{
    if (p->host.alert)
        p->host.alert(p->host.ud, a, r, may_backfill);
}

int kx_correlator_create(struct ev_loop *loop, kx_ruleset *rules, kx_store *store,
                         const kx_correlate_opts *opts, const kx_correlate_host *host,
                         kx_correlator **out)
{
    kx_correlator *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->loop = loop;
    p->rules = rules;
    p->store = store;
    p->opts = *opts;
    p->host = *host;
    if (!p->opts.evidence_bytes)
        p->opts.evidence_bytes = 16 << 10;
    if (!p->opts.max_groups)
        p->opts.max_groups = 100000;
    p->has_wm_rules = kx__any_judged_by_watermark(rules);
    kx__groups_reset(p, kx_ruleset_size(rules));
    kx_buf_init(&p->scratch, 0);
    kx_buf_init(&p->chain_ev, 0);
    kx_buf_init(&p->payload, 0);
    ev_timer_init(&p->retry_w, retry_timer_cb, 0.5, 0);
    p->retry_w.data = p;
    ev_idle_init(&p->reask_w, kx__reask_cb);
    p->reask_w.data = p;
    /* Tokens of due questions must not repeat across processes or restarts within the 10
     * minutes the store remembers an answer. */
    uint64_t seed[3] = {(uint64_t)kx_now_ms(), (uint64_t)getpid(), 0};
    if (getrandom(&seed[2], sizeof(seed[2]), GRND_NONBLOCK) != (ssize_t)sizeof(seed[2]))
        seed[2] = (uint64_t)(uintptr_t)p; /* no entropy yet: at least the address */
    p->token_base = kx_hash64(seed, sizeof(seed), 11);
    p->store_down = !kx_store_is_up(store);
    kx_store_set_state_cb(store, on_store_state, p);
    *out = p;
    return 0;
}

void kx_correlator_destroy(kx_correlator *p)
{
    if (!p)
        return;
    ev_timer_stop(p->loop, &p->retry_w);
    ev_idle_stop(p->loop, &p->reask_w);
    free_ops(p->reask);
    free(p->parts);
    free(p->wm_entries);
    kx_buf_fini(&p->payload);
    free(p->grp);
    free(p->grp_order);
    free(p->adds);
    free(p->touches);
    free(p->ctouches);
    free_ops(p->free_ops);
    free_ops(p->retry_head);
    kx_buf_fini(&p->scratch);
    kx_buf_fini(&p->chain_ev);
    kx__groups_reset(p, 0);
    free(p);
}

int kx_correlate_set_rules(kx_correlator *p, kx_ruleset *rules)
{
    if (p->retry_head || p->pending)
        return -EBUSY;
    p->rules = rules;
    p->has_wm_rules = kx__any_judged_by_watermark(rules);
    /* Rule indexes change with the set: the caps start over (the groups' state in the store
     * does not). */
    kx__groups_reset(p, kx_ruleset_size(rules));
    return 0;
}

void kx_correlate_batch_begin(kx_correlator *p)
{
    p->in_batch = true;
    p->collecting = p->opts.preaggregate;
}

void kx_correlate_seen(kx_correlator *p, const kx_msg *m, int64_t t)
{
    /* In run, an event dated ahead of the clock (a Kafka timestamp, or a log time within the
     * allowed skew) must not push every tenant's silences forward. */
    if (p->opts.wall_clock && t > (int64_t)(ev_now(p->loop) * 1000.0))
        t = (int64_t)(ev_now(p->loop) * 1000.0);
    if (!p->wm_known || t > p->wm_max_t)
        p->wm_max_t = t;
    kx__part_seen(p, m, t);
    p->wm_known = true;
}

void kx_correlate_batch_end(kx_correlator *p)
{
    kx__grp_flush(p);
    /* Each batch that moved the watermark asks for the silences and closed windows it
     * passed. */
    if (p->wm_known && p->has_wm_rules &&
        (p->opts.wall_clock ? p->parts_dirty : p->wm_max_t != p->wm_checked))
        kx__absence_check(p);
}

bool kx_correlate_tick(kx_correlator *p)
{
    if (p->in_batch || p->paused || !p->wm_known || !p->has_wm_rules)
        return false;
    p->in_batch = true;
    kx__absence_check(p);
    return true;
}

void kx_correlate_finish(kx_correlator *p)
{
    p->in_batch = true;
    p->final = true;
    if (p->has_wm_rules)
        kx__absence_check(p);
}

void kx_correlate_batch_done(kx_correlator *p)
{
    p->in_batch = false;
}

size_t kx_correlate_pending(const kx_correlator *p)
{
    return p->pending;
}

bool kx_correlate_paused(const kx_correlator *p)
{
    return p->paused;
}
