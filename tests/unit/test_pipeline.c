/*
 * The pipeline (src/app/pipeline.c) wired as `klaxon run` wires it: rules loaded from files,
 * the JSON decoder with defaults, the memory or the redis store (a real redis-server), and a
 * router whose `alerting:` map writes to a file sink. Batches of kx_msg go through
 * kx_pipeline_process and the loop runs until the done callback.
 *
 * What is pinned: done runs from the loop (never inside kx_pipeline_process), one batch at
 * a time (-EBUSY), the exact alert JSON fields of a single-event rule and of an event_count
 * correlation (fires once at the crossing, not at the next event, again in a later window
 * with a new dedup_key), malformed messages counted and skipped, a Redis outage mid-batch
 * (pause, no done while down, resume, the same alerts as an uninterrupted run), a batch
 * processed twice (a re-consumed batch after a crash) adding no alert line, windows kept
 * apart per tenant, and the next batch submitted from inside a done callback.
 *
 * Stacks and buffers are owned by the fixture, so a failing assertion leaks nothing and the
 * report shows only the failure.
 */
#include <errno.h>
#include <ev.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#include "klaxon/alert.h"
#include "klaxon/decode.h"
#include "klaxon/detect.h"
#include "klaxon/metrics.h"
#include "klaxon/pipeline.h"
#include "klaxon/store.h"
#include "kx_test.h"
#include "redis_server.h"

#define WAIT_MS 20000

#define ROOT_ID "8c0a3e52-6a41-4f0e-9d1b-2b7f4c5e6a01"
#define CORR_ID "5d2e7b91-0c3f-4a8e-b6d4-9e1f2a3b4c02"
#define DENY_ID "1f4b8c2d-7e6a-4d3b-a9c5-0b8e7d6f5a03"

static const char root_rule[] = "title: Root login\n"
                                "id: " ROOT_ID "\n"
                                "detection:\n"
                                "    selection:\n"
                                "        action: login\n"
                                "        user: root\n"
                                "    condition: selection\n"
                                "level: high\n"
                                "tags: [attack.initial_access]\n"
                                "team: secops\n";

/* The correlation names no team: its alerts take the referenced rule's team. */
static const char corr_rules[] = "title: Denied burst from one source\n"
                                 "id: " CORR_ID "\n"
                                 "correlation:\n"
                                 "    type: event_count\n"
                                 "    rules: [conn_denied]\n"
                                 "    group-by: [src_ip]\n"
                                 "    timespan: 60s\n"
                                 "    condition:\n"
                                 "        gte: 3\n"
                                 "level: medium\n"
                                 "tags: [attack.discovery, attack.t1046]\n"
                                 "---\n"
                                 "title: Denied connection\n"
                                 "id: " DENY_ID "\n"
                                 "name: conn_denied\n"
                                 "detection:\n"
                                 "    selection:\n"
                                 "        action: deny\n"
                                 "    condition: selection\n"
                                 "level: low\n"
                                 "team: netops\n";

/* The standard batch. A = 10.0.0.5 crosses 3 at line 5 (window 01:29:20..01:30:20 holds
 * lines 1, 3, 5), line 6 makes 4 (no new alert), lines 7-9 are a new window 2.5 minutes
 * later (lines 1-6 are out of it): a second alert with another dedup_key. B = 10.0.0.9 stays
 * at 1. Line 2 is the single-event rule. */
static const char *const lines[] = {
    "{\"time\":\"2026-03-29T01:30:00Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":22}",
    "{\"time\":\"2026-03-29T01:30:05Z\",\"action\":\"login\",\"user\":\"root\","
    "\"src_ip\":\"192.0.2.1\"}",
    "{\"time\":\"2026-03-29T01:30:10Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":23}",
    "{\"time\":\"2026-03-29T01:30:15Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.9\",\"port\":22}",
    "{\"time\":\"2026-03-29T01:30:20Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":25}",
    "{\"time\":\"2026-03-29T01:30:30Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":80}",
    "{\"time\":\"2026-03-29T01:33:00Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":22}",
    "{\"time\":\"2026-03-29T01:33:10Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":23}",
    "{\"time\":\"2026-03-29T01:33:20Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"port\":25}",
};
#define NLINES KX_ARRAY_LEN(lines)

/* 2026-03-29T01:30:00Z */
#define T0 INT64_C(1774747800000)
/* Receive time for the fallback: far from the events, so a fallback would show. */
#define RECV_MS INT64_C(1800000000000)

typedef struct stack {
    struct ev_loop *loop;
    char path[512]; /* the file sink */
    kx_yaml_doc *doc;
    kx_router *router;
    kx_store *store;
    kx_pipeline *p;
    int done_calls;
    int busy_done_calls; /* done of a refused batch: must never run */
    bool in_process;     /* inside kx_pipeline_process */
    int done_inside;     /* done runs seen while inside it */
    bool pauses[16];
    size_t npauses;
    /* chained batches: each done submits the next line */
    kx_msg chain[NLINES];
    size_t chain_next;
    int chain_rc;
    json_t *alerts; /* the file sink's last parse (read_alerts) */
} stack;

typedef struct fx {
    struct ev_loop *loop;
    char *dir;
    kx_ruleset *rules;
    kx_test_redis redis;
    bool have_redis;
    /* live stacks and buffers, freed by teardown even when a test fails half-way */
    stack *stacks[4];
    char *bufs[8];
} fx;

/* ---- helpers ---- */

static void done_cb(void *ud)
{
    stack *s = ud;
    s->done_calls++;
    if (s->in_process)
        s->done_inside++;
}

static void busy_done_cb(void *ud)
{
    stack *s = ud;
    s->busy_done_calls++;
}

static void pause_cb(void *ud, bool pause)
{
    stack *s = ud;
    if (s->npauses < KX_ARRAY_LEN(s->pauses))
        s->pauses[s->npauses] = pause;
    s->npauses++;
}

static bool store_up(void *ud)
{
    return kx_store_is_up(ud);
}

static void make_msgs(kx_msg *msgs, size_t first, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        msgs[i] = (kx_msg){
            .payload = lines[first + i],
            .len = strlen(lines[first + i]),
            .topic = NULL,
            .offset = (int64_t)(first + i + 1),
            .timestamp_ms = RECV_MS,
        };
    }
}

/*
 * Builds store (url), router (file sink in the fixture's dir, named after tag) and pipeline
 * with a default JSON decoder. A redis store is waited for until it is up.
 */
static stack *stack_new_opts(fx *f, const char *url, const char *tag, const kx_pipeline_opts *opts);

static stack *stack_new(fx *f, const char *url, const char *tag, size_t max_event_bytes)
{
    kx_pipeline_opts opts = {
        .max_event_bytes = max_event_bytes,
        .evidence_bytes = 16384,
        .lateness_ms = 60000,
    };
    return stack_new_opts(f, url, tag, &opts);
}

static stack *stack_new_opts(fx *f, const char *url, const char *tag, const kx_pipeline_opts *opts)
{
    stack *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    size_t slot = 0;
    while (slot < KX_ARRAY_LEN(f->stacks) && f->stacks[slot])
        slot++;
    assert_true(slot < KX_ARRAY_LEN(f->stacks));
    f->stacks[slot] = s;
    s->loop = f->loop;
    snprintf(s->path, sizeof(s->path), "%s/alerts-%s.jsonl", f->dir, tag);
    char cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "alerting:\n"
             "  sinks:\n"
             "    out: {type: file, path: \"%s\"}\n",
             s->path);
    kx_err err = {0};
    assert_int_equal(kx_yaml_load_mem("alerting.yaml", cfg, strlen(cfg), &s->doc, &err), 0);
    assert_int_equal(kx_router_create(f->loop, kx_yaml_get(s->doc->root, "alerting"),
                                      "alerting.yaml", NULL, &s->router, &err),
                     0);
    assert_int_equal(kx_store_create_from_url(f->loop, url, NULL, &s->store, &err), 0);
    assert_true(kx_test_run_until(f->loop, store_up, s->store, WAIT_MS));
    assert_int_equal(kx_pipeline_create(f->loop, f->rules, s->store, s->router, opts, &s->p), 0);
    kx_pipeline_set_pause_cb(s->p, pause_cb, s);
    return s;
}

static void stack_add_default_decoder(stack *s)
{
    kx_decoder *d = NULL;
    kx_err err = {0};
    assert_int_equal(kx_decoder_create(NULL, NULL, -1, NULL, &d, &err), 0);
    assert_int_equal(kx_pipeline_add_decoder(s->p, NULL, d), 0);
}

static void stack_fini(fx *f, stack *s)
{
    for (size_t i = 0; i < KX_ARRAY_LEN(f->stacks); i++) {
        if (f->stacks[i] == s)
            f->stacks[i] = NULL;
    }
    /* Borrowers first: the pipeline uses the router and the store. */
    kx_router_destroy(s->router);
    kx_store_destroy(s->store);
    kx_pipeline_destroy(s->p);
    kx_yaml_free(s->doc);
    json_decref(s->alerts);
    free(s);
}

/* Hands a malloc'd buffer to the fixture, which frees it in teardown. */
static char *keep(fx *f, char *p)
{
    size_t i = 0;
    while (i < KX_ARRAY_LEN(f->bufs) && f->bufs[i])
        i++;
    assert_true(i < KX_ARRAY_LEN(f->bufs));
    f->bufs[i] = p;
    return p;
}

static int process(stack *s, const kx_msg *msgs, size_t n)
{
    s->in_process = true;
    int rc = kx_pipeline_process(s->p, msgs, n, done_cb, s);
    s->in_process = false;
    return rc;
}

typedef struct want_done {
    stack *s;
    int calls;
} want_done;

static bool done_reached(void *ud)
{
    want_done *w = ud;
    return w->s->done_calls >= w->calls;
}

/* Processes msgs as one batch and runs the loop until its done callback ran. */
static void run_batch(stack *s, const kx_msg *msgs, size_t n)
{
    int before = s->done_calls;
    assert_int_equal(process(s, msgs, n), 0);
    assert_int_equal(s->done_calls, before); /* never from inside kx_pipeline_process */
    want_done w = {s, before + 1};
    assert_true(kx_test_run_until(s->loop, done_reached, &w, WAIT_MS));
    assert_int_equal(s->done_calls, before + 1);
    assert_int_equal(s->done_inside, 0);
    assert_false(kx_pipeline_busy(s->p));
}

static void run_lines(stack *s, size_t first, size_t n)
{
    kx_msg msgs[NLINES];
    make_msgs(msgs, first, n);
    run_batch(s, msgs, n);
}

/* The file sink's content, parsed: one JSON object per line. Borrowed from the stack until
 * the next call (so a failing assertion leaks nothing). */
static json_t *read_alerts(stack *s)
{
    char *raw = kx_test_read_file(s->path, NULL);
    if (!raw)
        raw = strdup("");
    assert_non_null(raw);
    json_decref(s->alerts);
    json_t *arr = s->alerts = json_array();
    const char *p = raw;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!nl) {
            free(raw);
            fail_msg("the last alert line has no newline");
        }
        json_error_t je;
        json_t *o = json_loadb(p, (size_t)(nl - p), 0, &je);
        if (!o) {
            fprintf(stderr, "alert line is not JSON (%s): %.*s\n", je.text, (int)(nl - p), p);
            free(raw);
            fail();
        }
        json_array_append_new(arr, o);
        p = nl + 1;
    }
    free(raw);
    return arr;
}

static size_t count_alerts(stack *s)
{
    return json_array_size(read_alerts(s));
}

/* want_done reused: calls = the number of alerts in the file sink awaited. */
static bool alerts_reached(void *ud)
{
    want_done *w = ud;
    return count_alerts(w->s) >= (size_t)w->calls;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        fail_msg("key \"%s\" is not a string", key);
    return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        fail_msg("key \"%s\" is not an integer", key);
    return json_integer_value(v);
}

static void fmt_time(int64_t ms, char *out)
{
    kx_time_format(ms, out, 32);
}

static void assert_hex32(const char *s)
{
    assert_int_equal(strlen(s), 32);
    assert_int_equal(strspn(s, "0123456789abcdef"), 32);
}

/* The dedup_key the alert contract gives for (rule, tenant "default", group, first_seen). */
/* line >= 0: a single-event alert about lines[line] (its identity is in the key). */
static void dedup_of(const char *rule_id, const char *src_ip, int64_t first_ms, int line, char *out)
{
    kx_kv g = {"src_ip", src_ip};
    char id[24] = "";
    if (line >= 0) {
        kx_event ev;
        kx_event_init(&ev);
        ev.raw = lines[line];
        ev.raw_len = strlen(lines[line]);
        ev.time_ms = first_ms;
        ev.offset = line + 1;
        kx_event_id(&ev, id, sizeof(id));
        kx_event_fini(&ev);
    }
    kx_alert a = {.rule_id = rule_id,
                  .tenant = "default",
                  .group = src_ip ? &g : NULL,
                  .ngroup = src_ip ? 1 : 0,
                  .event_id = line >= 0 ? id : NULL,
                  .first_seen_ms = first_ms};
    kx_alert_dedup_key(&a, out, 33);
}

/* Evidence: the given lines, in this order, with their event times. */
static void assert_evidence(json_t *alert, const size_t *idx, const int64_t *times, size_t n)
{
    json_t *evs = json_object_get(alert, "events");
    assert_true(json_is_array(evs));
    if (json_array_size(evs) != n) {
        char *dump = json_dumps(evs, 0);
        fprintf(stderr, "evidence: %s\n", dump);
        free(dump);
    }
    assert_int_equal(json_array_size(evs), n);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(evs, i);
        char t[32];
        fmt_time(times[i], t);
        assert_string_equal(jstr(e, "time"), t);
        assert_string_equal(jstr(e, "raw"), lines[idx[i]]);
        json_t *fields = json_object_get(e, "fields");
        assert_true(json_is_object(fields));
        json_error_t je;
        json_t *orig = json_loads(lines[idx[i]], 0, &je);
        /* flat JSON: the fields are the object itself */
        bool same = orig && json_equal(fields, orig);
        json_decref(orig);
        assert_true(same);
        assert_null(json_object_get(e, "truncated"));
    }
}

static void assert_root_alert(json_t *a)
{
    char t[32], key[33];
    assert_hex32(jstr(a, "id"));
    dedup_of(ROOT_ID, NULL, T0 + 5000, 1, key);
    assert_string_equal(jstr(a, "dedup_key"), key);
    json_t *rule = json_object_get(a, "rule");
    assert_string_equal(jstr(rule, "id"), ROOT_ID);
    assert_string_equal(jstr(rule, "title"), "Root login");
    assert_string_equal(jstr(rule, "level"), "high");
    assert_string_equal(jstr(a, "severity"), "error");
    assert_string_equal(jstr(a, "team"), "secops");
    assert_string_equal(jstr(a, "tenant"), "default");
    assert_string_equal(jstr(a, "category"), "initial-access");
    assert_true(json_is_object(json_object_get(a, "group")));
    assert_int_equal(json_object_size(json_object_get(a, "group")), 0);
    assert_int_equal(jint(a, "count"), 1);
    assert_int_equal(jint(a, "window"), 0);
    fmt_time(T0 + 5000, t);
    assert_string_equal(jstr(a, "first_seen"), t);
    assert_string_equal(jstr(a, "last_seen"), t);
    json_t *tags = json_object_get(a, "tags");
    assert_int_equal(json_array_size(tags), 1);
    assert_string_equal(json_string_value(json_array_get(tags, 0)), "attack.initial_access");
    static const size_t idx[] = {1};
    static const int64_t times[] = {T0 + 5000};
    assert_evidence(a, idx, times, 1);
    assert_int_equal(json_object_size(a), 15); /* the contract's keys, "status" included */
}

/* A correlation alert for 10.0.0.5 over lines idx (time order), first..last. */
static void assert_corr_alert(json_t *a, const size_t *idx, const int64_t *times, size_t n,
                              bool evidence, json_int_t suppressed)
{
    char t[32], key[33];
    assert_hex32(jstr(a, "id"));
    dedup_of(CORR_ID, "10.0.0.5", times[0], -1, key);
    assert_string_equal(jstr(a, "dedup_key"), key);
    json_t *rule = json_object_get(a, "rule");
    assert_string_equal(jstr(rule, "id"), CORR_ID);
    assert_string_equal(jstr(rule, "title"), "Denied burst from one source");
    assert_string_equal(jstr(rule, "level"), "medium");
    assert_string_equal(jstr(a, "severity"), "warning");
    assert_string_equal(jstr(a, "team"), "netops");
    assert_string_equal(jstr(a, "tenant"), "default");
    assert_string_equal(jstr(a, "category"), "discovery");
    json_t *group = json_object_get(a, "group");
    assert_int_equal(json_object_size(group), 1);
    assert_string_equal(jstr(group, "src_ip"), "10.0.0.5");
    assert_int_equal(jint(a, "count"), (json_int_t)n);
    assert_int_equal(jint(a, "window"), 60);
    fmt_time(times[0], t);
    assert_string_equal(jstr(a, "first_seen"), t);
    fmt_time(times[n - 1], t);
    assert_string_equal(jstr(a, "last_seen"), t);
    json_t *tags = json_object_get(a, "tags");
    assert_int_equal(json_array_size(tags), 2);
    assert_string_equal(json_string_value(json_array_get(tags, 0)), "attack.discovery");
    assert_string_equal(json_string_value(json_array_get(tags, 1)), "attack.t1046");
    /* Events that kept the condition met without an alert since the group's last one. */
    if (suppressed)
        assert_int_equal(jint(a, "suppressed"), suppressed);
    else
        assert_null(json_object_get(a, "suppressed"));           /* absent when 0 */
    assert_int_equal(json_object_size(a), suppressed ? 16 : 15); /* "status" included */
    /* The evidence is the counted events: those of this window, not older events the key
     * still remembers from an earlier window. */
    if (evidence)
        assert_evidence(a, idx, times, n);
}

static const size_t corr1_idx[] = {0, 2, 4};
static const int64_t corr1_t[] = {T0, T0 + 10000, T0 + 20000};
static const size_t corr2_idx[] = {6, 7, 8};
static const int64_t corr2_t[] = {T0 + 180000, T0 + 190000, T0 + 200000};

/* The alerts of the whole standard batch, in order: root login, burst 1, burst 2. The
 * second burst's evidence is checked when window2_evidence is set (the outage tests compare
 * bytes with an uninterrupted run instead). */
static void assert_standard_alerts(stack *s, bool window2_evidence)
{
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 3);
    assert_root_alert(json_array_get(arr, 0));
    assert_corr_alert(json_array_get(arr, 1), corr1_idx, corr1_t, 3, true, 0);
    /* Line 6 (4 in the first window) raised nothing: the second alert says so. */
    assert_corr_alert(json_array_get(arr, 2), corr2_idx, corr2_t, 3, window2_evidence, 1);
    assert_string_not_equal(jstr(json_array_get(arr, 1), "dedup_key"),
                            jstr(json_array_get(arr, 2), "dedup_key"));
}

/* The file sink's bytes for the standard batch through an uninterrupted memory pipeline. */
static char *baseline(fx *f)
{
    stack *s = stack_new(f, "memory", "baseline", 0);
    stack_add_default_decoder(s);
    run_lines(s, 0, NLINES);
    char *raw = kx_test_read_file(s->path, NULL);
    assert_non_null(raw);
    stack_fini(f, s);
    return raw;
}

/* ---- fixtures ---- */

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(f->loop);
    f->dir = kx_test_tmpdir("pipeline");
    assert_non_null(f->dir);
    char a[600], b[600];
    snprintf(a, sizeof(a), "%s/root.yml", f->dir);
    snprintf(b, sizeof(b), "%s/burst.yml", f->dir);
    assert_int_equal(kx_test_write_file(a, root_rule), 0);
    assert_int_equal(kx_test_write_file(b, corr_rules), 0);
    const char *paths[] = {a, b};
    kx_err err = {0};
    if (kx_ruleset_load(paths, 2, &f->rules, &err)) {
        char msg[1024];
        kx_err_format(&err, msg, sizeof(msg));
        fail_msg("rules: %s", msg);
    }
    assert_int_equal(kx_ruleset_size(f->rules), 3);
    kx_metrics_reset();
    *state = f;
    return 0;
}

static int setup_redis(void **state)
{
    setup(state);
    fx *f = *state;
    assert_int_equal(kx_test_redis_start(&f->redis), 0);
    f->have_redis = true;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    for (size_t i = 0; i < KX_ARRAY_LEN(f->stacks); i++) {
        if (f->stacks[i])
            stack_fini(f, f->stacks[i]);
    }
    for (size_t i = 0; i < KX_ARRAY_LEN(f->bufs); i++)
        free(f->bufs[i]);
    kx_ruleset_destroy(f->rules);
    if (f->have_redis)
        kx_test_redis_stop(&f->redis);
    /* Everything was destroyed: nothing may be left on the loop. */
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(f->loop);
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void redis_url(const fx *f, const char *prefix, char *out, size_t outlen)
{
    snprintf(out, outlen, "redis://127.0.0.1:%d/%s", f->redis.port, prefix);
}

/* ---- memory store ---- */

static void test_done_from_loop_and_busy(void **state)
{
    fx *f = *state;
    stack *s = stack_new(f, "memory", "busy", 0);
    stack_add_default_decoder(s);
    kx_msg msgs[NLINES];
    make_msgs(msgs, 0, NLINES);

    /* Everything in this batch completes synchronously (memory store, file sink): done
     * still waits for the loop. */
    assert_int_equal(process(s, msgs, NLINES), 0);
    assert_int_equal(s->done_calls, 0);
    assert_true(kx_pipeline_busy(s->p));
    assert_int_equal(count_alerts(s), 3);

    /* A second batch while one is in flight is refused and its done never runs. */
    assert_int_equal(kx_pipeline_process(s->p, msgs, 1, busy_done_cb, s), -EBUSY);
    want_done w = {s, 1};
    assert_true(kx_test_run_until(f->loop, done_reached, &w, WAIT_MS));
    assert_int_equal(s->done_calls, 1);
    assert_int_equal(s->done_inside, 0);
    assert_false(kx_pipeline_busy(s->p));

    /* An empty batch is done from the loop too; then the pipeline takes the next one. */
    run_batch(s, msgs, 0);
    run_batch(s, msgs, 1);
    assert_int_equal(s->done_calls, 3);
    assert_int_equal(s->busy_done_calls, 0);
    assert_int_equal(s->npauses, 0);
    /* The refused batch was not processed: 9 + 1 events. */
    assert_int_equal(kx_metric_get(KX_M_EVENTS_DECODED), NLINES + 1);
    stack_fini(f, s);
}

static void test_alerts_memory(void **state)
{
    fx *f = *state;
    stack *s = stack_new(f, "memory", "mem", 0);
    stack_add_default_decoder(s);

    /* Lines 1-5: the root login, then the burst crosses 3 at line 5. */
    run_lines(s, 0, 5);
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 2);
    assert_root_alert(json_array_get(arr, 0));
    assert_corr_alert(json_array_get(arr, 1), corr1_idx, corr1_t, 3, true, 0);
    /* Line 6: 4 in the window, the threshold was already crossed: nothing new. */
    run_lines(s, 5, 1);
    assert_int_equal(count_alerts(s), 2);
    /* Lines 7-9: a new window, a new alert with its own dedup_key. */
    run_lines(s, 6, 3);
    assert_standard_alerts(s, true);

    assert_int_equal(kx_metric_get(KX_M_EVENTS_DECODED), NLINES);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_MALFORMED), 0);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_MATCHED), NLINES);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 3);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DEDUPED), 0);
    assert_int_equal(kx_ruleset_at(f->rules, 0)->matches + kx_ruleset_at(f->rules, 1)->matches +
                         kx_ruleset_at(f->rules, 2)->matches,
                     NLINES + 2); /* 9 detection matches + 2 correlation alerts */
    assert_int_equal(s->npauses, 0);
    stack_fini(f, s);
}

static void test_malformed_skipped(void **state)
{
    fx *f = *state;
    stack *s = stack_new(f, "memory", "malformed", 256);
    stack_add_default_decoder(s);
    /* Valid JSON, would count for 10.0.0.5, but over max_event_bytes (256). */
    char big[400];
    snprintf(big, sizeof(big),
             "{\"time\":\"2026-03-29T01:30:12Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\","
             "\"pad\":\"%0250d\"}",
             0);
    assert_true(strlen(big) > 256);
    kx_msg m[8];
    make_msgs(&m[1], 0, 1);
    make_msgs(&m[4], 2, 1);
    make_msgs(&m[6], 4, 1);
    m[0] = (kx_msg){.payload = "{broken json", .len = 12, .offset = 100, .timestamp_ms = RECV_MS};
    /* A file line cut at the reader's cap: its (valid-looking) prefix must not count. */
    m[2] = m[4];
    m[2].offset = 101;
    m[2].oversize = true;
    m[3] = (kx_msg){.payload = big, .len = strlen(big), .offset = 102, .timestamp_ms = RECV_MS};
    m[5] = (kx_msg){.payload = "[1,2]", .len = 5, .offset = 103, .timestamp_ms = RECV_MS};
    m[7] = (kx_msg){.payload = "", .len = 0, .offset = 104, .timestamp_ms = RECV_MS};
    run_batch(s, m, 8);

    assert_int_equal(kx_metric_get(KX_M_EVENTS_MALFORMED), 5);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_DECODED), 3);
    /* The three valid lines after the bad ones still made the burst, exactly once. */
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 1);
    assert_corr_alert(json_array_get(arr, 0), corr1_idx, corr1_t, 3, true, 0);
    stack_fini(f, s);
}

static void test_topic_without_decoder(void **state)
{
    fx *f = *state;
    stack *s = stack_new(f, "memory", "topics", 0);
    kx_decoder *d = NULL;
    kx_err err = {0};
    assert_int_equal(kx_decoder_create(NULL, NULL, -1, NULL, &d, &err), 0);
    assert_int_equal(kx_pipeline_add_decoder(s->p, "fw", d), 0);
    kx_msg m[5];
    make_msgs(m, 0, 5); /* lines 1-5 */
    m[0].topic = "fw";
    m[1].topic = "auth"; /* no input: the root login is not seen */
    m[2].topic = "fw";
    m[3].topic = NULL; /* no default decoder either */
    m[4].topic = "fw";
    run_batch(s, m, 5);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_MALFORMED), 2);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_DECODED), 3);
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 1);
    json_t *a = json_array_get(arr, 0);
    assert_string_equal(jstr(json_object_get(a, "rule"), "id"), CORR_ID);
    assert_int_equal(jint(a, "count"), 3);
    stack_fini(f, s);
}

/* The decode limits an event hit reach its alerts' evidence, single-event and correlation
 * alike, and the events still count: a hostile number or nesting hides nothing. */
static void test_decode_limits_in_evidence(void **state)
{
    fx *f = *state;
    stack *s = stack_new(f, "memory", "limits", 0);
    stack_add_default_decoder(s);
    static const char login[] = "{\"time\":\"2026-03-29T01:30:05Z\",\"action\":\"login\","
                                "\"user\":\"root\",\"n\":18446744073709551616}";
    char deep[512];
    int off = snprintf(deep, sizeof(deep),
                       "{\"time\":\"2026-03-29T01:30:10Z\",\"action\":\"deny\","
                       "\"src_ip\":\"10.0.0.5\",\"x\":");
    for (int i = 0; i < 70; i++)
        deep[off++] = '[';
    for (int i = 0; i < 70; i++)
        deep[off++] = ']';
    snprintf(deep + off, sizeof(deep) - (size_t)off, "}");
    kx_msg m[4];
    make_msgs(m, 0, 1); /* deny 10.0.0.5 at 01:30:00 */
    m[1] = (kx_msg){.payload = login, .len = strlen(login), .offset = 2, .timestamp_ms = RECV_MS};
    m[2] = (kx_msg){.payload = deep, .len = strlen(deep), .offset = 3, .timestamp_ms = RECV_MS};
    make_msgs(&m[3], 4, 1); /* deny 10.0.0.5 at 01:30:20: the third */
    run_batch(s, m, 4);

    assert_int_equal(kx_metric_get(KX_M_EVENTS_DECODED), 4);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_NUMBER), 1);
    assert_int_equal(kx_metric_get(KX_M_LIMIT_DEPTH), 1);
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 2);
    json_t *root = json_array_get(arr, 0), *corr = json_array_get(arr, 1);
    assert_string_equal(jstr(json_object_get(root, "rule"), "id"), ROOT_ID);
    json_t *ev = json_array_get(json_object_get(root, "events"), 0);
    char *lim = json_dumps(json_object_get(ev, "decode_limits"), JSON_COMPACT);
    assert_string_equal(lim, "[\"number\"]");
    free(lim);
    /* As a string: strict readers (jansson, which reads this file) refuse such numbers. */
    assert_string_equal(jstr(json_object_get(ev, "fields"), "n"), "18446744073709551616");
    assert_string_equal(jstr(json_object_get(corr, "rule"), "id"), CORR_ID);
    assert_int_equal(jint(corr, "count"), 3);
    json_t *evs = json_object_get(corr, "events");
    assert_int_equal(json_array_size(evs), 3);
    assert_null(json_object_get(json_array_get(evs, 0), "decode_limits"));
    lim = json_dumps(json_object_get(json_array_get(evs, 1), "decode_limits"), JSON_COMPACT);
    assert_string_equal(lim, "[\"depth\"]");
    free(lim);
    assert_null(json_object_get(json_array_get(evs, 2), "decode_limits"));
    stack_fini(f, s);
}

/* A batch consumed again (crash before its offsets were committed): members are
 * idempotent, so counts repeat exactly, the same windows are reported with the same
 * dedup_keys, and the router suppresses them: the file sink gets nothing new. */
static void reprocess(fx *f, const char *url)
{
    stack *s = stack_new(f, url, "reprocess", 0);
    stack_add_default_decoder(s);
    kx_msg msgs[6];
    make_msgs(msgs, 0, 6); /* lines 1-6: one window, within the allowed lateness */
    run_batch(s, msgs, 6);
    char *first = keep(f, kx_test_read_file(s->path, NULL));
    assert_non_null(first);
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 2);
    assert_root_alert(json_array_get(arr, 0));
    assert_corr_alert(json_array_get(arr, 1), corr1_idx, corr1_t, 3, true, 0);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 2);

    run_batch(s, msgs, 6);
    char *second = keep(f, kx_test_read_file(s->path, NULL));
    assert_string_equal(second, first);
    /* Raised again and deduplicated: the root alert once, and the correlation's window
     * once per replayed member of it (a replayed event re-checks every window it belongs
     * to, which is what makes a lost reply safe to retry), all with the same dedup_key. */
    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 6);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DEDUPED), 4);
    assert_int_equal(s->npauses, 0);
    stack_fini(f, s);
}

static void test_reprocess_memory(void **state)
{
    reprocess(*state, "memory");
}

/* Windows are per tenant: two tenants whose names share a long prefix must not count into
 * one window (nor raise an alert for events of the other tenant). */
static void test_tenants_do_not_share_windows(void **state)
{
    fx *f = *state;
    stack *s = stack_new(f, "memory", "tenants", 0);
    static const char input[] = "tenant_field: org\n";
    kx_yaml_doc *doc = NULL;
    kx_err err = {0};
    assert_int_equal(kx_yaml_load_mem("input.yaml", input, strlen(input), &doc, &err), 0);
    kx_decoder *d = NULL;
    int rc = kx_decoder_create(doc->root, NULL, -1, "input.yaml", &d, &err);
    kx_yaml_free(doc);
    assert_int_equal(rc, 0);
    assert_int_equal(kx_pipeline_add_decoder(s->p, NULL, d), 0);
#define TENANT_A "customer-enterprise-production-eu-west-1"
#define TENANT_B "customer-enterprise-production-eu-west-2"
#define DENY(t, org)                                                                               \
    "{\"time\":\"2026-03-29T01:30:" t                                                              \
    "Z\",\"action\":\"deny\",\"src_ip\":\"10.0.0.5\",\"org\":\"" org "\"}"
    static const char *const ev[] = {DENY("00", TENANT_A), DENY("10", TENANT_B),
                                     DENY("20", TENANT_A), DENY("25", TENANT_B),
                                     DENY("30", TENANT_A)};
#undef DENY
    kx_msg m[5];
    for (size_t i = 0; i < 5; i++)
        m[i] = (kx_msg){.payload = ev[i],
                        .len = strlen(ev[i]),
                        .offset = (int64_t)i + 1,
                        .timestamp_ms = RECV_MS};
    run_batch(s, m, 5);
    /* Tenant A reaches 3 at its third event (01:30:30); tenant B stays at 2. */
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 1);
    json_t *a = json_array_get(arr, 0);
    assert_string_equal(jstr(a, "tenant"), TENANT_A);
    assert_int_equal(jint(a, "count"), 3);
    char t[32];
    fmt_time(T0, t);
    assert_string_equal(jstr(a, "first_seen"), t);
    fmt_time(T0 + 30000, t);
    assert_string_equal(jstr(a, "last_seen"), t);
#undef TENANT_A
#undef TENANT_B
    stack_fini(f, s);
}

/* The next batch submitted from the done callback of the previous one, as the file source
 * does when batch_done delivers the next lines at once. */
static void chain_done(void *ud)
{
    stack *s = ud;
    s->done_calls++;
    if (s->in_process)
        s->done_inside++;
    if (s->chain_next < NLINES) {
        size_t i = s->chain_next++;
        s->in_process = true;
        int rc = kx_pipeline_process(s->p, &s->chain[i], 1, chain_done, s);
        s->in_process = false;
        if (rc)
            s->chain_rc = rc;
    }
}

static bool chain_finished(void *ud)
{
    stack *s = ud;
    return s->done_calls == (int)NLINES || s->chain_rc;
}

static void test_next_batch_from_done(void **state)
{
    fx *f = *state;
    char *want = keep(f, baseline(f));
    stack *s = stack_new(f, "memory", "chain", 0);
    stack_add_default_decoder(s);
    make_msgs(s->chain, 0, NLINES);
    s->chain_next = 1;
    s->in_process = true;
    assert_int_equal(kx_pipeline_process(s->p, &s->chain[0], 1, chain_done, s), 0);
    s->in_process = false;
    assert_true(kx_test_run_until(f->loop, chain_finished, s, WAIT_MS));
    assert_int_equal(s->chain_rc, 0);
    assert_int_equal(s->done_calls, NLINES);
    assert_int_equal(s->done_inside, 0);
    assert_false(kx_pipeline_busy(s->p));
    char *got = keep(f, kx_test_read_file(s->path, NULL));
    assert_string_equal(got, want);
    stack_fini(f, s);
}

/* ---- redis store ---- */

static void test_alerts_redis(void **state)
{
    fx *f = *state;
    char *want = keep(f, baseline(f));
    char url[128];
    redis_url(f, "same:", url, sizeof(url));
    stack *s = stack_new(f, url, "redis", 0);
    stack_add_default_decoder(s);
    run_lines(s, 0, NLINES);
    char *got = keep(f, kx_test_read_file(s->path, NULL));
    assert_string_equal(got, want); /* byte for byte the memory store's alerts */
    assert_int_equal(s->npauses, 0);
    assert_standard_alerts(s, true);
    stack_fini(f, s);
}

static void test_reprocess_redis(void **state)
{
    fx *f = *state;
    char url[128];
    redis_url(f, "again:", url, sizeof(url));
    reprocess(f, url);
}

typedef struct reconnects {
    stack *s;
    uint64_t want;
    int done_before;
} reconnects;

static bool paused(void *ud)
{
    stack *s = ud;
    return s->npauses >= 1;
}

static bool reconnect_tried(void *ud)
{
    reconnects *r = ud;
    return kx_metric_get(KX_M_STORE_RECONNECTS) >= r->want || r->s->done_calls > r->done_before;
}

/* After kx_pipeline_process returned with the batch's updates still in hiredis' buffer:
 * kill redis, see the pause, see the batch stay unfinished through failed reconnects,
 * restart, see it resume and finish. */
static void outage(fx *f, stack *s, const kx_msg *msgs, size_t n)
{
    int before = s->done_calls;
    assert_int_equal(process(s, msgs, n), 0);
    assert_int_equal(kx_test_redis_halt(&f->redis), 0);
    assert_true(kx_test_run_until(f->loop, paused, s, WAIT_MS));
    assert_int_equal(s->npauses, 1);
    assert_true(s->pauses[0]);
    /* Two reconnect attempts fail while the server is down; the batch must not finish. */
    reconnects r = {s, kx_metric_get(KX_M_STORE_RECONNECTS) + 2, before};
    assert_true(kx_test_run_until(f->loop, reconnect_tried, &r, WAIT_MS));
    assert_int_equal(s->done_calls, before);
    assert_true(kx_pipeline_busy(s->p));
    assert_false(kx_store_is_up(s->store));
    assert_int_equal(s->npauses, 1);

    assert_int_equal(kx_test_redis_restart(&f->redis), 0);
    want_done w = {s, before + 1};
    assert_true(kx_test_run_until(f->loop, done_reached, &w, WAIT_MS));
    assert_int_equal(s->done_calls, before + 1);
    assert_int_equal(s->done_inside, 0);
    assert_int_equal(s->npauses, 2);
    assert_false(s->pauses[1]);
    assert_true(kx_metric_get(KX_M_STORE_ERRORS) >= 1);
}

static void test_redis_outage_whole_batch(void **state)
{
    fx *f = *state;
    char *want = keep(f, baseline(f));
    char url[128];
    redis_url(f, "outage:", url, sizeof(url));
    stack *s = stack_new(f, url, "outage", 0);
    stack_add_default_decoder(s);
    kx_msg msgs[NLINES];
    make_msgs(msgs, 0, NLINES);
    outage(f, s, msgs, NLINES);
    assert_standard_alerts(s, false);
    char *got = keep(f, kx_test_read_file(s->path, NULL));
    assert_string_equal(got, want);
    stack_fini(f, s);
}

static void redis_save(const fx *f)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", f->redis.port, tv);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *r = redisCommand(c, "SAVE");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    assert_string_equal(r->str, "OK");
    freeReplyObject(r);
    redisFree(c);
}

/* The windows of earlier batches survive the outage (saved; AOF in production): the batch
 * held by the outage crosses the threshold on its retried updates, exactly once. */
static void test_redis_outage_after_saved_state(void **state)
{
    fx *f = *state;
    char *want = keep(f, baseline(f));
    char url[128];
    redis_url(f, "saved:", url, sizeof(url));
    stack *s = stack_new(f, url, "saved", 0);
    stack_add_default_decoder(s);
    run_lines(s, 0, 4); /* lines 1-4: the root login, 10.0.0.5 at 2 */
    assert_int_equal(count_alerts(s), 1);
    redis_save(f);
    kx_msg msgs[NLINES];
    make_msgs(msgs, 4, NLINES - 4);
    outage(f, s, msgs, NLINES - 4);
    assert_standard_alerts(s, false);
    char *got = keep(f, kx_test_read_file(s->path, NULL));
    assert_string_equal(got, want);
    stack_fini(f, s);
}

static bool store_down(void *ud)
{
    return !kx_store_is_up(ud);
}

/* Redis already known to be down when the batch comes: the updates are refused at once
 * (never issued), the source is paused from inside kx_pipeline_process, and the batch
 * completes after the restart with the same alerts. */
static void test_redis_down_before_batch(void **state)
{
    fx *f = *state;
    char *want = keep(f, baseline(f));
    char url[128];
    redis_url(f, "before:", url, sizeof(url));
    stack *s = stack_new(f, url, "before", 0);
    stack_add_default_decoder(s);
    assert_int_equal(kx_test_redis_halt(&f->redis), 0);
    assert_true(kx_test_run_until(f->loop, store_down, s->store, WAIT_MS));
    assert_int_equal(s->npauses, 0); /* no batch in flight: nothing to pause yet */

    kx_msg msgs[NLINES];
    make_msgs(msgs, 0, NLINES);
    assert_int_equal(process(s, msgs, NLINES), 0);
    assert_int_equal(s->npauses, 1);
    assert_true(s->pauses[0]);
    assert_int_equal(count_alerts(s), 1); /* the single-event alert needs no state */
    reconnects r = {s, kx_metric_get(KX_M_STORE_RECONNECTS) + 2, 0};
    assert_true(kx_test_run_until(f->loop, reconnect_tried, &r, WAIT_MS));
    assert_int_equal(s->done_calls, 0);
    assert_true(kx_pipeline_busy(s->p));

    assert_int_equal(kx_test_redis_restart(&f->redis), 0);
    want_done w = {s, 1};
    assert_true(kx_test_run_until(f->loop, done_reached, &w, WAIT_MS));
    assert_int_equal(s->done_inside, 0);
    assert_int_equal(s->npauses, 2);
    assert_false(s->pauses[1]);
    char *got = keep(f, kx_test_read_file(s->path, NULL));
    assert_string_equal(got, want);
    stack_fini(f, s);
}

/* Replaces the fixture's rules with one file of the given text (teardown frees them). */
static void use_rules(fx *f, const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    assert_int_equal(kx_test_write_file(path, text), 0);
    kx_ruleset_destroy(f->rules);
    f->rules = NULL;
    const char *paths[] = {path};
    kx_err err = {0};
    assert_int_equal(kx_ruleset_load(paths, 1, &f->rules, &err), 0);
}

/* A base rule answered without its regex (PCRE2 gave up; level high fails closed) counts
 * in its correlation, and the correlation alert's evidence marks exactly those events
 * "degraded" with the reason: the alert says which of its events were not fully checked. */
static void test_degraded_in_correlation_evidence(void **state)
{
    fx *f = *state;
    /* A lookbehind keeps the pattern on PCRE2, where ^(a+)+ backtracks exponentially on
     * "aa..ab" and gives up at the match limit. */
    use_rules(f, "degraded.yml",
              "title: Odd agent\nname: odd_agent\nlevel: high\ngenerate: false\n"
              "detection:\n  sel:\n    ua|re: '^(a+)+(?<!x)$'\n  condition: sel\n---\n"
              "title: Odd agents\nid: odd-agents\nlevel: high\ncorrelation:\n"
              "  type: event_count\n  rules: [odd_agent]\n  timespan: 60s\n"
              "  condition: {gte: 3}\n");
    stack *s = stack_new(f, "memory", "degraded", 0);
    stack_add_default_decoder(s);
    static const char *const ua[] = {"aaaa", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", "aaaaaa"};
    char text[3][160];
    kx_msg m[3];
    for (int i = 0; i < 3; i++) {
        snprintf(text[i], sizeof(text[i]), "{\"time\":\"2026-03-29T01:30:0%dZ\",\"ua\":\"%s\"}", i,
                 ua[i]);
        m[i] = (kx_msg){
            .payload = text[i], .len = strlen(text[i]), .offset = i + 1, .timestamp_ms = RECV_MS};
    }
    run_batch(s, m, 3);
    json_t *arr = read_alerts(s);
    assert_int_equal(json_array_size(arr), 1);
    json_t *a = json_array_get(arr, 0);
    assert_string_equal(jstr(json_object_get(a, "rule"), "id"), "odd-agents");
    assert_int_equal(jint(a, "count"), 3);
    assert_null(json_object_get(a, "degraded")); /* per event, in the evidence */
    json_t *evs = json_object_get(a, "events");
    assert_int_equal(json_array_size(evs), 3);
    assert_null(json_object_get(json_array_get(evs, 0), "degraded"));
    assert_string_equal(jstr(json_array_get(evs, 1), "degraded"),
                        "regex match limit reached in ua|re");
    assert_null(json_object_get(json_array_get(evs, 2), "degraded"));
    stack_fini(f, s);
}

/* Absence in `run` (opts.wall_clock): a group whose events stop, on a stream that goes quiet
 * altogether, is reported by the wall clock's advance (the 1 s tick), and resolved when its
 * next event arrives. */
static void absence_wall_clock(fx *f, const char *url, const char *tag)
{
    use_rules(f, "absence.yml",
              "title: Backup\nname: backup\ndetection:\n  sel: {action: backup}\n"
              "  condition: sel\n---\ntitle: No backup\nid: no-backup\ncorrelation:\n"
              "  type: absence\n  rules: [backup]\n  group-by: [host]\n  timespan: 1s\n");
    kx_pipeline_opts opts = {
        .max_event_bytes = 1 << 20,
        .evidence_bytes = 16384,
        .lateness_ms = 0,
        .wall_clock = true,
        .wm_quiet_ms = 200,
    };
    stack *s = stack_new_opts(f, url, tag, &opts);
    stack_add_default_decoder(s);
    /* An event stamped now, then nothing: a second later the group is silent. */
    int64_t t0 = (int64_t)(ev_now(f->loop) * 1000.0);
    char ts[40], line[160];
    kx_time_format(t0, ts, sizeof(ts));
    snprintf(line, sizeof(line), "{\"@timestamp\":\"%s\",\"action\":\"backup\",\"host\":\"db-1\"}",
             ts);
    kx_msg m = {.payload = line, .len = strlen(line), .offset = 1, .timestamp_ms = t0};
    run_batch(s, &m, 1);
    assert_int_equal(count_alerts(s), 0);
    assert_true(kx_test_run_until(f->loop, alerts_reached, &(want_done){s, 1}, 5000));
    json_t *a = json_array_get(read_alerts(s), 0);
    assert_string_equal(json_string_value(json_object_get(a, "status")), "firing");
    assert_string_equal(json_string_value(json_object_get(json_object_get(a, "group"), "host")),
                        "db-1");
    assert_string_equal(json_string_value(json_object_get(a, "first_seen")), ts);
    assert_int_equal(json_integer_value(json_object_get(a, "count")), 0);
    /* Reported once, however long the silence lasts. */
    ev_tstamp until = ev_now(f->loop) + 1.5;
    while (ev_now(f->loop) < until)
        ev_run(f->loop, EVRUN_ONCE);
    assert_int_equal(count_alerts(s), 1);
    /* db-1 is back: the silence is resolved, with the same dedup_key. */
    int64_t t1 = (int64_t)(ev_now(f->loop) * 1000.0);
    char ts1[40], line1[160];
    kx_time_format(t1, ts1, sizeof(ts1));
    snprintf(line1, sizeof(line1),
             "{\"@timestamp\":\"%s\",\"action\":\"backup\",\"host\":\"db-1\"}", ts1);
    kx_msg m1 = {.payload = line1, .len = strlen(line1), .offset = 2, .timestamp_ms = t1};
    run_batch(s, &m1, 1);
    assert_true(kx_test_run_until(f->loop, alerts_reached, &(want_done){s, 2}, WAIT_MS));
    json_t *all = read_alerts(s);
    json_t *r = json_array_get(all, 1);
    a = json_array_get(all, 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "resolved");
    assert_string_equal(json_string_value(json_object_get(r, "first_seen")), ts);
    assert_string_equal(json_string_value(json_object_get(r, "last_seen")), ts1);
    assert_string_equal(json_string_value(json_object_get(r, "dedup_key")),
                        json_string_value(json_object_get(a, "dedup_key")));
    assert_string_not_equal(json_string_value(json_object_get(r, "id")),
                            json_string_value(json_object_get(a, "id")));
}

static void test_absence_wall_clock_memory(void **state)
{
    absence_wall_clock(*state, "memory", "absence-mem");
}

static void test_absence_wall_clock_redis(void **state)
{
    fx *f = *state;
    char url[128];
    redis_url(f, "abs:", url, sizeof(url));
    absence_wall_clock(f, url, "absence-redis");
}

/* Two processes (two pipelines) on one Redis, each reading its own partition: an "at most N"
 * window is judged by the watermark shared through the store (the minimum over the
 * partitions), so the one that reads ahead waits for the other's events of that window
 * instead of judging a partial count. */
static void test_shared_watermark_redis(void **state)
{
    fx *f = *state;
    char url[128];
    use_rules(f, "atmost.yml",
              "title: Beat\nname: beat\ndetection:\n  sel: {action: beat}\n"
              "  condition: sel\n---\ntitle: Few beats\nid: few-beats\ncorrelation:\n"
              "  type: event_count\n  rules: [beat]\n  group-by: [host]\n  timespan: 10s\n"
              "  condition: {lt: 3}\n");
    /* run (the shared watermark is for run), with partitions never counted as quiet here */
    kx_pipeline_opts opts = {.max_event_bytes = 1 << 20,
                             .evidence_bytes = 16384,
                             .wall_clock = true,
                             .wm_quiet_ms = INT64_C(1000000000000)};
    redis_url(f, "shared:", url, sizeof(url));
    stack *a = stack_new_opts(f, url, "shared-a", &opts);
    stack *b = stack_new_opts(f, url, "shared-b", &opts);
    stack_add_default_decoder(a);
    stack_add_default_decoder(b);
    static char ev_lines[8][160];
    static const struct {
        int part, sec;
        const char *host;
    } evs[] = {
        {1, 1, "h9"},                /* b: its partition is known, at T0 + 1 s */
        {0, 1, "h1"},  {0, 4, "h2"}, /* a: one h1 and one h2 in [T0, T0 + 10 s) */
        {0, 30, "h3"},               /* a: its partition moves to T0 + 30 s */
        {1, 2, "h1"},  {1, 3, "h1"}, /* b: two more h1 in the same window */
        {1, 40, "h3"},               /* b: its partition moves to T0 + 40 s */
    };
    kx_msg m[8];
    for (size_t i = 0; i < KX_ARRAY_LEN(evs); i++) {
        char ts[40];
        kx_time_format(T0 + evs[i].sec * 1000, ts, sizeof(ts));
        snprintf(ev_lines[i], sizeof(ev_lines[i]),
                 "{\"@timestamp\":\"%s\",\"action\":\"beat\",\"host\":\"%s\"}", ts, evs[i].host);
        m[i] = (kx_msg){.payload = ev_lines[i],
                        .len = strlen(ev_lines[i]),
                        .partition = evs[i].part,
                        .offset = (int64_t)i,
                        .timestamp_ms = RECV_MS};
    }
    run_batch(b, &m[0], 1);
    run_batch(a, &m[1], 3);
    /* a's own partition says T0 + 30 s, b's T0 + 1 s: nothing is judged yet. */
    assert_int_equal(count_alerts(a), 0);
    run_batch(b, &m[4], 3);
    /* Now the minimum is T0 + 30 s: [T0, T0 + 10 s) is judged (by b's check): h1 has 3 (not
     * fewer than 3), h2 has 1, h9 has 1. */
    json_t *all = read_alerts(b);
    assert_int_equal(json_array_size(all), 2);
    assert_int_equal(count_alerts(a), 0);
    for (size_t i = 0; i < 2; i++) {
        json_t *x = json_array_get(all, i);
        const char *host = json_string_value(json_object_get(json_object_get(x, "group"), "host"));
        assert_true(!strcmp(host, "h2") || !strcmp(host, "h9"));
        assert_int_equal(json_integer_value(json_object_get(x, "count")), 1);
    }
}

int main(void)
{
    /* A write to a server that just died must fail with EPIPE, not kill the test (the
     * daemon ignores SIGPIPE the same way). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest memory[] = {
        cmocka_unit_test_setup_teardown(test_done_from_loop_and_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alerts_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_topic_without_decoder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_limits_in_evidence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_degraded_in_correlation_evidence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reprocess_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_next_batch_from_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tenants_do_not_share_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absence_wall_clock_memory, setup, teardown),
    };
    const struct CMUnitTest redis[] = {
        cmocka_unit_test_setup_teardown(test_alerts_redis, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_reprocess_redis, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_redis_outage_whole_batch, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_redis_outage_after_saved_state, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_redis_down_before_batch, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_absence_wall_clock_redis, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_shared_watermark_redis, setup_redis, teardown),
    };
    int rc = cmocka_run_group_tests_name("pipeline_memory", memory, NULL, NULL);
    rc += cmocka_run_group_tests_name("pipeline_redis", redis, NULL, NULL);
    return rc;
}
