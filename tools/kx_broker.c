/*
 * kx-broker: a Kafka-protocol broker on loopback, for tests, the demo and the benchmark.
 *
 * It is librdkafka's own mock cluster (rdkafka_mock.h) hosted in a process of its own, so
 * any Kafka client (klaxon, kcat, kx-produce) can reach it over TCP. The mock listens on
 * 127.0.0.1 with kernel-chosen ports; the one line "BOOTSTRAP host:port,..." on stdout is
 * how a parent learns where. It runs until SIGTERM or SIGINT, then tears the cluster down
 * and exits 0.
 *
 * Limits of the mock (see docs/internals/source.md): each partition keeps at most ~5 MiB
 * and 100000 message sets; past that the oldest message sets are dropped, like retention.
 *
 * Usage: kx-broker [--brokers N] [--topic NAME:PARTITIONS]... [--port-file FILE]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 128

struct topic_arg {
    char name[250];
    int partitions;
};

static void usage(void)
{
    fprintf(stderr, "usage: kx-broker [--brokers N] [--topic NAME:PARTITIONS]... "
                    "[--port-file FILE]\n");
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_topic(const char *s, struct topic_arg *t)
{
    const char *colon = strrchr(s, ':');
    size_t n;

    if (!colon)
        return -EINVAL;
    n = (size_t)(colon - s);
    if (n == 0 || n >= sizeof(t->name))
        return -EINVAL;
    memcpy(t->name, s, n);
    t->name[n] = '\0';
    return parse_int(colon + 1, 1, 10000, &t->partitions);
}

/* Writes the bootstrap list to path through a temporary file and rename, so a reader
 * polling for the file never sees it half written. */
static int write_port_file(const char *path, const char *bootstrap)
{
    char tmp[4096];
    FILE *f;
    int ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    f = fopen(tmp, "w");
    if (!f)
        return -errno;
    ok = fprintf(f, "%s\n", bootstrap) > 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -EIO;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct topic_arg topics[MAX_TOPICS];
    size_t ntopics = 0;
    int brokers = 1;
    const char *port_file = NULL;
    const char *bootstrap;
    char errstr[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    sigset_t sigs;
    int sig = 0;
    int rc = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (!strcmp(a, "--brokers") && v) {
            if (parse_int(v, 1, 16, &brokers)) {
                fprintf(stderr, "kx-broker: bad --brokers \"%s\"\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--topic") && v) {
            if (ntopics == MAX_TOPICS || parse_topic(v, &topics[ntopics])) {
                fprintf(stderr, "kx-broker: bad --topic \"%s\" (want NAME:PARTITIONS)\n", v);
                return 2;
            }
            ntopics++;
            i++;
        } else if (!strcmp(a, "--port-file") && v) {
            port_file = v;
            i++;
        } else {
            usage();
            return 2;
        }
    }

    /* Block the stop signals before librdkafka starts its threads: they inherit the mask,
     * so the signal can only be taken by our sigwait below. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    /* The mock cluster is owned by a client handle; a producer with no brokers of its own
     * is the lightest one. Notice-level chatter ("no bootstrap.servers") is not useful. */
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kx-broker: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kx-broker: rd_kafka_new: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "kx-broker: cannot create mock cluster\n");
        goto out_rk;
    }
    for (size_t i = 0; i < ntopics; i++) {
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mc, topics[i].name, topics[i].partitions, 1);
        if (err) {
            fprintf(stderr, "kx-broker: topic %s: %s\n", topics[i].name, rd_kafka_err2str(err));
            goto out_mc;
        }
    }

    bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    if (port_file && write_port_file(port_file, bootstrap) != 0) {
        fprintf(stderr, "kx-broker: cannot write %s\n", port_file);
        goto out_mc;
    }
    printf("BOOTSTRAP %s\n", bootstrap);
    fflush(stdout);

    while (sigwait(&sigs, &sig) != 0)
        ;
    rc = 0;

out_mc:
    rd_kafka_mock_cluster_destroy(mc);
out_rk:
    rd_kafka_destroy(rk);
    if (port_file && rc == 0)
        unlink(port_file);
    return rc;
}
