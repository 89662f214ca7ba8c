/*
 * bench-state: the stateful path alone — kx_pipeline with correlation rules on a real Redis
 * (or the memory store) — over a synthetic stream in which every event matches. It reports
 * events/s, the CPU each matching event costs klaxon and redis-server (INFO cpu: the server's
 * user + system time), and how many Redis commands (EVALSHA) and round trips it costs, so
 * local pre-aggregation can be measured against per-event updates in the same run.
 *
 *   bench-state -s redis://127.0.0.1:PORT | memory  [-n EVENTS] [-g GROUPS] [-b BATCH]
 *               [-r RUNS] [-p 0|1 (pre-aggregation)]
 *               [-t event_count|value_count|baseline|absence|at_most|first_seen]
 *               [-x PORT,PORT... (more servers to count: a Redis Cluster's other masters)]
 *               [-l (sliding windows through the window log: kx_store_redis_use_log)]
 *
 * The stream: EVENTS JSON events, 10 ms apart, round-robin over GROUPS source addresses, each
 * a failed login. The rule: that detection plus a correlation of the chosen type grouped by
 * source (event_count: gte 1000 in 5m, so alerts stay rare and the store path dominates;
 * absence: a 1 h silence, so every event is a sighting and none is silent; at_most: at most
 * 2 events in 1 h windows, judged when a window closes: every event is a closing touch;
 * first_seen: the action per source, new only with a group's first event).
 * Every run uses a fresh key prefix, so it starts from empty windows. Output: one line per
 * run setting: "row=... median=... evalsha_per_event=... redis_cmds_per_event=... (the
 * commands the scripts ran) round_trips_per_event=..." (a batch waits once for all its
 * replies, pipelined, so that is 1 / batch either way).
 */
#include <errno.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "klaxon/alert.h"
#include "klaxon/common.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/log.h"
#include "klaxon/pipeline.h"
#include "klaxon/store.h"
#include "klaxon/yaml.h"

typedef struct run_state {
    struct ev_loop *loop;
    bool done, drained;
} run_state;

static void on_done(void *ud)
{
    ((run_state *)ud)->done = true;
}

static void on_drained(void *ud)
{
    ((run_state *)ud)->drained = true;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

#define MAX_SERVERS 16

/* The servers whose work is counted: the store's, then -x's. */
static redisContext *servers[MAX_SERVERS];
static size_t nservers;

/* INFO cpu of every server: used_cpu_user + used_cpu_sys, seconds. */
static double redis_cpu(void)
{
    double sum = 0;
    for (size_t i = 0; i < nservers; i++) {
        redisReply *r = redisCommand(servers[i], "INFO cpu");
        if (r && r->type == REDIS_REPLY_STRING) {
            const char *u = strstr(r->str, "used_cpu_user:"), *y = strstr(r->str, "used_cpu_sys:");
            if (u)
                sum += atof(u + 14);
            if (y)
                sum += atof(y + 13);
        }
        freeReplyObject(r);
    }
    return sum;
}

/* INFO commandstats: calls of one command (0 when never called). */
static long long server_calls(redisContext *c, const char *cmd)
{
    redisReply *r = redisCommand(c, "INFO commandstats");
    long long calls = 0;
    if (r && r->type == REDIS_REPLY_STRING) {
        char key[64];
        snprintf(key, sizeof(key), "cmdstat_%s:calls=", cmd);
        const char *p = strstr(r->str, key);
        if (p)
            calls = atoll(p + strlen(key));
    }
    freeReplyObject(r);
    return calls;
}

static long long redis_calls(const char *cmd)
{
    long long sum = 0;
    for (size_t i = 0; i < nservers; i++)
        sum += server_calls(servers[i], cmd);
    return sum;
}

/* INFO commandstats: calls of every command but INFO and CONFIG (the bench's own), which
 * counts what the scripts run inside Redis too. */
static long long server_all_calls(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO commandstats");
    long long calls = 0;
    if (r && r->type == REDIS_REPLY_STRING) {
        for (const char *p = strstr(r->str, "cmdstat_"); p; p = strstr(p + 1, "cmdstat_")) {
            if (!strncmp(p, "cmdstat_info:", 13) || !strncmp(p, "cmdstat_config", 14))
                continue;
            const char *q = strstr(p, "calls=");
            if (q)
                calls += atoll(q + 6);
        }
    }
    freeReplyObject(r);
    return calls;
}

static long long redis_all_calls(void)
{
    long long sum = 0;
    for (size_t i = 0; i < nservers; i++)
        sum += server_all_calls(servers[i]);
    return sum;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const char *rule_text(const char *type)
{
    if (!strcmp(type, "value_count"))
        return "title: Failed\nname: failed\ndetection:\n  sel: {action: fail}\n"
               "  condition: sel\n---\ntitle: Spray\nid: spray\ncorrelation:\n"
               "  type: value_count\n  rules: [failed]\n  group-by: [src_ip]\n  timespan: 5m\n"
               "  condition: {field: user, gte: 1000}\n";
    if (!strcmp(type, "first_seen"))
        return "title: Failed\nname: failed\ndetection:\n  sel: {action: fail}\n"
               "  condition: sel\n---\ntitle: New action\nid: newact\ncorrelation:\n"
               "  type: first_seen\n  rules: [failed]\n  group-by: [src_ip]\n  field: action\n"
               "  timespan: 1d\n";
    if (!strcmp(type, "at_most"))
        return "title: Failed\nname: failed\ndetection:\n  sel: {action: fail}\n"
               "  condition: sel\n---\ntitle: Too few\nid: few\ncorrelation:\n"
               "  type: event_count\n  rules: [failed]\n  group-by: [src_ip]\n  timespan: 1h\n"
               "  condition: {lte: 2}\n";
    if (!strcmp(type, "absence"))
        return "title: Failed\nname: failed\ndetection:\n  sel: {action: fail}\n"
               "  condition: sel\n---\ntitle: Source gone quiet\nid: quiet\ncorrelation:\n"
               "  type: absence\n  rules: [failed]\n  group-by: [src_ip]\n  timespan: 1h\n";
    if (!strcmp(type, "baseline"))
        return "title: Failed\nname: failed\ndetection:\n  sel: {action: fail}\n"
               "  condition: sel\n---\ntitle: Above baseline\nid: base\ncorrelation:\n"
               "  type: baseline\n  rules: [failed]\n  group-by: [src_ip]\n  timespan: 1m\n"
               "  history: 5\n  condition: {gte: 100000}\n";
    return "title: Failed\nname: failed\ndetection:\n  sel: {action: fail}\n"
           "  condition: sel\n---\ntitle: Burst\nid: burst\ncorrelation:\n"
           "  type: event_count\n  rules: [failed]\n  group-by: [src_ip]\n  timespan: 5m\n"
           "  condition: {gte: 1000}\n";
}

int main(int argc, char **argv)
{
    const char *store_url = "memory", *type = "event_count";
    size_t n = 100000, groups = 100, batch = 1000;
    const char *more = "";
    int runs = 5, preagg = 0, use_log = 0, opt;
    while ((opt = getopt(argc, argv, "s:n:g:b:r:p:t:x:l")) != -1) {
        switch (opt) {
        case 's':
            store_url = optarg;
            break;
        case 'n':
            n = (size_t)atol(optarg);
            break;
        case 'g':
            groups = (size_t)atol(optarg);
            break;
        case 'b':
            batch = (size_t)atol(optarg);
            break;
        case 'r':
            runs = atoi(optarg);
            break;
        case 'p':
            preagg = atoi(optarg);
            break;
        case 't':
            type = optarg;
            break;
        case 'x':
            more = optarg;
            break;
        case 'l':
            use_log = 1;
            break;
        default:
            fprintf(stderr, "usage: bench-state -s URL [-n N] [-g G] [-b B] [-r R] [-p 0|1] "
                            "[-t TYPE] [-x PORT,PORT...] [-l]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 64 || !n || !groups || !batch)
        return 2;
    kx_log_set_level(KX_LOG_ERROR);

    char dir[] = "/tmp/kx-bench-state.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char rules_path[128];
    snprintf(rules_path, sizeof(rules_path), "%s/rules.yml", dir);
    FILE *f = fopen(rules_path, "w");
    if (!f)
        return 1;
    fputs(rule_text(type), f);
    fclose(f);
    const char *paths[] = {rules_path};
    kx_ruleset *rules = NULL;
    kx_err err = {0};
    if (kx_ruleset_load(paths, 1, &rules, &err)) {
        char msg[512];
        kx_err_format(&err, msg, sizeof(msg));
        fprintf(stderr, "bench-state: %s\n", msg);
        return 1;
    }

    /* The stream, rendered once. */
    char **lines = calloc(n, sizeof(*lines));
    size_t *lens = calloc(n, sizeof(*lens));
    kx_msg *msgs = calloc(batch, sizeof(*msgs));
    if (!lines || !lens || !msgs)
        return 1;
    int64_t t0 = 1777777777000;
    for (size_t i = 0; i < n; i++) {
        char ts[40], buf[256];
        kx_time_format(t0 + (int64_t)i * 10, ts, sizeof(ts));
        size_t g = i % groups;
        int len =
            snprintf(buf, sizeof(buf),
                     "{\"@timestamp\":\"%s\",\"action\":\"fail\",\"src_ip\":\"10.%zu.%zu.%zu\","
                     "\"user\":\"u%zu\"}",
                     ts, (g >> 16) & 255, (g >> 8) & 255, g & 255, (i / groups) % 5000);
        lines[i] = strdup(buf);
        lens[i] = (size_t)len;
    }

    redisContext *rc = NULL;
    char host[64] = "";
    int port = 0;
    if (!strncmp(store_url, "redis://", 8)) {
        if (sscanf(store_url + 8, "%63[^:]:%d", host, &port) != 2)
            return 2;
        rc = redisConnect(host, port);
        if (!rc || rc->err)
            return 1;
        servers[nservers++] = rc;
        for (const char *p = more; *p && nservers < MAX_SERVERS;) {
            redisContext *c = redisConnect(host, atoi(p));
            if (!c || c->err)
                return 1;
            servers[nservers++] = c;
            p = strchr(p, ',');
            if (!p)
                break;
            p++;
        }
    }

    double secs[64], cpus[64], rcpus[64] = {0};
    double evalsha = 0, trips = 0, cmds = 0;
    size_t alerts_file = 0;
    for (int r = 0; r < runs; r++) {
        run_state st = {0};
        struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
        kx_store *store = NULL;
        kx_router *router = NULL;
        kx_pipeline *pipe = NULL;
        kx_yaml_doc *doc = NULL;
        char url[256], cfg[256];
        if (rc)
            snprintf(url, sizeof(url), "redis://%s:%d/bst%d-%d-%d:", host, port, (int)getpid(),
                     preagg, r);
        else
            snprintf(url, sizeof(url), "memory");
        snprintf(cfg, sizeof(cfg), "alerting:\n  sinks:\n    out: {type: file, path: %s/alerts}\n",
                 dir);
        if (kx_yaml_load_mem("bench.yaml", cfg, strlen(cfg), &doc, &err) ||
            kx_router_create(loop, kx_yaml_get(doc->root, "alerting"), "bench.yaml", NULL, &router,
                             &err) ||
            kx_store_create_from_url(loop, url, NULL, &store, &err) ||
            (use_log && kx_store_redis_use_log(store)))
            return 1;
        while (!kx_store_is_up(store))
            ev_run(loop, EVRUN_ONCE);
        kx_pipeline_opts opts = {.max_event_bytes = 1 << 20,
                                 .evidence_bytes = 1024,
                                 .lateness_ms = 60000,
                                 .preaggregate = preagg != 0};
        kx_decoder *d = NULL;
        if (kx_pipeline_create(loop, rules, store, router, &opts, &pipe) ||
            kx_decoder_create(NULL, NULL, -1, NULL, &d, &err) ||
            kx_pipeline_add_decoder(pipe, NULL, d))
            return 1;
        long long calls0 = rc ? redis_calls("evalsha") : 0;
        long long all0 = rc ? redis_all_calls() : 0;
        double rc0 = rc ? redis_cpu() : 0;
        double w0 = now_s(), c0 = cpu_s();
        size_t nbatches = 0;
        for (size_t i = 0; i < n;) {
            size_t k = 0;
            for (; k < batch && i < n; k++, i++)
                msgs[k] = (kx_msg){.payload = lines[i],
                                   .len = lens[i],
                                   .offset = (int64_t)i,
                                   .timestamp_ms = t0 + (int64_t)i * 10};
            st.done = false;
            if (kx_pipeline_process(pipe, msgs, k, on_done, &st))
                abort();
            while (!st.done)
                ev_run(loop, EVRUN_ONCE);
            nbatches++;
        }
        kx_router_drain(router, on_drained, &st);
        while (!st.drained)
            ev_run(loop, EVRUN_ONCE);
        secs[r] = now_s() - w0;
        cpus[r] = cpu_s() - c0;
        if (rc) {
            rcpus[r] = redis_cpu() - rc0;
            evalsha = (double)(redis_calls("evalsha") - calls0) / (double)n;
            /* Each EVALSHA is counted once more as the call itself. */
            cmds = (double)(redis_all_calls() - all0) / (double)n - evalsha;
            /* The batch waits for all its replies once: one round trip per batch. */
            trips = (double)nbatches / (double)n;
        }
        kx_router_destroy(router);
        kx_store_destroy(store);
        kx_pipeline_destroy(pipe);
        kx_yaml_free(doc);
        ev_loop_destroy(loop);
    }
    double rates[64];
    for (int r = 0; r < runs; r++)
        rates[r] = (double)n / secs[r];
    qsort(rates, (size_t)runs, sizeof(double), cmp_double);
    qsort(cpus, (size_t)runs, sizeof(double), cmp_double);
    qsort(rcpus, (size_t)runs, sizeof(double), cmp_double);
    (void)alerts_file;
    printf("row=state type=%s store=%s%s preaggregate=%d events=%zu groups=%zu batch=%zu runs=%d "
           "median=%.0f min=%.0f max=%.0f cpu_us_per_event=%.3f redis_cpu_us_per_event=%.2f "
           "evalsha_per_event=%.4f redis_cmds_per_event=%.2f round_trips_per_event=%.4f "
           "servers=%zu\n",
           type, rc ? "redis" : "memory", use_log ? "-log" : "", preagg, n, groups, batch, runs,
           rates[runs / 2], rates[0], rates[runs - 1], cpus[runs / 2] * 1e6 / (double)n,
           rcpus[runs / 2] * 1e6 / (double)n, evalsha, cmds, trips, nservers);
    for (size_t i = 0; i < nservers; i++)
        redisFree(servers[i]);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
    free(lens);
    free(msgs);
    kx_ruleset_destroy(rules);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
