/*
 * bench-alerts: the alert stage alone (row 8 of `make bench`), in one process: the router
 * with a durable spool (a temp dir), its queues and webhook sinks posting to a local HTTP
 * receiver (tests/support/http_receiver.c, libmicrohttpd, threads of its own).
 *
 *   bench-alerts [-n ALERTS] [-r RUNS] [-b BATCH] [-R RATE] [-l LAT_ALERTS] [-S REDIS_PORT]
 *
 * Throughput: ALERTS distinct alerts sent in batches of BATCH (as the pipeline hands them:
 * send a batch, wait until every done callback ran, i.e. until the batch is durable in the
 * spool), until every one is acknowledged by the receiver. Prints alerts/s (wall) and the
 * loop thread's CPU µs per alert (CLOCK_THREAD_CPUTIME_ID: the receiver's threads are not
 * counted). Also without a spool directory (in memory), to show what the spool costs, and
 * with -S with the spool and incident claims in a redis-server on 127.0.0.1:REDIS_PORT (one
 * claim and one "done" per page: what one page across processes costs).
 *
 * Latency: LAT_ALERTS alerts at RATE per second to the healthy route, each timed from just
 * before kx_router_send to the receiver's record of the request (both CLOCK_MONOTONIC):
 * once with only the healthy sink, once while another team's sink hangs (every request held
 * unanswered, a 30 s timeout, its queue growing with an alert for every healthy one).
 *
 * Output, one line per row: "row=NAME key=value ...".
 */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http_receiver.h"
#include "klaxon/alert.h"
#include "klaxon/log.h"
#include "klaxon/store.h"
#include "klaxon/yaml.h"

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const kx_kv group[] = {{"src_ip", "203.0.113.7"}, {"user", "root"}};
static const char *const tags[] = {"attack.credential-access", "attack.t1110"};
static const char ev_json[] = "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"Mar 29 01:30:00 "
                              "web-01 sshd[1]: Failed password for root from 203.0.113.7 port "
                              "52170 ssh2\",\"fields\":{\"program\":\"sshd\",\"user\":\"root\"}}";

static kx_alert make_alert(int64_t i, const char *team)
{
    static const char *evs[3] = {ev_json, ev_json, ev_json};
    static size_t lens[3];
    lens[0] = lens[1] = lens[2] = sizeof(ev_json) - 1;
    kx_alert a = {
        .rule_id = "ssh-brute",
        .rule_title = "SSH brute force",
        .rule_level = "high",
        .team = team,
        .tenant = "acme",
        .group = group,
        .ngroup = 2,
        .count = 12,
        .window_s = 300,
        .first_seen_ms = 1774747800000LL + i * 1000, /* a distinct dedup_key each */
        .last_seen_ms = 1774747800000LL + i * 1000 + 500,
        .tags = tags,
        .ntags = 2,
        .events = evs,
        .events_len = lens,
        .nevents = 3,
    };
    return a;
}

typedef struct env {
    struct ev_loop *loop;
    kx_store *store; /* claims (NULL: none) */
    kx_yaml_doc *doc;
    kx_router *router;
    size_t done;
} env;

static void on_done(void *ud, int status)
{
    (void)status;
    ((env *)ud)->done++;
}

static int make_router(env *e, const char *yaml)
{
    kx_err err = {0};
    if (kx_yaml_load_mem("bench.yaml", yaml, strlen(yaml), &e->doc, &err) ||
        kx_router_create(e->loop, kx_yaml_get(e->doc->root, "alerting"), "bench.yaml",
                         &(kx_router_opts){.store = e->store}, &e->router, &err)) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fprintf(stderr, "bench-alerts: %s\n", m);
        return -1;
    }
    return 0;
}

static void drop_router(env *e)
{
    kx_router_destroy(e->router);
    kx_yaml_free(e->doc);
    e->router = NULL;
    e->doc = NULL;
}

/* Runs the loop until cond or timeout_s; false on timeout. */
static bool run_until(env *e, bool (*cond)(env *e, void *ud), void *ud, double timeout_s)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!cond(e, ud)) {
        ev_run(e->loop, EVRUN_ONCE | EVRUN_NOWAIT);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s)
            return false;
        if (!cond(e, ud)) {
            struct timespec ns = {0, 100000};
            nanosleep(&ns, NULL);
        }
    }
    return true;
}

static bool batch_durable(env *e, void *ud)
{
    return e->done >= *(size_t *)ud;
}

static bool all_delivered(env *e, void *ud)
{
    (void)ud;
    return kx_router_pending(e->router) == 0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bool store_up(env *e, void *ud)
{
    (void)ud;
    return kx_store_is_up(e->store);
}

/* One throughput run: alerts/s and loop CPU µs per alert; redis_port > 0: with claims. */
static int throughput(const char *spool, const char *url, size_t n, size_t batch, int redis_port,
                      double *rate, double *cpu_us)
{
    env e = {.loop = ev_loop_new(EVFLAG_AUTO)};
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "bench-alerts:%ld:%lld:", (long)getpid(),
             (long long)time(NULL) ^ (long long)clock());
    if (redis_port > 0 &&
        (kx_store_redis_create(e.loop, "127.0.0.1", redis_port, prefix, &e.store) ||
         !run_until(&e, store_up, NULL, 10))) {
        fprintf(stderr, "bench-alerts: redis-server 127.0.0.1:%d does not answer\n", redis_port);
        return -1;
    }
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dedup_window: 0\n"
             "%s%s%s"
             "  sinks:\n"
             "    hook: {type: webhook, url: \"%s\", concurrency: 16}\n",
             spool ? "  spool: {dir: \"" : "", spool ? spool : "", spool ? "\"}\n" : "", url);
    if (make_router(&e, yaml)) {
        ev_loop_destroy(e.loop);
        return -1;
    }
    struct timespec t0, t1;
    double c0 = thread_cpu_s();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < n;) {
        size_t want = e.done;
        for (size_t k = 0; k < batch && i < n; k++, i++) {
            kx_alert a = make_alert((int64_t)i, "secops");
            if (kx_router_send(e.router, &a, on_done, &e))
                return -1;
            want++;
        }
        if (!run_until(&e, batch_durable, &want, 60))
            return -1;
    }
    if (!run_until(&e, all_delivered, NULL, 120))
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double c1 = thread_cpu_s();
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    *rate = (double)n / secs;
    *cpu_us = (c1 - c0) * 1e6 / (double)n;
    drop_router(&e);
    kx_store_destroy(e.store);
    ev_loop_destroy(e.loop);
    return 0;
}

typedef struct lat_wait {
    kx_http_receiver *rx;
    size_t want;
} lat_wait;

static bool received(env *e, void *ud)
{
    (void)e;
    lat_wait *w = ud;
    return kx_http_receiver_count(w->rx) >= w->want;
}

/* n alerts at rate/s to the healthy route; with hung_url, every other alert goes to a sink
 * that never answers. Latencies (ms) into lat. */
static int latency(const char *spool, kx_http_receiver *ok, const char *ok_url,
                   const char *hung_url, size_t n, double rate, double *lat)
{
    env e = {.loop = ev_loop_new(EVFLAG_AUTO)};
    char yaml[3072];
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dedup_window: 0\n"
             "  spool: {dir: \"%s\"}\n"
             "  sinks:\n"
             "    chat: {type: webhook, url: \"%s\"}\n"
             "    pager: {type: webhook, url: \"%s\", timeout: 30s}\n"
             "  routes:\n"
             "    - {team: secops, sinks: [pager]}\n"
             "    - {default: true, sinks: [chat]}\n",
             spool, ok_url, hung_url ? hung_url : ok_url);
    if (make_router(&e, yaml)) {
        ev_loop_destroy(e.loop);
        return -1;
    }
    size_t base = kx_http_receiver_count(ok);
    for (size_t i = 0; i < n; i++) {
        if (hung_url) {
            kx_alert h = make_alert((int64_t)(1000000 + i), "secops");
            kx_router_send(e.router, &h, NULL, NULL);
        }
        kx_alert a = make_alert((int64_t)(2000000 + i), NULL);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double sent = (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
        if (kx_router_send(e.router, &a, NULL, NULL))
            return -1;
        lat_wait w = {ok, base + i + 1};
        if (!run_until(&e, received, &w, 30))
            return -1;
        lat[i] = (double)kx_http_receiver_time_ms(ok, base + i) - sent;
        /* The next one at its time (the rest of 1/rate). */
        double gap_ms = 1000.0 / rate;
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double el = (double)now.tv_sec * 1e3 + (double)now.tv_nsec / 1e6 - sent;
        if (el < gap_ms) {
            struct timespec ns = {0, (long)((gap_ms - el) * 1e6)};
            nanosleep(&ns, NULL);
        }
    }
    drop_router(&e); /* the hung sink's alerts stay in the spool */
    ev_loop_destroy(e.loop);
    return 0;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof(*v), cmp_d);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    size_t n = 20000, batch = 500, lat_n = 300;
    int runs = 3, opt, redis_port = 0;
    double rate = 200;
    while ((opt = getopt(argc, argv, "n:r:b:R:l:S:")) != -1) {
        switch (opt) {
        case 'n':
            n = (size_t)atol(optarg);
            break;
        case 'r':
            runs = atoi(optarg);
            break;
        case 'b':
            batch = (size_t)atol(optarg);
            break;
        case 'R':
            rate = atof(optarg);
            break;
        case 'l':
            lat_n = (size_t)atol(optarg);
            break;
        case 'S':
            redis_port = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench-alerts [-n ALERTS] [-r RUNS] [-b BATCH] [-R RATE] "
                            "[-l LAT_ALERTS] [-S REDIS_PORT]\n");
            return 2;
        }
    }
    if (!n || !batch || !lat_n || runs < 1 || rate <= 0) {
        fprintf(stderr, "bench-alerts: bad arguments\n");
        return 2;
    }
    kx_log_set_level(KX_LOG_ERROR);
    kx_http_receiver *ok = NULL, *hung = NULL;
    if (kx_http_receiver_start(&ok) || kx_http_receiver_start(&hung)) {
        fprintf(stderr, "bench-alerts: cannot start the HTTP receivers\n");
        return 1;
    }
    kx_http_receiver_hang_next(hung, 1u << 30);
    char ok_url[128], hung_url[128], tmpl[] = "/tmp/kx-bench-alerts-XXXXXX";
    kx_http_receiver_url(ok, "/chat", ok_url, sizeof(ok_url));
    kx_http_receiver_url(hung, "/pager", hung_url, sizeof(hung_url));
    char *dir = mkdtemp(tmpl);
    if (!dir)
        return 1;
    int code = 0;
    static const char *const mode_name[3] = {"spool", "memory", "claims"};
    for (int mode = 0; mode < (redis_port > 0 ? 3 : 2) && !code; mode++) {
        double *rates = calloc((size_t)runs, sizeof(double)),
               *cpus = calloc((size_t)runs, sizeof(double));
        for (int r = 0; r < runs && !code; r++) {
            char spool[256];
            snprintf(spool, sizeof(spool), "%s/spool-%d-%d", dir, mode, r);
            if (throughput(mode == 1 ? NULL : spool, ok_url, n, batch, mode == 2 ? redis_port : 0,
                           &rates[r], &cpus[r])) {
                fprintf(stderr, "bench-alerts: throughput run failed\n");
                code = 1;
            }
        }
        if (!code) {
            double lo = rates[0], hi = rates[0];
            for (int r = 1; r < runs; r++) {
                lo = rates[r] < lo ? rates[r] : lo;
                hi = rates[r] > hi ? rates[r] : hi;
            }
            printf("row=alerts-%s runs=%d alerts=%zu batch=%zu median=%.0f min=%.0f max=%.0f "
                   "cpu_us_per_alert=%.2f\n",
                   mode_name[mode], runs, n, batch, pct(rates, (size_t)runs, 0.5), lo, hi,
                   pct(cpus, (size_t)runs, 0.5));
        }
        free(rates);
        free(cpus);
    }
    /* Fresh receivers: the throughput runs filled the first one's request records. */
    kx_http_receiver_stop(ok);
    kx_http_receiver_stop(hung);
    if (kx_http_receiver_start(&ok) || kx_http_receiver_start(&hung))
        return 1;
    kx_http_receiver_hang_next(hung, 1u << 30);
    kx_http_receiver_url(ok, "/chat", ok_url, sizeof(ok_url));
    kx_http_receiver_url(hung, "/pager", hung_url, sizeof(hung_url));
    for (int mode = 0; mode < 2 && !code; mode++) {
        double *lat = calloc(lat_n, sizeof(double));
        char spool[256];
        snprintf(spool, sizeof(spool), "%s/lat-%d", dir, mode);
        if (latency(spool, ok, ok_url, mode ? hung_url : NULL, lat_n, rate, lat)) {
            fprintf(stderr, "bench-alerts: latency run failed\n");
            code = 1;
        } else {
            double p50 = pct(lat, lat_n, 0.5), p90 = pct(lat, lat_n, 0.9),
                   p99 = pct(lat, lat_n, 0.99), mx = lat[lat_n - 1];
            printf("row=alert-latency-%s n=%zu rate=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
                   "max_ms=%.2f hung_requests=%zu\n",
                   mode ? "with-hung-sink" : "healthy-only", lat_n, rate, p50, p90, p99, mx,
                   mode ? kx_http_receiver_count(hung) : 0);
        }
        free(lat);
    }
    kx_http_receiver_stop(ok);
    kx_http_receiver_stop(hung);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench-alerts: could not remove %s\n", dir);
    return code;
}
