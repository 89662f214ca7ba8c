/*
 * bench-metrics: times a running `klaxon run` from the outside through its /metrics endpoint.
 *
 *   bench-metrics -p PORT -n N [-P PID] [-i INTERVAL_MS] [-t TIMEOUT_S]
 *
 * Polls http://127.0.0.1:PORT/metrics every INTERVAL_MS (default 5) over one keep-alive
 * connection. t0 is the first poll that sees klaxon_events_consumed_total > 0 (c0 events
 * consumed by then); t1 is the first poll that sees klaxon_offsets_stored_total >= N, i.e.
 * the last batch was decoded, matched, its state updates applied and its alerts handed to
 * the sinks (offsets are stored only then). The rate is (N - c0) / (t1 - t0); each end is
 * late by at most one interval. It then waits until every raised alert is delivered.
 *
 * Prints "events=N seconds=S rate=R cpu_us_per_event=C consumed=.. malformed=.. matched=..
 * alerts=.. delivered=.. deduped=.. failed=.." and exits 0 when N events were consumed and stored.
 * With -P it gives up as soon as process PID (klaxon) is gone, and C is that process's CPU
 * time (user + system, all threads, from /proc, 10 ms ticks) between t0 and t1 per event.
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "klaxon/common.h"

typedef struct body {
    char buf[1 << 16];
    size_t len;
} body;

static size_t on_data(char *p, size_t sz, size_t nm, void *ud)
{
    body *b = ud;
    size_t n = sz * nm;
    size_t room = sizeof(b->buf) - 1 - b->len;
    memcpy(b->buf + b->len, p, n < room ? n : room);
    b->len += n < room ? n : room;
    b->buf[b->len] = '\0';
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Value of a counter line "name value" in Prometheus text, or -1. */
static long long metric(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (!strncmp(p, name, nl) && p[nl] == ' ')
            return atoll(p + nl + 1);
    }
    return -1;
}

/* CPU seconds (user + system, all threads) used so far by process pid, or -1. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the ")" closing the command name: state is field 3, utime 14, stime 15. */
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct snap {
    long long consumed, stored, malformed, matched, raised, delivered, deduped, failed;
} snap;

static int poll_once(CURL *c, body *b, snap *s)
{
    b->len = 0;
    b->buf[0] = '\0';
    if (curl_easy_perform(c) != CURLE_OK)
        return -1;
    s->consumed = metric(b->buf, "klaxon_events_consumed_total");
    s->stored = metric(b->buf, "klaxon_offsets_stored_total");
    s->malformed = metric(b->buf, "klaxon_events_malformed_total");
    s->matched = metric(b->buf, "klaxon_events_matched_total");
    s->raised = metric(b->buf, "klaxon_alerts_raised_total");
    s->delivered = metric(b->buf, "klaxon_alerts_delivered_total");
    s->deduped = metric(b->buf, "klaxon_alerts_deduplicated_total");
    s->failed = metric(b->buf, "klaxon_alerts_failed_total");
    return s->consumed < 0 || s->stored < 0 ? -1 : 0;
}

int main(int argc, char **argv)
{
    int port = 0, interval_ms = 5, timeout_s = 180, pid = 0;
    long long n = 0;
    int opt;
    while ((opt = getopt(argc, argv, "p:n:P:i:t:")) != -1) {
        switch (opt) {
        case 'p':
            port = atoi(optarg);
            break;
        case 'n':
            n = atoll(optarg);
            break;
        case 'P':
            pid = atoi(optarg);
            break;
        case 'i':
            interval_ms = atoi(optarg);
            break;
        case 't':
            timeout_s = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench-metrics -p PORT -n N [-P PID] [-i MS] [-t S]\n");
            return 2;
        }
    }
    if (port <= 0 || n <= 0 || interval_ms <= 0) {
        fprintf(stderr, "usage: bench-metrics -p PORT -n N [-P PID] [-i MS] [-t S]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    static body b;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);

    snap s = {0};
    double t0 = 0, t1 = 0, deadline = now_s() + timeout_s;
    long long c0 = 0;
    double cpu0 = -1, cpu1 = -1;
    struct timespec pause = {0, (long)interval_ms * 1000000L};
    int code = 1;
    while (now_s() < deadline) {
        if (pid > 0 && kill(pid, 0) != 0) {
            fprintf(stderr, "bench-metrics: process %d is gone\n", pid);
            break;
        }
        if (poll_once(c, &b, &s) == 0) {
            double t = now_s();
            if (t0 == 0 && s.consumed > 0) {
                t0 = t;
                c0 = s.consumed;
                cpu0 = pid > 0 ? proc_cpu_s(pid) : -1;
            }
            if (t0 > 0 && s.stored >= n) {
                t1 = t;
                cpu1 = pid > 0 ? proc_cpu_s(pid) : -1;
                break;
            }
        }
        nanosleep(&pause, NULL);
    }
    if (t1 > 0) {
        /* Alerts may still be in flight to a sink: wait for them (not timed). */
        while (now_s() < deadline && s.delivered + s.deduped + s.failed < s.raised) {
            nanosleep(&pause, NULL);
            poll_once(c, &b, &s);
        }
        code = s.consumed == n && s.stored == n ? 0 : 1;
    } else {
        fprintf(stderr, "bench-metrics: timed out: consumed %lld stored %lld of %lld\n", s.consumed,
                s.stored, n);
    }
    double secs = t1 > t0 ? t1 - t0 : 0;
    double cpu_us = cpu0 >= 0 && cpu1 >= 0 && n > c0 ? (cpu1 - cpu0) * 1e6 / (double)(n - c0) : -1;
    printf("events=%lld seconds=%.3f rate=%.0f cpu_us_per_event=%.3f consumed=%lld malformed=%lld "
           "matched=%lld "
           "alerts=%lld delivered=%lld deduped=%lld failed=%lld\n",
           s.stored, secs, secs > 0 ? (double)(n - c0) / secs : 0.0, cpu_us, s.consumed,
           s.malformed, s.matched, s.raised, s.delivered, s.deduped, s.failed);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    return code;
}
