/*
 * The pipeline after the source, for one batch at a time: decode -> detect -> single-event
 * alerts, and for correlations the correlate stage (klaxon/correlate.h) -> alert.
 *
 * Accounting: `pending` counts the alerts a batch caused that are handed to the router and not
 * yet done; the correlator counts its own store work. The batch is done when its messages are
 * all processed and both are zero; done then runs from an ev_idle watcher, never re-entrantly
 * from kx_pipeline_process.
 */
#include "klaxon/pipeline.h"
#include "klaxon/timeofday.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "klaxon/correlate.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"

#define KX_MAX_FUTURE_MS (15 * 60 * 1000)
#define KX_ABSENCE_TICK_S 1.0 /* watermark checks while no events arrive (wall clock) */

typedef struct decoder_entry {
    char *topic; /* NULL = default */
    kx_decoder *dec;
} decoder_entry;

struct kx_pipeline {
    struct ev_loop *loop;
    kx_ruleset *rules;
    kx_router *router;
    kx_correlator *cor;
    kx_pipeline_opts opts;
    decoder_entry *decoders;
    size_t ndecoders;

    kx_event ev;
    kx_buf scratch; /* evidence of single-event alerts */

    /* current batch */
    bool in_batch;
    bool processing;
    size_t pending; /* alerts handed to the router, not yet done */
    kx_pipeline_done_cb done;
    void *done_ud;
    ev_idle done_w;
    bool tick;          /* the batch in flight is a check of the correlator's own (no messages) */
    bool ticks_stopped; /* kx_pipeline_stop_ticks */
    ev_timer tick_w;    /* 1 s: watermark checks while no events arrive */
    kx_pipeline_done_cb tick_done; /* told when such a check is done (kx_pipeline_set_tick_cb) */
    void *tick_ud;

    kx_pipeline_pause_cb pause_cb;
    void *pause_ud;

    kx_ratelimit rl_malformed;
    kx_ratelimit rl_time;
};

static void maybe_finish(kx_pipeline *p)
{
    if (p->in_batch && !p->processing && p->pending == 0 && kx_correlate_pending(p->cor) == 0 &&
        !ev_is_active(&p->done_w))
        ev_idle_start(p->loop, &p->done_w);
}

static void done_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    kx_pipeline *p = w->data;
    ev_idle_stop(loop, w);
    if (!p->in_batch || p->pending || kx_correlate_pending(p->cor))
        return;
    p->in_batch = false;
    kx_correlate_batch_done(p->cor);
    kx_pipeline_done_cb cb = p->done;
    p->done = NULL;
    if (cb)
        cb(p->done_ud);
}

/* ---- alerts ---- */

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
    a->author = r->author;
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

/* The correlator's side of the batch: its alerts, its idle moments and its outage holds. */
static void cor_alert(void *ud, kx_alert *a, const kx_rule *r, bool may_backfill)
{
    kx_pipeline *p = ud;
    if (r)
        describe(p, a, r, may_backfill);
    send_alert(p, a);
}

static void cor_idle(void *ud)
{
    maybe_finish(ud);
}

static void cor_pause(void *ud, bool pause)
{
    kx_pipeline *p = ud;
    if (p->pause_cb)
        p->pause_cb(p->pause_ud, pause);
}

/* ---- per message ---- */

/* ---- per message ---- */

static void on_match(kx_rule *r, void *ud)
{
    kx_pipeline *p = ud;
    kx_metric_inc(KX_M_RULE_MATCHES);
    const char *degraded = kx_ruleset_match_reason(p->rules);
    if (r->generate)
        single_event_alert(p, r, degraded);
    for (size_t i = 0; i < r->ncorrelations; i++)
        kx_correlate_event(p->cor, (kx_rule *)r->correlations[i], r, &p->ev, degraded);
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
    /* run: an event dated far ahead of its arrival (a skewed clock, or a forged timestamp)
     * would push every window of its group forward and hide the real events after it: such
     * a time is replaced by the arrival time, and said so. replay never does: its events'
     * own time is the only clock there. */
    if (p->opts.wall_clock && p->ev.time_from_log &&
        p->ev.time_ms > m->timestamp_ms + KX_MAX_FUTURE_MS) {
        char t[40];
        kx_time_format(p->ev.time_ms, t, sizeof(t));
        kx_log_limited(&p->rl_time, KX_LOG_WARN, "decode",
                       "event time %s is more than %ds ahead of its arrival: using arrival time", t,
                       KX_MAX_FUTURE_MS / 1000);
        kx_metric_inc(KX_M_EVENTS_TIME_CLAMPED);
        p->ev.time_ms = m->timestamp_ms;
    }
    kx_correlate_seen(p->cor, m, p->ev.time_ms);
    if (kx_ruleset_match(p->rules, &p->ev, on_match, p))
        kx_metric_inc(KX_M_EVENTS_MATCHED);
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
    kx_correlate_batch_begin(p->cor);
    for (size_t i = 0; i < n; i++)
        process_one(p, &msgs[i]);
    kx_correlate_batch_end(p->cor);
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
    if (p->in_batch || p->ticks_stopped)
        return;
    p->processing = true;
    if (!kx_correlate_tick(p->cor)) {
        p->processing = false;
        return;
    }
    p->in_batch = true;
    p->tick = true;
    p->done = p->tick_done;
    p->done_ud = p->tick_ud;
    p->processing = false;
    maybe_finish(p);
}

int kx_pipeline_finish(kx_pipeline *p, kx_pipeline_done_cb done, void *ud)
{
    if (batch_begin(p, done, ud))
        return -EBUSY;
    kx_correlate_finish(p->cor);
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
    if (p->in_batch)
        return -EBUSY;
    int rc = kx_correlate_set_rules(p->cor, rules);
    if (rc)
        return rc;
    p->rules = rules;
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
    p->router = router;
    p->opts = *opts;
    if (!p->opts.max_event_bytes)
        p->opts.max_event_bytes = 1 << 20;
    if (!p->opts.evidence_bytes)
        p->opts.evidence_bytes = 16 << 10;
    kx_correlate_opts co = {
        .evidence_bytes = p->opts.evidence_bytes,
        .max_evidence = kx_router_max_evidence(router),
        .lateness_ms = p->opts.lateness_ms,
        .max_groups = p->opts.max_groups,
        .wall_clock = p->opts.wall_clock,
        .wm_quiet_ms = p->opts.wm_quiet_ms,
        .preaggregate = p->opts.preaggregate,
    };
    kx_correlate_host host = {.ud = p, .alert = cor_alert, .idle = cor_idle, .pause = cor_pause};
    int rc = kx_correlator_create(loop, rules, store, &co, &host, &p->cor);
    if (rc) {
        free(p);
        return rc;
    }
    kx_event_init(&p->ev);
    kx_buf_init(&p->scratch, 0);
    ev_idle_init(&p->done_w, done_cb);
    p->done_w.data = p;
    ev_timer_init(&p->tick_w, tick_cb, KX_ABSENCE_TICK_S, KX_ABSENCE_TICK_S);
    p->tick_w.data = p;
    if (p->opts.wall_clock)
        ev_timer_start(loop, &p->tick_w);
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

void kx_pipeline_destroy(kx_pipeline *p)
{
    if (!p)
        return;
    ev_idle_stop(p->loop, &p->done_w);
    ev_timer_stop(p->loop, &p->tick_w);
    kx_correlator_destroy(p->cor);
    for (size_t i = 0; i < p->ndecoders; i++) {
        free(p->decoders[i].topic);
        kx_decoder_destroy(p->decoders[i].dec);
    }
    free(p->decoders);
    kx_buf_fini(&p->scratch);
    kx_event_fini(&p->ev);
    free(p);
}
