/*
 * kx-produce: produces each line of the input files (or stdin) as one Kafka message, for
 * tests, the demo and the benchmark. The trailing "\n" is not part of the message; an empty
 * line is an empty message. It waits for every delivery report, prints "produced N" on
 * stderr (N = messages acknowledged by the broker) and exits 0 only if all were delivered.
 *
 * Usage: kx-produce -b BOOTSTRAP -t TOPIC [-p PARTITION] [-X prop=value]... [FILE...|-]
 *
 * Without -p the default partitioner picks the partition (messages have no key); the
 * timestamp is CreateTime "now", set by librdkafka.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

struct counts {
    unsigned long long delivered;
    unsigned long long failed;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct counts *c = opaque;

    (void)rk;
    if (m->err) {
        /* Only the first few failures are worth reading. */
        if (c->failed < 5)
            fprintf(stderr, "kx-produce: delivery failed: %s\n", rd_kafka_err2str(m->err));
        c->failed++;
    } else {
        c->delivered++;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: kx-produce -b BOOTSTRAP -t TOPIC [-p PARTITION] [-X prop=value]... "
                    "[FILE...|-]\n");
}

static int set_prop(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[512];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kx-produce: %s=%s: %s\n", name, value, errstr);
        return -EINVAL;
    }
    return 0;
}

/* Produces one message, serving delivery reports while the local queue is full. */
static int produce_one(rd_kafka_t *rk, const char *topic, int32_t partition, const char *p,
                       size_t n)
{
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE((void *)p, n), RD_KAFKA_V_END);
        if (!err)
            return 0;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "kx-produce: produce: %s\n", rd_kafka_err2str(err));
            return -EIO;
        }
        rd_kafka_poll(rk, 100);
    }
}

static int produce_stream(rd_kafka_t *rk, const char *topic, int32_t partition, FILE *f,
                          unsigned long long *queued)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;

    while ((n = getline(&line, &cap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        rc = produce_one(rk, topic, partition, line, (size_t)n);
        if (rc)
            break;
        (*queued)++;
        rd_kafka_poll(rk, 0);
    }
    if (!rc && ferror(f)) {
        fprintf(stderr, "kx-produce: read error\n");
        rc = -EIO;
    }
    free(line);
    return rc;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL;
    const char *topic = NULL;
    int32_t partition = RD_KAFKA_PARTITION_UA;
    struct counts counts = {0, 0};
    unsigned long long queued = 0;
    char errstr[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    int opt;
    int rc = 0;

    conf = rd_kafka_conf_new();
    /* Small batches go out quickly; the tools are used with modest volumes. */
    if (set_prop(conf, "linger.ms", "5") != 0)
        goto bad_conf;

    while ((opt = getopt(argc, argv, "b:t:p:X:h")) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'p': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || v < 0 || v > INT32_MAX) {
                fprintf(stderr, "kx-produce: bad partition \"%s\"\n", optarg);
                goto bad_conf;
            }
            partition = (int32_t)v;
            break;
        }
        case 'X': {
            char *eq = strchr(optarg, '=');
            if (!eq) {
                fprintf(stderr, "kx-produce: -X wants prop=value\n");
                goto bad_conf;
            }
            *eq = '\0';
            if (set_prop(conf, optarg, eq + 1) != 0)
                goto bad_conf;
            break;
        }
        default:
            usage();
            goto bad_conf;
        }
    }
    if (!brokers || !topic) {
        usage();
        goto bad_conf;
    }
    if (set_prop(conf, "bootstrap.servers", brokers) != 0)
        goto bad_conf;
    rd_kafka_conf_set_opaque(conf, &counts);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);

    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kx-produce: %s\n", errstr);
        goto bad_conf;
    }

    if (optind >= argc) {
        rc = produce_stream(rk, topic, partition, stdin, &queued);
    } else {
        for (int i = optind; i < argc && !rc; i++) {
            FILE *f = strcmp(argv[i], "-") ? fopen(argv[i], "r") : stdin;
            if (!f) {
                fprintf(stderr, "kx-produce: %s: %s\n", argv[i], strerror(errno));
                rc = -errno;
                break;
            }
            rc = produce_stream(rk, topic, partition, f, &queued);
            if (f != stdin)
                fclose(f);
        }
    }

    /* Wait for every delivery report: messages still queued after a generous flush
     * count as failed. */
    while (rd_kafka_outq_len(rk) > 0) {
        if (rd_kafka_flush(rk, 30000) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
            fprintf(stderr, "kx-produce: timed out waiting for delivery reports\n");
            break;
        }
    }
    rd_kafka_destroy(rk);

    fprintf(stderr, "produced %llu\n", counts.delivered);
    return rc == 0 && counts.failed == 0 && counts.delivered == queued ? 0 : 1;

bad_conf:
    rd_kafka_conf_destroy(conf);
    return 2;
}
