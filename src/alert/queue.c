/*
 * One sink's queue (alert_int.h): which of its deliveries to attempt now, and what a failed
 * attempt means for the next one.
 *
 * - Concurrency: at most cfg.concurrency attempts in flight; the rest wait in FIFO order.
 *   A delivery waiting for its retry time holds no slot, so one bad alert does not hold up
 *   the others - except in an `ordered` queue (PagerDuty, Slack), where a retry keeps its
 *   place at the head: a resolve must never overtake its trigger.
 * - Retries: after a retryable failure the next attempt waits backoff * 2^(n-1), capped at
 *   backoff_max, with "equal jitter" (half of it fixed, half random) so that the retries of
 *   many alerts (and of several klaxon processes) after an outage do not arrive together.
 *   A receiver's Retry-After (seconds or HTTP date, parsed by the sink) replaces the
 *   computed delay. A permanent failure (4xx other than 408 and 429) is not retried.
 * - retry_for bounds the time from an alert's arrival in the queue to its last attempt;
 *   then it is dead-lettered (router.c), never dropped.
 * - Circuit breaker: after breaker_failures failed attempts in a row the sink is considered
 *   down: no attempts for a cool-down (backoff, doubling to backoff_max), then one probe;
 *   its success closes the circuit, its failure opens it again. Deliveries keep waiting
 *   meanwhile (their retry_for still runs). Logged when it opens and when it closes.
 *
 * Three lists, so that no step scans the whole queue: `ready` (in order), `waiting` (retries,
 * with the earliest next attempt kept aside) and `inflight`. One ev_timer per queue wakes it
 * at the earliest time something may start. The pump is not re-entered: a sink that reports
 * synchronously (stdout) from inside attempt ends up back in the pump's loop, not deeper in
 * the stack.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alert_int.h"
#include "klaxon/metrics.h"

const double kx__lat_bounds[KX__LAT_NB] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                           0.5,   1,    5,     30,   300, 3600};

/* xorshift64*, seeded once per process: jitter only needs to differ between processes and
 * alerts, not to be unpredictable. */
static uint64_t jitter_state;

static uint64_t rnd(void)
{
    if (!jitter_state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        jitter_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                       ((uint64_t)getpid() << 40) ^ 0x9e3779b97f4a7c15ULL;
    }
    jitter_state ^= jitter_state >> 12;
    jitter_state ^= jitter_state << 25;
    jitter_state ^= jitter_state >> 27;
    return jitter_state * 0x2545f4914f6cdd1dULL;
}

int kx__queue_parse(const kx_yaml_node *cfg, const char *file, const kx__queue_cfg *d,
                    kx__queue_cfg *out, kx_err *err)
{
    const kx_yaml_node *n;
    long long v;
    int rc;
    *out = *d;
    if ((n = kx_yaml_get(cfg, "concurrency"))) {
        if ((rc = kx_yaml_int(n, file, 1, 1000, &v, err)))
            return rc;
        out->concurrency = (unsigned)v;
    }
    if ((n = kx_yaml_get(cfg, "retry_for"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        if (v < 0 || v > 30LL * 86400000)
            return kx_yaml_err(err, file, n, "retry_for must be between 0 and 30d");
        out->retry_for_ms = v;
    }
    if ((n = kx_yaml_get(cfg, "backoff"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        if (v <= 0 || v > 3600000)
            return kx_yaml_err(err, file, n, "backoff must be between 1ms and 1h");
        out->backoff_ms = v;
    }
    if ((n = kx_yaml_get(cfg, "backoff_max"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        if (v <= 0 || v > 86400000)
            return kx_yaml_err(err, file, n, "backoff_max must be between 1ms and 24h");
        out->backoff_max_ms = v;
    }
    if (out->backoff_max_ms < out->backoff_ms)
        out->backoff_max_ms = out->backoff_ms;
    if ((n = kx_yaml_get(cfg, "backfill"))) {
        bool b;
        if ((rc = kx_yaml_bool(n, file, &b, err)))
            return rc;
        out->backfill = b;
    }
    if ((n = kx_yaml_get(cfg, "ordered"))) {
        bool b;
        if ((rc = kx_yaml_bool(n, file, &b, err)))
            return rc;
        out->ordered = b;
    }
    if ((n = kx_yaml_get(cfg, "claim"))) {
        bool b;
        if ((rc = kx_yaml_bool(n, file, &b, err)))
            return rc;
        out->claim = b;
    }
    if ((n = kx_yaml_get(cfg, "breaker_failures"))) {
        if ((rc = kx_yaml_int(n, file, 0, 1000, &v, err)))
            return rc;
        out->breaker_failures = (unsigned)v;
    }
    return 0;
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    kx__queue_pump(t->data);
}

void kx__queue_init(kx__queue *q, kx_router *r, kx__sink *sink, unsigned index,
                    struct ev_loop *loop, const kx__queue_cfg *cfg)
{
    memset(q, 0, sizeof(*q));
    q->router = r;
    q->sink = sink;
    snprintf(q->name, sizeof(q->name), "%s", sink->name);
    q->index = index;
    q->loop = loop;
    q->cfg = *cfg;
    q->cooldown_ms = cfg->backoff_ms;
    q->wait_min = INT64_MAX;
    ev_timer_init(&q->timer, timer_cb, 0., 0.);
    q->timer.data = q;
}

static void l_push_tail(kx__dlist *l, kx__delivery *d)
{
    d->prev = l->tail;
    d->next = NULL;
    if (l->tail)
        l->tail->next = d;
    else
        l->head = d;
    l->tail = d;
    l->n++;
}

static void l_push_head(kx__dlist *l, kx__delivery *d)
{
    d->next = l->head;
    d->prev = NULL;
    if (l->head)
        l->head->prev = d;
    else
        l->tail = d;
    l->head = d;
    l->n++;
}

static void l_remove(kx__dlist *l, kx__delivery *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        l->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        l->tail = d->prev;
    d->prev = d->next = NULL;
    l->n--;
}

void kx__queue_push(kx__queue *q, kx__delivery *d)
{
    d->q = q;
    d->first_ms = d->next_ms = kx_mono_ms();
    l_push_tail(&q->ready, d);
    q->depth++;
    kx__queue_pump(q);
}

/* Ends d (delivered or dead; in no list any more) and hands it to the router, which frees it. */
static void end(kx__queue *q, kx__delivery *d, bool delivered)
{
    q->depth--;
    if (delivered && d->elsewhere) {
        /* Another process sent it (claim.c counts it): neither a delivery nor a latency. */
    } else if (delivered) {
        q->delivered++;
        double sec = (double)(kx_now_ms() - d->send->created_ms) / 1000.0;
        if (sec < 0)
            sec = 0;
        size_t b = 0;
        while (b < KX__LAT_NB && sec > kx__lat_bounds[b])
            b++;
        q->lat_count[b]++;
        q->lat_sum += sec;
    } else {
        q->dead++;
    }
    kx__router_delivery_end(q->router, d, delivered);
}

static bool breaker_open(const kx__queue *q)
{
    return q->cfg.breaker_failures && q->fails >= q->cfg.breaker_failures;
}

/* Moves the waiting deliveries that are due to the ready list (in their order). */
static void take_due(kx__queue *q, int64_t now)
{
    if (q->wait_min > now)
        return;
    int64_t min = INT64_MAX;
    for (kx__delivery *d = q->waiting.head, *next; d; d = next) {
        next = d->next;
        if (d->next_ms <= now) {
            l_remove(&q->waiting, d);
            l_push_tail(&q->ready, d);
        } else if (d->next_ms < min) {
            min = d->next_ms;
        }
    }
    q->wait_min = min;
}

void kx__queue_pump(kx__queue *q)
{
    if (q->pumping || q->closing)
        return;
    q->pumping = true;
    int64_t now = kx_mono_ms();
    take_due(q, now);
    kx__delivery *d;
    while ((d = q->ready.head)) {
        bool open = breaker_open(q) && now < q->open_until;
        /* Past its deadline a delivery still gets its last attempt, unless the circuit is
         * open (then no attempt can be made in time); a failed last attempt is dead-lettered
         * by kx__attempt_done. */
        if (now >= d->first_ms + q->cfg.retry_for_ms && open) {
            d->why = "retry_for spent with the sink down";
            l_remove(&q->ready, d);
            end(q, d, false);
            continue;
        }
        if (q->stopped || open || d->next_ms > now) /* an ordered head waits for its retry */
            break;
        /* Open circuit past its cool-down: one probe at a time. Ordered: one at a time. */
        unsigned limit = breaker_open(q) || q->cfg.ordered ? 1 : q->cfg.concurrency;
        if (q->inflight.n >= limit)
            break;
        l_remove(&q->ready, d);
        l_push_tail(&q->inflight, d);
        d->inflight = true;
        d->attempts++;
        if (kx__claims_apply(q->claims, q))
            kx__claims_attempt(q->claims, q, d);
        else
            q->sink->ops->attempt(q->sink, d);
        now = kx_mono_ms();
        take_due(q, now);
    }
    /* The earliest time something may start or reach its deadline; what is due now waits for a
     * slot, and a report (which pumps) frees one. */
    int64_t wake = q->wait_min;
    if ((d = q->ready.head) && !q->stopped) {
        int64_t t = d->next_ms, deadline = d->first_ms + q->cfg.retry_for_ms;
        if (breaker_open(q) && q->open_until > t)
            t = q->open_until < deadline || deadline < d->next_ms ? q->open_until : deadline;
        if (t > now && t < wake)
            wake = t;
    }
    ev_timer_stop(q->loop, &q->timer);
    if (wake != INT64_MAX && !q->stopped) {
        int64_t in = wake - kx_mono_ms();
        ev_timer_set(&q->timer, in > 0 ? (double)in / 1000.0 : 0.001, 0.);
        ev_timer_start(q->loop, &q->timer);
    }
    q->pumping = false;
}

static int64_t retry_delay(const kx__queue *q, const kx__delivery *d, int64_t retry_after_ms)
{
    if (retry_after_ms >= 0)
        return retry_after_ms;
    int64_t base = q->cfg.backoff_ms;
    for (unsigned i = 1; i < d->attempts && base < q->cfg.backoff_max_ms; i++)
        base *= 2;
    if (base > q->cfg.backoff_max_ms)
        base = q->cfg.backoff_max_ms;
    int64_t half = base / 2;
    return half + (int64_t)(rnd() % (uint64_t)(base - half + 1));
}

void kx__attempt_ok(kx__delivery *d)
{
    kx__outcome o = {.kind = KX__ATTEMPT_OK, .retry_after_ms = -1};
    kx__attempt_done(d, &o);
}

void kx__attempt_done(kx__delivery *d, const kx__outcome *o)
{
    kx__queue *q = d->q;
    d->inflight = false;
    d->last_status = o->status;
    snprintf(d->last_error, sizeof(d->last_error), "%s", o->error ? o->error : "");
    if (q->closing) {
        /* The sink is being destroyed: record a success, leave anything else spooled. */
        if (o->kind == KX__ATTEMPT_OK) {
            l_remove(&q->inflight, d);
            end(q, d, true);
        }
        return;
    }
    l_remove(&q->inflight, d);
    const char *name = q->sink->name;
    if (o->kind == KX__ATTEMPT_OK) {
        /* Delivered by another process (claims): this sink said nothing about itself. */
        if (!d->elsewhere) {
            if (breaker_open(q))
                kx_log(KX_LOG_INFO, KX__ALERT_MODULE,
                       "sink %s: delivering again after %u failed attempts in a row; circuit "
                       "closed",
                       name, q->fails);
            q->fails = 0;
            q->cooldown_ms = q->cfg.backoff_ms;
        }
        end(q, d, true);
    } else if (o->kind == KX__ATTEMPT_DEFER) {
        /* Not an attempt: another process is on it. Bounded by its lease, not by retry_for. */
        d->attempts--;
        d->next_ms = kx_mono_ms() + o->retry_after_ms;
        if (q->cfg.ordered) {
            l_push_head(&q->ready, d);
        } else {
            l_push_tail(&q->waiting, d);
            if (d->next_ms < q->wait_min)
                q->wait_min = d->next_ms;
        }
    } else if (o->kind == KX__ATTEMPT_FAIL) {
        d->why = "refused, not retried";
        end(q, d, false);
    } else {
        int64_t now = kx_mono_ms(), deadline = d->first_ms + q->cfg.retry_for_ms;
        int64_t delay = retry_delay(q, d, o->retry_after_ms);
        q->retried++;
        kx_metric_inc(KX_M_ALERT_RETRIES);
        /* A shared outcome: the breaker heard this request's failure with its first delivery. */
        bool counted = !o->shared;
        if (counted)
            q->fails++;
        if (!counted) {
            /* nothing more for the breaker */
        } else if (q->cfg.breaker_failures && q->fails == q->cfg.breaker_failures) {
            q->open_until = now + q->cooldown_ms;
            kx_log(KX_LOG_WARN, KX__ALERT_MODULE,
                   "sink %s: %u attempts in a row failed (last: %s); circuit open, next probe "
                   "in %lld ms",
                   name, q->fails, d->last_error, (long long)q->cooldown_ms);
        } else if (breaker_open(q)) {
            /* A failed probe: pause longer. */
            q->cooldown_ms = q->cooldown_ms * 2 > q->cfg.backoff_max_ms ? q->cfg.backoff_max_ms
                                                                        : q->cooldown_ms * 2;
            q->open_until = now + q->cooldown_ms;
        }
        if (now + delay > deadline && o->retry_after_ms < 0 && now < deadline)
            delay = deadline - now; /* the last attempt at the deadline */
        d->next_ms = now + delay;
        if (now >= deadline || now + delay > deadline) {
            d->why = now >= deadline ? "retry_for spent" : "Retry-After beyond retry_for";
            end(q, d, false);
        } else {
            kx_log_limited(&q->rl, KX_LOG_WARN, KX__ALERT_MODULE,
                           "sink %s: alert %s attempt %u failed (%s), next in %lld ms", name,
                           d->send->key, d->attempts, d->last_error, (long long)delay);
            if (q->cfg.ordered) {
                l_push_head(&q->ready, d); /* keeps its place: nothing overtakes it */
            } else {
                l_push_tail(&q->waiting, d);
                if (d->next_ms < q->wait_min)
                    q->wait_min = d->next_ms;
            }
        }
    }
    kx__queue_pump(q);
    kx__router_attempt_settled(q->router);
}

void kx__queue_stop(kx__queue *q)
{
    q->stopped = true;
    ev_timer_stop(q->loop, &q->timer);
}

/* Visits every delivery still in the queue (ready, waiting, in flight). */
void kx__queue_each(const kx__queue *q, void (*fn)(void *ud, const kx__delivery *d), void *ud)
{
    const kx__dlist *lists[3] = {&q->ready, &q->waiting, &q->inflight};
    for (int i = 0; i < 3; i++)
        for (const kx__delivery *d = lists[i]->head; d; d = d->next)
            fn(ud, d);
}

void kx__queue_fini(kx__queue *q)
{
    ev_timer_stop(q->loop, &q->timer);
    kx__dlist *lists[3] = {&q->ready, &q->waiting, &q->inflight};
    for (int i = 0; i < 3; i++)
        while (lists[i]->head) {
            kx__delivery *d = lists[i]->head;
            l_remove(lists[i], d);
            free(d);
        }
    q->depth = 0;
}
