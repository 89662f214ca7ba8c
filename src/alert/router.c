/*
 * The router: parses `alerting:` (docs/internals/alert.md), owns the sinks with their queues
 * and the spool, and takes each alert from kx_router_send to the end of its deliveries.
 *
 * One alert's way:
 *   1. rendered once; dropped when its dedup_key was sent recently (this process's cache);
 *   2. appended to the spool (spool.c) with the names of its route's sinks. When the spool is
 *      full or its disk fails, the alert waits in memory, in order, and so does every later
 *      one: the caller's done does not run, its batch does not finish, consumption pauses;
 *   3. one delivery per sink is pushed to that sink's queue (queue.c) at once;
 *   4. done(ud, 0) runs once the alert is durable: after the next group fdatasync (an
 *      ev_prepare, once per loop iteration, so once per batch), or at once without a spool
 *      directory. From then on the caller's Kafka offsets may be stored: delivery no longer
 *      holds the stream;
 *   5. each delivery ends delivered (spool ack) or dead (dead letter, then spool ack); the
 *      last one frees the send.
 *
 * At start the spool is read back and what some sink has not acknowledged is queued again,
 * for those sinks only (an alert routed to a sink that is no longer configured is
 * dead-lettered).
 *
 * Bounded: the spool's size (then back-pressure), the dedup cache, the sends waiting for
 * room (one batch: the caller stops feeding), and each delivery's time (retry_for).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alert_int.h"
#include "klaxon/deadletter.h"
#include "klaxon/metrics.h"

#define DEFAULT_EVIDENCE 5
#define DEFAULT_DEDUP_WINDOW_MS (3600 * 1000LL)
#define DEFAULT_DEDUP_CAPACITY 65536
#define RENDER_MAX (4u << 20) /* an alert larger than this is refused, not sent */
#define MEMORY_SPOOL_BYTES (64ull << 20)
#define SPOOL_RETRY_S 1.0 /* after a failed append or sync */
#define REQUEUE_S 5.0     /* how often requeued dead letters are looked for */
/* An absence's resolve carries its firing alert's dedup_key but is news of its own. */
#define RESOLVED_SALT 0x7265736f6c766564ULL

struct kx_router {
    struct ev_loop *loop;
    kx__sink **sinks;
    kx__queue *queues; /* one per sink, same index */
    size_t nsinks;
    kx__routing *routing; /* NULL when there are no routes: every sink gets every alert */
    uint16_t *all_ix;     /* 0..nsinks-1: the sinks of "no routes" */
    int *taken;           /* scratch: the routes that took an alert */
    kx__flood *flood;
    kx__flood_cfg flood_default; /* alerting.flood */
    kx__claims_cfg claims_cfg;   /* alerting.claims */
    kx__claims *claims;
    kx__teams *teams;
    ev_timer flood_w;
    char *file; /* the config's name, for `klaxon route` */

    size_t max_evidence;
    int64_t dedup_window_ms;
    int64_t backfill_after_ms;
    kx__dedup dedup;

    kx_spool *spool;
    kx_spool_opts spool_opts;
    char *spool_dir;
    bool use_spool;
    char *dead_letter_path; /* NULL: dead letters are only logged */
    char *requeue_dir;      /* DIR/requeue: dead letters sent again (klaxon alerts retry) */
    ev_timer requeue_w;
    uint64_t dead_letter_errors;

    kx_buf scratch; /* render buffer, reused */
    kx_buf line;    /* dead-letter line, reused */
    kx__send *live; /* every send not ended */
    size_t pending;
    kx__send *wait_head, *wait_tail;   /* appended, done not yet run (sync pending) */
    kx__send *block_head, *block_tail; /* not appended yet: spool full or failing */
    ev_prepare sync_w;
    ev_timer retry_w;
    bool draining, closing;
    void (*drain_cb)(void *ud);
    void *drain_ud;
    kx_ratelimit rl;
};

bool kx__sinks_dry_run;
bool kx__sinks_check_files;

static const struct {
    const char *type;
    kx__sink_create_fn create;
    kx__queue_cfg defaults;
} sink_types[] = {
    /* A local write either works or the disk is in trouble: retry slowly. A file's lines
     * wait for one group fdatasync per loop iteration: many in flight. */
    {"stdout", kx__sink_stdout_create, {1, false, true, 6 * 3600000LL, 1000, 60000, 0, false}},
    {"file", kx__sink_file_create, {1000, false, true, 6 * 3600000LL, 1000, 60000, 0, false}},
    /* A pager or chat service: a few requests at once, retried for hours, the circuit
     * opening after 5 failures in a row. */
    {"webhook", kx__sink_webhook_create, {4, false, false, 6 * 3600000LL, 1000, 300000, 5, true}},
    /* In order, one at a time: a resolve never overtakes its trigger, even when the trigger
     * is being retried. */
    {"pagerduty",
     kx__sink_pagerduty_create,
     {1, true, false, 6 * 3600000LL, 1000, 300000, 5, true}},
    {"slack", kx__sink_slack_create, {1, true, false, 6 * 3600000LL, 1000, 300000, 5, true}},
    /* Mail is read, not paged: it takes backfill; one connection at a time. */
    {"email", kx__sink_email_create, {1, false, true, 6 * 3600000LL, 1000, 300000, 5, true}},
    /* The paging sinks above claim each incident in the state store first (claim.c): the
     * people they reach are paged once whichever process sends. Files and topics are read by
     * machines that can tell duplicates apart by dedup_key. */
    /* librdkafka batches and retries within message.timeout.ms; many in flight is normal. */
    {"kafka", kx__sink_kafka_create, {1000, false, true, 6 * 3600000LL, 1000, 300000, 0, false}},
};

/* ---- helpers shared by the sinks ---- */

int kx__sink_base_init(kx__sink *sink, const kx__sink_ops *ops, struct ev_loop *loop,
                       const char *name)
{
    sink->ops = ops;
    sink->loop = loop;
    sink->name = strdup(name);
    return sink->name ? 0 : -ENOMEM;
}

void kx__sink_base_fini(kx__sink *sink)
{
    free(sink->name);
    sink->name = NULL;
}

/* ---- dead letters ---- */

/* One JSON line (klaxon/deadletter.h), made durable (with a spool directory) before the
 * spool forgets the alert. */
static void dead_letter(kx_router *r, const kx__delivery *d, const char *sink, const char *why)
{
    const kx__send *s = d->send;
    kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                   "sink %s: alert %s dead-lettered after %u attempt(s): %s (last: %s)", sink,
                   s->key, d->attempts, why, d->last_error[0] ? d->last_error : "none");
    if (!r->dead_letter_path)
        return;
    int rc = kx_dead_letter_append(r->dead_letter_path, sink, why, d->attempts, d->last_status,
                                   d->last_error, s->key, s->payload, s->len,
                                   r->use_spool && r->spool_dir, &r->line);
    if (rc) {
        r->dead_letter_errors++;
        kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                       "dead letters %s: write failed: %s; alert %s kept only in this log",
                       r->dead_letter_path, strerror(-rc), s->key);
    }
}

/* ---- sends ---- */

static void check_drain(kx_router *r);

static void send_release(kx__send *s)
{
    if (--s->remaining)
        return;
    kx_router *r = s->router;
    if (s->prev)
        s->prev->next = s->next;
    else
        r->live = s->next;
    if (s->next)
        s->next->prev = s->prev;
    r->pending--;
    free(s);
}

static void publish_spool(kx_router *r)
{
    kx_spool_stats st;
    kx_spool_stats_get(r->spool, &st);
    kx_metric_set_spool(st.bytes, st.pending);
}

/* Pushes one delivery per pending position of s to the sinks' queues. */
static void start_deliveries(kx_router *r, kx__send *s, uint32_t pending)
{
    s->remaining++; /* setup token: a synchronous sink cannot end the send halfway */
    for (unsigned i = 0; i < s->nsinks; i++) {
        if (!(pending & (1u << i)))
            continue;
        kx__delivery *d = calloc(1, sizeof(*d));
        if (!d) {
            /* Stays in the spool (durable): a restart delivers it. */
            kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                           "out of memory: alert %s not queued for sink %s", s->key,
                           r->sinks[s->sink_ix[i]]->name);
            continue;
        }
        d->send = s;
        d->pos = i;
        s->remaining++;
        kx__queue_push(&r->queues[s->sink_ix[i]], d);
    }
    send_release(s);
}

void kx__router_delivery_end(kx_router *r, kx__delivery *d, bool delivered)
{
    kx__send *s = d->send;
    const char *sink = r->sinks[s->sink_ix[d->pos]]->name;
    kx__claims_end(r->claims, d->q, d, delivered);
    if (!d->elsewhere)
        kx__teams_ended(r->teams, s->team, s->sink_ix[d->pos], delivered);
    if (delivered) {
        if (!d->elsewhere)
            kx_metric_inc(KX_M_ALERTS_DELIVERED);
    } else {
        kx_metric_inc(KX_M_ALERTS_FAILED);
        dead_letter(r, d, sink, d->why ? d->why : "not delivered");
    }
    if (s->seq) {
        int rc =
            kx_spool_ack(r->spool, s->seq, d->pos, delivered ? KX_SPOOL_DELIVERED : KX_SPOOL_DEAD);
        if (rc && rc != -ENOENT)
            kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                           "spool: ack of alert %s for sink %s not written (%s): a restart "
                           "sends it again",
                           s->key, sink, strerror(-rc));
        publish_spool(r);
    }
    free(d);
    send_release(s);
    if (!r->closing) {
        /* An ack may have made room for alerts waiting for the spool. */
        if (r->block_head && !ev_is_active(&r->retry_w))
            ev_feed_event(r->loop, &r->retry_w, EV_TIMER);
        check_drain(r);
    }
}

/* Appends s to the spool. -ENOSPC and disk errors: s must wait (nothing was written). */
static int spool_append(kx_router *r, kx__send *s)
{
    const char *names[KX_SPOOL_MAX_SINKS];
    for (unsigned i = 0; i < s->nsinks; i++)
        names[i] = r->sinks[s->sink_ix[i]]->name;
    int rc = kx_spool_append(r->spool, s->key, s->created_ms, names, s->nsinks, s->payload, s->len,
                             &s->seq);
    if (!rc)
        publish_spool(r);
    return rc;
}

/* s is in the spool: its deliveries start, and its done runs once that is durable. */
static void spooled(kx_router *r, kx__send *s)
{
    if (kx_spool_durable(r->spool)) {
        s->remaining++; /* the sync token, until done has run */
        s->wait_next = NULL;
        if (r->wait_tail)
            r->wait_tail->wait_next = s;
        else
            r->wait_head = s;
        r->wait_tail = s;
        ev_prepare_start(r->loop, &r->sync_w);
    }
    start_deliveries(r, s, s->nsinks == 32 ? UINT32_MAX : (1u << s->nsinks) - 1);
    if (!kx_spool_durable(r->spool) && s->done) {
        kx_router_done_cb done = s->done;
        s->done = NULL;
        done(s->ud, 0);
    }
}

/* Appends what waits for the spool, in order, until it refuses again. */
static void flush_blocked(kx_router *r)
{
    while (r->block_head) {
        kx__send *s = r->block_head;
        int rc = spool_append(r, s);
        if (rc) {
            if (rc != -ENOSPC)
                kx_metric_inc(KX_M_SPOOL_ERRORS);
            if (!ev_is_active(&r->retry_w)) {
                ev_timer_set(&r->retry_w, SPOOL_RETRY_S, 0.);
                ev_timer_start(r->loop, &r->retry_w);
            }
            return;
        }
        r->block_head = s->wait_next;
        if (!r->block_head)
            r->block_tail = NULL;
        kx_log_limited(&r->rl, KX_LOG_INFO, KX__ALERT_MODULE,
                       "spool: alert %s appended after waiting", s->key);
        spooled(r, s);
        send_release(s); /* the blocked token */
    }
}

static void block(kx_router *r, kx__send *s, int rc)
{
    if (rc == -ENOSPC) {
        kx_metric_inc(KX_M_SPOOL_FULL);
        kx_log_limited(&r->rl, KX_LOG_WARN, KX__ALERT_MODULE,
                       "spool full: alert %s waits for room, consumption pauses meanwhile "
                       "(sinks are behind; see klaxon_spool_bytes)",
                       s->key);
    } else {
        kx_metric_inc(KX_M_SPOOL_ERRORS);
        kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                       "spool: alert %s not written (%s): it waits, retried every %.0f s", s->key,
                       strerror(-rc), SPOOL_RETRY_S);
    }
    s->remaining++; /* the blocked token */
    s->wait_next = NULL;
    if (r->block_tail)
        r->block_tail->wait_next = s;
    else
        r->block_head = s;
    r->block_tail = s;
    if (!ev_is_active(&r->retry_w)) {
        ev_timer_set(&r->retry_w, SPOOL_RETRY_S, 0.);
        ev_timer_start(r->loop, &r->retry_w);
    }
}

static void sync_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    kx_router *r = w->data;
    int rc = kx_spool_sync(r->spool);
    if (rc) {
        kx_metric_inc(KX_M_SPOOL_ERRORS);
        kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                       "spool: sync failed (%s): alerts wait, retried every %.0f s", strerror(-rc),
                       SPOOL_RETRY_S);
        ev_prepare_stop(r->loop, w);
        if (!ev_is_active(&r->retry_w)) {
            ev_timer_set(&r->retry_w, SPOOL_RETRY_S, 0.);
            ev_timer_start(r->loop, &r->retry_w);
        }
        return;
    }
    ev_prepare_stop(r->loop, w);
    /* Only what this sync covered: a done that sends again appends to a fresh list, whose
     * done runs after the next sync. */
    kx__send *head = r->wait_head;
    r->wait_head = r->wait_tail = NULL;
    while (head) {
        kx__send *s = head;
        head = s->wait_next;
        kx_router_done_cb done = s->done;
        s->done = NULL;
        if (done)
            done(s->ud, 0);
        send_release(s); /* the sync token */
    }
    check_drain(r);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kx_router *r = w->data;
    flush_blocked(r);
    if (r->wait_head && !ev_is_active(&r->sync_w))
        ev_prepare_start(r->loop, &r->sync_w);
    check_drain(r);
}

/* The routing view of an alert: its fields routes match on. cat: >= 64 bytes. */
static kx__route_view view_of(const kx_alert *a, char *cat, size_t catlen)
{
    kx__route_view v = {
        .team = a->team ? a->team : "default",
        .severity = kx_alert_severity(a->rule_level),
        .level = a->rule_level ? a->rule_level : "",
        .tenant = a->tenant ? a->tenant : "default",
        .category = kx__alert_category(a, cat, catlen),
        .rule = a->rule_id ? a->rule_id : "",
        .status = a->status ? a->status : "firing",
        .tags = a->tags,
        .ntags = a->ntags,
    };
    return v;
}

static kx__send *send_new(kx_router *r, const char *payload, size_t len)
{
    kx__send *s = malloc(sizeof(*s) + len + 1);
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->router = r;
    s->len = len;
    memcpy(s->payload, payload, len);
    s->payload[len] = '\0';
    s->resolved = kx__alert_json_resolved(s->payload);
    s->remaining = 1; /* the creator's token */
    s->next = r->live;
    if (s->next)
        s->next->prev = s;
    r->live = s;
    r->pending++;
    return s;
}

/* Spools rendered bytes of a for the given sinks, as kx_router_send does after routing. */
static int send_to(kx_router *r, const char *json, size_t len, const kx_alert *a,
                   const uint16_t *sinks, size_t n, int64_t realert_ms, kx_router_done_cb done,
                   void *ud)
{
    kx__send *s = send_new(r, json, len);
    if (!s)
        return -ENOMEM;
    s->realert_ms = realert_ms;
    s->team = kx__teams_index(r->teams, a->team);
    s->done = done;
    s->ud = ud;
    s->created_ms = kx_now_ms();
    kx_alert_dedup_key(a, s->key, sizeof(s->key));
    s->nsinks = (unsigned)n;
    memcpy(s->sink_ix, sinks, n * sizeof(*sinks));
    /* In order: nothing overtakes an alert that waits for the spool. */
    int rc = r->block_head ? -ENOSPC : spool_append(r, s);
    if (rc)
        block(r, s, rc);
    else
        spooled(r, s);
    send_release(s); /* the creator's token */
    return 0;
}

/* Route i's sinks (every sink when there is no routing table). */
static const uint16_t *route_sinks_of(const kx_router *r, uint16_t route, size_t *n)
{
    if (!r->routing) {
        *n = r->nsinks;
        return r->all_ix;
    }
    return kx__routing_sinks_of(r->routing, route, n);
}

static const kx__flood_cfg *flood_cfg_of(const kx_router *r, uint16_t route)
{
    const kx__flood_cfg *c = r->routing ? kx__routing_flood_of(r->routing, route) : NULL;
    return c ? c : &r->flood_default;
}

static const kx__flood_cfg *flood_cfg_cb(void *ud, uint16_t route)
{
    kx_router *r = ud;
    if (r->routing && route >= kx__routing_size(r->routing))
        return NULL;
    return flood_cfg_of(r, route);
}

/* A flood notice, to the sinks of the route that muted the flood (no dedup, no valve). */
static void send_notice(void *ud, uint16_t route, const kx_alert *n)
{
    kx_router *r = ud;
    kx_buf b;
    kx_buf_init(&b, RENDER_MAX);
    if (kx_alert_render(n, n->team ? n->team : "default", &b) == 0) {
        size_t ns;
        const uint16_t *rs = route_sinks_of(r, route, &ns);
        kx_metric_inc(KX_M_ALERTS_RAISED);
        kx__teams_raised(r->teams, kx__teams_index(r->teams, n->team));
        (void)send_to(r, b.data, b.len, n, rs, ns, 0, NULL, NULL);
    }
    kx_buf_fini(&b);
}

static void flood_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kx_router *r = w->data;
    kx__flood_sweep(r->flood, flood_cfg_cb, kx_mono_ms(), send_notice, r);
}

int kx_router_send(kx_router *r, const kx_alert *a, kx_router_done_cb done, void *ud)
{
    /* Render before the dedup check: an alert that cannot be rendered (too large) must not
     * mark its key as sent, or the caller's retry with less evidence would be dropped. */
    const char *team = a->team ? a->team : "default";
    kx_buf_reset(&r->scratch);
    int rc = kx_alert_render(a, team, &r->scratch);
    if (rc) {
        kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE, "alert for rule %s not rendered: %s",
                       a->rule_id ? a->rule_id : "?", strerror(-rc));
        return rc;
    }
    kx_metric_inc(KX_M_ALERTS_RAISED);
    kx__teams_raised(r->teams, kx__teams_index(r->teams, team));

    uint64_t h1, h2;
    kx__alert_dedup_hash(a, &h1, &h2);
    /* An absence's resolve carries its firing alert's dedup_key but is news of its own. */
    if (a->status && !strcmp(a->status, "resolved"))
        h1 ^= RESOLVED_SALT;
    if (r->dedup_window_ms > 0 &&
        kx__dedup_check(&r->dedup, h1, h2, kx_mono_ms(), r->dedup_window_ms)) {
        kx_metric_inc(KX_M_ALERTS_DEDUPED);
        if (done)
            done(ud, 0);
        return 0;
    }
    /* Routes, then each taken route's flood valve: its sinks, a notice instead, or nothing. */
    char cat[64];
    kx__route_view v = view_of(a, cat, sizeof(cat));
    uint16_t sinks[KX_SPOOL_MAX_SINKS];
    size_t n = 0, nt = 0, nstart = 0;
    uint16_t started[KX_SPOOL_MAX_SINKS];
    if (!r->routing) {
        r->taken[nt++] = 0;
    } else {
        uint16_t all[KX_SPOOL_MAX_SINKS];
        (void)kx__routing_eval(r->routing, &v, kx_now_ms(), all, r->taken, &nt);
    }
    int64_t now = kx_mono_ms(), realert = a->realert_ms > 0 ? a->realert_ms : 0;
    for (size_t t = 0; t < nt; t++) {
        uint16_t route = (uint16_t)r->taken[t];
        const kx__flood_cfg *fc = flood_cfg_of(r, route);
        kx__flood_verdict fv = kx__flood_check(r->flood, fc, route, a, now);
        if (fv == KX__FLOOD_START && nstart < KX_SPOOL_MAX_SINKS)
            started[nstart++] = route;
        if (fv != KX__FLOOD_PASS)
            continue;
        int64_t ra = r->routing ? kx__routing_realert_of(r->routing, route) : 0;
        if (ra > realert)
            realert = ra;
        size_t rn;
        const uint16_t *rs = route_sinks_of(r, route, &rn);
        for (size_t i = 0; i < rn; i++) {
            if (a->backfill && !r->queues[rs[i]].cfg.backfill) {
                kx_metric_inc(KX_M_ALERTS_BACKFILL_HELD);
                continue; /* old news: not paged */
            }
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = sinks[k] == rs[i];
            if (!seen && n < KX_SPOOL_MAX_SINKS)
                sinks[n++] = rs[i];
            else if (!seen)
                kx_log_limited(&r->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                               "alert %s: its routes name more than %d sinks; sink %s skipped",
                               a->rule_id ? a->rule_id : "?", KX_SPOOL_MAX_SINKS,
                               r->sinks[rs[i]]->name);
        }
    }
    if (n) {
        rc = send_to(r, r->scratch.data, r->scratch.len, a, sinks, n, realert, done, ud);
        if (rc)
            return rc;
    } else if (done) {
        /* Every route muted it (counted, announced by a notice), or it is backfill and only
         * paging sinks took it (counted in klaxon_alerts_backfill_held_total). */
        done(ud, 0);
    }
    for (size_t i = 0; i < nstart; i++)
        kx__flood_notice(r->flood, flood_cfg_of(r, started[i]), started[i], a, send_notice, r);
    return 0;
}

int kx__router_resend(kx_router *r, const char *sink, const char *key, const char *alert,
                      size_t len)
{
    size_t ix = r->nsinks;
    for (size_t i = 0; i < r->nsinks && ix == r->nsinks; i++)
        if (!strcmp(r->sinks[i]->name, sink))
            ix = i;
    if (ix == r->nsinks)
        return -ENOENT;
    if (strlen(key) != 32)
        return -EINVAL;
    kx__send *s = send_new(r, alert, len);
    if (!s)
        return -ENOMEM;
    s->created_ms = kx_now_ms();
    s->team = kx__teams_index_json(r->teams, alert, len);
    memcpy(s->key, key, 33);
    s->nsinks = 1;
    s->sink_ix[0] = (uint16_t)ix;
    int rc = r->block_head ? -ENOSPC : spool_append(r, s);
    if (!rc)
        spooled(r, s);
    send_release(s); /* the creator's token: frees it when it was not spooled */
    return rc;
}

void kx__router_dead_letter(kx_router *r, const char *sink, const char *why, const char *key,
                            const char *alert, size_t len)
{
    kx__send *s = send_new(r, alert, len);
    if (!s)
        return;
    snprintf(s->key, sizeof(s->key), "%s", key);
    kx__delivery d = {.send = s};
    dead_letter(r, &d, sink, why);
    kx_metric_inc(KX_M_ALERTS_FAILED);
    send_release(s);
}

int kx__router_sync(kx_router *r)
{
    return kx_spool_sync(r->spool);
}

static void requeue_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kx_router *r = w->data;
    kx__requeue_scan(r, r->requeue_dir);
}

/* Spool read-back: the alerts to queue again, collected while the spool opens (it cannot
 * take acks before it is open) and started after. */
typedef struct recovered {
    kx_router *r;
    kx__send *head, *tail;
    size_t n;
} recovered;

static void on_recovered(void *ud, const kx_spool_alert *a)
{
    recovered *rv = ud;
    kx__send *s = send_new(rv->r, a->payload, a->len);
    if (!s) {
        kx_log(KX_LOG_ERROR, KX__ALERT_MODULE,
               "spool: out of memory reading back alert %s: it stays spooled for the next start",
               a->key);
        return;
    }
    s->seq = a->seq;
    s->created_ms = a->created_ms;
    s->team = kx__teams_index_json(rv->r->teams, a->payload, a->len);
    snprintf(s->key, sizeof(s->key), "%s", a->key);
    /* The same alert raised again (its events read again after a crash, before their
     * offsets were committed) is a duplicate of this one: the dedup cache knows it. */
    char half[17];
    memcpy(half, a->key, 16);
    half[16] = '\0';
    uint64_t h1 = strtoull(half, NULL, 16), h2 = strtoull(a->key + 16, NULL, 16);
    if (s->resolved)
        h1 ^= RESOLVED_SALT;
    if (rv->r->dedup_window_ms > 0)
        (void)kx__dedup_check(&rv->r->dedup, h1, h2, kx_mono_ms(), rv->r->dedup_window_ms);
    s->nsinks = (unsigned)a->nsinks;
    /* wait_next links the recovered list; ud carries the pending mask. */
    s->ud = (void *)(uintptr_t)a->pending;
    for (size_t i = 0; i < a->nsinks; i++) {
        s->sink_ix[i] = UINT16_MAX;
        for (size_t k = 0; k < rv->r->nsinks; k++)
            if (!strcmp(rv->r->sinks[k]->name, a->sinks[i]))
                s->sink_ix[i] = (uint16_t)k;
        if (s->sink_ix[i] == UINT16_MAX && (a->pending & (1u << i))) {
            /* Routed to a sink no longer configured: dead-lettered here (the name is known
             * only now), acknowledged once the spool is open. */
            kx__delivery d = {.send = s, .pos = (unsigned)i};
            dead_letter(rv->r, &d, a->sinks[i], "its sink is no longer configured");
        }
    }
    s->wait_next = NULL;
    if (rv->tail)
        rv->tail->wait_next = s;
    else
        rv->head = s;
    rv->tail = s;
    rv->n++;
}

static void start_recovered(kx_router *r, recovered *rv)
{
    for (kx__send *s = rv->head, *next; s; s = next) {
        next = s->wait_next;
        s->wait_next = NULL;
        uint32_t pending = (uint32_t)(uintptr_t)s->ud;
        s->ud = NULL;
        for (unsigned i = 0; i < s->nsinks; i++) {
            if (!(pending & (1u << i)) || s->sink_ix[i] != UINT16_MAX)
                continue;
            /* Its sink is no longer configured: dead-lettered in on_recovered. */
            pending &= ~(1u << i);
            kx_metric_inc(KX_M_ALERTS_FAILED);
            (void)kx_spool_ack(r->spool, s->seq, i, KX_SPOOL_DEAD);
            s->sink_ix[i] = 0; /* for the ack position only; never delivered */
        }
        start_deliveries(r, s, pending);
        send_release(s); /* the creator's token */
    }
    publish_spool(r);
}

size_t kx_router_pending(const kx_router *r)
{
    return r->pending;
}

/* Drained: without a durable spool, nothing left at all; with one, nothing waiting for the
 * spool and no attempt in flight (what is not delivered yet stays spooled). */
static void check_drain(kx_router *r)
{
    if (!r->drain_cb || r->closing)
        return;
    if (kx_spool_durable(r->spool)) {
        if (r->wait_head || r->block_head)
            return;
        for (size_t i = 0; i < r->nsinks; i++)
            if (r->queues[i].inflight.n)
                return;
    } else if (r->pending) {
        return;
    }
    if (kx__claims_settling(r->claims))
        return;
    void (*cb)(void *) = r->drain_cb;
    r->drain_cb = NULL;
    cb(r->drain_ud);
}

void kx__router_attempt_settled(kx_router *r)
{
    if (r->drain_cb)
        check_drain(r);
}

void kx_router_drain(kx_router *r, void (*cb)(void *ud), void *ud)
{
    r->draining = true;
    r->drain_cb = cb;
    r->drain_ud = ud;
    if (kx_spool_durable(r->spool))
        for (size_t i = 0; i < r->nsinks; i++)
            kx__queue_stop(&r->queues[i]);
    for (size_t i = 0; i < r->nsinks; i++)
        if (r->sinks[i]->ops->flush)
            r->sinks[i]->ops->flush(r->sinks[i]);
    check_drain(r);
}

static int metric_family(kx_buf *out, const char *name, const char *type, const char *help)
{
    return kx_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{sink="S",type="T"} value for every sink. */
static int per_sink(const kx_router *r, kx_buf *out, const char *name, const char *type,
                    const char *help, uint64_t (*get)(const kx__queue *q))
{
    int rc = metric_family(out, name, type, help);
    for (size_t i = 0; i < r->nsinks && !rc; i++) {
        rc = kx_buf_printf(out, "%s{sink=\"", name);
        rc = rc ? rc : kx_metrics_put_label(out, r->queues[i].name);
        rc = rc ? rc
                : kx_buf_printf(out, "\",type=\"%s\"} %llu\n", r->sinks[i]->ops->type,
                                (unsigned long long)get(&r->queues[i]));
    }
    return rc;
}

static uint64_t q_delivered(const kx__queue *q)
{
    return q->delivered;
}
static uint64_t q_dead(const kx__queue *q)
{
    return q->dead;
}
static uint64_t q_retried(const kx__queue *q)
{
    return q->retried;
}
static uint64_t q_depth(const kx__queue *q)
{
    return q->depth;
}
static uint64_t q_inflight(const kx__queue *q)
{
    return q->inflight.n;
}
static uint64_t q_open(const kx__queue *q)
{
    return q->cfg.breaker_failures && q->fails >= q->cfg.breaker_failures;
}

int kx_router_render_metrics(const kx_router *r, kx_buf *out)
{
    int rc = per_sink(r, out, "klaxon_sink_delivered_total", "counter",
                      "Alerts the sink acknowledged.", q_delivered);
    rc = rc ? rc
            : per_sink(r, out, "klaxon_sink_dead_letters_total", "counter",
                       "Alerts the sink gave up on (dead letters).", q_dead);
    rc = rc ? rc
            : per_sink(r, out, "klaxon_sink_retries_total", "counter",
                       "Failed attempts that were retried.", q_retried);
    rc = rc ? rc
            : per_sink(r, out, "klaxon_sink_queue_depth", "gauge",
                       "Alerts waiting for or in an attempt at the sink.", q_depth);
    rc = rc ? rc
            : per_sink(r, out, "klaxon_sink_inflight", "gauge", "Attempts in flight.", q_inflight);
    rc = rc ? rc
            : per_sink(r, out, "klaxon_sink_circuit_open", "gauge",
                       "1 while the sink's circuit breaker is open.", q_open);
    rc = rc ? rc
            : metric_family(out, "klaxon_sink_delivery_seconds", "histogram",
                            "Time from an alert's creation to the sink's acknowledgement.");
    for (size_t i = 0; i < r->nsinks && !rc; i++) {
        const kx__queue *q = &r->queues[i];
        uint64_t cum = 0;
        for (size_t b = 0; b <= KX__LAT_NB && !rc; b++) {
            cum += q->lat_count[b];
            rc = kx_buf_puts(out, "klaxon_sink_delivery_seconds_bucket{sink=\"");
            rc = rc ? rc : kx_metrics_put_label(out, q->name);
            if (b < KX__LAT_NB)
                rc = rc ? rc
                        : kx_buf_printf(out, "\",le=\"%g\"} %llu\n", kx__lat_bounds[b],
                                        (unsigned long long)cum);
            else
                rc =
                    rc ? rc : kx_buf_printf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        rc = rc ? rc : kx_buf_puts(out, "klaxon_sink_delivery_seconds_sum{sink=\"");
        rc = rc ? rc : kx_metrics_put_label(out, q->name);
        rc = rc ? rc : kx_buf_printf(out, "\"} %.6f\n", q->lat_sum);
        rc = rc ? rc : kx_buf_puts(out, "klaxon_sink_delivery_seconds_count{sink=\"");
        rc = rc ? rc : kx_metrics_put_label(out, q->name);
        rc = rc ? rc : kx_buf_printf(out, "\"} %llu\n", (unsigned long long)cum);
    }
    rc = rc ? rc
            : metric_family(out, "klaxon_sink_claims_total", "counter",
                            "Incident claims before a page (outcome: taken; held by another "
                            "process, asked again later; delivered elsewhere, not sent; "
                            "unavailable, sent unclaimed).");
    for (size_t i = 0; i < r->nsinks && !rc; i++) {
        const kx__queue *q = &r->queues[i];
        if (!kx__claims_apply(q->claims, q))
            continue;
        const char *what[] = {"taken", "held", "delivered_elsewhere", "unavailable"};
        uint64_t n[] = {q->claim_taken, q->claim_held, q->claim_elsewhere, q->claim_unavailable};
        for (size_t k = 0; k < 4 && !rc; k++) {
            rc = kx_buf_puts(out, "klaxon_sink_claims_total{sink=\"");
            rc = rc ? rc : kx_metrics_put_label(out, q->name);
            rc = rc ? rc
                    : kx_buf_printf(out, "\",outcome=\"%s\"} %llu\n", what[k],
                                    (unsigned long long)n[k]);
        }
    }
    const char **names = rc ? NULL : malloc(r->nsinks * sizeof(*names));
    if (!rc && !names)
        rc = -ENOMEM;
    for (size_t i = 0; !rc && i < r->nsinks; i++)
        names[i] = r->queues[i].name;
    rc = rc ? rc : kx__teams_render(r->teams, names, out);
    free(names);
    return rc;
}

bool kx_router_ready(const kx_router *r, kx_buf *reason)
{
    if (r->block_head) {
        kx_spool_stats st;
        kx_spool_stats_get(r->spool, &st);
        kx_buf_puts(reason, st.full ? "alert spool full: consumption paused"
                                    : "alert spool cannot be written: consumption paused");
        return false;
    }
    return true;
}

bool kx_router_healthy(const kx_router *r, kx_buf *reason)
{
    if (!kx_router_ready(r, reason))
        return false;
    bool ok = true;
    for (size_t i = 0; i < r->nsinks; i++) {
        const kx__queue *q = &r->queues[i];
        if (!q_open(q))
            continue;
        kx_buf_printf(reason, "%ssink %s: circuit open after %u failed attempts", ok ? "" : "; ",
                      q->name, q->fails);
        ok = false;
    }
    return ok;
}

size_t kx_router_sinks(const kx_router *r)
{
    return r->nsinks;
}

size_t kx_router_routes(const kx_router *r)
{
    return r->routing ? kx__routing_size(r->routing) : 0;
}

static const char *jstr(json_t *o, const char *k, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : dflt;
}

int kx_router_explain(const kx_router *r, const char *json, size_t len, int64_t now_ms, kx_buf *out)
{
    json_error_t je;
    json_t *a = json_loadb(json, len, 0, &je);
    if (!json_is_object(a) || !json_is_object(json_object_get(a, "rule"))) {
        json_decref(a);
        return -EINVAL;
    }
    json_t *rule = json_object_get(a, "rule"), *tags = json_object_get(a, "tags");
    const char *tagv[64];
    size_t ntags = 0;
    for (size_t i = 0; i < json_array_size(tags) && ntags < 64; i++)
        if (json_is_string(json_array_get(tags, i)))
            tagv[ntags++] = json_string_value(json_array_get(tags, i));
    kx__route_view v = {
        .team = jstr(a, "team", "default"),
        .severity = jstr(a, "severity", "warning"),
        .level = jstr(rule, "level", ""),
        .tenant = jstr(a, "tenant", "default"),
        .category = jstr(a, "category", ""),
        .rule = jstr(rule, "id", ""),
        .status = jstr(a, "status", "firing"),
        .tags = tagv,
        .ntags = ntags,
    };
    kx_buf_printf(out, "alert %s, rule %s: team %s, severity %s, tenant %s, status %s\n",
                  jstr(a, "dedup_key", "?"), v.rule, v.team, v.severity, v.tenant, v.status);
    uint16_t sinks[KX_SPOOL_MAX_SINKS];
    size_t n;
    if (!r->routing) {
        n = r->nsinks;
        memcpy(sinks, r->all_ix, n * sizeof(*sinks));
        kx_buf_puts(out, "  no routes: every sink\n");
    } else {
        size_t nr = kx__routing_size(r->routing), nt = 0;
        int *taken = calloc(nr ? nr : 1, sizeof(*taken));
        if (!taken) {
            json_decref(a);
            return -ENOMEM;
        }
        n = kx__routing_eval(r->routing, &v, now_ms, sinks, taken, &nt);
        for (size_t i = 0; i < nt; i++) {
            int line, col;
            bool dflt, cont;
            kx__routing_describe(r->routing, (size_t)taken[i], &line, &col, &dflt, &cont);
            kx_buf_printf(out, "  route %d (%s:%d:%d)%s%s\n", taken[i] + 1, r->file, line, col,
                          dflt ? ", the default: no other route took it" : "",
                          cont ? ", continue" : "");
        }
        free(taken);
    }
    kx_buf_puts(out, "  sinks:");
    for (size_t i = 0; i < n; i++)
        kx_buf_printf(out, "%s %s", i ? "," : "", r->sinks[sinks[i]]->name);
    kx_buf_puts(out, "\n");
    json_decref(a);
    return 0;
}

void kx_router_reopen(kx_router *r)
{
    for (size_t i = 0; i < r->nsinks; i++)
        if (r->sinks[i]->ops->reopen)
            r->sinks[i]->ops->reopen(r->sinks[i]);
}

int64_t kx_router_backfill_after_ms(const kx_router *r)
{
    return r->backfill_after_ms;
}

size_t kx_router_max_evidence(const kx_router *r)
{
    return r->max_evidence;
}

uint64_t kx__router_dedup_evictions(const kx_router *r)
{
    return r->dedup.evictions;
}

size_t kx__router_dedup_size(const kx_router *r)
{
    return r->dedup.count;
}

/* ---- config ---- */

static int find_sink(const kx_router *r, const kx_yaml_node *name)
{
    for (size_t i = 0; i < r->nsinks; i++)
        if (kx_yaml_is(name, r->sinks[i]->name))
            return (int)i;
    return -1;
}

static int add_sink(kx_router *r, const kx_yaml_node *name, const kx_yaml_node *cfg,
                    const char *file, kx_err *err)
{
    if (name->type != KX_YAML_SCALAR || name->len == 0)
        return kx_yaml_err(err, file, name, "sink name must be a non-empty string");
    if (find_sink(r, name) >= 0)
        return kx_yaml_err(err, file, name, "duplicate sink \"%s\"", name->str);
    if (cfg->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, cfg, "sink \"%s\": expected a map", name->str);
    const kx_yaml_node *type = kx_yaml_get(cfg, "type");
    if (!type)
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"type\"", name->str);
    kx__sink_create_fn create = NULL;
    const kx__queue_cfg *defaults = NULL;
    for (size_t i = 0; i < KX_ARRAY_LEN(sink_types) && !create; i++)
        if (kx_yaml_is(type, sink_types[i].type)) {
            create = sink_types[i].create;
            defaults = &sink_types[i].defaults;
        }
    if (!create)
        return kx_yaml_err(err, file, type,
                           "unknown sink type \"%s\" (expected stdout, file, webhook, pagerduty, "
                           "slack, email or kafka)",
                           type->type == KX_YAML_SCALAR ? type->str : "");
    if (name->len > 255 || strpbrk(name->str, "\n\r"))
        return kx_yaml_err(err, file, name, "sink name must be at most 255 bytes, one line");
    kx__queue_cfg qc;
    int rc = kx__queue_parse(cfg, file, defaults, &qc, err);
    if (rc)
        return rc;
    kx__sink *sink = NULL;
    if ((rc = create(r->loop, name->str, cfg, file, &sink, err)))
        return rc;
    if (sink->batch && (!kx_yaml_get(cfg, "concurrency") || qc.concurrency > sink->batch))
        qc.concurrency = sink->batch; /* the sink has room for this many, no more */
    /* A batching sink holds an attempt for its period, longer than any lease: its claims
     * would be taken over by every other process. It does not claim. */
    if (sink->batch && qc.claim) {
        if (kx_yaml_get(cfg, "claim"))
            kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
                   "sink %s: a digest does not claim incidents (claim: true ignored)", name->str);
        qc.claim = false;
    }
    kx__queue_init(&r->queues[r->nsinks], r, sink, (unsigned)r->nsinks, r->loop, &qc);
    r->sinks[r->nsinks++] = sink;
    return 0;
}

static int parse_spool(kx_router *r, const kx_yaml_node *n, const char *file, kx_err *err)
{
    static const char *const keys[] = {"dir", "max_bytes", "segment_bytes", NULL};
    const kx_yaml_node *v;
    long long x;
    int rc;
    if (n->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, n, "spool: expected a map with dir (and max_bytes)");
    if ((rc = kx_yaml_check_keys(n, file, keys, err)))
        return rc;
    if (!(v = kx_yaml_get(n, "dir")))
        return kx_yaml_err(err, file, n, "spool: missing \"dir\"");
    const char *dir;
    if ((rc = kx_yaml_str(v, file, &dir, err)))
        return rc;
    if (!dir[0])
        return kx_yaml_err(err, file, v, "spool: dir must not be empty");
    if (!(r->spool_dir = strdup(dir)))
        return -ENOMEM;
    if ((v = kx_yaml_get(n, "max_bytes"))) {
        if ((rc = kx_yaml_int(v, file, 65536, 1LL << 40, &x, err)))
            return rc;
        r->spool_opts.max_bytes = (uint64_t)x;
    }
    if ((v = kx_yaml_get(n, "segment_bytes"))) {
        if ((rc = kx_yaml_int(v, file, 4096, 1LL << 30, &x, err)))
            return rc;
        r->spool_opts.segment_bytes = (uint64_t)x;
    }
    return 0;
}

static int parse_config(kx_router *r, const kx_yaml_node *cfg, const char *file, kx_err *err)
{
    static const char *const keys[] = {
        "evidence",       "dedup_window", "dedup_capacity", "dead_letter", "spool", "flood",
        "backfill_after", "claims",       "sinks",          "routes",      NULL};
    long long v;
    int rc;
    if (cfg->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, cfg, "alerting: expected a map");
    if ((rc = kx_yaml_check_keys(cfg, file, keys, err)))
        return rc;
    const kx_yaml_node *n;
    if ((n = kx_yaml_get(cfg, "evidence"))) {
        if ((rc = kx_yaml_int(n, file, 0, 100, &v, err)))
            return rc;
        r->max_evidence = (size_t)v;
    }
    if ((n = kx_yaml_get(cfg, "dedup_window"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        r->dedup_window_ms = v;
    }
    size_t cap = DEFAULT_DEDUP_CAPACITY;
    if ((n = kx_yaml_get(cfg, "dedup_capacity"))) {
        if ((rc = kx_yaml_int(n, file, 1, 1 << 24, &v, err)))
            return rc;
        cap = (size_t)v;
    }
    if ((rc = kx__dedup_init(&r->dedup, cap)))
        return rc;
    if ((n = kx_yaml_get(cfg, "spool")) && !kx_yaml_is_null(n) &&
        (rc = parse_spool(r, n, file, err)))
        return rc;
    if ((n = kx_yaml_get(cfg, "flood")) && (rc = kx__flood_parse(n, file, &r->flood_default, err)))
        return rc;
    if ((rc = kx__claims_parse(kx_yaml_get(cfg, "claims"), file, &r->claims_cfg, err)))
        return rc;
    if ((n = kx_yaml_get(cfg, "backfill_after"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        if (v < 0)
            return kx_yaml_err(err, file, n, "backfill_after must not be negative");
        r->backfill_after_ms = v;
    }
    if ((n = kx_yaml_get(cfg, "dead_letter")) && !kx_yaml_is_null(n)) {
        const char *path;
        if ((rc = kx_yaml_str(n, file, &path, err)))
            return rc;
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0)
            return kx_yaml_err(err, file, n, "dead_letter: cannot open \"%s\": %s", path,
                               strerror(errno));
        close(fd);
        if (!(r->dead_letter_path = strdup(path)))
            return -ENOMEM;
    }
    const kx_yaml_node *sinks = kx_yaml_get(cfg, "sinks");
    if (sinks && !kx_yaml_is_null(sinks)) {
        if (sinks->type != KX_YAML_MAP)
            return kx_yaml_err(err, file, sinks, "sinks: expected a map of name: {type: ...}");
        if (sinks->n > UINT16_MAX)
            return kx_yaml_err(err, file, sinks, "sinks: too many");
        r->sinks = calloc(sinks->n ? sinks->n : 1, sizeof(*r->sinks));
        r->queues = calloc(sinks->n ? sinks->n : 1, sizeof(*r->queues));
        if (!r->sinks || !r->queues)
            return -ENOMEM;
        for (size_t i = 0; i < sinks->n; i++)
            if ((rc = add_sink(r, sinks->keys[i], sinks->vals[i], file, err)))
                return rc;
    }
    const kx_yaml_node *routes = kx_yaml_get(cfg, "routes");
    if (routes && !kx_yaml_is_null(routes)) {
        if (r->nsinks == 0)
            return kx_yaml_err(err, file, routes, "routes: no sinks are defined");
        if ((rc = kx__routing_parse(routes, r->sinks, r->nsinks, file, &r->routing, err)))
            return rc;
    }
    return 0;
}

/* Opens the spool (a directory when configured and wanted, else memory only), reads back
 * what is undelivered and queues it again. */
static int open_spool(kx_router *r, const char *file, kx_err *err)
{
    kx_spool_opts o = r->spool_opts;
    o.dir = r->use_spool ? r->spool_dir : NULL;
    if (!o.dir && !o.max_bytes)
        o.max_bytes = MEMORY_SPOOL_BYTES;
    if (o.dir) {
        if (mkdir(o.dir, 0700) && errno != EEXIST) {
            kx_err_set(err, o.dir, 0, 0, "spool: cannot create the directory: %s", strerror(errno));
            return -errno;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/requeue", o.dir);
        if (!(r->requeue_dir = strdup(path)))
            return -ENOMEM;
        if (!r->dead_letter_path) {
            snprintf(path, sizeof(path), "%s/dead.jsonl", o.dir);
            if (!(r->dead_letter_path = strdup(path)))
                return -ENOMEM;
        }
    }
    recovered rv = {.r = r};
    int rc = kx_spool_open(&o, on_recovered, &rv, &r->spool, err);
    if (rc) {
        /* Alerts read back so far are freed with the router. */
        for (kx__send *s = rv.head, *next; s; s = next) {
            next = s->wait_next;
            send_release(s);
        }
        if (!err->msg[0])
            kx_err_set(err, file, 0, 0, "spool: %s", strerror(-rc));
        return rc;
    }
    if (rv.n)
        kx_log(KX_LOG_INFO, KX__ALERT_MODULE,
               "spool %s: %zu alert(s) not yet delivered to every sink, queued again", o.dir, rv.n);
    start_recovered(r, &rv);
    return 0;
}

int kx_router_create(struct ev_loop *loop, const kx_yaml_node *cfg, const char *file,
                     const kx_router_opts *opts, kx_router **out, kx_err *err)
{
    int rc = -ENOMEM;
    kx_router *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->loop = loop;
    r->max_evidence = DEFAULT_EVIDENCE;
    r->dedup_window_ms = DEFAULT_DEDUP_WINDOW_MS;
    r->backfill_after_ms = 3600 * 1000LL;
    kx__claims_parse(NULL, file, &r->claims_cfg, err); /* the defaults: cannot fail */
    r->use_spool = !(opts && (opts->no_spool || opts->dry_run));
    if (!(r->file = strdup(file ? file : "")))
        goto fail;
    kx_buf_init(&r->scratch, RENDER_MAX);
    kx_buf_init(&r->line, RENDER_MAX + 4096);
    ev_prepare_init(&r->sync_w, sync_cb);
    r->sync_w.data = r;
    ev_timer_init(&r->retry_w, retry_cb, 0., 0.);
    r->retry_w.data = r;

    kx__sinks_dry_run = opts && opts->dry_run;
    kx__sinks_check_files = opts && opts->dry_run && opts->check_files;
    if (cfg && !kx_yaml_is_null(cfg)) {
        rc = parse_config(r, cfg, file, err);
        kx__sinks_dry_run = kx__sinks_check_files = false;
        if (rc)
            goto fail;
    } else if ((rc = kx__dedup_init(&r->dedup, DEFAULT_DEDUP_CAPACITY))) {
        goto fail;
    }
    if (r->nsinks == 0) {
        /* No sinks configured: everything goes to stdout, so alerts are never silently lost. */
        static const kx_yaml_node none = {.type = KX_YAML_MAP};
        free(r->sinks);
        free(r->queues);
        r->sinks = calloc(1, sizeof(*r->sinks));
        r->queues = calloc(1, sizeof(*r->queues));
        if (!r->sinks || !r->queues) {
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = kx__sink_stdout_create(loop, "stdout", &none, file, &r->sinks[0], err)))
            goto fail;
        kx__queue_init(&r->queues[0], r, r->sinks[0], 0, loop, &sink_types[0].defaults);
        r->nsinks = 1;
    }
    r->all_ix = calloc(r->nsinks, sizeof(*r->all_ix));
    r->taken = calloc(r->routing ? kx__routing_size(r->routing) : 1, sizeof(*r->taken));
    r->flood = kx__flood_create();
    r->claims = kx__claims_create(r, &r->claims_cfg);
    r->teams = kx__teams_create(r->nsinks);
    if (!r->all_ix || !r->taken || !r->flood || !r->claims || !r->teams) {
        rc = -ENOMEM;
        goto fail;
    }
    kx__claims_set_store(r->claims, opts && !opts->dry_run ? opts->store : NULL);
    for (size_t i = 0; i < r->nsinks; i++) {
        r->all_ix[i] = (uint16_t)i;
        r->queues[i].claims = r->claims;
    }
    if (!r->routing && r->nsinks > KX_SPOOL_MAX_SINKS) {
        rc = kx_yaml_err(err, file, cfg,
                         "without routes every alert goes to every sink: at "
                         "most %d sinks then",
                         KX_SPOOL_MAX_SINKS);
        goto fail;
    }
    /* The holder's name first: read-back queues deliveries that claim at once. */
    if (r->use_spool && r->spool_dir)
        kx__claims_set_holder(r->claims, r->spool_dir);
    if ((rc = open_spool(r, file, err)))
        goto fail;
    if (r->requeue_dir && kx_spool_durable(r->spool)) {
        kx__requeue_scan(r, r->requeue_dir);
        /* Unreferenced: the loop may end (tests, replay) with this timer running. */
        ev_timer_init(&r->requeue_w, requeue_cb, REQUEUE_S, REQUEUE_S);
        r->requeue_w.data = r;
        ev_timer_start(loop, &r->requeue_w);
        ev_unref(loop);
    }
    bool any_flood = r->flood_default.on;
    for (size_t i = 0; r->routing && i < kx__routing_size(r->routing); i++) {
        const kx__flood_cfg *fc = kx__routing_flood_of(r->routing, i);
        any_flood |= fc && fc->on;
    }
    if (any_flood && !(opts && opts->dry_run)) {
        /* Closes flood windows, so a flood that calmed down gets its summary. Unreferenced:
         * it does not keep the loop alive. */
        ev_timer_init(&r->flood_w, flood_cb, 1.0, 1.0);
        r->flood_w.data = r;
        ev_timer_start(loop, &r->flood_w);
        ev_unref(loop);
    }
    if (r->use_spool && !r->spool_dir)
        kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
               "alerting.spool is not set: alerts wait for delivery in memory only, and a crash "
               "loses those not delivered yet");
    *out = r;
    return 0;
fail:
    if (rc == -ENOMEM && !err->msg[0])
        kx_err_set(err, file, 0, 0, "out of memory");
    kx_router_destroy(r);
    return rc;
}

typedef struct shutdown_letter {
    kx_router *r;
    const char *sink;
} shutdown_letter;

static void dead_at_shutdown(void *ud, const kx__delivery *d)
{
    shutdown_letter *sl = ud;
    dead_letter(sl->r, d, sl->sink,
                "not delivered before shutdown, and no alerting.spool keeps it");
}

void kx_router_destroy(kx_router *r)
{
    if (!r)
        return;
    r->closing = true;
    r->drain_cb = NULL;
    ev_prepare_stop(r->loop, &r->sync_w);
    ev_timer_stop(r->loop, &r->retry_w);
    /* Sinks first: what they end meanwhile is still recorded (a kafka flush). */
    for (size_t i = 0; i < r->nsinks; i++)
        r->queues[i].closing = true;
    size_t undelivered = 0;
    for (size_t i = 0; i < r->nsinks; i++) {
        r->sinks[i]->ops->destroy(r->sinks[i]);
        undelivered += r->queues[i].depth;
    }
    if (undelivered)
        kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
               r->spool && kx_spool_durable(r->spool)
                   ? "%zu deliveries not made yet: they stay in the spool for the next start"
                   : "%zu deliveries not made: no alerting.spool keeps them (dead letters, if "
                     "set, do)",
               undelivered);
    /* Without a spool directory nothing else keeps them: the dead letters do, if set. */
    if (r->spool && !kx_spool_durable(r->spool))
        for (size_t i = 0; i < r->nsinks; i++) {
            shutdown_letter sl = {r, r->queues[i].name};
            kx__queue_each(&r->queues[i], dead_at_shutdown, &sl);
        }
    kx__claims_destroy(r->claims); /* its answers still out name deliveries freed next */
    r->claims = NULL;
    kx__teams_destroy(r->teams);
    r->teams = NULL;
    for (size_t i = 0; i < r->nsinks; i++)
        kx__queue_fini(&r->queues[i]);
    while (r->live) {
        kx__send *s = r->live;
        r->live = s->next;
        free(s);
    }
    free(r->sinks);
    free(r->queues);
    if (ev_is_active(&r->flood_w)) {
        ev_ref(r->loop);
        ev_timer_stop(r->loop, &r->flood_w);
    }
    kx__flood_destroy(r->flood);
    free(r->all_ix);
    free(r->taken);
    kx__routing_destroy(r->routing);
    free(r->file);
    kx__dedup_fini(&r->dedup);
    kx_spool_close(r->spool);
    free(r->dead_letter_path);
    if (ev_is_active(&r->requeue_w)) {
        ev_ref(r->loop);
        ev_timer_stop(r->loop, &r->requeue_w);
    }
    free(r->requeue_dir);
    free(r->spool_dir);
    kx_buf_fini(&r->scratch);
    kx_buf_fini(&r->line);
    free(r);
}
