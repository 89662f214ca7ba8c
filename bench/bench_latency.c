/*
 * bench-latency: event-to-alert latency of a running `klaxon run`.
 *
 *   bench-latency -b BOOTSTRAP -t TOPIC -f ALERT_FILE [-n N] [-w WARMUP] [-g MAX_GAP_MS]
 *
 * Produces one triggering syslog line at a time (sudo to root, a single-event rule) to TOPIC
 * and waits for the alert line carrying its marker to appear in klaxon's file sink. The clock
 * starts just before rd_kafka_producev (linger.ms=0) and stops when the line is read back:
 * the file is watched with inotify, so no polling interval is added. Each event has its own
 * event time (one second apart), so no alert is suppressed as a duplicate. The first WARMUP
 * events (default 5; the first one also waits for klaxon to join its group) are not counted.
 * Before each event it pauses a pseudo-random 0..MAX_GAP_MS (default 20, fixed seed): a
 * consumer's fetch cycle runs on its own clock, and events sent in lock-step with the previous
 * alert would always land at the same phase of it.
 *
 * Prints "n=N min_ms=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. mean_ms=.." and exits 0
 * when every alert arrived.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Reads what was appended to fd since *off into buf (keeping the unread tail of a partial
 * line), and returns 1 when marker is in it. */
static int scan(int fd, off_t *off, char *buf, size_t cap, size_t *len, const char *marker)
{
    for (;;) {
        if (*len >= cap - 1) /* no marker in a full buffer: keep the last part only */
            *len = 0;
        ssize_t n = pread(fd, buf + *len, cap - 1 - *len, *off);
        if (n <= 0)
            break;
        *off += n;
        *len += (size_t)n;
    }
    buf[*len] = '\0';
    int found = strstr(buf, marker) != NULL;
    char *nl = strrchr(buf, '\n');
    if (found) {
        *len = 0;
    } else if (nl) {
        size_t keep = *len - (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, keep);
        *len = keep;
    }
    return found;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL, *path = NULL;
    int n = 200, warmup = 5, max_gap_ms = 20, opt;
    unsigned int seed = 42;
    while ((opt = getopt(argc, argv, "b:t:f:n:w:g:")) != -1) {
        switch (opt) {
        case 'b':
            brokers = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'f':
            path = optarg;
            break;
        case 'n':
            n = atoi(optarg);
            break;
        case 'w':
            warmup = atoi(optarg);
            break;
        case 'g':
            max_gap_ms = atoi(optarg);
            break;
        default:
            goto usage;
        }
    }
    if (!brokers || !topic || !path || n < 1 || warmup < 1 || max_gap_ms < 0)
        goto usage;

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "linger.ms", "0", errstr, sizeof(errstr))) {
        fprintf(stderr, "bench-latency: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench-latency: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    int fd = open(path, O_RDONLY | O_CREAT, 0644);
    int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (fd < 0 || ino < 0 || inotify_add_watch(ino, path, IN_MODIFY) < 0) {
        fprintf(stderr, "bench-latency: %s: %s\n", path, strerror(errno));
        return 1;
    }
    off_t off = lseek(fd, 0, SEEK_END);
    static char buf[1 << 20];
    size_t len = 0;
    double *lat = calloc((size_t)n, sizeof(double));
    int code = 0, total = warmup + n;
    for (int i = 0; i < total && lat; i++) {
        /* 2026-03-12 10:00:00 UTC + i seconds. */
        int s = i % 60, m = (i / 60) % 60, h = 10 + i / 3600;
        char line[256], marker[32];
        snprintf(marker, sizeof(marker), "latency-%06d", i);
        int ll = snprintf(line, sizeof(line),
                          "Mar 12 %02d:%02d:%02d lat-01 sudo:    alice : TTY=pts/0 ; "
                          "PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/true %s",
                          h, m, s, marker);
        if (i > 0 && max_gap_ms > 0) {
            long gap_us = (long)(rand_r(&seed) % (unsigned)(max_gap_ms * 1000 + 1));
            struct timespec ts = {gap_us / 1000000, (gap_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
        double t0 = now_s();
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE(line, (size_t)ll), RD_KAFKA_V_END);
        if (err) {
            fprintf(stderr, "bench-latency: produce: %s\n", rd_kafka_err2str(err));
            code = 1;
            break;
        }
        double deadline = t0 + (i == 0 ? 90.0 : 10.0);
        int found = 0;
        while (!found && now_s() < deadline) {
            found = scan(fd, &off, buf, sizeof(buf), &len, marker);
            if (found)
                break;
            struct pollfd pfd = {ino, POLLIN, 0};
            rd_kafka_poll(rk, 0);
            if (poll(&pfd, 1, 20) > 0) {
                char evbuf[4096];
                while (read(ino, evbuf, sizeof(evbuf)) > 0)
                    ; /* drain: only "modified" matters, scan() reads the file */
            }
        }
        double t1 = now_s();
        if (!found) {
            fprintf(stderr, "bench-latency: no alert for %s within %.0fs\n", marker, deadline - t0);
            code = 1;
            break;
        }
        if (i >= warmup)
            lat[i - warmup] = (t1 - t0) * 1e3;
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 5000);
    rd_kafka_destroy(rk);
    close(ino);
    close(fd);
    if (code == 0 && lat) {
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += lat[i];
        qsort(lat, (size_t)n, sizeof(double), cmp_double);
        /* Nearest-rank percentiles. */
        int p50 = (n * 50 + 99) / 100 - 1, p90 = (n * 90 + 99) / 100 - 1,
            p99 = (n * 99 + 99) / 100 - 1;
        printf("n=%d min_ms=%.2f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f mean_ms=%.2f\n", n,
               lat[0], lat[p50], lat[p90], lat[p99], lat[n - 1], sum / n);
    }
    free(lat);
    return code;
usage:
    fprintf(stderr,
            "usage: bench-latency -b BOOTSTRAP -t TOPIC -f ALERT_FILE [-n N] [-w W] [-g MS]\n");
    return 2;
}
