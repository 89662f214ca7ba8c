/*
 * bench-consume: the Kafka baselines of `make bench`.
 *
 *   bench-consume check  -b BOOTSTRAP -n N TOPIC...
 *       Sums (high - low watermark) over every partition of the topics and exits 0 only if
 *       it equals N: the mock broker drops the oldest message sets of a partition past
 *       ~5 MiB, so this proves nothing was dropped before anything is measured.
 *   bench-consume raw    -b BOOTSTRAP -g GROUP -n N -c CONFIG
 *   bench-consume decode -b BOOTSTRAP -g GROUP -n N -c CONFIG
 *       A consumer group member (a fresh group: reads from the beginning) subscribed to the
 *       config's input topics, taking batches of the config's kafka.batch with
 *       rd_kafka_consume_batch_queue, as the kafka source does, with the source's fixed
 *       settings and the config's kafka.properties. `raw` does nothing with the
 *       messages; `decode` runs kx_decode on each one with the decoder klaxon would use for
 *       its topic. Time runs from the first batch received to the N-th message handled.
 *
 * Prints one line "events=N seconds=S rate=R cpu_us_per_event=C malformed=M" on stdout (C: CPU
 * time of this process, all librdkafka threads included, over the same interval, per event). Exit 0
 * when exactly N messages were consumed (and, for decode, none was malformed).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "klaxon/config.h"
#include "klaxon/decode.h"
#include "klaxon/event.h"
#include "klaxon/log.h"
#include "klaxon/tz.h"
#include "klaxon/yaml.h"

#define MAX_TOPICS 16

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "bench-consume: %s=%s: %s\n", k, v, errstr);
        return -EINVAL;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-consume check -b BOOTSTRAP -n N TOPIC...\n"
                    "       bench-consume raw|decode -b BOOTSTRAP -g GROUP -n N -c CONFIG\n");
}

static int check(const char *brokers, long long n, char **topics, int ntopics)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", brokers)) {
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench-consume: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    long long total = 0;
    int rc = 0;
    for (int t = 0; t < ntopics && !rc; t++) {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[t], NULL);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
        if (!err && (md->topic_cnt != 1 || md->topics[0].err))
            err = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        if (err) {
            fprintf(stderr, "bench-consume: metadata for %s: %s\n", topics[t],
                    rd_kafka_err2str(err));
            rc = 1;
        }
        long long topic_total = 0;
        for (int p = 0; !rc && p < md->topics[0].partition_cnt; p++) {
            int64_t lo, hi;
            err = rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, 10000);
            if (err) {
                fprintf(stderr, "bench-consume: watermarks %s[%d]: %s\n", topics[t], p,
                        rd_kafka_err2str(err));
                rc = 1;
                break;
            }
            if (lo != 0)
                fprintf(stderr, "bench-consume: %s[%d] starts at %lld: the broker dropped data\n",
                        topics[t], p, (long long)lo);
            topic_total += hi - lo;
        }
        if (!rc)
            fprintf(stderr, "bench-consume: %s: %d partitions, %lld messages\n", topics[t],
                    md->topics[0].partition_cnt, topic_total);
        total += topic_total;
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
    }
    rd_kafka_destroy(rk);
    if (rc)
        return rc;
    printf("messages=%lld expected=%lld\n", total, n);
    return total == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *mode = argv[1];
    const char *brokers = NULL, *group = NULL, *cfg_path = NULL;
    long long n = -1;
    int opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "b:g:n:c:")) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 'g':
            group = optarg;
            break;
        case 'n':
            n = atoll(optarg);
            break;
        case 'c':
            cfg_path = optarg;
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!brokers || n <= 0) {
        usage();
        return 2;
    }
    if (!strcmp(mode, "check"))
        return check(brokers, n, argv + optind, argc - optind);
    bool decode = !strcmp(mode, "decode");
    if ((!decode && strcmp(mode, "raw")) || !group || !cfg_path) {
        usage();
        return 2;
    }

    kx_log_set_level(KX_LOG_WARN);
    kx_err err = {0};
    kx_config *cfg = NULL;
    if (kx_config_load(cfg_path, &cfg, &err)) {
        char buf[1024];
        kx_err_format(&err, buf, sizeof(buf));
        fprintf(stderr, "bench-consume: %s\n", buf);
        return 2;
    }
    size_t batch = 500;
    const kx_yaml_node *nb = kx_yaml_get(cfg->kafka, "batch");
    long long v;
    if (nb && kx_yaml_int(nb, cfg->file, 1, 100000, &v, &err) == 0)
        batch = (size_t)v;

    /* One decoder per input topic, created exactly as `klaxon run` does. */
    kx_decoder *decs[MAX_TOPICS] = {0};
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(MAX_TOPICS);
    size_t ninputs = cfg->ninputs < MAX_TOPICS ? cfg->ninputs : MAX_TOPICS;
    int code = 2;
    for (size_t i = 0; i < ninputs; i++) {
        rd_kafka_topic_partition_list_add(subs, cfg->input_topics[i], RD_KAFKA_PARTITION_UA);
        if (decode &&
            kx_decoder_create(cfg->inputs[i], cfg->decode, -1, cfg->file, &decs[i], &err)) {
            char buf[1024];
            kx_err_format(&err, buf, sizeof(buf));
            fprintf(stderr, "bench-consume: %s\n", buf);
            goto out;
        }
    }

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The kafka source's fixed settings; offsets are never stored here, so nothing is
     * committed and every run (a fresh group) reads from the beginning. */
    if (set(conf, "bootstrap.servers", brokers) || set(conf, "group.id", group) ||
        set(conf, "enable.auto.offset.store", "false") || set(conf, "enable.auto.commit", "true") ||
        set(conf, "auto.offset.reset", "earliest") || set(conf, "enable.partition.eof", "false") ||
        set(conf, "session.timeout.ms", "6000") || set(conf, "heartbeat.interval.ms", "500")) {
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    /* The config's kafka.properties, as the kafka source applies them after its defaults. */
    const kx_yaml_node *props = kx_yaml_get(cfg->kafka, "properties");
    for (size_t i = 0; props && props->type == KX_YAML_MAP && i < props->n; i++) {
        if (set(conf, props->keys[i]->str, props->vals[i]->str)) {
            rd_kafka_conf_destroy(conf);
            goto out;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench-consume: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        goto out;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(rk, subs);
    if (kerr) {
        fprintf(stderr, "bench-consume: subscribe: %s\n", rd_kafka_err2str(kerr));
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        goto out;
    }

    rd_kafka_message_t **msgs = calloc(batch, sizeof(*msgs));
    kx_event ev;
    kx_event_init(&ev);
    long long got = 0, malformed = 0;
    double t0 = 0, t_end = 0, c0 = 0, deadline = now_s() + 120;
    while (got < n && now_s() < deadline) {
        ssize_t k = rd_kafka_consume_batch_queue(q, 200, msgs, batch);
        if (k > 0 && t0 == 0) {
            t0 = now_s();
            c0 = cpu_s();
        }
        for (ssize_t i = 0; i < k; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (m->err) {
                fprintf(stderr, "bench-consume: %s\n", rd_kafka_message_errstr(m));
            } else {
                got++;
                if (decode) {
                    const char *topic = rd_kafka_topic_name(m->rkt);
                    kx_decoder *d = NULL;
                    for (size_t j = 0; j < ninputs && !d; j++)
                        if (!strcmp(cfg->input_topics[j], topic))
                            d = decs[j];
                    const char *why = NULL;
                    kx_event_reset(&ev);
                    ev.topic = topic;
                    ev.partition = m->partition;
                    ev.offset = m->offset;
                    rd_kafka_timestamp_type_t tt;
                    int64_t ts = rd_kafka_message_timestamp(m, &tt);
                    if (!d || kx_decode(d, m->payload, m->len, ts, &ev, &why))
                        malformed++;
                }
            }
            rd_kafka_message_destroy(m);
        }
    }
    t_end = now_s();
    double cpu = cpu_s() - c0;
    kx_event_fini(&ev);
    free(msgs);
    rd_kafka_consumer_close(rk);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    double secs = t_end - t0;
    printf("events=%lld seconds=%.3f rate=%.0f cpu_us_per_event=%.3f malformed=%lld\n", got, secs,
           secs > 0 ? (double)got / secs : 0.0, got ? cpu * 1e6 / (double)got : 0.0, malformed);
    if (got != n)
        fprintf(stderr, "bench-consume: consumed %lld of %lld before the deadline\n", got, n);
    code = got == n && malformed == 0 ? 0 : 1;
out:
    for (size_t i = 0; i < ninputs; i++)
        if (decs[i])
            kx_decoder_destroy(decs[i]);
    rd_kafka_topic_partition_list_destroy(subs);
    kx_config_destroy(cfg);
    kx_tz_cache_clear();
    return code;
}
