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
 * Under load:
 *
 *   bench-latency -b BOOTSTRAP -f ALERT_FILE -R RATE -e EVENTS_TSV -p PROBES_TSV
 *                 [-x TOPIC_PREFIX] [-n N] [-w WARMUP] [-g MEAN_GAP_MS] [-v]
 *
 * produces EVENTS_TSV ("TOPIC<TAB>LINE", bench/gen_sigma_events.py; cycled; a producer of
 * its own with linger.ms 5, as a busy producer batches) at a fixed RATE
 * of events per second to TOPIC_PREFIX+TOPIC, and meanwhile a probe every 0..2*MEAN_GAP_MS
 * (default 20): a line of PROBES_TSV (events that match a known rule) whose PROBE000000
 * marker is replaced by the probe's number. Probes are in flight together; each one's clock
 * runs from just before its rd_kafka_producev to the first alert line carrying its marker.
 * Probe 0 goes first, alone, and waits for klaxon to join its group; the background load
 * starts after it, and the next WARMUP probes are not counted either.
 *
 * With -f - under load, no klaxon is involved: bench-latency consumes the probes' topics
 * itself (a plain librdkafka consumer, fetch.wait.max.ms 1, in the same loop) and stops each
 * probe's clock when its message arrives. That is the transport's own latency under the same
 * load: the baseline a `klaxon run` figure is compared against.
 *
 * Prints "n=N min_ms=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. mean_ms=.." (under load
 * also "rate=.. background=..": the rate reached and the events produced) and exits 0
 * when every alert arrived.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

/* -v: print each counted probe's send time (from the start of the load) and latency to
 * stderr, to see when in a run the slow ones came. */
static bool verbose;

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

static void print_latencies(double *lat, int n, const char *extra)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += lat[i];
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    /* Nearest-rank percentiles. */
    int p50 = (n * 50 + 99) / 100 - 1, p90 = (n * 90 + 99) / 100 - 1, p99 = (n * 99 + 99) / 100 - 1;
    printf("n=%d min_ms=%.2f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f mean_ms=%.2f%s%s\n", n,
           lat[0], lat[p50], lat[p90], lat[p99], lat[n - 1], sum / n, extra ? " " : "",
           extra ? extra : "");
}

/* ---- under load ---- */

typedef struct line_set {
    char *data;
    char **topic;
    char **line;
    size_t *len;
    size_t n;
} line_set;

/* Reads "TOPIC<TAB>LINE" lines; the strings point into one buffer. */
static int read_tsv(const char *path, line_set *ls)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t cap = 0;
    char *buf = NULL;
    ssize_t got;
    size_t len = 0, cap_lines = 0;
    char *all = NULL;
    size_t all_len = 0, all_cap = 0;
    size_t *offs = NULL;
    while ((got = getline(&buf, &cap, f)) > 0) {
        if (all_len + (size_t)got + 1 > all_cap) {
            all_cap = (all_len + (size_t)got + 1) * 2;
            char *na = realloc(all, all_cap);
            if (!na)
                goto oom;
            all = na;
        }
        if (len == cap_lines) {
            cap_lines = cap_lines ? cap_lines * 2 : 1024;
            size_t *no = realloc(offs, cap_lines * sizeof(*no));
            if (!no)
                goto oom;
            offs = no;
        }
        offs[len++] = all_len;
        memcpy(all + all_len, buf, (size_t)got + 1);
        all_len += (size_t)got + 1;
    }
    free(buf);
    fclose(f);
    ls->data = all;
    ls->n = 0;
    ls->topic = calloc(len + 1, sizeof(char *));
    ls->line = calloc(len + 1, sizeof(char *));
    ls->len = calloc(len + 1, sizeof(size_t));
    if (!ls->topic || !ls->line || !ls->len) {
        free(offs);
        return -ENOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        char *t = all + offs[i], *tab = strchr(t, '\t');
        if (!tab)
            continue;
        *tab = '\0';
        char *l = tab + 1, *nl = strchr(l, '\n');
        if (nl)
            *nl = '\0';
        ls->topic[ls->n] = t;
        ls->line[ls->n] = l;
        ls->len[ls->n++] = strlen(l);
    }
    free(offs);
    return ls->n ? 0 : -EINVAL;
oom:
    free(buf);
    free(all);
    free(offs);
    fclose(f);
    return -ENOMEM;
}

static void line_set_free(line_set *ls)
{
    free(ls->data);
    free(ls->topic);
    free(ls->line);
    free(ls->len);
}

static int produce(rd_kafka_t *rk, const char *prefix, const char *topic, const char *line,
                   size_t len)
{
    char t[256];
    snprintf(t, sizeof(t), "%s%s", prefix, topic);
    for (;;) {
        rd_kafka_resp_err_t err =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(t), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_VALUE((void *)line, len), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (err)
                fprintf(stderr, "bench-latency: produce to %s: %s\n", t, rd_kafka_err2str(err));
            return err ? -EIO : 0;
        }
        rd_kafka_poll(rk, 1);
    }
}

/* Scans what was appended to the alert file for "PROBEnnnnnn" markers; records the first
 * arrival of each. Keeps a partial last line for the next call. */
static void scan_probes(int fd, off_t *off, char *buf, size_t cap, size_t *len, const double *sent,
                        double *got, int nprobes, int *ngot)
{
    for (;;) {
        if (*len >= cap - 1)
            *len = 0;
        ssize_t n = pread(fd, buf + *len, cap - 1 - *len, *off);
        if (n <= 0)
            break;
        *off += n;
        *len += (size_t)n;
        buf[*len] = '\0';
        double now = now_s();
        char *end = strrchr(buf, '\n');
        if (!end)
            continue;
        for (char *p = buf; (p = strstr(p, "PROBE")) && p < end; p += 5) {
            char *q;
            long i = strtol(p + 5, &q, 10);
            if (q - (p + 5) == 6 && i >= 0 && i < nprobes && sent[i] > 0 && got[i] == 0) {
                got[i] = now;
                (*ngot)++;
            }
        }
        size_t keep = *len - (size_t)(end + 1 - buf);
        memmove(buf, end + 1, keep);
        *len = keep;
    }
}

/* A producer; linger_ms "0" for the probes (each sent at once), "5" for the background: at
 * 20,000 events/s a producer that sends every message as its own request (linger 0) makes
 * the mock broker queue requests for seconds (p99 1.5 s with nobody but a raw consumer
 * reading); batching as any high-rate producer does keeps the transport at a few ms. */
static rd_kafka_t *producer(const char *brokers, const char *linger_ms)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "linger.ms", linger_ms, errstr, sizeof(errstr))) {
        fprintf(stderr, "bench-latency: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench-latency: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* The transport baseline (-f -): a consumer of every topic the run produces to. */
static rd_kafka_t *raw_consumer(const char *brokers, const char *prefix, const line_set *ev,
                                const line_set *pr)
{
    char errstr[512], group[64];
    snprintf(group, sizeof(group), "bench-latency-raw-%d", (int)getpid());
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", "1", errstr, sizeof(errstr))) {
        fprintf(stderr, "bench-latency: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench-latency: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(16);
    const line_set *sets[2] = {ev, pr};
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < sets[s]->n; i++) {
            char t[256];
            snprintf(t, sizeof(t), "%s%s", prefix, sets[s]->topic[i]);
            int seen = 0;
            for (int j = 0; j < subs->cnt && !seen; j++)
                seen = strcmp(subs->elems[j].topic, t) == 0;
            if (!seen)
                rd_kafka_topic_partition_list_add(subs, t, RD_KAFKA_PARTITION_UA);
        }
    rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        fprintf(stderr, "bench-latency: subscribe: %s\n", rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* Drains what the raw consumer has and records the first arrival of each probe marker. */
static void consume_probes(rd_kafka_t *rkc, const double *sent, double *got, int nprobes, int *ngot)
{
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(rkc, 0))) {
        if (!m->err && m->len > 11) {
            const char *p = memmem(m->payload, m->len, "PROBE", 5);
            size_t at = p ? (size_t)(p - (const char *)m->payload) : 0;
            if (p && at + 11 <= m->len) {
                char num[7];
                memcpy(num, p + 5, 6);
                num[6] = '\0';
                char *q;
                long i = strtol(num, &q, 10);
                if (q == num + 6 && i >= 0 && i < nprobes && sent[i] > 0 && got[i] == 0) {
                    got[i] = now_s();
                    (*ngot)++;
                }
            }
        }
        rd_kafka_message_destroy(m);
    }
}

static int under_load(rd_kafka_t *rk, const char *brokers, const char *path, const char *prefix,
                      double rate, const char *events_path, const char *probes_path, int n,
                      int warmup, int mean_gap_ms)
{
    line_set ev = {0}, pr = {0};
    int code = 1, total = 1 + warmup + n;
    double *sent = calloc((size_t)total, sizeof(double));
    double *got = calloc((size_t)total, sizeof(double));
    double *lat = calloc((size_t)n, sizeof(double));
    static char buf[1 << 20];
    size_t len = 0;
    bool raw = strcmp(path, "-") == 0;
    rd_kafka_t *rkc = NULL, *rkb = producer(brokers, "5");
    int fd = -1, ino = -1;
    off_t off = 0;
    if (!sent || !got || !lat || !rkb)
        goto out;
    if (read_tsv(events_path, &ev) || read_tsv(probes_path, &pr)) {
        fprintf(stderr, "bench-latency: cannot read %s or %s\n", events_path, probes_path);
        goto out;
    }
    if (raw) {
        if (!(rkc = raw_consumer(brokers, prefix, &ev, &pr)))
            goto out;
    } else {
        fd = open(path, O_RDONLY | O_CREAT, 0644);
        ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (fd < 0 || ino < 0 || inotify_add_watch(ino, path, IN_MODIFY) < 0)
            goto out;
        off = lseek(fd, 0, SEEK_END);
    }
    unsigned int seed = 42;
    int nsent = 0, ngot = 0;
    unsigned long long bg = 0;
    double bg_start = 0, next_probe = 0, last_send = 0;
    char probe[1 << 16];
    for (;;) {
        double now = now_s();
        /* The next probe: the first alone (group join), the others on their schedule. */
        if (nsent < total && (nsent == 0 || (ngot > 0 && now >= next_probe))) {
            size_t k = (size_t)nsent % pr.n;
            if (pr.len[k] >= sizeof(probe))
                goto out;
            memcpy(probe, pr.line[k], pr.len[k] + 1);
            char *m = strstr(probe, "PROBE000000"), num[16];
            if (!m) {
                fprintf(stderr, "bench-latency: no PROBE000000 in %s\n", probes_path);
                goto out;
            }
            snprintf(num, sizeof(num), "%06d", nsent % 1000000);
            memcpy(m + 5, num, 6);
            sent[nsent] = now_s();
            if (produce(rk, prefix, pr.topic[k], probe, pr.len[k]))
                goto out;
            last_send = sent[nsent];
            nsent++;
            long gap_us = (long)(rand_r(&seed) % (unsigned)(2 * mean_gap_ms * 1000 + 1));
            next_probe = now + (double)gap_us / 1e6;
        }
        /* The background, once probe 0 is through: as many events as the rate allows. */
        if (ngot > 0) {
            if (bg_start == 0)
                bg_start = now;
            unsigned long long due = (unsigned long long)((now - bg_start) * rate);
            for (; bg < due; bg++) {
                size_t k = (size_t)(bg % ev.n);
                if (produce(rkb, prefix, ev.topic[k], ev.line[k], ev.len[k]))
                    goto out;
            }
        }
        rd_kafka_poll(rk, 0);
        rd_kafka_poll(rkb, 0);
        if (raw) {
            struct timespec ts = {0, 1000000}; /* the same 1 ms pace as the file's poll */
            nanosleep(&ts, NULL);
            consume_probes(rkc, sent, got, total, &ngot);
        } else {
            struct pollfd pfd = {ino, POLLIN, 0};
            if (poll(&pfd, 1, 1) > 0) {
                char evbuf[4096];
                while (read(ino, evbuf, sizeof(evbuf)) > 0)
                    ;
            }
            scan_probes(fd, &off, buf, sizeof(buf), &len, sent, got, total, &ngot);
        }
        if (ngot == total)
            break;
        if (now - last_send > (ngot == 0 ? 90.0 : 10.0)) {
            fprintf(stderr, "bench-latency: %d of %d probes alerted\n", ngot, nsent);
            goto out;
        }
    }
    double span = now_s() - bg_start;
    for (int i = 0; i < n; i++)
        lat[i] = (got[1 + warmup + i] - sent[1 + warmup + i]) * 1e3;
    if (verbose)
        for (int i = 0; i < n; i++)
            fprintf(stderr, "probe %d at %.3f s: %.2f ms\n", i, sent[1 + warmup + i] - bg_start,
                    lat[i]);
    char extra[128];
    snprintf(extra, sizeof(extra), "rate=%.0f background=%llu", (double)bg / span, bg);
    print_latencies(lat, n, extra);
    code = 0;
out:
    if (rkb) {
        rd_kafka_flush(rkb, 5000);
        rd_kafka_destroy(rkb);
    }
    if (rkc) {
        rd_kafka_consumer_close(rkc);
        rd_kafka_destroy(rkc);
    }
    if (ino >= 0)
        close(ino);
    if (fd >= 0)
        close(fd);
    line_set_free(&ev);
    line_set_free(&pr);
    free(sent);
    free(got);
    free(lat);
    return code;
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL, *path = NULL;
    const char *events = NULL, *probes = NULL, *prefix = "";
    double rate = 0;
    int n = 200, warmup = 5, max_gap_ms = 20, opt;
    unsigned int seed = 42;
    while ((opt = getopt(argc, argv, "b:t:f:n:w:g:R:e:p:x:v")) != -1) {
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
        case 'R':
            rate = atof(optarg);
            break;
        case 'e':
            events = optarg;
            break;
        case 'p':
            probes = optarg;
            break;
        case 'x':
            prefix = optarg;
            break;
        case 'v':
            verbose = true;
            break;
        default:
            goto usage;
        }
    }
    if (rate > 0
            ? (!brokers || !path || !events || !probes || n < 1 || warmup < 0 || max_gap_ms < 1)
            : (!brokers || !topic || !path || n < 1 || warmup < 1 || max_gap_ms < 0))
        goto usage;

    rd_kafka_t *rk = producer(brokers, "0");
    if (!rk)
        return 2;
    if (rate > 0) {
        int rc = under_load(rk, brokers, path, prefix, rate, events, probes, n, warmup, max_gap_ms);
        rd_kafka_flush(rk, 5000);
        rd_kafka_destroy(rk);
        return rc;
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
    if (code == 0 && lat)
        print_latencies(lat, n, NULL);
    free(lat);
    return code;
usage:
    fprintf(stderr,
            "usage: bench-latency -b BOOTSTRAP -t TOPIC -f ALERT_FILE [-n N] [-w W] [-g MS]\n"
            "       bench-latency -b BOOTSTRAP -f ALERT_FILE -R RATE -e EVENTS_TSV -p PROBES_TSV\n"
            "                     [-x TOPIC_PREFIX] [-n N] [-w W] [-g MEAN_GAP_MS] [-v]\n"
            "       (-f - under load: a plain consumer instead of klaxon, the transport's "
            "latency)\n");
    return 2;
}
