/*
 * kafka source: a librdkafka high-level consumer (consumer group) driven by the libev loop.
 *
 * Wake-up: rd_kafka_poll_set_consumer forwards the main queue (errors, logs) into the
 * consumer queue, and rd_kafka_queue_io_event_enable makes librdkafka write one byte to our
 * non-blocking pipe when that queue goes from empty to non-empty. An ev_io on the pipe then
 * takes what is queued with rd_kafka_consume_batch_queue(timeout 0): the loop never blocks in
 * librdkafka and no thread of ours polls. Because the wake-up is edge-triggered (sent only on
 * empty -> non-empty), every path that leaves messages in the queue (a full batch) re-polls
 * through an ev_idle once it can take more. A 1 s ev_timer also polls, so rebalances and
 * max.poll.interval.ms are served even when a topic is silent.
 *
 * Flow control: at most one batch is out. Its rd_kafka_message_t are kept until
 * kx_source_batch_done, which stores each message's offset (+1, rd_kafka_offset_store) and
 * only then destroys them; the auto-committer (enable.auto.commit with
 * enable.auto.offset.store=false) commits what was stored, and stop commits once more.
 * So an offset is committed only after everything its message caused was handed on.
 *
 * Holding: while a batch is out or the source is paused ("held"), the queue is still polled
 * (timer, io wake-up), because librdkafka serves rebalances, errors and its
 * max.poll.interval.ms clock only from inside our polls; a member that stopped polling would
 * stall every rebalance of its group and be thrown out after max.poll.interval.ms. The first
 * poll of a hold pauses the assigned partitions (rd_kafka_pause_partitions), so librdkafka
 * fetches nothing more and drops what it had fetched but we had not taken (the pause is a
 * version barrier: those messages never come out, and the fetch restarts at the last one we
 * took + 1 on resume). A batch out for less than KX_KAFKA_HOLD_QUIET is not polled around
 * at all: at full speed a batch is out nearly all the time, and pausing would throw away
 * librdkafka's prefetch once a second. kx_source_pause pauses at once. The hold ends in
 * batch_done (not paused) or resume (no batch out), which resumes the partitions. Partitions
 * assigned during a hold are paused at once in the rebalance callback, and partitions assigned
 * outside one are resumed there (librdkafka keeps a pause across unassign and assign).
 *
 * A message that still comes out of the queue during a hold (librdkafka gives no guarantee
 * that none does, e.g. a pause that failed) is not delivered and not kept: its partition is
 * paused and rd_kafka_seek_partitions rewinds it to the first such offset, so librdkafka
 * fetches it again after the hold, in order. We chose seeking over holding such messages in
 * a second buffer: memory stays one batch, there is no rule to invent for a full buffer, and
 * a revoked partition needs no clean-up (nothing of it is kept; its new owner reads it).
 * librdkafka 2.0.2's seek also resets the partition's application offset (#3567), so a later
 * pause/resume cannot jump past the rewound position.
 *
 * Rebalance during a hold: offsets of the held batch whose partition was revoked fail to
 * store (__STATE) in batch_done: the new owner reads them again from the last commit
 * (at-least-once). A partition that comes back to us in the same rebalance (EAGER revokes
 * everything first) is assigned from just after the held batch's last message of it, which
 * this member delivers and stores itself, so those messages are not delivered twice.
 *
 * Stop is bounded (KX_KAFKA_STOP_TIMEOUT_MS): the final commit goes out with
 * rd_kafka_commit_queue and the close with rd_kafka_consumer_close_queue, both at once, and
 * their queue is served until rd_kafka_consumer_closed or the deadline. librdkafka cannot be
 * hurried past a commit waiting for a coordinator (session.timeout.ms) or a request in flight
 * (socket.timeout.ms), not even by rd_kafka_destroy, so klaxon defaults both to 10 s (see
 * parse_config).
 *
 * All librdkafka callbacks (rebalance, error, log via log.queue) run on the loop thread from
 * inside rd_kafka_consume_batch_queue, or from kx_source_stop while it closes.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <ev.h>
#include <librdkafka/rdkafka.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "klaxon/secret.h"
#include "source_int.h"

#define KX_KAFKA_BATCH_DEFAULT 500
#define KX_KAFKA_BATCH_MAX 100000
#define KX_KAFKA_GROUP_DEFAULT "klaxon"
/* Poll at least this often so rebalances and max.poll.interval.ms are served on an idle
 * topic or during a hold (the io event only fires when the queue goes non-empty). */
#define KX_KAFKA_POLL_INTERVAL 1.0
/* A batch out for less than this is not polled around, so it pauses nothing: at full speed
 * a batch is out nearly all the time, and pausing drops librdkafka's prefetched messages,
 * which it then fetches again. Rebalances wait at most this much longer. */
#define KX_KAFKA_HOLD_QUIET 1.0
/* kx_source_stop (commit + close) returns within this, whatever the brokers do. */
#define KX_KAFKA_STOP_TIMEOUT_MS 10000
/* Slice of a blocking queue poll at stop, so the deadline and the closed flag are rechecked. */
#define KX_KAFKA_STOP_POLL_MS 100
/* librdkafka statistics interval: /healthz (broker states) and consumer lag. */
#define KX_KAFKA_STATS_MS "5000"
/* /healthz turns red when the group has given us no partition for this long. */
#define KX_KAFKA_UNASSIGNED_S 30.0

typedef struct kx_kafka_source {
    kx_source base;
    struct ev_loop *loop;
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int pipe_rd, pipe_wr;
    ev_io io;
    ev_idle idle;
    ev_timer timer;

    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_topic_partition_list_t *assignment; /* never NULL */

    size_t batch;
    rd_kafka_message_t **rkmsgs; /* the batch out */
    kx_msg *msgs;
    size_t nmsgs;
    rd_kafka_message_t **spill; /* polls during a hold: taken, rewound, destroyed */

    kx_batch_cb cb;
    void *ud;

    bool started;
    bool in_batch;       /* msgs handed to cb, waiting for batch_done */
    bool paused;         /* kx_source_pause in force */
    bool parts_paused;   /* the assignment is paused in librdkafka (a hold's first poll) */
    ev_tstamp out_since; /* when the batch out was delivered */
    bool stopped;
    bool closed;     /* close started: nothing is stored any more */
    bool close_done; /* rd_kafka_consumer_closed() said so */
    kx_ratelimit rl_err;
    kx_ratelimit rl_log;
    /* health: ALL_BROKERS_DOWN seen and no broker UP in the statistics since */
    bool brokers_down;
    ev_tstamp down_since, unassigned_since;
    /* consumer lag per partition, from the last statistics (librdkafka's consumer_lag) */
    struct lag {
        char topic[128];
        int32_t partition;
        int64_t lag;
    } * lags;
    size_t nlags, lags_cap;
} kx_kafka_source;

static void kafka_kick(kx_kafka_source *ks);

static bool kafka_holding(const kx_kafka_source *ks)
{
    return ks->in_batch || ks->paused;
}

/* ---- librdkafka callbacks (loop thread) ---- */

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kx_kafka_source *ks = rd_kafka_opaque(rk);
    kx_log_level lvl = level <= LOG_ERR       ? KX_LOG_ERROR
                       : level == LOG_WARNING ? KX_LOG_WARN
                       : level <= LOG_INFO    ? KX_LOG_INFO
                                              : KX_LOG_DEBUG;

    /* Transport problems repeat for as long as a broker is down: rate-limit them. */
    if (ks && lvl >= KX_LOG_WARN)
        kx_log_limited(&ks->rl_log, lvl, "kafka", "%s: %s", fac, buf);
    else
        kx_log(lvl, "kafka", "%s: %s", fac, buf);
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kx_kafka_source *ks = opaque;

    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof(why));
        kx_log(KX_LOG_ERROR, "kafka", "fatal consumer error: %s: %s", rd_kafka_err2name(orig), why);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && !ks->brokers_down) {
        ks->brokers_down = true;
        ks->down_since = ev_now(ks->loop);
    }
    /* Everything else (transport, all brokers down) is retried by librdkafka. */
    kx_log_limited(&ks->rl_err, KX_LOG_WARN, "kafka", "%s: %s",
                   rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static bool tp_in(const rd_kafka_topic_partition_list_t *l, const char *topic, int32_t part);

/* librdkafka's statistics (every KX_KAFKA_STATS_MS): whether some broker is UP, and each
 * assigned partition's consumer lag. Runs on the loop thread (served while polling). */
static int kafka_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    kx_kafka_source *ks = opaque;
    json_error_t je;
    json_t *st = json_loadb(json, len, 0, &je);
    if (!st)
        return 0;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(st, "brokers"), k, v)
    {
        const char *state = json_string_value(json_object_get(v, "state"));
        if (state && !strcmp(state, "UP"))
            ks->brokers_down = false;
    }
    ks->nlags = 0;
    json_t *t;
    json_object_foreach(json_object_get(st, "topics"), k, t)
    {
        const char *pk;
        json_t *pv;
        json_object_foreach(json_object_get(t, "partitions"), pk, pv)
        {
            json_int_t part = json_integer_value(json_object_get(pv, "partition"));
            json_int_t lag = json_integer_value(json_object_get(pv, "consumer_lag"));
            if (part < 0 || !tp_in(ks->assignment, k, (int32_t)part) ||
                !json_is_integer(json_object_get(pv, "consumer_lag")) || lag < 0)
                continue;
            if (ks->nlags == ks->lags_cap) {
                size_t cap = ks->lags_cap ? ks->lags_cap * 2 : 16;
                void *p = realloc(ks->lags, cap * sizeof(*ks->lags));
                if (!p)
                    break;
                ks->lags = p;
                ks->lags_cap = cap;
            }
            struct lag *l = &ks->lags[ks->nlags++];
            snprintf(l->topic, sizeof(l->topic), "%s", k);
            l->partition = (int32_t)part;
            l->lag = lag;
        }
    }
    json_decref(st);
    return 0; /* librdkafka frees json */
}

static bool kafka_healthy(const kx_source *s, kx_buf *reason)
{
    const kx_kafka_source *ks = (const kx_kafka_source *)s;
    ev_tstamp now = ev_now(ks->loop);
    if (ks->brokers_down) {
        kx_buf_printf(reason, "kafka: no broker reachable for %.0f s", now - ks->down_since);
        return false;
    }
    if (ks->started && !ks->stopped && ks->assignment->cnt == 0 &&
        now - ks->unassigned_since > KX_KAFKA_UNASSIGNED_S) {
        kx_buf_printf(reason, "kafka: no partition assigned for %.0f s",
                      now - ks->unassigned_since);
        return false;
    }
    return true;
}

static int kafka_render_metrics(const kx_source *s, kx_buf *out)
{
    const kx_kafka_source *ks = (const kx_kafka_source *)s;
    int rc = kx_buf_puts(out, "# HELP klaxon_kafka_consumer_lag Messages behind the partition's "
                              "end (librdkafka statistics, every 5 s).\n"
                              "# TYPE klaxon_kafka_consumer_lag gauge\n");
    for (size_t i = 0; i < ks->nlags && !rc; i++) {
        rc = kx_buf_puts(out, "klaxon_kafka_consumer_lag{topic=\"");
        rc = rc ? rc : kx_metrics_put_label(out, ks->lags[i].topic);
        rc = rc ? rc
                : kx_buf_printf(out, "\",partition=\"%d\"} %lld\n", (int)ks->lags[i].partition,
                                (long long)ks->lags[i].lag);
    }
    return rc;
}

static bool tp_in(const rd_kafka_topic_partition_list_t *l, const char *topic, int32_t part)
{
    return rd_kafka_topic_partition_list_find(l, topic, part) != NULL;
}

/*
 * A partition assigned while its previous messages are still in the batch out: start it just
 * after the last of them. This member delivers them and stores their offsets in batch_done
 * (the partition is ours again), so fetching from the last commit would deliver them twice.
 * The next batch of the partition cannot be delivered before that batch is done. Only an
 * INVALID (= "from the commit") start is replaced: an explicit one is librdkafka's or the
 * group's decision.
 */
static void start_after_held(kx_kafka_source *ks, rd_kafka_topic_partition_list_t *parts)
{
    if (!ks->in_batch)
        return;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t last = -1;

        if (p->offset != RD_KAFKA_OFFSET_INVALID)
            continue;
        for (size_t j = 0; j < ks->nmsgs; j++) {
            const kx_msg *m = &ks->msgs[j];
            if (m->partition == p->partition && m->offset > last && strcmp(m->topic, p->topic) == 0)
                last = m->offset;
        }
        if (last >= 0) {
            p->offset = last + 1;
            kx_log(KX_LOG_INFO, "kafka", "%s[%d] comes back while its batch is held: from %lld",
                   p->topic, (int)p->partition, (long long)p->offset);
        }
    }
}

static void kafka_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kx_kafka_source *ks = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t rerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        start_after_held(ks, parts);
        if (coop) {
            error = rd_kafka_incremental_assign(rk, parts);
        } else {
            rerr = rd_kafka_assign(rk, parts);
            rd_kafka_topic_partition_list_destroy(ks->assignment);
            ks->assignment = rd_kafka_topic_partition_list_new(parts->cnt);
        }
        for (int i = 0; i < parts->cnt; i++) {
            const rd_kafka_topic_partition_t *p = &parts->elems[i];
            if (!tp_in(ks->assignment, p->topic, p->partition))
                rd_kafka_topic_partition_list_add(ks->assignment, p->topic, p->partition);
        }
        /* Keep the hold's pause in force on new partitions (resumed with the rest of the
         * assignment when the hold ends). Outside a hold, resume them explicitly: librdkafka
         * keeps a partition's pause across unassign and assign, so one paused by a hold that
         * ended while it was someone else's would come back paused and never be fetched. */
        if (parts->cnt > 0) {
            rd_kafka_resp_err_t perr = ks->parts_paused ? rd_kafka_pause_partitions(rk, parts)
                                                        : rd_kafka_resume_partitions(rk, parts);
            if (perr)
                kx_log(KX_LOG_ERROR, "kafka", "%s: %s", ks->parts_paused ? "pause" : "resume",
                       rd_kafka_err2str(perr));
        }
        ks->brokers_down = false; /* the group coordinator answered */
        kx_log(KX_LOG_INFO, "kafka", "assigned %d partition(s) (%s), now %d%s", parts->cnt,
               coop ? "cooperative" : "eager", ks->assignment->cnt,
               ks->parts_paused ? ", paused until the held batch is done" : "");
        break;

    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        if (coop) {
            error = rd_kafka_incremental_unassign(rk, parts);
            for (int i = 0; i < parts->cnt; i++)
                rd_kafka_topic_partition_list_del(ks->assignment, parts->elems[i].topic,
                                                  parts->elems[i].partition);
        } else {
            rerr = rd_kafka_assign(rk, NULL);
            rd_kafka_topic_partition_list_destroy(ks->assignment);
            ks->assignment = rd_kafka_topic_partition_list_new(0);
        }
        if (ks->assignment->cnt == 0)
            ks->unassigned_since = ks->loop ? ev_now(ks->loop) : 0;
        kx_log(KX_LOG_INFO, "kafka", "revoked %d partition(s)%s, now %d", parts->cnt,
               rd_kafka_assignment_lost(rk) ? " (lost)" : "", ks->assignment->cnt);
        break;

    default:
        kx_log(KX_LOG_ERROR, "kafka", "rebalance error: %s", rd_kafka_err2str(err));
        rerr = rd_kafka_assign(rk, NULL);
        rd_kafka_topic_partition_list_destroy(ks->assignment);
        ks->assignment = rd_kafka_topic_partition_list_new(0);
        break;
    }
    if (error) {
        kx_log(KX_LOG_ERROR, "kafka", "incremental (un)assign: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    if (rerr)
        kx_log(KX_LOG_ERROR, "kafka", "assign: %s", rd_kafka_err2str(rerr));
}

/* ---- holding: partitions paused in librdkafka ---- */

static void parts_pause(kx_kafka_source *ks)
{
    rd_kafka_resp_err_t err;

    if (ks->parts_paused)
        return;
    ks->parts_paused = true;
    if (ks->assignment->cnt == 0)
        return;
    err = rd_kafka_pause_partitions(ks->rk, ks->assignment);
    if (err)
        kx_log(KX_LOG_ERROR, "kafka", "pause: %s", rd_kafka_err2str(err));
}

static void parts_resume(kx_kafka_source *ks)
{
    rd_kafka_resp_err_t err;

    if (!ks->parts_paused)
        return;
    ks->parts_paused = false;
    if (ks->assignment->cnt == 0)
        return;
    err = rd_kafka_resume_partitions(ks->rk, ks->assignment);
    if (err)
        kx_log(KX_LOG_ERROR, "kafka", "resume: %s", rd_kafka_err2str(err));
}

/* The hold is over (no batch out, not paused): fetch again and look at the queue. */
static void kafka_unhold(kx_kafka_source *ks)
{
    if (kafka_holding(ks) || ks->stopped)
        return;
    parts_resume(ks);
    /* Messages may be waiting with no new wake-up coming (edge-triggered): look now. */
    kafka_kick(ks);
}

/* ---- consuming ---- */

static void kafka_deliver(kx_kafka_source *ks)
{
    ks->in_batch = true;
    ks->out_since = ev_now(ks->loop);
    ev_idle_stop(ks->loop, &ks->idle); /* we just polled */
    kx_metric_add(KX_M_EVENTS_CONSUMED, ks->nmsgs);
    ks->cb(ks->ud, ks->msgs, ks->nmsgs);
}

/* Logs a consumer error handed out as a message; true if m is one (then it is destroyed). */
static bool consume_error(kx_kafka_source *ks, rd_kafka_message_t *m)
{
    if (!m->err)
        return false;
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        kx_log_limited(&ks->rl_err, KX_LOG_WARN, "kafka", "consumer error: %s",
                       rd_kafka_message_errstr(m));
    rd_kafka_message_destroy(m);
    return true;
}

/*
 * A poll during a hold: serves rebalances, errors, logs and the max.poll.interval.ms clock.
 * Messages that come out are not delivered: each partition still ours is paused and rewound
 * to its first such offset (see the top of the file); a revoked one is left to its new owner.
 */
static void kafka_poll_held(kx_kafka_source *ks)
{
    rd_kafka_topic_partition_list_t *rewind = NULL;
    ssize_t n;

    if (!ks->parts_paused && !ks->paused && ev_now(ks->loop) - ks->out_since < KX_KAFKA_HOLD_QUIET)
        return; /* a young batch: the timer comes back */
    parts_pause(ks);
    n = rd_kafka_consume_batch_queue(ks->q, 0, ks->spill, ks->batch);
    if (n < 0) {
        kx_log_limited(&ks->rl_err, KX_LOG_ERROR, "kafka", "consume: %s",
                       rd_kafka_err2str(rd_kafka_last_error()));
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = ks->spill[i];
        const char *topic;

        if (consume_error(ks, m))
            continue;
        topic = rd_kafka_topic_name(m->rkt);
        if (tp_in(ks->assignment, topic, m->partition)) {
            /* Rare path (a message despite the pause): a list allocated here is fine. */
            if (!rewind)
                rewind = rd_kafka_topic_partition_list_new(1);
            /* The queue is in order per partition: the first one seen is where to go back. */
            if (!tp_in(rewind, topic, m->partition))
                rd_kafka_topic_partition_list_add(rewind, topic, m->partition)->offset = m->offset;
        }
        rd_kafka_message_destroy(m);
    }
    if (rewind) {
        rd_kafka_error_t *error;

        rd_kafka_pause_partitions(ks->rk, rewind);
        error = rd_kafka_seek_partitions(ks->rk, rewind, 0 /* async */);
        if (error) {
            kx_log(KX_LOG_ERROR, "kafka", "seek: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
        kx_log(KX_LOG_DEBUG, "kafka", "%d partition(s) rewound: messages arrived while held",
               rewind->cnt);
        rd_kafka_topic_partition_list_destroy(rewind);
    }
}

/* Takes what is queued, never blocking. Non-message events (rebalance, errors, logs) are
 * served from inside rd_kafka_consume_batch_queue. */
static void kafka_poll(kx_kafka_source *ks)
{
    ssize_t n;
    size_t k = 0;

    if (!ks->started || ks->stopped)
        return;
    if (kafka_holding(ks)) {
        kafka_poll_held(ks);
        return;
    }
    n = rd_kafka_consume_batch_queue(ks->q, 0, ks->rkmsgs, ks->batch);
    if (n < 0) {
        kx_log_limited(&ks->rl_err, KX_LOG_ERROR, "kafka", "consume: %s",
                       rd_kafka_err2str(rd_kafka_last_error()));
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = ks->rkmsgs[i];

        if (consume_error(ks, m))
            continue;
        ks->rkmsgs[k] = m;
        int64_t ts = rd_kafka_message_timestamp(m, NULL);
        ks->msgs[k] = (kx_msg){
            .payload = m->payload ? m->payload : "",
            .len = m->len,
            .topic = rd_kafka_topic_name(m->rkt),
            .partition = m->partition,
            .offset = m->offset,
            .timestamp_ms = ts >= 0 ? ts : kx_now_ms(),
            .oversize = false,
        };
        k++;
    }
    ks->nmsgs = k;
    if (k > 0)
        kafka_deliver(ks);
    else if ((size_t)n == ks->batch)
        kafka_kick(ks); /* a whole batch of errors: the queue may hold more */
}

static void kafka_kick(kx_kafka_source *ks)
{
    if (ks->started && !ks->stopped && !kafka_holding(ks))
        ev_idle_start(ks->loop, &ks->idle);
}

static void kafka_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    kx_kafka_source *ks = w->data;
    char buf[64];

    (void)loop;
    (void)revents;
    /* Drain first: a wake-up written after this point means new data and must stay. */
    while (read(ks->pipe_rd, buf, sizeof(buf)) > 0)
        ;
    kafka_poll(ks);
}

static void kafka_idle_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    kx_kafka_source *ks = w->data;

    (void)revents;
    ev_idle_stop(loop, w);
    /* Only to take more after a batch; a hold is polled by the timer and the io wake-up. */
    if (!kafka_holding(ks))
        kafka_poll(ks);
}

static void kafka_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    kafka_poll(w->data);
}

/* ---- kx_source ops ---- */

static void kafka_start(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;

    if (ks->started || ks->stopped)
        return;
    ks->started = true;
    ks->unassigned_since = ev_now(ks->loop);
    ev_io_start(ks->loop, &ks->io);
    ev_timer_again(ks->loop, &ks->timer);
    kafka_kick(ks);
}

static void kafka_release_msgs(kx_kafka_source *ks)
{
    for (size_t i = 0; i < ks->nmsgs; i++)
        rd_kafka_message_destroy(ks->rkmsgs[i]);
    ks->nmsgs = 0;
    ks->in_batch = false;
}

static void kafka_batch_done(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;
    uint64_t stored = 0;

    if (!ks->in_batch)
        return;
    if (!ks->closed) {
        for (size_t i = 0; i < ks->nmsgs; i++) {
            rd_kafka_message_t *m = ks->rkmsgs[i];
            /* Stores offset + 1 (the next to read). Fails with __STATE for a partition
             * revoked meanwhile: its new owner re-reads it (at-least-once). */
            rd_kafka_resp_err_t err = rd_kafka_offset_store(m->rkt, m->partition, m->offset);
            if (err)
                kx_log(KX_LOG_DEBUG, "kafka", "offset store %s[%d]@%lld: %s",
                       rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset,
                       rd_kafka_err2str(err));
            else
                stored++;
        }
    }
    ks->base.offsets_stored += stored;
    kx_metric_add(KX_M_OFFSETS_COMMITTED, stored);
    kafka_release_msgs(ks);
    kafka_unhold(ks);
}

static void kafka_pause(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;

    if (ks->paused || ks->stopped)
        return;
    ks->paused = true;
    kx_metric_inc(KX_M_SOURCE_PAUSES);
    ev_idle_stop(ks->loop, &ks->idle);
    /* At once, not lazily as for a batch out: a pause means the pipeline cannot take more
     * for a while (the store is down). */
    parts_pause(ks);
}

static void kafka_resume(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;

    if (!ks->paused || ks->stopped)
        return;
    ks->paused = false;
    kafka_unhold(ks);
}

/* ---- stop: bounded commit and close ---- */

static int64_t ms_left(int64_t deadline)
{
    int64_t left = deadline - kx_mono_ms();
    return left > 0 ? left : 0;
}

/*
 * An event on the stop queue. While closing, the consumer queue is forwarded there, so it
 * carries what a poll would have served: rebalances (the revoke of the close; the event API
 * does not call rebalance_cb, so we do), errors, logs, and messages already fetched, which are
 * dropped undelivered (nothing of them is stored). *commit is set to the final commit's
 * result when it arrives.
 */
static void stop_event(kx_kafka_source *ks, rd_kafka_event_t *ev, rd_kafka_resp_err_t *commit)
{
    const char *fac, *str;
    int level;

    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_OFFSET_COMMIT:
        *commit = rd_kafka_event_error(ev);
        break;
    case RD_KAFKA_EVENT_REBALANCE:
        kafka_rebalance_cb(ks->rk, rd_kafka_event_error(ev),
                           rd_kafka_event_topic_partition_list(ev), ks);
        break;
    case RD_KAFKA_EVENT_ERROR:
        kafka_error_cb(ks->rk, rd_kafka_event_error(ev), rd_kafka_event_error_string(ev), ks);
        break;
    case RD_KAFKA_EVENT_LOG:
        if (rd_kafka_event_log(ev, &fac, &str, &level) == 0)
            kafka_log_cb(ks->rk, level, fac, str);
        break;
    default:
        break;
    }
    rd_kafka_event_destroy(ev);
}

/*
 * Closes the consumer, serving tq (which the close forwards the consumer queue to) until
 * librdkafka says it is closed or deadline passes. rd_kafka_consumer_close would block until
 * librdkafka is done, however long that takes; the queue variant lets us give up. A close
 * that did not finish is cut short by destroy (NO_CONSUMER_CLOSE). *commit receives the
 * result of a commit sent to tq before, if it arrives.
 */
static void kafka_close(kx_kafka_source *ks, rd_kafka_queue_t *tq, int64_t deadline,
                        rd_kafka_resp_err_t *commit)
{
    rd_kafka_error_t *error;

    if (ks->closed)
        return;
    ks->closed = true;
    error = rd_kafka_consumer_close_queue(ks->rk, tq);
    if (error) {
        kx_log(KX_LOG_WARN, "kafka", "consumer close: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        return;
    }
    while (!rd_kafka_consumer_closed(ks->rk) && ms_left(deadline) > 0) {
        int64_t left = ms_left(deadline);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(
            tq, (int)(left < KX_KAFKA_STOP_POLL_MS ? left : KX_KAFKA_STOP_POLL_MS));
        if (ev)
            stop_event(ks, ev, commit);
    }
    ks->close_done = rd_kafka_consumer_closed(ks->rk);
    if (!ks->close_done)
        kx_log(KX_LOG_WARN, "kafka", "consumer close: not done in time, abandoning it");
}

/*
 * The final commit and the close are started together and awaited together, against one
 * deadline. With a group coordinator to talk to, both take milliseconds (the commit of the
 * unassigned partitions that the close itself sends finds nothing new). Without one,
 * librdkafka holds a commit waiting for a coordinator until session.timeout.ms after the
 * close began, and will not finish the close (nor rd_kafka_destroy) before; starting the
 * close at once is what keeps that inside the stop's 10 s (session.timeout.ms defaults to
 * 10 s, see parse_config). Uncommitted offsets are read again by the next owner.
 */
static void kafka_stop(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;
    int64_t t0 = kx_mono_ms();
    rd_kafka_resp_err_t err, commit = RD_KAFKA_RESP_ERR__TIMED_OUT;
    rd_kafka_queue_t *tq;

    if (ks->stopped)
        return;
    ks->stopped = true;
    ev_io_stop(ks->loop, &ks->io);
    ev_idle_stop(ks->loop, &ks->idle);
    ev_timer_stop(ks->loop, &ks->timer);
    /* Blocking, by design: only at shutdown, and bounded. A batch still out is not stored,
     * so its messages are read again by the next consumer of the group (at-least-once).
     * rd_kafka_commit(sync) would wait for the answer for ever: ours comes to tq. */
    tq = rd_kafka_queue_new(ks->rk);
    err = rd_kafka_commit_queue(ks->rk, NULL, tq, NULL, NULL);
    if (err)
        commit = err;
    kafka_close(ks, tq, t0 + KX_KAFKA_STOP_TIMEOUT_MS, &commit);
    /* The answer may still be queued if the close ended first. */
    while (commit == RD_KAFKA_RESP_ERR__TIMED_OUT && ms_left(t0 + KX_KAFKA_STOP_TIMEOUT_MS) > 0) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(tq, 0);
        if (!ev)
            break;
        stop_event(ks, ev, &commit);
    }
    if (commit && commit != RD_KAFKA_RESP_ERR__NO_OFFSET)
        kx_log(KX_LOG_WARN, "kafka", "final commit: %s", rd_kafka_err2str(commit));
    rd_kafka_queue_destroy(tq);
    kx_log(KX_LOG_INFO, "kafka", "consumer stopped in %lld ms, %llu offset(s) stored",
           (long long)(kx_mono_ms() - t0), (unsigned long long)ks->base.offsets_stored);
}

static void kafka_destroy(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;

    ev_io_stop(ks->loop, &ks->io);
    ev_idle_stop(ks->loop, &ks->idle);
    ev_timer_stop(ks->loop, &ks->timer);
    if (ks->rk) {
        if (!ks->closed) {
            rd_kafka_queue_t *tq = rd_kafka_queue_new(ks->rk);
            rd_kafka_resp_err_t ignored;
            kafka_close(ks, tq, kx_mono_ms() + KX_KAFKA_STOP_TIMEOUT_MS, &ignored);
            rd_kafka_queue_destroy(tq);
        }
        /* librdkafka requires every message to be destroyed before the handle. */
        kafka_release_msgs(ks);
        if (ks->q) {
            rd_kafka_queue_io_event_enable(ks->q, -1, NULL, 0);
            rd_kafka_queue_destroy(ks->q);
        }
        /* After an unfinished close, a plain destroy would start a second blocking close. */
        rd_kafka_destroy_flags(ks->rk, ks->close_done ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    }
    if (ks->pipe_rd >= 0)
        close(ks->pipe_rd);
    if (ks->pipe_wr >= 0)
        close(ks->pipe_wr);
    if (ks->topics)
        rd_kafka_topic_partition_list_destroy(ks->topics);
    if (ks->assignment)
        rd_kafka_topic_partition_list_destroy(ks->assignment);
    free(ks->rkmsgs);
    free(ks->msgs);
    free(ks->spill);
    free(ks->lags);
    free(ks);
}

static const kx__source_ops kafka_ops = {
    .start = kafka_start,
    .batch_done = kafka_batch_done,
    .pause = kafka_pause,
    .resume = kafka_resume,
    .stop = kafka_stop,
    .destroy = kafka_destroy,
    .healthy = kafka_healthy,
    .render_metrics = kafka_render_metrics,
};

/* ---- configuration ---- */

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, const char *file,
                    const kx_yaml_node *at, kx_err *err)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return kx_yaml_err(err, file, at, "kafka: %s", errstr);
    return 0;
}

/* brokers: "h1:9092,h2:9092" or a list of "host:port". */
static int parse_brokers(const kx_yaml_node *n, const char *file, kx_buf *out, kx_err *err)
{
    if (n->type == KX_YAML_SCALAR) {
        if (n->len == 0)
            return kx_yaml_err(err, file, n, "kafka.brokers: must not be empty");
        return kx_buf_append(out, n->str, n->len) ? -ENOMEM : 0;
    }
    if (n->type != KX_YAML_SEQ || n->n == 0)
        return kx_yaml_err(err, file, n, "kafka.brokers: expected \"host:port,...\" or a list");
    for (size_t i = 0; i < n->n; i++) {
        const char *s;
        if (kx_yaml_str(n->vals[i], file, &s, err))
            return -EINVAL;
        if ((i > 0 && kx_buf_putc(out, ',')) || kx_buf_puts(out, s))
            return -ENOMEM;
    }
    return 0;
}

/* Properties klaxon sets itself: overriding them would break the commit contract. */
static const char *const reserved_props[] = {
    "enable.auto.offset.store", "group.id",  "bootstrap.servers", "metadata.broker.list",
    "enable.partition.eof",     "log.queue",
};

static int parse_properties(const kx_yaml_node *props, const char *file, rd_kafka_conf_t *conf,
                            kx_err *err)
{
    if (props->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, props, "kafka.properties: expected a map");
    for (size_t i = 0; i < props->n; i++) {
        const kx_yaml_node *k = props->keys[i];
        /* Values may be secrets (sasl.password): ${ENV} or NAME_file (klaxon/secret.h). */
        char *name = NULL, *val = NULL;
        bool secret = false;
        int src = kx_secret_setting(props, i, file, &name, &val, &secret, err);
        if (src)
            return src == -ENOMEM ? kx_yaml_err(err, file, k, "out of memory") : src;
        for (size_t r = 0; r < KX_ARRAY_LEN(reserved_props); r++) {
            if (!strcmp(name, reserved_props[r])) {
                kx_yaml_err(err, file, k,
                            "kafka.properties: \"%s\" is set by klaxon and cannot be overridden",
                            name);
                free(name);
                kx_secret_free(val);
                return -EINVAL;
            }
        }
        char errstr[512];
        bool ok = rd_kafka_conf_set(conf, name, val, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK;
        if (!ok && secret)
            kx_yaml_err(err, file, k,
                        "kafka.properties.%s: librdkafka refused the value (not shown: a secret)",
                        name);
        else if (!ok)
            kx_yaml_err(err, file, k, "kafka: %s", errstr);
        free(name);
        kx_secret_free(val);
        if (!ok)
            return -EINVAL;
    }
    return 0;
}

/* A member whose heartbeats are not well inside its session is expelled by the coordinator at
 * random (librdkafka's default heartbeat, 3 s, equals a 3 s session): refused, not run. */
static int check_heartbeat(rd_kafka_conf_t *conf, const char *file, const kx_yaml_node *at,
                           kx_err *err)
{
    char sess[32], hb[32];
    size_t sl = sizeof(sess), hl = sizeof(hb);

    if (rd_kafka_conf_get(conf, "session.timeout.ms", sess, &sl) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_get(conf, "heartbeat.interval.ms", hb, &hl) != RD_KAFKA_CONF_OK)
        return 0;
    long s = strtol(sess, NULL, 10), h = strtol(hb, NULL, 10);
    if (h >= s)
        return kx_yaml_err(err, file, at,
                           "kafka.properties: heartbeat.interval.ms (%ld) must be below "
                           "session.timeout.ms (%ld); at most a third of it is safe",
                           h, s);
    if (h * 3 > s)
        kx_log(KX_LOG_WARN, "kafka",
               "heartbeat.interval.ms (%ld) is over a third of session.timeout.ms (%ld): the "
               "group may expel this member after a few lost heartbeats",
               h, s);
    return 0;
}

static int parse_config(const kx_yaml_node *cfg, const char *file, rd_kafka_conf_t *conf,
                        size_t *batch, kx_err *err)
{
    const kx_yaml_node *brokers = NULL, *group = NULL, *nbatch = NULL, *props = NULL;
    const char *group_id = KX_KAFKA_GROUP_DEFAULT;
    kx_buf bl;
    int rc;

    if (!cfg || cfg->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, cfg, "kafka: expected a map");
    for (size_t i = 0; i < cfg->n; i++) {
        const kx_yaml_node *k = cfg->keys[i];
        if (kx_yaml_is(k, "brokers"))
            brokers = cfg->vals[i];
        else if (kx_yaml_is(k, "group"))
            group = cfg->vals[i];
        else if (kx_yaml_is(k, "batch"))
            nbatch = cfg->vals[i];
        else if (kx_yaml_is(k, "properties"))
            props = cfg->vals[i];
        else
            return kx_yaml_err(err, file, k, "kafka: unknown key \"%s\"",
                               k->type == KX_YAML_SCALAR ? k->str : "?");
    }
    if (!brokers)
        return kx_yaml_err(err, file, cfg, "kafka: missing key \"brokers\"");

    *batch = KX_KAFKA_BATCH_DEFAULT;
    if (nbatch) {
        long long v;
        if (kx_yaml_int(nbatch, file, 1, KX_KAFKA_BATCH_MAX, &v, err))
            return -EINVAL;
        *batch = (size_t)v;
    }
    if (group &&
        (kx_yaml_str(group, file, &group_id, err) ||
         (group_id[0] == '\0' && kx_yaml_err(err, file, group, "kafka.group: must not be empty"))))
        return -EINVAL;

    kx_buf_init(&bl, 64 * 1024);
    rc = parse_brokers(brokers, file, &bl, err);
    if (rc == -ENOMEM)
        kx_yaml_err(err, file, brokers, "kafka.brokers: too long");
    if (!rc)
        rc = conf_set(conf, "bootstrap.servers", bl.data, file, brokers, err);
    kx_buf_fini(&bl);
    if (rc)
        return -EINVAL;

    /* Our defaults first, so `properties` can override the overridable ones. */
    if (conf_set(conf, "group.id", group_id, file, group ? group : cfg, err) ||
        conf_set(conf, "enable.auto.offset.store", "false", file, cfg, err) ||
        conf_set(conf, "enable.auto.commit", "true", file, cfg, err) ||
        conf_set(conf, "auto.offset.reset", "earliest", file, cfg, err) ||
        /* max.poll.interval.ms keeps librdkafka's 5 min: the source polls every second even
         * while it holds a batch, so only a loop stalled for minutes would exceed it.
         *
         * With the group coordinator gone, librdkafka keeps a commit waiting for it for
         * session.timeout.ms, and a request in flight for socket.timeout.ms; neither can be
         * cut short, not even by rd_kafka_destroy. Kafka's former defaults (10 s, instead of
         * 45 s and 60 s) keep kx_source_stop within its 10 s. A dead member is also noticed
         * by the group after 10 s; heartbeats come from librdkafka's own thread, so a busy
         * loop does not miss them. */
        conf_set(conf, "session.timeout.ms", "10000", file, cfg, err) ||
        conf_set(conf, "socket.timeout.ms", "10000", file, cfg, err) ||
        conf_set(conf, "enable.partition.eof", "false", file, cfg, err) ||
        /* Statistics: broker states for /healthz and consumer lag for /metrics. */
        conf_set(conf, "statistics.interval.ms", KX_KAFKA_STATS_MS, file, cfg, err) ||
        conf_set(conf, "log.queue", "true", file, cfg, err))
        return -EINVAL;
    if (props && parse_properties(props, file, conf, err))
        return -EINVAL;
    return check_heartbeat(conf, file, props ? props : cfg, err);
}

int kx_kafka_config_check(const kx_yaml_node *cfg, const char *file, kx_err *err)
{
    size_t batch;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return kx_err_set(err, file, 0, 0, "kafka: out of memory");
    int rc = parse_config(cfg, file, conf, &batch, err);
    rd_kafka_conf_destroy(conf);
    return rc ? -EINVAL : 0;
}

int kx_kafka_source_create(struct ev_loop *loop, const kx_yaml_node *cfg, const char *file,
                           const char *const *topics, size_t ntopics, kx_batch_cb cb, void *ud,
                           kx_source **out, kx_err *err)
{
    kx_kafka_source *ks;
    rd_kafka_conf_t *conf;
    rd_kafka_resp_err_t rerr;
    char errstr[512];
    int fds[2];
    size_t batch = KX_KAFKA_BATCH_DEFAULT;

    *out = NULL;
    if (!loop || !cb)
        return kx_err_set(err, file, 0, 0, "kafka: missing loop or callback");
    if (ntopics == 0)
        return kx_yaml_err(err, file, cfg, "kafka: no topics to subscribe to");

    conf = rd_kafka_conf_new();
    if (parse_config(cfg, file, conf, &batch, err)) {
        rd_kafka_conf_destroy(conf);
        return -EINVAL;
    }

    ks = calloc(1, sizeof(*ks));
    if (!ks) {
        rd_kafka_conf_destroy(conf);
        return kx_err_set(err, file, 0, 0, "kafka: out of memory");
    }
    ks->base.ops = &kafka_ops;
    ks->loop = loop;
    ks->pipe_rd = ks->pipe_wr = -1;
    ks->batch = batch;
    ks->cb = cb;
    ks->ud = ud;
    ks->rl_err.burst = 5;
    ks->rl_log.burst = 10;
    ev_idle_init(&ks->idle, kafka_idle_cb);
    ks->idle.data = ks;
    ev_timer_init(&ks->timer, kafka_timer_cb, 0., KX_KAFKA_POLL_INTERVAL);
    ks->timer.data = ks;

    ks->rkmsgs = calloc(batch, sizeof(*ks->rkmsgs));
    ks->msgs = calloc(batch, sizeof(*ks->msgs));
    ks->spill = calloc(batch, sizeof(*ks->spill));
    ks->assignment = rd_kafka_topic_partition_list_new(0);
    ks->topics = rd_kafka_topic_partition_list_new((int)ntopics);
    if (!ks->rkmsgs || !ks->msgs || !ks->spill || !ks->assignment || !ks->topics) {
        rd_kafka_conf_destroy(conf);
        kx_err_set(err, file, 0, 0, "kafka: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(ks->topics, topics[i], RD_KAFKA_PARTITION_UA);

    rd_kafka_conf_set_opaque(conf, ks);
    rd_kafka_conf_set_rebalance_cb(conf, kafka_rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_stats_cb(conf, kafka_stats_cb);

    /* rd_kafka_new takes conf only on success. */
    ks->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!ks->rk) {
        rd_kafka_conf_destroy(conf);
        kx_yaml_err(err, file, cfg, "kafka: %s", errstr);
        goto fail;
    }
    /* Logs go to the main queue, the main queue to the consumer queue: every callback
     * then runs on the loop thread while we poll. */
    rd_kafka_set_log_queue(ks->rk, NULL);
    rd_kafka_poll_set_consumer(ks->rk);
    ks->q = rd_kafka_queue_get_consumer(ks->rk);

    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        kx_err_set(err, file, 0, 0, "kafka: pipe: %s", strerror(errno));
        goto fail;
    }
    ks->pipe_rd = fds[0];
    ks->pipe_wr = fds[1];
    rd_kafka_queue_io_event_enable(ks->q, ks->pipe_wr, "1", 1);
    ev_io_init(&ks->io, kafka_io_cb, ks->pipe_rd, EV_READ);
    ks->io.data = ks;

    rerr = rd_kafka_subscribe(ks->rk, ks->topics);
    if (rerr) {
        kx_yaml_err(err, file, cfg, "kafka: subscribe: %s", rd_kafka_err2str(rerr));
        goto fail;
    }
    *out = &ks->base;
    return 0;

fail:
    kafka_destroy(&ks->base);
    return -EINVAL;
}
