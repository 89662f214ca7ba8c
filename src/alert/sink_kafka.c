/*
 * kafka sink: produces each alert to a topic with the dedup_key as message key (so all
 * updates of one alert land in one partition, in order, and a compacted topic keeps the
 * latest). librdkafka does the batching, retries and broker failover on its own threads;
 * the loop only has to serve its events (delivery reports, errors) without blocking.
 *
 * Waking up: rd_kafka_queue_io_event_enable makes librdkafka write a byte to a pipe when
 * its main queue turns non-empty; an ev_io on the pipe calls rd_kafka_poll(rk, 0), which
 * runs the delivery report callback, which finishes the send. The ev_io runs only while
 * messages are outstanding, so an idle sink keeps no loop watcher active (the loop can end).
 *
 * Ownership: the kx__delivery is the message opaque; librdkafka copies the payload
 * (RD_KAFKA_MSG_F_COPY), so the send is only borrowed until its delivery report. A failed
 * report is a retryable attempt (the queue retries it after message.timeout.ms ran out). On
 * destroy the producer is flushed for at most flush_timeout; what is still queued is purged
 * and stays in the spool.
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alert_int.h"
#include "klaxon/secret.h"

typedef struct kafka_sink {
    kx__sink base;
    rd_kafka_t *rk;
    rd_kafka_queue_t *mainq;
    char *topic;
    int pipefd[2];
    ev_io io;
    size_t outstanding;
    long flush_timeout_ms;
    kx_ratelimit rl;
} kafka_sink;

static void kafka_serve(kafka_sink *k)
{
    char b[64];
    while (read(k->pipefd[0], b, sizeof(b)) > 0)
        ;
    rd_kafka_poll(k->rk, 0);
    if (k->outstanding == 0)
        ev_io_stop(k->base.loop, &k->io);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    kafka_serve(w->data);
}

/* Runs inside rd_kafka_poll/flush, on the loop's thread. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    kafka_sink *k = opaque;
    kx__delivery *d = m->_private;
    k->outstanding--;
    if (m->err) {
        kx_log_limited(&k->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                       "sink %s: alert %s not delivered to %s: %s", k->base.name, d->send->key,
                       k->topic, rd_kafka_err2str(m->err));
        kx__outcome o = {
            .kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = rd_kafka_err2str(m->err)};
        kx__attempt_done(d, &o);
        return;
    }
    kx__attempt_ok(d);
}

/* librdkafka's own log lines, through klaxon's logger and its rate limit. log.queue keeps
 * them on the main queue, served by kafka_serve on the loop thread. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    kafka_sink *k = rd_kafka_opaque(rk);
    kx_log_level lvl = level <= 3   ? KX_LOG_ERROR
                       : level == 4 ? KX_LOG_WARN
                       : level <= 6 ? KX_LOG_INFO
                                    : KX_LOG_DEBUG;
    if (k && lvl >= KX_LOG_WARN)
        kx_log_limited(&k->rl, lvl, KX__ALERT_MODULE, "sink %s: kafka: %s: %s", k->base.name, fac,
                       buf);
    else
        kx_log(lvl, KX__ALERT_MODULE, "sink %s: kafka: %s: %s", k ? k->base.name : "?", fac, buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    kafka_sink *k = opaque;
    kx_log_limited(&k->rl, KX_LOG_WARN, KX__ALERT_MODULE, "sink %s: kafka: %s: %s", k->base.name,
                   rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void kafka_attempt(kx__sink *sink, kx__delivery *d)
{
    kafka_sink *k = (kafka_sink *)sink;
    const kx__send *s = d->send;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        k->rk, RD_KAFKA_V_TOPIC(k->topic), RD_KAFKA_V_KEY(s->key, strlen(s->key)),
        RD_KAFKA_V_VALUE((void *)s->payload, s->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    if (e) {
        /* Refused at once (queue full, unknown topic...): no delivery report will come. */
        kx_log_limited(&k->rl, KX_LOG_ERROR, KX__ALERT_MODULE,
                       "sink %s: alert %s not produced to %s: %s", sink->name, s->key, k->topic,
                       rd_kafka_err2str(e));
        kx__outcome o = {
            .kind = KX__ATTEMPT_RETRY, .retry_after_ms = -1, .error = rd_kafka_err2str(e)};
        kx__attempt_done(d, &o);
        return;
    }
    /* librdkafka writes to the pipe only when its queue turns non-empty. Events queued
     * while the watcher was stopped (errors of an idle producer) may have left the queue
     * non-empty with the pipe already drained, so poll once on the next loop iteration. */
    if (k->outstanding++ == 0) {
        ev_io_start(sink->loop, &k->io);
        ev_feed_event(sink->loop, &k->io, EV_READ);
    }
}

static void kafka_destroy(kx__sink *sink)
{
    kafka_sink *k = (kafka_sink *)sink;
    ev_io_stop(sink->loop, &k->io);
    if (k->rk) {
        /* Bounded: shutdown may wait flush_timeout for acknowledgements, never longer. */
        if (k->outstanding)
            rd_kafka_flush(k->rk, (int)k->flush_timeout_ms);
        if (k->outstanding) {
            rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_poll(k->rk, 0);
        }
        if (k->mainq) {
            rd_kafka_queue_io_event_enable(k->mainq, -1, NULL, 0);
            rd_kafka_queue_destroy(k->mainq);
        }
        rd_kafka_destroy(k->rk);
    }
    for (int i = 0; i < 2; i++)
        if (k->pipefd[i] >= 0)
            close(k->pipefd[i]);
    free(k->topic);
    kx__sink_base_fini(sink);
    free(k);
}

static const kx__sink_ops kafka_ops = {
    .type = "kafka",
    .attempt = kafka_attempt,
    .destroy = kafka_destroy,
};

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                    const kx_yaml_node *at, const char *file, kx_err *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        return kx_yaml_err(err, file, at, "%s", errstr);
    return 0;
}

static int kafka_conf(kafka_sink *k, const kx_yaml_node *cfg, const char *file,
                      rd_kafka_conf_t *conf, kx_err *err)
{
    static const char *const keys[] = {"type",          "brokers",    "topic",        "timeout",
                                       "flush_timeout", "properties", KX__QUEUE_KEYS, NULL};
    const kx_yaml_node *n;
    const char *s;
    long long v;
    char num[32];
    int rc;
    if ((rc = kx_yaml_check_keys(cfg, file, keys, err)))
        return rc;
    if (!(n = kx_yaml_get(cfg, "brokers")))
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"brokers\"", k->base.name);
    if ((rc = kx_yaml_str(n, file, &s, err)) ||
        (rc = conf_set(conf, "bootstrap.servers", s, n, file, err)))
        return rc;
    if (!(n = kx_yaml_get(cfg, "topic")))
        return kx_yaml_err(err, file, cfg, "sink \"%s\": missing \"topic\"", k->base.name);
    if ((rc = kx_yaml_str(n, file, &s, err)))
        return rc;
    if (!s[0])
        return kx_yaml_err(err, file, n, "topic must not be empty");
    if (!(k->topic = strdup(s)))
        return -ENOMEM;
    /* message.timeout.ms bounds how long an alert may stay undelivered before its delivery
     * report says so (librdkafka retries within it). */
    long long timeout_ms = 30000;
    if ((n = kx_yaml_get(cfg, "timeout"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &timeout_ms, err)))
            return rc;
        if (timeout_ms <= 0 || timeout_ms > 3600000)
            return kx_yaml_err(err, file, n, "timeout must be between 1ms and 1h");
    }
    snprintf(num, sizeof(num), "%lld", timeout_ms);
    if ((rc = conf_set(conf, "message.timeout.ms", num, cfg, file, err)))
        return rc;
    if ((n = kx_yaml_get(cfg, "flush_timeout"))) {
        if ((rc = kx_yaml_duration_ms(n, file, &v, err)))
            return rc;
        if (v < 0 || v > 600000)
            return kx_yaml_err(err, file, n, "flush_timeout must be between 0 and 10m");
        k->flush_timeout_ms = (long)v;
    }
    if ((rc = conf_set(conf, "log.queue", "true", cfg, file, err)))
        return rc;
    /* Idempotence keeps librdkafka's own retries from duplicating an alert in the topic. */
    if ((rc = conf_set(conf, "enable.idempotence", "true", cfg, file, err)))
        return rc;
    if ((n = kx_yaml_get(cfg, "properties"))) {
        if (n->type != KX_YAML_MAP)
            return kx_yaml_err(err, file, n, "properties: expected a map of librdkafka settings");
        /* Values may be secrets (sasl.password): ${ENV} or NAME_file (klaxon/secret.h). */
        for (size_t i = 0; i < n->n; i++) {
            char *name = NULL, *value = NULL, errstr[512];
            bool secret = false;
            if ((rc = kx_secret_setting(n, i, file, &name, &value, &secret, err)))
                return rc;
            if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
                rc = kx_yaml_err(err, file, n->keys[i], "%s: %s", name,
                                 secret ? "librdkafka refused the value (not shown: a secret)"
                                        : errstr);
            free(name);
            kx_secret_free(value);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int kx__sink_kafka_create(struct ev_loop *loop, const char *name, const kx_yaml_node *cfg,
                          const char *file, kx__sink **out, kx_err *err)
{
    int rc;
    char errstr[512];
    kafka_sink *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->pipefd[0] = k->pipefd[1] = -1;
    k->flush_timeout_ms = 5000;
    ev_io_init(&k->io, io_cb, -1, EV_READ);
    k->io.data = k;
    rd_kafka_conf_t *conf = NULL;
    if ((rc = kx__sink_base_init(&k->base, &kafka_ops, loop, name)))
        goto fail;
    if (!(conf = rd_kafka_conf_new())) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = kafka_conf(k, cfg, file, conf, err)))
        goto fail;
    if (kx__sinks_dry_run) {
        /* Checking only: the settings were validated by rd_kafka_conf_set; no producer. */
        rd_kafka_conf_destroy(conf);
        *out = &k->base;
        return 0;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, k);
    k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!k->rk) {
        rc = kx_yaml_err(err, file, cfg, "sink \"%s\": %s", name, errstr);
        goto fail;
    }
    conf = NULL; /* owned by rk now */
    if (pipe2(k->pipefd, O_NONBLOCK | O_CLOEXEC) < 0) {
        rc = -errno;
        kx_yaml_err(err, file, cfg, "sink \"%s\": pipe: %s", name, strerror(errno));
        goto fail;
    }
    rd_kafka_set_log_queue(k->rk, NULL); /* logs to the main queue: served on the loop */
    k->mainq = rd_kafka_queue_get_main(k->rk);
    rd_kafka_queue_io_event_enable(k->mainq, k->pipefd[1], "1", 1);
    /* Serve what was queued before the pipe was attached (it will never write for that). */
    rd_kafka_poll(k->rk, 0);
    ev_io_set(&k->io, k->pipefd[0], EV_READ);
    *out = &k->base;
    return 0;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    kafka_destroy(&k->base);
    return rc;
}
