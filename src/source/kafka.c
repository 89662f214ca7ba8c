/*
 * kafka source: a librdkafka high-level consumer (consumer group) driven by the libev loop.
 *
 * Wake-up: rd_kafka_poll_set_consumer forwards the main queue (errors, logs) into the
 * consumer queue, and rd_kafka_queue_io_event_enable makes librdkafka write one byte to our
 * non-blocking pipe when that queue goes from empty to non-empty. An ev_io on the pipe then
 * takes what is queued with rd_kafka_consume_batch_queue(timeout 0): the loop never blocks in
 * librdkafka and no thread of ours polls. Because the wake-up is edge-triggered (sent only on
 * empty -> non-empty), every path that leaves messages in the queue (a full batch, a batch
 * still out) re-polls through an ev_idle once it can take more. A slow ev_timer also polls,
 * so rebalances and max.poll.interval.ms are served even when a topic is silent.
 *
 * Flow control: at most one batch is out. Its rd_kafka_message_t are kept until
 * kx_source_batch_done, which stores each message's offset (+1, rd_kafka_offset_store) and
 * only then destroys them; the auto-committer (enable.auto.commit with
 * enable.auto.offset.store=false) commits what was stored, and stop commits synchronously.
 * So an offset is committed only after everything its message caused was handed on.
 *
 * Pause/resume act on the current assignment (kept here from the rebalance callback, both
 * EAGER and COOPERATIVE protocols). librdkafka drops already-fetched messages of a paused
 * partition and refetches them on resume; any that still come out of the queue while paused
 * are held (not delivered) until resume.
 *
 * All librdkafka callbacks (rebalance, error, log via log.queue) run on the loop thread from
 * inside rd_kafka_consume_batch_queue / rd_kafka_consumer_close.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <ev.h>
#include <librdkafka/rdkafka.h>

#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "source_int.h"

#define KX_KAFKA_BATCH_DEFAULT 500
#define KX_KAFKA_BATCH_MAX 100000
#define KX_KAFKA_GROUP_DEFAULT "klaxon"
/* Poll at least this often so rebalances and max.poll.interval.ms are served on an idle
 * topic (the io event only fires when messages or events arrive). */
#define KX_KAFKA_POLL_INTERVAL 1.0

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
    rd_kafka_message_t **rkmsgs;
    kx_msg *msgs;
    size_t nmsgs; /* consumed and not yet done (delivered or held) */
    bool more;    /* the last poll filled a whole batch: the queue may hold more */

    kx_batch_cb cb;
    void *ud;

    bool started;
    bool in_batch; /* msgs handed to cb, waiting for batch_done */
    bool paused;
    bool stopped;
    bool closed; /* rd_kafka_consumer_close done */
    kx_ratelimit rl_err;
    kx_ratelimit rl_log;
} kx_kafka_source;

static void kafka_kick(kx_kafka_source *ks);

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
    /* Everything else (transport, all brokers down) is retried by librdkafka. */
    kx_log_limited(&ks->rl_err, KX_LOG_WARN, "kafka", "%s: %s",
                   rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static bool tp_in(const rd_kafka_topic_partition_list_t *l, const char *topic, int32_t part)
{
    return rd_kafka_topic_partition_list_find(l, topic, part) != NULL;
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
        /* New partitions arrive unpaused; keep the source's pause in force. */
        if (ks->paused)
            rd_kafka_pause_partitions(rk, parts);
        kx_log(KX_LOG_INFO, "kafka", "assigned %d partition(s) (%s), now %d", parts->cnt,
               coop ? "cooperative" : "eager", ks->assignment->cnt);
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

/* ---- consuming ---- */

static void kafka_deliver(kx_kafka_source *ks)
{
    ks->in_batch = true;
    kx_metric_add(KX_M_EVENTS_CONSUMED, ks->nmsgs);
    ks->cb(ks->ud, ks->msgs, ks->nmsgs);
}

/* Takes what is queued, never blocking. Non-message events (rebalance, errors, logs) are
 * served from inside rd_kafka_consume_batch_queue. */
static void kafka_poll(kx_kafka_source *ks)
{
    ssize_t n;
    size_t k = 0;

    if (!ks->started || ks->stopped || ks->nmsgs > 0)
        return;
    n = rd_kafka_consume_batch_queue(ks->q, 0, ks->rkmsgs, ks->batch);
    if (n < 0) {
        kx_log_limited(&ks->rl_err, KX_LOG_ERROR, "kafka", "consume: %s",
                       rd_kafka_err2str(rd_kafka_last_error()));
        return;
    }
    ks->more = (size_t)n == ks->batch;
    for (ssize_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = ks->rkmsgs[i];

        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kx_log_limited(&ks->rl_err, KX_LOG_WARN, "kafka", "consumer error: %s",
                               rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
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
    if (k > 0 && !ks->paused)
        kafka_deliver(ks);
    else if (k == 0 && ks->more)
        kafka_kick(ks);
}

static void kafka_kick(kx_kafka_source *ks)
{
    if (ks->started && !ks->stopped && ks->nmsgs == 0)
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
    (void)revents;
    ev_idle_stop(loop, w);
    kafka_poll(w->data);
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
    /* Messages may be waiting with no new wake-up coming (edge-triggered): look now. */
    if (!ks->paused)
        kafka_kick(ks);
}

static void kafka_pause(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;
    rd_kafka_resp_err_t err;

    if (ks->paused || ks->stopped)
        return;
    ks->paused = true;
    kx_metric_inc(KX_M_SOURCE_PAUSES);
    ev_idle_stop(ks->loop, &ks->idle);
    if (ks->assignment->cnt > 0) {
        err = rd_kafka_pause_partitions(ks->rk, ks->assignment);
        if (err)
            kx_log(KX_LOG_ERROR, "kafka", "pause: %s", rd_kafka_err2str(err));
    }
}

static void kafka_resume(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;
    rd_kafka_resp_err_t err;

    if (!ks->paused || ks->stopped)
        return;
    ks->paused = false;
    if (ks->assignment->cnt > 0) {
        err = rd_kafka_resume_partitions(ks->rk, ks->assignment);
        if (err)
            kx_log(KX_LOG_ERROR, "kafka", "resume: %s", rd_kafka_err2str(err));
    }
    if (ks->nmsgs > 0 && !ks->in_batch)
        kafka_deliver(ks); /* held while paused */
    else
        kafka_kick(ks);
}

static void kafka_close(kx_kafka_source *ks)
{
    rd_kafka_resp_err_t err;

    if (ks->closed)
        return;
    ks->closed = true;
    err = rd_kafka_consumer_close(ks->rk);
    if (err)
        kx_log(KX_LOG_WARN, "kafka", "consumer close: %s", rd_kafka_err2str(err));
}

static void kafka_stop(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;
    rd_kafka_resp_err_t err;

    if (ks->stopped)
        return;
    ks->stopped = true;
    ev_io_stop(ks->loop, &ks->io);
    ev_idle_stop(ks->loop, &ks->idle);
    ev_timer_stop(ks->loop, &ks->timer);
    /* Blocking, by design: only at shutdown. A batch still out is not stored, so its
     * messages are read again by the next consumer of the group (at-least-once). */
    err = rd_kafka_commit(ks->rk, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        kx_log(KX_LOG_WARN, "kafka", "final commit: %s", rd_kafka_err2str(err));
    kafka_close(ks);
    kx_log(KX_LOG_INFO, "kafka", "consumer closed, %llu offset(s) stored",
           (unsigned long long)ks->base.offsets_stored);
}

static void kafka_destroy(kx_source *s)
{
    kx_kafka_source *ks = (kx_kafka_source *)s;

    ev_io_stop(ks->loop, &ks->io);
    ev_idle_stop(ks->loop, &ks->idle);
    ev_timer_stop(ks->loop, &ks->timer);
    if (ks->rk) {
        kafka_close(ks);
        /* librdkafka requires every message to be destroyed before the handle. */
        kafka_release_msgs(ks);
        if (ks->q) {
            rd_kafka_queue_io_event_enable(ks->q, -1, NULL, 0);
            rd_kafka_queue_destroy(ks->q);
        }
        rd_kafka_destroy(ks->rk);
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
    free(ks);
}

static const kx__source_ops kafka_ops = {
    .start = kafka_start,
    .batch_done = kafka_batch_done,
    .pause = kafka_pause,
    .resume = kafka_resume,
    .stop = kafka_stop,
    .destroy = kafka_destroy,
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
        const char *v;

        for (size_t r = 0; r < KX_ARRAY_LEN(reserved_props); r++) {
            if (kx_yaml_is(k, reserved_props[r]))
                return kx_yaml_err(err, file, k,
                                   "kafka.properties: \"%s\" is set by klaxon and cannot be "
                                   "overridden",
                                   k->str);
        }
        if (props->vals[i]->type != KX_YAML_SCALAR)
            return kx_yaml_err(err, file, props->vals[i],
                               "kafka.properties.%s: expected a scalar value", k->str);
        v = props->vals[i]->str;
        if (conf_set(conf, k->str, v, file, k, err))
            return -EINVAL;
    }
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
        /* The pipeline holds a batch (not polling) through a Redis outage or webhook
         * retries; the 5 min default would rebalance the member away during a longer
         * outage. Heartbeats go on in librdkafka's thread, so a dead process is still
         * noticed after session.timeout.ms. */
        conf_set(conf, "max.poll.interval.ms", "3600000", file, cfg, err) ||
        conf_set(conf, "enable.partition.eof", "false", file, cfg, err) ||
        conf_set(conf, "log.queue", "true", file, cfg, err))
        return -EINVAL;
    if (props && parse_properties(props, file, conf, err))
        return -EINVAL;
    return 0;
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
    ks->assignment = rd_kafka_topic_partition_list_new(0);
    ks->topics = rd_kafka_topic_partition_list_new((int)ntopics);
    if (!ks->rkmsgs || !ks->msgs || !ks->assignment || !ks->topics) {
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
