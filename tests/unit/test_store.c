/*
 * One suite, two backends: every test in `shared_tests` runs against the memory store and
 * against a real redis-server (started once for the redis group), so both backends are held
 * to the same exact answers. Backend-only tests (key cap, NOSCRIPT, prefix) follow.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <hiredis/hiredis.h>

#include "kx_test.h"
#include "redis_server.h"
#include "klaxon/metrics.h"
#include "klaxon/store.h"
#include "state/store_impl.h"

#define T0 INT64_C(1700000000000)
#define WIN 10000
#define TTL 60000
#define PREFIX "kxtest:"

typedef struct fx {
    bool redis;
    bool log; /* redis with the window log (kx_store_redis_use_log) */
    struct ev_loop *loop;
    kx_store *s;
    redisContext *sync; /* redis only: a plain blocking connection for checks */
} fx;

static kx_test_redis g_srv;

typedef struct got {
    int calls;
    int status;
    int64_t count, first, last;
    bool added;
    bool crossed;
    int64_t cfirst, clast;
    int64_t ccount;
    double cvalue;
    int64_t suppressed;
    bool prev_alerted;
    int64_t prev_first;
    bool met;
    int64_t met_ms;
    bool late;
    size_t nev;
    char ev[8][64];
} got;

static void got_cb(void *ud, int status, const kx_window_result *res)
{
    got *g = ud;
    g->calls++;
    g->status = status;
    if (status != 0 || !res)
        return;
    g->count = res->count;
    g->first = res->first_ms;
    g->last = res->last_ms;
    g->added = res->added;
    g->crossed = res->crossed;
    g->cfirst = res->cross_first_ms;
    g->clast = res->cross_last_ms;
    g->ccount = res->cross_count;
    g->cvalue = res->cross_value;
    g->suppressed = res->suppressed;
    g->prev_alerted = res->prev_alerted;
    g->prev_first = res->prev_alert_first_ms;
    g->met = res->met;
    g->met_ms = res->met_ms;
    g->late = res->late;
    g->nev = res->nevidence;
    for (size_t i = 0; i < res->nevidence && i < 8; i++)
        snprintf(g->ev[i], sizeof(g->ev[i]), "%.*s", (int)res->evidence_len[i], res->evidence[i]);
}

static bool got_done(void *ud)
{
    return ((got *)ud)->calls > 0;
}

static bool store_up(void *ud)
{
    return kx_store_is_up(ud);
}

typedef struct addp {
    const char *key;
    const char *member;
    int64_t t;
    int64_t window;
    int64_t ttl;
    const char *evidence;
    size_t max_ev;
    int64_t cross;
    kx_agg agg;
    const kx_cmp_term *cond;
    size_t ncond;
    int64_t suppress;
} addp;

/* One add on store s, waited for. */
static got add_on(struct ev_loop *loop, kx_store *s, const kx_window_add *op)
{
    got g = {0};
    assert_int_equal(kx_store_window_add(s, op, got_cb, &g), 0);
    assert_true(kx_test_run_until(loop, got_done, &g, 5000));
    assert_int_equal(g.status, 0);
    return g;
}

/* One add, waited for; returns what the callback saw. */
static got add_full(fx *f, addp p)
{
    got g = {0};
    kx_window_add op = {
        .key = p.key,
        .member = p.member,
        .time_ms = p.t,
        .window_ms = p.window ? p.window : WIN,
        .ttl_ms = p.ttl ? p.ttl : TTL,
        .evidence = p.evidence,
        .evidence_len = p.evidence ? strlen(p.evidence) : 0,
        .max_evidence = p.max_ev,
        .cross_at = p.cross,
        .agg = p.agg,
        .cond = p.cond,
        .ncond = p.ncond,
        .suppress_ms = p.suppress,
    };
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, got_done, &g, 5000));
    assert_int_equal(g.calls, 1);
    return g;
}

static got add(fx *f, const char *key, const char *member, int64_t t)
{
    return add_full(f, (addp){.key = key, .member = member, .t = t});
}

#define assert_window(g, cnt, fst, lst, add_)                                                      \
    do {                                                                                           \
        assert_int_equal((g).status, 0);                                                           \
        assert_int_equal((g).count, (cnt));                                                        \
        assert_int_equal((g).first, (fst));                                                        \
        assert_int_equal((g).last, (lst));                                                         \
        assert_int_equal((g).added, (add_));                                                       \
    } while (0)

static redisReply *cmd(fx *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->sync, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

static long long cmd_int(fx *f, const char *fmt, const char *arg)
{
    redisReply *r = cmd(f, fmt, arg);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* ---- fixtures ---- */

static int group_setup_memory(void **state)
{
    (void)state;
    return 0;
}

static int group_setup_redis(void **state)
{
    (void)state;
    return kx_test_redis_start(&g_srv) == 0 ? 0 : -1;
}

static int group_teardown_redis(void **state)
{
    (void)state;
    kx_test_redis_stop(&g_srv);
    return 0;
}

static int setup_common(void **state, bool redis, bool log)
{
    fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->redis = redis;
    f->log = log;
    f->loop = ev_loop_new(EVFLAG_AUTO);
    kx_metrics_reset();
    if (redis) {
        f->sync = redisConnect("127.0.0.1", g_srv.port);
        if (!f->sync || f->sync->err)
            goto fail;
        freeReplyObject(redisCommand(f->sync, "FLUSHALL"));
        if (kx_store_redis_create(f->loop, "127.0.0.1", g_srv.port, PREFIX, &f->s) != 0)
            goto fail;
        if (log && kx_store_redis_use_log(f->s) != 0)
            goto fail;
        if (!kx_test_run_until(f->loop, store_up, f->s, 5000))
            goto fail;
    } else if (kx_store_memory_create(f->loop, 0, &f->s) != 0) {
        goto fail;
    }
    *state = f;
    return 0;
fail:
    kx_store_destroy(f->s);
    if (f->sync)
        redisFree(f->sync);
    ev_loop_destroy(f->loop);
    free(f);
    return -1;
}

static int setup_memory(void **state)
{
    return setup_common(state, false, false);
}

static int setup_redis(void **state)
{
    return setup_common(state, true, false);
}

static int setup_redis_log(void **state)
{
    return setup_common(state, true, true);
}

static int teardown(void **state)
{
    fx *f = *state;
    kx_store_destroy(f->s);
    /* Every watcher the store started is gone: the loop has nothing left to run. */
    assert_false(ev_run(f->loop, EVRUN_NOWAIT));
    if (f->sync)
        redisFree(f->sync);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

/* ---- shared tests ---- */

static void test_kind(void **state)
{
    fx *f = *state;
    assert_string_equal(kx_store_kind(f->s), f->redis ? "redis" : "memory");
    assert_true(kx_store_is_up(f->s));
    assert_int_equal(kx_store_pending(f->s), 0);
}

static void test_count_within_window(void **state)
{
    fx *f = *state;
    got g = add(f, "k", "m1", T0);
    assert_window(g, 1, T0, T0, true);
    g = add(f, "k", "m2", T0 + 1000);
    assert_window(g, 2, T0, T0 + 1000, true);
    g = add(f, "k", "m3", T0 + 5000);
    assert_window(g, 3, T0, T0 + 5000, true);
    /* Another key is another window. */
    g = add(f, "other", "m1", T0 + 5000);
    assert_window(g, 1, T0 + 5000, T0 + 5000, true);
    assert_int_equal(kx_metric_get(KX_M_STORE_OPS), 4);
}

static void test_exact_boundary(void **state)
{
    fx *f = *state;
    add(f, "k", "m1", T0);
    /* [t - window, t] is inclusive: an event exactly window_ms after the first counts it. */
    got g = add(f, "k", "m2", T0 + WIN);
    assert_window(g, 2, T0, T0 + WIN, true);
    g = add(f, "k", "m3", T0 + WIN + 1);
    assert_window(g, 2, T0 + WIN, T0 + WIN + 1, true);
}

static void test_out_of_order(void **state)
{
    fx *f = *state;
    add(f, "k", "m1", T0 + 5000);
    add(f, "k", "m2", T0 + 8000);
    /* A late event counts the window that ends at its own time: later ones are outside. */
    got g = add(f, "k", "late", T0 + 1000);
    assert_window(g, 1, T0 + 1000, T0 + 1000, true);
    g = add(f, "k", "m4", T0 + 9000);
    assert_window(g, 4, T0 + 1000, T0 + 9000, true);
}

/* cross_at: the window an add completes, also when the add is late and the completed
 * window ends after it (in time order the same window would have been completed by its
 * last event). */
static void test_crossing(void **state)
{
    fx *f = *state;
    addp p = {.key = "c", .window = 10000, .cross = 3};
    p.member = "m3", p.t = T0 + 3000;
    got g = add_full(f, p);
    assert_false(g.crossed);
    p.member = "m1", p.t = T0 + 1000;
    g = add_full(f, p);
    assert_false(g.crossed); /* windows ending at +1000 and +3000 hold 1 and 2 */
    p.member = "m2", p.t = T0 + 2000;
    g = add_full(f, p);
    assert_window(g, 2, T0 + 1000, T0 + 2000, true); /* its own window */
    assert_true(g.crossed);                          /* ... completes the one ending at m3 */
    assert_int_equal(g.cfirst, T0 + 1000);
    assert_int_equal(g.clast, T0 + 3000);
    p.member = "m4", p.t = T0 + 4000;
    g = add_full(f, p);
    assert_false(g.crossed); /* its window holds 4: past the crossing, not at it */
    /* In time order the own window is the one completed. */
    p.key = "d";
    for (int i = 1; i <= 3; i++) {
        char m[8];
        snprintf(m, sizeof(m), "n%d", i);
        p.member = m, p.t = T0 + i * 1000;
        g = add_full(f, p);
        assert_int_equal(g.crossed, i == 3);
    }
    assert_int_equal(g.cfirst, T0 + 1000);
    assert_int_equal(g.clast, T0 + 3000);
    /* A replayed member re-reports the window it belongs to (safe retry of a lost reply). */
    p.member = "n2", p.t = T0 + 2000;
    g = add_full(f, p);
    assert_false(g.added);
    assert_true(g.crossed);
    assert_int_equal(g.clast, T0 + 3000);

    /* One burst in reverse order reports one window: the others overlap it. A later,
     * separate burst reports its own. */
    p.key = "r";
    static const char *const rev[] = {"r5", "r4", "r3", "r2", "r1"};
    static const bool want[] = {false, false, true, false, false};
    for (int i = 0; i < 5; i++) {
        p.member = rev[i], p.t = T0 + (5 - i) * 1000;
        g = add_full(f, p);
        assert_int_equal(g.crossed, want[i]);
        if (want[i]) {
            assert_int_equal(g.cfirst, T0 + 3000);
            assert_int_equal(g.clast, T0 + 5000);
        }
    }
    static const char *const later[] = {"s1", "s2", "s3"};
    for (int i = 0; i < 3; i++) {
        p.member = later[i], p.t = T0 + 30000 + i * 1000;
        g = add_full(f, p);
        assert_int_equal(g.crossed, i == 2);
    }
    assert_int_equal(g.cfirst, T0 + 30000);
    assert_int_equal(g.clast, T0 + 32000);
}

static void test_prune_by_ttl(void **state)
{
    fx *f = *state;
    /* ttl == window: no lateness allowed; members older than (newest - ttl) are pruned. */
    addp p = {.key = "k", .member = "m1", .t = T0, .window = WIN, .ttl = WIN};
    add_full(f, p);
    p.member = "m2";
    p.t = T0 + 2 * WIN;
    got g = add_full(f, p);
    assert_window(g, 1, T0 + 2 * WIN, T0 + 2 * WIN, true);
    /* At the prune threshold exactly: kept, but m1 (pruned) no longer counts. */
    p.member = "m3";
    p.t = T0 + WIN;
    g = add_full(f, p);
    assert_window(g, 1, T0 + WIN, T0 + WIN, true);
    /* Older than newest - ttl: late beyond the allowed lateness, refused and reported. */
    p.member = "m4";
    p.t = T0 + WIN - 1;
    g = add_full(f, p);
    assert_window(g, 0, 0, 0, false);
    assert_true(g.late);
    /* Nothing changed: the newest member's window holds m3, m2 and m5, not m4. */
    p.member = "m5";
    p.t = T0 + 2 * WIN;
    g = add_full(f, p);
    assert_window(g, 3, T0 + WIN, T0 + 2 * WIN, true);
    assert_false(g.late);
}

/* ---- aggregates (kx_agg) and the general crossing condition ---- */

static const kx_cmp_term GTE3[] = {{KX_CMP_GTE, 3}};

/* Adds member "id\x1fvalue" at t with aggregate agg and condition cond. */
static got addv(fx *f, kx_agg agg, const kx_cmp_term *cond, size_t ncond, const char *id,
                const char *value, int64_t t)
{
    char m[128];
    snprintf(m, sizeof(m), "%s\x1f%s", id, value);
    return add_full(
        f, (addp){.key = "v", .member = m, .t = t, .agg = agg, .cond = cond, .ncond = ncond});
}

static void test_value_count(void **state)
{
    fx *f = *state;
    /* Distinct users per source: 3 distinct within WIN crosses; repeats do not count. */
    assert_false(addv(f, KX_AGG_DISTINCT, GTE3, 1, "e1", "alice", T0).crossed);
    assert_false(addv(f, KX_AGG_DISTINCT, GTE3, 1, "e2", "alice", T0 + 1000).crossed);
    assert_false(addv(f, KX_AGG_DISTINCT, GTE3, 1, "e3", "bob", T0 + 2000).crossed);
    assert_false(addv(f, KX_AGG_DISTINCT, GTE3, 1, "e4", "bob", T0 + 3000).crossed);
    got g = addv(f, KX_AGG_DISTINCT, GTE3, 1, "e5", "carol", T0 + WIN);
    assert_true(g.crossed);
    assert_int_equal(g.cfirst, T0);
    assert_int_equal(g.clast, T0 + WIN);
    assert_int_equal(g.ccount, 5);
    assert_true(g.cvalue == 3.0);
    /* A fourth name in the same burst: the condition already held without it. */
    assert_false(addv(f, KX_AGG_DISTINCT, GTE3, 1, "e6", "dave", T0 + WIN + 1).crossed);
    /* Replaying the crossing event reports the same window again (same dedup_key). */
    g = addv(f, KX_AGG_DISTINCT, GTE3, 1, "e5", "carol", T0 + WIN);
    assert_true(g.crossed);
    assert_false(g.added);
    assert_int_equal(g.cfirst, T0);
}

static void test_value_count_window_edge(void **state)
{
    fx *f = *state;
    /* alice at T0 is one ms outside carol's window [T0+1, T0+WIN+1]: only 2 distinct. */
    addv(f, KX_AGG_DISTINCT, GTE3, 1, "e1", "alice", T0);
    addv(f, KX_AGG_DISTINCT, GTE3, 1, "e2", "bob", T0 + 5000);
    assert_false(addv(f, KX_AGG_DISTINCT, GTE3, 1, "e3", "carol", T0 + WIN + 1).crossed);
    /* A late alice inside the window completes it: the late event raises the alert. */
    got g = addv(f, KX_AGG_DISTINCT, GTE3, 1, "e4", "alice", T0 + 2000);
    assert_true(g.crossed);
    assert_int_equal(g.cfirst, T0 + 2000);
    assert_int_equal(g.clast, T0 + WIN + 1);
}

static void test_value_sum_avg(void **state)
{
    fx *f = *state;
    static const kx_cmp_term gt1000[] = {{KX_CMP_GT, 1000}};
    assert_false(addv(f, KX_AGG_SUM, gt1000, 1, "e1", "400", T0).crossed);
    assert_false(addv(f, KX_AGG_SUM, gt1000, 1, "e2", "600", T0 + 1).crossed); /* 1000: not > */
    got g = addv(f, KX_AGG_SUM, gt1000, 1, "e3", "0.5", T0 + 2);
    assert_true(g.crossed);
    assert_true(g.cvalue == 1000.5);
    assert_int_equal(g.ccount, 3);

    /* Average below a floor, in another key: a low value drags it under. */
    static const kx_cmp_term lt10[] = {{KX_CMP_LT, 10}};
    char m[32];
    for (int i = 0; i < 3; i++) {
        snprintf(m, sizeof(m),
                 "a%d\x1f"
                 "20",
                 i);
        g = add_full(f, (addp){.key = "avg",
                               .member = m,
                               .t = T0 + i,
                               .agg = KX_AGG_AVG,
                               .cond = lt10,
                               .ncond = 1});
        assert_false(g.crossed);
    }
    g = add_full(f, (addp){.key = "avg",
                           .member = "a3\x1f-40",
                           .t = T0 + 3,
                           .agg = KX_AGG_AVG,
                           .cond = lt10,
                           .ncond = 1});
    assert_true(g.crossed); /* (20 * 3 - 40) / 4 = 5 */
    assert_true(g.cvalue == 5.0);
}

/* A window met without its newest member before the group ever alerted: nothing to count as
 * suppressed (the Redis script once failed here), and the first alert says 0. */
static void test_suppressed_before_first_alert(void **state)
{
    fx *f = *state;
    static const kx_cmp_term gt5[] = {{KX_CMP_GT, 5}};
    static const char *const members[] = {"x0\x1f"
                                          "0",
                                          "x1\x1f"
                                          "10",
                                          "x2\x1f"
                                          "6",
                                          "x3\x1f"
                                          "100"};
    static const int64_t at[] = {0, 8, 15, 40};
    static const bool crosses[] = {false, false, false, true};
    for (int i = 0; i < 4; i++) {
        got g = add_full(f, (addp){.key = "avgsup",
                                   .member = members[i],
                                   .t = T0 + at[i],
                                   .window = 10,
                                   .agg = KX_AGG_AVG,
                                   .cond = gt5,
                                   .ncond = 1});
        assert_int_equal(g.status, 0);
        assert_int_equal(g.crossed, crosses[i]);
        assert_int_equal(g.suppressed, 0);
    }
}

static void test_share(void **state)
{
    fx *f = *state;
    /* value_percentile: this event's value is at most 25 % of its window. */
    static const kx_cmp_term lte25[] = {{KX_CMP_LTE, 25}};
    char id[8];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        assert_false(addv(f, KX_AGG_SHARE, lte25, 1, id, "cmd.exe", T0 + i).crossed);
    }
    got g = addv(f, KX_AGG_SHARE, lte25, 1, "r1", "mimikatz.exe", T0 + 10);
    assert_true(g.crossed);
    assert_true(g.cvalue > 14.28 && g.cvalue < 14.29); /* 1 of 7 */
    assert_int_equal(g.cfirst, T0);
    assert_int_equal(g.clast, T0 + 10);
}

static void test_ordered(void **state)
{
    fx *f = *state;
    /* temporal_ordered over 3 rules (values are rule positions "0", "1", "2"). */
    static const kx_cmp_term all3[] = {{KX_CMP_GTE, 3}};
    assert_false(addv(f, KX_AGG_ORDERED, all3, 1, "e1", "1", T0).crossed); /* 1 before 0 */
    assert_false(addv(f, KX_AGG_ORDERED, all3, 1, "e2", "0", T0 + 1000).crossed);
    assert_false(addv(f, KX_AGG_ORDERED, all3, 1, "e3", "2", T0 + 2000).crossed); /* 0,2: no 1 */
    assert_false(addv(f, KX_AGG_ORDERED, all3, 1, "e4", "1", T0 + 3000).crossed);
    got g = addv(f, KX_AGG_ORDERED, all3, 1, "e5", "2", T0 + 4000);
    assert_true(g.crossed); /* 0 at +1000, 1 at +3000, 2 at +4000 */
    assert_int_equal(g.cfirst, T0);
    assert_int_equal(g.clast, T0 + 4000);
    assert_true(g.cvalue == 3.0);
}

static void test_ordered_late_middle(void **state)
{
    fx *f = *state;
    static const kx_cmp_term all3[] = {{KX_CMP_GTE, 3}};
    addv(f, KX_AGG_ORDERED, all3, 1, "e1", "0", T0);
    addv(f, KX_AGG_ORDERED, all3, 1, "e3", "2", T0 + 2000);
    /* The middle step arrives last but happened in between: the sequence is complete. */
    got g = addv(f, KX_AGG_ORDERED, all3, 1, "e2", "1", T0 + 1000);
    assert_true(g.crossed);
    assert_int_equal(g.cfirst, T0);
    assert_int_equal(g.clast, T0 + 2000);
    /* The condition holds in the later window the late event completed. */
    assert_true(g.met);
    assert_int_equal(g.met_ms, T0 + 2000);
}

static void test_suppress(void **state)
{
    fx *f = *state;
    /* 3 events in WIN cross; with suppress = 2 * WIN, a second burst right after the first
     * window is passed over, one that starts after last + suppress alerts again. */
    addp p = {.key = "s", .cross = 3, .suppress = 2 * WIN};
    char m[8];
    int64_t times[] = {T0,           T0 + 1,       T0 + 2,           T0 + WIN + 5,    T0 + WIN + 6,
                       T0 + WIN + 7, T0 + 3 * WIN, T0 + 3 * WIN + 1, T0 + 3 * WIN + 2};
    bool want[] = {false, false, true, false, false, false, false, false, true};
    for (int i = 0; i < 9; i++) {
        snprintf(m, sizeof(m), "m%d", i);
        p.member = m;
        p.t = times[i];
        got g = add_full(f, p);
        assert_int_equal(g.crossed, want[i]);
        /* Met: crossings, and the suppressed second burst's third event. */
        bool met = want[i] || i == 5;
        assert_int_equal(g.met, met);
        assert_int_equal(g.met_ms, met ? times[i] : 0);
        /* The mark before each add: none until m2 alerted, then that window's first. */
        assert_int_equal(g.prev_alerted, i > 2);
        if (i > 2)
            assert_int_equal(g.prev_first, T0);
        if (i == 2)
            assert_int_equal(g.suppressed, 0);
        if (i == 8) {
            assert_int_equal(g.cfirst, T0 + 3 * WIN);
            assert_int_equal(g.suppressed, 1); /* the second burst's window, passed over */
        }
    }
}

static void test_suppress_dense(void **state)
{
    fx *f = *state;
    /* One event per second for 40 s, 3 in WIN (10 s) cross, suppress 5 s: once the first
     * window [0, 2] alerted, every window holds 3+ events without its newest one, yet the
     * group alerts again for the first window starting after 2 + 5 s: [8, 18] at t = 18,
     * then [24, 34] at t = 34. */
    addp p = {.key = "d", .cross = 3, .suppress = 5000};
    char m[8];
    int n = 0;
    int64_t firsts[4], lasts[4], sup[4];
    for (int i = 0; i <= 40; i++) {
        snprintf(m, sizeof(m), "m%d", i);
        p.member = m;
        p.t = T0 + i * 1000;
        got g = add_full(f, p);
        if (g.crossed) {
            assert_true(n < 4);
            firsts[n] = g.cfirst - T0;
            lasts[n] = g.clast - T0;
            sup[n] = g.suppressed;
            n++;
        }
    }
    assert_int_equal(n, 3);
    assert_int_equal(firsts[0], 0);
    assert_int_equal(lasts[0], 2000);
    assert_int_equal(firsts[1], 8000);
    assert_int_equal(lasts[1], 18000);
    assert_int_equal(firsts[2], 24000);
    assert_int_equal(lasts[2], 34000);
    /* Each alert says how many events kept the condition met since the one before. */
    assert_int_equal(sup[0], 0);
    assert_int_equal(sup[1], 15); /* t = 3 .. 17 */
    assert_int_equal(sup[2], 15); /* t = 19 .. 33 */
    /* A replayed member counts nothing: the next alert's count is unchanged by it. */
    p.member = "m36";
    p.t = T0 + 36000;
    assert_false(add_full(f, p).added);
}

static void test_pruned_window_not_reported(void **state)
{
    fx *f = *state;
    /* W = 10 s, ttl = 20 s, 5 cross. 0, 5, 6, 7, 8 cross [0, 8]; 9 makes 6. The burst at
     * 21..25 prunes 0 (< 25 - 20) and crosses [21, 25]. Re-delivering 5..9 (not late:
     * >= 5) must not report [5, 9]: that window held 6 in time order and only "crosses" now
     * because 0 was pruned. */
    addp p = {.key = "h", .cross = 5, .ttl = 2 * WIN};
    static const int secs[] = {0, 5, 6, 7, 8, 9, 21, 22, 23, 24, 25};
    char m[8];
    int crossings = 0;
    for (size_t i = 0; i < sizeof(secs) / sizeof(secs[0]); i++) {
        snprintf(m, sizeof(m), "m%d", secs[i]);
        p.member = m;
        p.t = T0 + secs[i] * 1000;
        got g = add_full(f, p);
        if (g.crossed)
            crossings++;
        if (secs[i] == 8 || secs[i] == 25)
            assert_true(g.crossed);
    }
    assert_int_equal(crossings, 2);
    for (int s = 5; s <= 9; s++) {
        snprintf(m, sizeof(m), "m%d", s);
        p.member = m;
        p.t = T0 + s * 1000;
        got g = add_full(f, p);
        assert_false(g.late);
        assert_false(g.added);
        assert_false(g.crossed);
    }
}

static void test_range_condition(void **state)
{
    fx *f = *state;
    /* gt 1 and lte 5: crosses at 2 (the first count in range). */
    static const kx_cmp_term range[] = {{KX_CMP_GT, 1}, {KX_CMP_LTE, 5}};
    assert_false(
        add_full(f, (addp){.key = "r", .member = "a", .t = T0, .cond = range, .ncond = 2}).crossed);
    got g = add_full(f, (addp){.key = "r", .member = "b", .t = T0 + 1, .cond = range, .ncond = 2});
    assert_true(g.crossed);
    assert_true(g.cvalue == 2.0);
    assert_true(kx_cmp_holds(range, 2, 5));
    assert_false(kx_cmp_holds(range, 2, 6));
    static const kx_cmp_term neq[] = {{KX_CMP_NEQ, 3}};
    assert_true(kx_cmp_holds(neq, 1, 2.5));
    assert_false(kx_cmp_holds(neq, 1, 3));
}

static void test_duplicate_member(void **state)
{
    fx *f = *state;
    add_full(f, (addp){.key = "k", .member = "m1", .t = T0, .evidence = "e1", .max_ev = 4});
    got g =
        add_full(f, (addp){.key = "k", .member = "m1", .t = T0, .evidence = "dup", .max_ev = 4});
    assert_window(g, 1, T0, T0, false);
    assert_int_equal(g.nev, 1);
    assert_string_equal(g.ev[0], "e1");
    /* Same member, other time: still the same member, keeping its first time. */
    g = add(f, "k", "m1", T0 + 500);
    assert_window(g, 1, T0, T0, false);
    g = add(f, "k", "m2", T0 + 600);
    assert_window(g, 2, T0, T0 + 600, true);
}

/* A forgotten key starts over (an evicted group); other keys keep their state. */
static void test_forget(void **state)
{
    fx *f = *state;
    add(f, "k", "m1", T0);
    add(f, "k", "m2", T0 + 1);
    add(f, "other", "m1", T0);
    assert_int_equal(kx_store_forget(f->s, "k"), 0);
    assert_int_equal(kx_store_forget(f->s, "never-seen"), 0);
    got g = add(f, "k", "m3", T0 + 2);
    assert_window(g, 1, T0 + 2, T0 + 2, true);
    g = add(f, "k", "m1", T0 + 3); /* new again */
    assert_window(g, 2, T0 + 2, T0 + 3, true);
    g = add(f, "other", "m2", T0 + 1);
    assert_window(g, 2, T0, T0 + 1, true);
    assert_int_equal(kx_store_forget(f->s, NULL), -EINVAL);
}

static void test_evidence_order_and_cap(void **state)
{
    fx *f = *state;
    addp p = {.key = "k", .max_ev = 3};
    static const char *const members[] = {"m1", "m2", "m3", "m4", "m5"};
    static const char *const evs[] = {"e1", "e2", "e3", "e4", "e5"};
    got g;
    for (int i = 0; i < 5; i++) {
        p.member = members[i];
        p.evidence = evs[i];
        p.t = T0 + i;
        g = add_full(f, p);
        assert_int_equal(g.count, i + 1);
        if (i == 1) {
            assert_int_equal(g.nev, 2);
            assert_string_equal(g.ev[0], "e2");
            assert_string_equal(g.ev[1], "e1");
        }
    }
    assert_int_equal(g.nev, 3);
    assert_string_equal(g.ev[0], "e5");
    assert_string_equal(g.ev[1], "e4");
    assert_string_equal(g.ev[2], "e3");
    /* No evidence given: nothing pushed, the list is still returned. */
    g = add_full(f, (addp){.key = "k", .member = "m6", .t = T0 + 6, .max_ev = 3});
    assert_int_equal(g.nev, 3);
    assert_string_equal(g.ev[0], "e5");
    /* Asking for fewer returns the most recent ones. */
    g = add_full(f, (addp){.key = "k", .member = "m7", .t = T0 + 7, .evidence = "e7", .max_ev = 2});
    assert_int_equal(g.nev, 2);
    assert_string_equal(g.ev[0], "e7");
    assert_string_equal(g.ev[1], "e5");
    /* max_evidence 0: none kept, none returned. */
    g = add_full(f, (addp){.key = "k", .member = "m8", .t = T0 + 8, .evidence = "e8"});
    assert_int_equal(g.nev, 0);
    assert_int_equal(g.count, 8);
    g = add_full(f, (addp){.key = "k", .member = "m9", .t = T0 + 9, .max_ev = 8});
    assert_int_equal(g.nev, 2);
    assert_string_equal(g.ev[0], "e7");
    assert_string_equal(g.ev[1], "e5");
}

/* Remaining TTL of the window key in ms, -2 if it does not exist. */
static int64_t backend_pttl(fx *f, const char *key, const char *suffix)
{
    if (!f->redis)
        return kx__store_memory_pttl(f->s, key, (int64_t)(ev_now(f->loop) * 1000.0));
    char full[256];
    /* The window log keeps a window in one stream, :l. */
    snprintf(full, sizeof(full), PREFIX "{%s}:%s", key, f->log ? "l" : suffix);
    return cmd_int(f, "PTTL %s", full);
}

static bool key_gone(void *ud)
{
    fx *f = ud;
    return backend_pttl(f, "short", "z") == -2;
}

static void test_ttl(void **state)
{
    fx *f = *state;
    add_full(f, (addp){.key = "k", .member = "m1", .t = T0, .evidence = "e1", .max_ev = 2});
    int64_t z = backend_pttl(f, "k", "z");
    /* The window log renews its stream to twice the TTL, once per TTL: the records' own
     * clocks say when a window expired; the stream's TTL only collects garbage. */
    int64_t want = f->log ? 2 * TTL : TTL;
    assert_true(z > want - 1000 && z <= want);
    if (f->redis && !f->log) {
        int64_t e = backend_pttl(f, "k", "e");
        assert_true(e > TTL - 1000 && e <= TTL);
    }
    assert_int_equal(backend_pttl(f, "nope", "z"), -2);

    /* A key expires ttl after its last update; the window then starts over. */
    addp p = {.key = "short", .member = "m1", .t = T0, .window = 200, .ttl = 200};
    add_full(f, p);
    if (f->redis) {
        assert_true(kx_test_run_until(f->loop, key_gone, f, 5000));
    } else {
        int64_t now = (int64_t)(ev_now(f->loop) * 1000.0);
        /* Expired when now > expiry, as Redis: not yet at now + ttl, gone one ms later. */
        assert_int_equal(kx__store_memory_sweep(f->s, now + 200, 0), 0);
        assert_int_equal(kx__store_memory_pttl(f->s, "short", now + 200), 0);
        assert_int_equal(kx__store_memory_nkeys(f->s), 2);
        assert_int_equal(kx__store_memory_sweep(f->s, now + 201, 0), 1);
        assert_int_equal(kx__store_memory_nkeys(f->s), 1);
        assert_int_equal(kx__store_memory_pttl(f->s, "short", now), -2);
    }
    p.member = "m2";
    p.t = T0 + 100;
    got g = add_full(f, p);
    assert_window(g, 1, T0 + 100, T0 + 100, true);
}

static void test_member_cap(void **state)
{
    fx *f = *state;
    kx__store_set_member_cap(f->s, 3);
    for (int i = 0; i < 3; i++) {
        char m[8];
        snprintf(m, sizeof(m), "m%d", i);
        add(f, "k", m, T0 + i);
    }
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 0);
    got g = add(f, "k", "m3", T0 + 3);
    assert_window(g, 3, T0 + 1, T0 + 3, true);
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 1);

    /* Equal times: the oldest is the smallest member bytes, as in a Redis sorted set. */
    add(f, "tie", "c", T0);
    add(f, "tie", "a", T0);
    add(f, "tie", "d", T0);
    g = add(f, "tie", "b", T0);
    assert_window(g, 3, T0, T0, true);
    g = add(f, "tie", "b", T0);
    assert_int_equal(g.added, false); /* b stayed */
    g = add(f, "tie", "a", T0);
    assert_int_equal(g.added, true); /* a was the one dropped (and is dropped again) */
    assert_int_equal(g.count, 3);
    g = add(f, "tie", "bb", T0);
    assert_int_equal(g.added, true);
    g = add(f, "tie", "b", T0);
    assert_int_equal(g.added, true); /* bb pushed b out */
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 5);
}

static void test_invalid_args(void **state)
{
    fx *f = *state;
    got g = {0};
    kx_window_add op = {.key = "k", .member = "m", .time_ms = T0, .window_ms = 100, .ttl_ms = 50};
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    op.ttl_ms = 100;
    op.member = NULL;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    op.member = "m";
    op.time_ms = INT64_C(1) << 53;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    op.time_ms = T0;
    static char big[KX__STORE_MAX_EVIDENCE_LEN + 1];
    op.evidence = big;
    op.evidence_len = sizeof(big);
    op.max_evidence = 1;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EMSGSIZE);
    /* A call that fails never runs its callback. */
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(g.calls, 0);
    assert_int_equal(kx_metric_get(KX_M_STORE_OPS), 0);
}

/* ---- klaxon extensions: first_seen and baseline ---- */

#define FS_D 10000
#define FS_TTL 15000

static got seen(fx *f, const char *key, const char *member, int64_t t)
{
    return add_full(f, (addp){.key = key,
                              .member = member,
                              .t = t,
                              .window = FS_D,
                              .ttl = FS_TTL,
                              .agg = KX_AGG_FIRST_SEEN});
}

#define assert_seen(g, crossed_, added_, prev, nvalues)                                            \
    do {                                                                                           \
        assert_int_equal((g).status, 0);                                                           \
        assert_int_equal((g).crossed, (crossed_));                                                 \
        assert_int_equal((g).added, (added_));                                                     \
        assert_true((g).cvalue == (double)(prev));                                                 \
        assert_int_equal((g).count, (nvalues));                                                    \
        assert_int_equal((g).ccount, (nvalues));                                                   \
        assert_false((g).late);                                                                    \
    } while (0)

static void test_first_seen(void **state)
{
    fx *f = *state;
    got g = seen(f, "fs",
                 "e1\x1f"
                 "10.0.0.1",
                 T0);
    assert_seen(g, true, true, -1, 1);
    assert_int_equal(g.cfirst, T0);
    assert_int_equal(g.clast, T0);
    g = seen(f, "fs",
             "e2\x1f"
             "10.0.0.1",
             T0 + 1000);
    assert_seen(g, false, false, T0, 1);
    /* The event that introduced the value, replayed: reported again (same alert). */
    g = seen(f, "fs",
             "e1\x1f"
             "10.0.0.1",
             T0);
    assert_seen(g, true, false, T0 + 1000, 1);
    g = seen(f, "fs",
             "e3\x1f"
             "10.0.0.2",
             T0 + 2000);
    assert_seen(g, true, true, -1, 2);
    /* An older sighting does not move "last seen" back. */
    g = seen(f, "fs",
             "e0\x1f"
             "10.0.0.2",
             T0 + 500);
    assert_seen(g, false, false, T0 + 2000, 2);
    /* Last seen exactly D ago: still known (inclusive). D + 1 ago: new again. */
    g = seen(f, "fs",
             "e4\x1f"
             "10.0.0.2",
             T0 + 2000 + FS_D);
    assert_seen(g, false, false, T0 + 2000, 2);
    g = seen(f, "fs",
             "e5\x1f"
             "10.0.0.1",
             T0 + 1000 + FS_D + 1);
    assert_seen(g, true, true, T0 + 1000, 2);
    /* Values last seen before (newest - ttl) are forgotten. */
    g = seen(f, "fs",
             "e6\x1f"
             "10.0.0.3",
             T0 + 2000 + FS_D + FS_TTL + 1);
    assert_seen(g, true, true, -1, 1);
    g = seen(f, "fs",
             "e7\x1f"
             "10.0.0.2",
             T0 + 2000 + FS_D + FS_TTL + 2);
    assert_seen(g, true, true, -1, 2);
    /* Keys do not share values. */
    g = seen(f, "fs2",
             "e1\x1f"
             "10.0.0.1",
             T0);
    assert_seen(g, true, true, -1, 1);
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 0);
}

static void test_first_seen_cap(void **state)
{
    fx *f = *state;
    kx__store_set_member_cap(f->s, 3);
    seen(f, "cap",
         "1\x1f"
         "a",
         T0);
    seen(f, "cap",
         "2\x1f"
         "b",
         T0 + 1);
    seen(f, "cap",
         "3\x1f"
         "c",
         T0 + 2);
    got g = seen(f, "cap",
                 "4\x1f"
                 "a",
                 T0 + 3); /* a is now the most recent */
    assert_seen(g, false, false, T0, 3);
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 0);
    g = seen(f, "cap",
             "5\x1f"
             "d",
             T0 + 4); /* b, the least recently seen, goes */
    assert_seen(g, true, true, -1, 3);
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 1);
    g = seen(f, "cap",
             "6\x1f"
             "c",
             T0 + 5);
    assert_seen(g, false, false, T0 + 2, 3);
    g = seen(f, "cap",
             "7\x1f"
             "b",
             T0 + 6);
    assert_seen(g, true, true, -1, 3);
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 2);
}

#define BL_I 1000

static got base(fx *f, const char *key, const char *member, int64_t t, int64_t history,
                int64_t lateness)
{
    static const kx_cmp_term min3 = {KX_CMP_GTE, 3};
    got g = {0};
    kx_window_add op = {
        .key = key,
        .member = member,
        .time_ms = t,
        .window_ms = BL_I,
        .ttl_ms = BL_I + lateness,
        .agg = KX_AGG_BASELINE,
        .cond = &min3,
        .ncond = 1,
        .deviations = 2,
        .history = history,
    };
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, got_done, &g, 5000));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    return g;
}

/* The EWMA the store keeps, computed here independently: counts of consecutive intervals. */
static void ewma(const int *counts, int n, int64_t history, double *mean, double *var)
{
    double a = 2.0 / (double)(history + 1), m = 0, v = 0;
    for (int i = 0; i < n; i++) {
        double d = counts[i] - m, inc = a * d;
        m += inc;
        v = (1 - a) * (v + d * inc);
    }
    *mean = m;
    *var = v;
}

static void test_baseline(void **state)
{
    fx *f = *state;
    char m[16];
    got g;
    /* One event per interval for four intervals: the quiet history. */
    for (int j = 0; j < 4; j++) {
        snprintf(m, sizeof(m), "q%d", j);
        g = base(f, "bl", m, T0 + j * BL_I, 3, 0);
        assert_false(g.crossed);
        assert_int_equal(g.count, 1);
        assert_int_equal(g.cfirst, T0 + j * BL_I);
    }
    /* Interval 4: the third event meets the minimum count and is far above the history
     * (mean 0.9375, stddev 0.242 after four intervals of 1). */
    static const int hist4[] = {1, 1, 1, 1};
    double mean, var;
    ewma(hist4, 4, 3, &mean, &var);
    assert_true(mean == 0.9375);
    g = base(f, "bl", "b1", T0 + 4000, 3, 0);
    assert_false(g.crossed);
    g = base(f, "bl", "b2", T0 + 4100, 3, 0);
    assert_false(g.crossed);
    g = base(f, "bl", "b3", T0 + 4200, 3, 0);
    assert_true(g.crossed);
    assert_true(g.added);
    assert_int_equal(g.ccount, 3);
    assert_int_equal(g.cfirst, T0 + 4000);
    assert_int_equal(g.clast, T0 + 4200);
    assert_true(g.cvalue == mean);
    /* Once per interval; a replayed member of it reports the interval again. */
    g = base(f, "bl", "b4", T0 + 4300, 3, 0);
    assert_false(g.crossed);
    assert_int_equal(g.count, 4);
    g = base(f, "bl", "b2", T0 + 4100, 3, 0);
    assert_true(g.crossed);
    assert_false(g.added);
    assert_int_equal(g.count, 4);
    /* No lateness: an event of a closed interval is refused as late. */
    g = base(f, "bl", "late", T0 + 3999, 3, 0);
    assert_true(g.late);
    assert_false(g.crossed);
    /* Five empty intervals (5..9), then 3 events in interval 10: the history has decayed
     * toward 0, so 3 is far above it again. */
    static const int hist10[] = {1, 1, 1, 1, 4, 0, 0, 0, 0, 0};
    ewma(hist10, 10, 3, &mean, &var);
    base(f, "bl", "c1", T0 + 10000, 3, 0);
    base(f, "bl", "c2", T0 + 10001, 3, 0);
    g = base(f, "bl", "c3", T0 + 10002, 3, 0);
    assert_true(g.crossed);
    assert_true(g.cvalue == mean);
    assert_int_equal(g.cfirst, T0 + 10000);

    /* Warm-up: with history 10 the same stream raises nothing. */
    for (int j = 0; j < 4; j++) {
        snprintf(m, sizeof(m), "q%d", j);
        assert_false(base(f, "warm", m, T0 + j * BL_I, 10, 0).crossed);
    }
    for (int j = 0; j < 5; j++) {
        snprintf(m, sizeof(m), "b%d", j);
        assert_false(base(f, "warm", m, T0 + 4000 + j, 10, 0).crossed);
    }
}

static void test_baseline_lateness(void **state)
{
    fx *f = *state;
    char m[16];
    got g;
    /* Lateness 1.5 intervals: interval j closes when the newest time passes its end + 1500. */
    for (int j = 0; j < 4; j++) {
        snprintf(m, sizeof(m), "q%d", j);
        base(f, "bll", m, T0 + j * BL_I, 2, 1500);
    }
    /* Newest T0 + 3000: intervals 0 and 1 are closed, 2 and 3 open. A late event of
     * interval 2 still counts there. */
    g = base(f, "bll", "late2", T0 + 2500, 2, 1500);
    assert_false(g.late);
    assert_int_equal(g.count, 2);
    assert_int_equal(g.cfirst, T0 + 2000);
    /* An event older than newest - lateness is refused. */
    g = base(f, "bll", "late1", T0 + 1499, 2, 1500);
    assert_true(g.late);
    /* Three events in interval 3 (now 1 + 3 = 4): compared with the closed history {1, 1}
     * plus open interval 2 as it stands (2). */
    static const int h[] = {1, 1, 2};
    double mean, var;
    ewma(h, 3, 2, &mean, &var);
    base(f, "bll", "x1", T0 + 3100, 2, 1500);
    g = base(f, "bll", "x2", T0 + 3200, 2, 1500);
    assert_true(g.crossed == ((double)g.count > mean + 2 * sqrt(var)));
    assert_int_equal(g.count, 3);
    assert_true(g.crossed);
    assert_true(g.cvalue == mean);
}

static void test_extension_invalid_args(void **state)
{
    fx *f = *state;
    got g = {0};
    kx_window_add op = {.key = "k",
                        .member = "no-separator",
                        .time_ms = T0,
                        .window_ms = 100,
                        .ttl_ms = 100,
                        .agg = KX_AGG_FIRST_SEEN};
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    op.member = "m";
    op.agg = KX_AGG_BASELINE;
    op.history = 0;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    op.history = 3;
    op.deviations = -1;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    op.deviations = 2;
    op.window_ms = 0;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g), -EINVAL);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(g.calls, 0);
}

/* ---- absence ---- */

typedef struct agot {
    int calls;
    int status;
    bool late;
    kx_absence_outcome outcome;
    int64_t since;
    size_t n;
    int64_t last[8];
    char payload[8][32];
} agot;

static void agot_cb(void *ud, int status, const kx_absence_result *res)
{
    agot *g = ud;
    g->calls++;
    g->status = status;
    if (status || !res)
        return;
    g->outcome = res->outcome;
    g->since = res->since_ms;
    g->late = res->late;
    g->n = res->n;
    for (size_t i = 0; i < res->n && i < 8; i++) {
        g->last[i] = res->last_ms[i];
        snprintf(g->payload[i], sizeof(g->payload[i]), "%.*s", (int)res->payload_len[i],
                 res->payload[i]);
    }
}

static bool agot_done(void *ud)
{
    return ((agot *)ud)->calls > 0;
}

#define AB_SPAN 1000
#define AB_KEEP 5000

static agot touch_mode(fx *f, const char *group, int64_t t, const char *payload, kx_touch_mode mode)
{
    agot g = {0};
    kx_absence_touch op = {.key = "ab",
                           .group = group,
                           .payload = payload,
                           .payload_len = strlen(payload),
                           .time_ms = t,
                           .timespan_ms = AB_SPAN,
                           .keep_ms = AB_KEEP,
                           .mode = mode};
    assert_int_equal(kx_store_absence_touch(f->s, &op, agot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &g, 5000));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    return g;
}

static agot touch(fx *f, const char *group, int64_t t, const char *payload)
{
    return touch_mode(f, group, t, payload, KX_TOUCH_PLAIN);
}

static agot due(fx *f, int64_t wm, size_t limit)
{
    agot g = {0};
    kx_absence_due op = {.key = "ab",
                         .watermark_ms = wm,
                         .timespan_ms = AB_SPAN,
                         .keep_ms = AB_KEEP,
                         .limit = limit};
    assert_int_equal(kx_store_absence_due(f->s, &op, agot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &g, 5000));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    return g;
}

static void test_absence(void **state)
{
    fx *f = *state;
    agot g = due(f, T0, 10); /* nothing known yet */
    assert_int_equal(g.n, 0);
    assert_int_equal(touch(f, "g1", T0, "p1").outcome, KX_ABSENCE_NONE);
    assert_int_equal(touch(f, "g2", T0 + 500, "p2").outcome, KX_ABSENCE_NONE);
    /* g1 is due once the watermark is past T0 + timespan (not at it). */
    assert_int_equal(due(f, T0 + AB_SPAN, 10).n, 0);
    g = due(f, T0 + AB_SPAN + 1, 10);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.last[0], T0);
    assert_string_equal(g.payload[0], "p1");
    assert_int_equal(due(f, T0 + AB_SPAN + 1, 10).n, 0); /* reported once */
    /* A re-delivered old sighting changes nothing; a new one resolves the silence. */
    assert_int_equal(touch(f, "g1", T0, "p1").outcome, KX_ABSENCE_NONE);
    g = touch(f, "g1", T0 + 1200, "p1b");
    assert_int_equal(g.outcome, KX_ABSENCE_RESOLVED);
    assert_int_equal(g.since, T0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.payload[0], "p1");
    /* g2 comes back after a silence nobody reported (the watermark never passed it). */
    g = touch(f, "g2", T0 + 500 + AB_SPAN + 100, "p2b");
    assert_int_equal(g.outcome, KX_ABSENCE_GAP);
    assert_int_equal(g.since, T0 + 500);
    assert_string_equal(g.payload[0], "p2");
    /* Exactly timespan after: no gap. */
    assert_int_equal(touch(f, "g2", T0 + 500 + 2 * AB_SPAN + 100, "p2c").outcome, KX_ABSENCE_NONE);
    /* Both silent now: by deadline, limit per call. */
    g = due(f, T0 + 3601, 1);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.last[0], T0 + 1200);
    assert_string_equal(g.payload[0], "p1b");
    g = due(f, T0 + 4000, 1);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.last[0], T0 + 2600);
    assert_string_equal(g.payload[0], "p2c");
    assert_int_equal(due(f, T0 + 4000, 1).n, 0);
    /* A reported group is forgotten keep after the watermark it was reported at: g1 (reported
     * at T0 + 3601) then starts over (no resolve), g2 (T0 + 4000) is still remembered. */
    assert_int_equal(due(f, T0 + 3601 + AB_KEEP + 1, 10).n, 0);
    assert_int_equal(touch(f, "g1", T0 + 20000, "p1c").outcome, KX_ABSENCE_NONE);
    g = touch(f, "g2", T0 + 20000, "p2d");
    assert_int_equal(g.outcome, KX_ABSENCE_RESOLVED);
    assert_int_equal(g.since, T0 + 2600);
    /* The same sighting again (a retry after a lost reply): the same report. */
    g = touch(f, "g2", T0 + 20000, "p2d");
    assert_int_equal(g.outcome, KX_ABSENCE_RESOLVED);
    assert_int_equal(g.since, T0 + 2600);
    assert_string_equal(g.payload[0], "p2d");
    /* Another event of the same millisecond is no retry: nothing to report. */
    assert_int_equal(touch(f, "g2", T0 + 20000, "p2-other").outcome, KX_ABSENCE_NONE);
    assert_int_equal(touch(f, "g1", T0 + 20000, "p1c").outcome, KX_ABSENCE_NONE);
}

/* The modes `resolve: auto` uses: an open incident is extended, or replaced by a new one. */
static void test_absence_touch_modes(void **state)
{
    fx *f = *state;
    /* Extend does nothing for a group not seen yet. */
    assert_int_equal(touch_mode(f, "g1", T0, "a", KX_TOUCH_EXTEND).outcome, KX_ABSENCE_NONE);
    assert_int_equal(due(f, T0 + 10 * AB_SPAN, 10).n, 0);
    /* Open at T0; extended to T0 + 900 (within the timespan): due after T0 + 900 + span. */
    assert_int_equal(touch_mode(f, "g1", T0, "a", KX_TOUCH_REPLACE).outcome, KX_ABSENCE_NONE);
    assert_int_equal(touch_mode(f, "g1", T0 + 900, "ignored", KX_TOUCH_EXTEND).outcome,
                     KX_ABSENCE_NONE);
    assert_int_equal(due(f, T0 + AB_SPAN + 1, 10).n, 0);
    /* A new incident replaces the open one: reported with the replaced payload. */
    agot g = touch_mode(f, "g1", T0 + 1500, "b", KX_TOUCH_REPLACE);
    assert_int_equal(g.outcome, KX_ABSENCE_REPLACED);
    assert_int_equal(g.since, T0 + 900);
    assert_string_equal(g.payload[0], "a");
    /* Extend after more than a timespan: the incident drained, nothing changes. */
    assert_int_equal(touch_mode(f, "g1", T0 + 2501, "b", KX_TOUCH_EXTEND).outcome, KX_ABSENCE_NONE);
    g = due(f, T0 + 2501, 10);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.last[0], T0 + 1500);
    assert_string_equal(g.payload[0], "b");
    /* Reported (resolved): an extend does not reopen it; a new incident is no replacement. */
    assert_int_equal(touch_mode(f, "g1", T0 + 2600, "b", KX_TOUCH_EXTEND).outcome, KX_ABSENCE_NONE);
    assert_int_equal(due(f, T0 + 5000, 10).n, 0);
    assert_int_equal(touch_mode(f, "g1", T0 + 5100, "c", KX_TOUCH_REPLACE).outcome,
                     KX_ABSENCE_RESOLVED);
    /* A replacement more than a timespan later is a gap (drained, not reported yet). */
    assert_int_equal(touch_mode(f, "g1", T0 + 6200, "d", KX_TOUCH_REPLACE).outcome, KX_ABSENCE_GAP);
}

/* resolve: auto with late events: a new incident a late event completed can be stamped
 * before the open one's last time. It still replaces it (reported), the group stays open
 * from the later time, and a retry of that touch reports the same. */
static void test_absence_late_replace(void **state)
{
    fx *f = *state;
    assert_int_equal(touch_mode(f, "g", T0 + 100, "x", KX_TOUCH_REPLACE).outcome, KX_ABSENCE_NONE);
    assert_int_equal(touch_mode(f, "g", T0 + 800, "x", KX_TOUCH_EXTEND).outcome, KX_ABSENCE_NONE);
    for (int i = 0; i < 2; i++) { /* the second: a retry */
        agot g = touch_mode(f, "g", T0 + 400, "y", KX_TOUCH_REPLACE);
        assert_int_equal(g.outcome, KX_ABSENCE_REPLACED);
        assert_int_equal(g.since, T0 + 800);
        if (i == 0)
            assert_string_equal(g.payload[0], "x");
    }
    assert_int_equal(due(f, T0 + 800 + AB_SPAN, 10).n, 0);
    agot g = due(f, T0 + 801 + AB_SPAN, 10);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.last[0], T0 + 800);
    assert_string_equal(g.payload[0], "y");
    /* Reported: an incident stamped before that report opens the group again, from its own
     * time, and is due at once. */
    assert_int_equal(touch_mode(f, "g", T0 + 300, "z", KX_TOUCH_REPLACE).outcome,
                     KX_ABSENCE_RESOLVED);
    g = due(f, T0 + 802 + AB_SPAN, 10);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.last[0], T0 + 300);
    assert_string_equal(g.payload[0], "z");
}

/* Redis: a due call retried after its reply was lost gets the same groups again. */
static void test_absence_due_retry(void **state)
{
    fx *f = *state;
    touch(f, "g1", T0, "p1");
    touch(f, "g2", T0 + 1, "p2");
    agot a = {0}, b = {0}, c = {0};
    kx_absence_due d = {.key = "ab",
                        .watermark_ms = T0 + AB_SPAN + 10,
                        .timespan_ms = AB_SPAN,
                        .keep_ms = AB_KEEP,
                        .limit = 10,
                        .token = 0x1234};
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &a), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &a, 5000));
    assert_int_equal(a.n, 2);
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &b), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &b, 5000));
    assert_int_equal(b.n, 2);
    assert_int_equal(b.last[0], T0);
    assert_string_equal(b.payload[1], "p2");
    d.token = 0x1235; /* another question: nothing left to report */
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &c), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &c, 5000));
    assert_int_equal(c.n, 0);
}

/* The length of the next call when sending n updates from i in calls of 1 to 16 (random, from
 * *x) that stop at every multiple of `stop` (0: none). */
static size_t chunk_len(uint32_t *x, size_t i, size_t n, size_t stop)
{
    *x ^= *x << 13, *x ^= *x >> 17, *x ^= *x << 5;
    size_t k = 1 + *x % 16;
    if (stop && i + k > (i / stop + 1) * stop)
        k = (i / stop + 1) * stop - i;
    return k > n - i ? n - i : k;
}

/* Several touches of one key in one call give what the touches one by one give. */
typedef struct tgot {
    int calls, status;
    size_t n;
    kx_absence_outcome outcome[16];
    bool late[16];
    int64_t since[16];
    char payload[16][16];
} tgot;

static void tgot_cb(void *ud, int status, const kx_absence_result *res, size_t n)
{
    tgot *g = ud;
    g->calls++;
    g->status = status;
    g->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        g->outcome[i] = res[i].outcome;
        g->late[i] = res[i].late;
        g->since[i] = res[i].n ? res[i].since_ms : -1;
        if (res[i].n)
            snprintf(g->payload[i], sizeof(g->payload[i]), "%.*s", (int)res[i].payload_len[0],
                     res[i].payload[0]);
    }
}

static bool tgot_done(void *ud)
{
    return ((tgot *)ud)->calls > 0;
}

/* A call of two sightings of one group whose reply is lost: the first reported the group
 * back after its reported silence, the second moved it on. Made again, each touch with its
 * token gets the answer it had; without the token the first, now older than the group's
 * last sighting, would report nothing and the "resolved" would be lost. */
static void test_absence_touch_retry_token(void **state)
{
    fx *f = *state;
    touch(f, "g", T0, "p0");
    assert_int_equal(due(f, T0 + AB_SPAN + 10, 10).n, 1); /* its silence reported */
    kx_absence_touch ops[2];
    static const char *pls[2] = {"p1", "p2"};
    for (size_t i = 0; i < 2; i++)
        ops[i] = (kx_absence_touch){.key = "ab",
                                    .group = "g",
                                    .payload = pls[i],
                                    .payload_len = 2,
                                    .time_ms = T0 + 2000 + 500 * (int64_t)i,
                                    .timespan_ms = AB_SPAN,
                                    .keep_ms = AB_KEEP,
                                    .token = 0x1111 * (i + 1)};
    tgot first = {0};
    assert_int_equal(kx_store_absence_touch_many(f->s, ops, 2, tgot_cb, &first), 0);
    assert_true(kx_test_run_until(f->loop, tgot_done, &first, 5000));
    assert_int_equal(first.status, 0);
    assert_int_equal(first.n, 2);
    assert_int_equal(first.outcome[0], KX_ABSENCE_RESOLVED);
    assert_int_equal(first.since[0], T0);
    assert_string_equal(first.payload[0], "p0");
    assert_int_equal(first.outcome[1], KX_ABSENCE_NONE);
    /* The same call again: the same answers. */
    tgot again = {0};
    assert_int_equal(kx_store_absence_touch_many(f->s, ops, 2, tgot_cb, &again), 0);
    assert_true(kx_test_run_until(f->loop, tgot_done, &again, 5000));
    assert_int_equal(again.outcome[0], KX_ABSENCE_RESOLVED);
    assert_int_equal(again.since[0], T0);
    assert_string_equal(again.payload[0], "p0");
    assert_int_equal(again.outcome[1], KX_ABSENCE_NONE);
    /* The first touch alone, as the pipeline retries a failed call's ops one by one. */
    agot one = {0};
    assert_int_equal(kx_store_absence_touch(f->s, &ops[0], agot_cb, &one), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &one, 5000));
    assert_int_equal(one.status, 0);
    assert_int_equal(one.outcome, KX_ABSENCE_RESOLVED);
    assert_int_equal(one.n, 1);
    assert_string_equal(one.payload[0], "p0");
    /* Without its token, the same touch is an old sighting: nothing to report. */
    ops[0].token = 0;
    agot bare = {0};
    assert_int_equal(kx_store_absence_touch(f->s, &ops[0], agot_cb, &bare), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &bare, 5000));
    assert_int_equal(bare.outcome, KX_ABSENCE_NONE);
    /* The group moved on from the second touch, not from the answers replayed. */
    assert_int_equal(touch(f, "g", T0 + 2500 + AB_SPAN + 1, "p3").outcome, KX_ABSENCE_GAP);
}

/* Two replaces of a new group in one call whose reply is lost: the first found nothing to
 * replace, the second replaced the first. Made again, the first must still answer nothing
 * (not "replaced" by the second, which it would find open) and leave the second's payload
 * as the open incident's. */
static void test_absence_replace_retry_token(void **state)
{
    fx *f = *state;
    kx_absence_touch ops[2];
    static const char *pls[2] = {"pA", "pB"};
    for (size_t i = 0; i < 2; i++)
        ops[i] = (kx_absence_touch){.key = "ab",
                                    .group = "g",
                                    .payload = pls[i],
                                    .payload_len = 2,
                                    .time_ms = T0 + 1000 * (int64_t)(i + 1),
                                    .timespan_ms = AB_SPAN * 10,
                                    .keep_ms = AB_KEEP,
                                    .mode = KX_TOUCH_REPLACE,
                                    .token = 0xa1 + i};
    for (int round = 0; round < 2; round++) { /* the call, then the call again */
        tgot g = {0};
        assert_int_equal(kx_store_absence_touch_many(f->s, ops, 2, tgot_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, tgot_done, &g, 5000));
        assert_int_equal(g.status, 0);
        assert_int_equal(g.outcome[0], KX_ABSENCE_NONE);
        assert_int_equal(g.outcome[1], KX_ABSENCE_REPLACED);
        assert_int_equal(g.since[1], T0 + 1000);
        assert_string_equal(g.payload[1], "pA");
    }
    agot one = {0}; /* the first alone, as a one-by-one retry sends it */
    assert_int_equal(kx_store_absence_touch(f->s, &ops[0], agot_cb, &one), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &one, 5000));
    assert_int_equal(one.outcome, KX_ABSENCE_NONE);
    /* The open incident is still the second's. */
    agot d = {0};
    kx_absence_due q = {.key = "ab",
                        .watermark_ms = T0 + 2000 + AB_SPAN * 10 + 1,
                        .timespan_ms = AB_SPAN * 10,
                        .keep_ms = AB_KEEP,
                        .limit = 10};
    assert_int_equal(kx_store_absence_due(f->s, &q, agot_cb, &d), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &d, 5000));
    assert_int_equal(d.n, 1);
    assert_int_equal(d.last[0], T0 + 2000);
    assert_string_equal(d.payload[0], "pB");
}

/* Touch answers and due answers are kept apart: a burst of reporting touches cannot push
 * out the answer a due question's retry needs. */
static void test_absence_answers_apart(void **state)
{
    fx *f = *state;
    enum { G = 100 };
    static char names[G][8];
    static kx_absence_touch ops[G];
    for (size_t i = 0; i < G; i++) {
        snprintf(names[i], sizeof(names[i]), "g%zu", i);
        touch(f, names[i], T0 + (int64_t)i, "p");
    }
    agot a = {0};
    kx_absence_due d = {.key = "ab",
                        .watermark_ms = T0 + AB_SPAN + 1,
                        .timespan_ms = AB_SPAN,
                        .keep_ms = AB_KEEP,
                        .limit = 1,
                        .token = 0x77};
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &a), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &a, 5000));
    assert_int_equal(a.n, 1);
    for (size_t i = 0; i < G; i++) /* every group back after a silence: G reports */
        ops[i] = (kx_absence_touch){.key = "ab",
                                    .group = names[i],
                                    .payload = "q",
                                    .payload_len = 1,
                                    .time_ms = T0 + 3 * AB_SPAN,
                                    .timespan_ms = AB_SPAN,
                                    .keep_ms = AB_KEEP,
                                    .token = 0x1000 + i};
    tgot g = {0};
    assert_int_equal(kx_store_absence_touch_many(f->s, ops, G, tgot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, tgot_done, &g, 5000));
    assert_int_equal(g.n, G);
    assert_int_equal(cmd_int(f, "HLEN %s", PREFIX "{ab}:t"), G);
    assert_int_equal(cmd_int(f, "HLEN %s", PREFIX "{ab}:e"), 1);
    agot b = {0}; /* the due question again: the same group */
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &b), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &b, 5000));
    assert_int_equal(b.n, 1);
    assert_int_equal(b.last[0], a.last[0]);
}

static size_t due_on(fx *f, const char *key, int64_t wm)
{
    agot g = {0};
    kx_absence_due op = {
        .key = key, .watermark_ms = wm, .timespan_ms = AB_SPAN, .keep_ms = AB_KEEP, .limit = 100};
    assert_int_equal(kx_store_absence_due(f->s, &op, agot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &g, 5000));
    assert_int_equal(g.status, 0);
    return g.n;
}

static void test_touch_many_random(void **state)
{
    fx *f = *state;
    enum { N = 600, DUE_EVERY = 29 };
    static char groups[N][8], payloads[N][8];
    static kx_absence_touch ops[N];
    static agot one[N];
    static const kx_touch_mode modes[] = {KX_TOUCH_PLAIN, KX_TOUCH_PLAIN, KX_TOUCH_EXTEND,
                                          KX_TOUCH_REPLACE};
    uint32_t x = 88172645u;
    int64_t t = T0;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        snprintf(groups[i], sizeof(groups[i]), "g%u", x % 6);
        snprintf(payloads[i], sizeof(payloads[i]), "p%u", (x >> 4) % 3);
        if (i > 0 && x % 11 == 0) {
            ops[i] = ops[(x >> 7) % i]; /* a retry of an earlier touch */
            continue;
        }
        if (x % 5 == 0)
            t += (int64_t)((x >> 9) % (3 * AB_SPAN)); /* now and then a silence */
        else
            t += (int64_t)((x >> 9) % 200);
        ops[i] = (kx_absence_touch){.group = groups[i],
                                    .payload = payloads[i],
                                    .payload_len = strlen(payloads[i]),
                                    .time_ms = x % 9 == 0 ? t - (int64_t)((x >> 3) % 2000) : t,
                                    .timespan_ms = AB_SPAN,
                                    .keep_ms = AB_KEEP,
                                    .mode = modes[(x >> 12) % 4]};
    }
    /* One by one, with a due question every DUE_EVERY touches (at the time reached). */
    size_t reported = 0;
    int counts[4] = {0};
    for (size_t i = 0; i < N; i++) {
        if (i % DUE_EVERY == 0)
            reported += due_on(f, "tone", ops[i].time_ms);
        ops[i].key = "tone";
        agot g = {0};
        assert_int_equal(kx_store_absence_touch(f->s, &ops[i], agot_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, agot_done, &g, 5000));
        assert_int_equal(g.status, 0);
        one[i] = g;
        counts[g.outcome]++;
    }
    /* The stream reports every outcome, and the dues report groups. */
    assert_true(counts[KX_ABSENCE_RESOLVED] > 3 && counts[KX_ABSENCE_GAP] > 3 &&
                counts[KX_ABSENCE_REPLACED] > 3 && counts[KX_ABSENCE_NONE] > 3);
    assert_true(reported > 3);
    /* The same in calls of 1 to 16 touches, none spanning a due question. */
    size_t reported_many = 0;
    for (size_t i = 0; i < N;) {
        if (i % DUE_EVERY == 0)
            reported_many += due_on(f, "tmany", ops[i].time_ms);
        size_t k = chunk_len(&x, i, N, DUE_EVERY);
        for (size_t j = i; j < i + k; j++)
            ops[j].key = "tmany";
        tgot g = {0};
        assert_int_equal(kx_store_absence_touch_many(f->s, &ops[i], k, tgot_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, tgot_done, &g, 5000));
        assert_int_equal(g.status, 0);
        assert_int_equal(g.n, k);
        for (size_t j = 0; j < k; j++) {
            assert_int_equal(g.outcome[j], one[i + j].outcome);
            if (one[i + j].outcome != KX_ABSENCE_NONE) {
                assert_int_equal(g.since[j], one[i + j].since);
                assert_string_equal(g.payload[j], one[i + j].payload[0]);
            }
        }
        i += k;
    }
    assert_int_equal(reported_many, reported);
    /* Refused as a whole: keys that differ. */
    ops[1].key = "tother";
    tgot g = {0};
    assert_int_equal(kx_store_absence_touch_many(f->s, ops, 2, tgot_cb, &g), -EINVAL);
    assert_int_equal(g.calls, 0);
}

static void test_absence_invalid_args(void **state)
{
    fx *f = *state;
    agot g = {0};
    kx_absence_touch t = {
        .key = "ab", .group = "has space", .time_ms = T0, .timespan_ms = 1, .keep_ms = 1};
    assert_int_equal(kx_store_absence_touch(f->s, &t, agot_cb, &g), -EINVAL);
    t.group = "g";
    t.timespan_ms = 0;
    assert_int_equal(kx_store_absence_touch(f->s, &t, agot_cb, &g), -EINVAL);
    kx_absence_due d = {.key = "ab", .watermark_ms = T0, .timespan_ms = 1, .keep_ms = 1};
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &g), -EINVAL); /* limit 0 */
    d.limit = KX_STORE_ABSENCE_DUE_MAX + 1;
    assert_int_equal(kx_store_absence_due(f->s, &d, agot_cb, &g), -EINVAL);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(g.calls, 0);
}

/* ---- closing windows (at most N per window) ---- */

#define CW_SPAN 1000

static agot ctouch(fx *f, const char *group, const char *id, int64_t t, const char *payload)
{
    agot g = {0};
    kx_close_touch op = {.key = "cw",
                         .group = group,
                         .identity = id,
                         .payload = payload,
                         .payload_len = strlen(payload),
                         .time_ms = t,
                         .timespan_ms = CW_SPAN,
                         .ttl_ms = 60000};
    assert_int_equal(kx_store_close_touch(f->s, &op, agot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &g, 5000));
    assert_int_equal(g.status, 0);
    return g;
}

typedef struct cgot {
    agot a;
    bool more;
    int64_t count[8];
} cgot;

static void cgot_cb(void *ud, int status, const kx_absence_result *res)
{
    cgot *g = ud;
    agot_cb(&g->a, status, res);
    if (status || !res)
        return;
    g->more = res->more;
    for (size_t i = 0; i < res->n && i < 8; i++)
        g->count[i] = res->count[i];
}

static cgot cdue(fx *f, int64_t wm, size_t limit)
{
    static const kx_cmp_term lt3 = {KX_CMP_LT, 3};
    cgot g = {0};
    kx_close_due op = {.key = "cw",
                       .watermark_ms = wm,
                       .timespan_ms = CW_SPAN,
                       .ttl_ms = 60000,
                       .cond = &lt3,
                       .ncond = 1,
                       .limit = limit};
    assert_int_equal(kx_store_close_due(f->s, &op, cgot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &g.a, 5000));
    assert_int_equal(g.a.status, 0);
    return g;
}

static cgot cdue_on(fx *f, const char *key, int64_t wm)
{
    static const kx_cmp_term lt3 = {KX_CMP_LT, 3};
    cgot g = {0};
    kx_close_due op = {.key = key,
                       .watermark_ms = wm,
                       .timespan_ms = CW_SPAN,
                       .ttl_ms = 60000,
                       .cond = &lt3,
                       .ncond = 1,
                       .limit = 8};
    assert_int_equal(kx_store_close_due(f->s, &op, cgot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, agot_done, &g.a, 5000));
    assert_int_equal(g.a.status, 0);
    return g;
}

/* Several closing touches of one key in one call give what the touches one by one give: the
 * same late flags, and the same closed windows at every due question. */
static void test_close_touch_many_random(void **state)
{
    fx *f = *state;
    enum { N = 500, DUE_EVERY = 23 };
    static char groups[N][8], ids[N][8], payloads[N][8];
    static kx_close_touch ops[N];
    static bool late_one[N];
    static cgot dues[N / DUE_EVERY + 1];
    uint32_t x = 1234567u;
    int64_t t = T0;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        snprintf(groups[i], sizeof(groups[i]), "g%u", x % 5);
        snprintf(ids[i], sizeof(ids[i]), "e%zu", i);
        snprintf(payloads[i], sizeof(payloads[i]), "p%zu", i);
        if (i > 0 && x % 13 == 0) {
            ops[i] = ops[(x >> 7) % i]; /* a replay of an earlier event */
            continue;
        }
        t += (int64_t)((x >> 9) % (CW_SPAN / 4));
        ops[i] =
            (kx_close_touch){.group = groups[i],
                             .identity = ids[i],
                             .payload = payloads[i],
                             .payload_len = strlen(payloads[i]),
                             .time_ms = x % 7 == 0 ? t - (int64_t)((x >> 3) % (2 * CW_SPAN)) : t,
                             .timespan_ms = CW_SPAN,
                             .ttl_ms = 60000};
    }
    /* One by one, with a due question every DUE_EVERY touches (a window behind). */
    int late = 0, closed = 0;
    for (size_t i = 0; i < N; i++) {
        if (i % DUE_EVERY == 0) {
            dues[i / DUE_EVERY] = cdue_on(f, "cone", ops[i].time_ms - CW_SPAN);
            closed += (int)dues[i / DUE_EVERY].a.n;
        }
        ops[i].key = "cone";
        agot g = {0};
        assert_int_equal(kx_store_close_touch(f->s, &ops[i], agot_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, agot_done, &g, 5000));
        assert_int_equal(g.status, 0);
        late_one[i] = g.late;
        late += g.late;
    }
    assert_true(late > 3 && closed > 3); /* the stream has late events and closed windows */
    /* The same in calls of 1 to 16 touches, none spanning a due question. */
    for (size_t i = 0; i < N;) {
        if (i % DUE_EVERY == 0) {
            cgot d = cdue_on(f, "cmany", ops[i].time_ms - CW_SPAN), *o = &dues[i / DUE_EVERY];
            assert_int_equal(d.a.n, o->a.n);
            assert_int_equal(d.more, o->more);
            for (size_t j = 0; j < d.a.n && j < 8; j++) {
                assert_int_equal(d.a.last[j], o->a.last[j]);
                assert_int_equal(d.count[j], o->count[j]);
                assert_string_equal(d.a.payload[j], o->a.payload[j]);
            }
        }
        size_t k = chunk_len(&x, i, N, DUE_EVERY);
        for (size_t j = i; j < i + k; j++)
            ops[j].key = "cmany";
        tgot g = {0};
        assert_int_equal(kx_store_close_touch_many(f->s, &ops[i], k, tgot_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, tgot_done, &g, 5000));
        assert_int_equal(g.status, 0);
        assert_int_equal(g.n, k);
        for (size_t j = 0; j < k; j++)
            assert_int_equal(g.late[j], late_one[i + j]);
        i += k;
    }
}

static void test_close_windows(void **state)
{
    fx *f = *state;
    assert_false(ctouch(f, "g1", "e1", T0 + 100, "p1").late);
    ctouch(f, "g1", "e2", T0 + 200, "p2");
    ctouch(f, "g1", "e2", T0 + 200, "p2"); /* re-delivered: counted once */
    ctouch(f, "g1", "e3", T0 + 1500, "p3");
    ctouch(f, "g1", "e4", T0 + 1600, "p4");
    ctouch(f, "g1", "e5", T0 + 1700, "p5");
    ctouch(f, "g1", "e0", T0 + 50, "p0"); /* older: counted, the payload stays the newest */
    ctouch(f, "g2", "f1", T0 + 300, "q1");
    /* Nothing before a window's end. */
    cgot g = cdue(f, T0 + CW_SPAN - 1, 10);
    assert_int_equal(g.a.n, 0);
    assert_false(g.more);
    /* Window [T0, T0 + 1000) of both groups: g1 has 3 (not < 3: judged, not reported), g2 has
     * 1 (reported); then g1's next window is not due yet. Limit 1 per call, "more" says so. */
    g = cdue(f, T0 + CW_SPAN, 1);
    assert_int_equal(g.a.n, 1);
    assert_int_equal(g.a.last[0], T0);
    assert_int_equal(g.count[0], 1);
    assert_string_equal(g.a.payload[0], "q1");
    assert_false(g.more);
    assert_int_equal(cdue(f, T0 + CW_SPAN, 1).a.n, 0);
    /* An event of a judged window is late, not counted. */
    assert_true(ctouch(f, "g1", "e9", T0 + 900, "p9").late);
    /* [T0 + 1000, T0 + 2000) of g1: e3, e4, e5 = 3: not reported. */
    g = cdue(f, T0 + 2 * CW_SPAN, 10);
    assert_int_equal(g.a.n, 0);
    /* Two quiet windows, then two events: reported with count 2, the newest payload. */
    ctouch(f, "g1", "e7", T0 + 4100, "p7");
    ctouch(f, "g1", "e8", T0 + 4200, "p8");
    ctouch(f, "g2", "f2", T0 + 4300, "q2");
    g = cdue(f, T0 + 9000, 1);
    assert_int_equal(g.a.n, 1);
    assert_int_equal(g.a.last[0], T0 + 4000);
    assert_int_equal(g.count[0], 2);
    assert_string_equal(g.a.payload[0], "p8");
    assert_true(g.more);
    g = cdue(f, T0 + 9000, 1);
    assert_int_equal(g.a.n, 1);
    assert_string_equal(g.a.payload[0], "q2");
    assert_false(g.more);
    assert_int_equal(cdue(f, T0 + 9000, 10).a.n, 0);
    /* A window the watermark has passed is closed even when nothing of the group was judged
     * in it (a lagging partition must not make a partial count). */
    assert_true(ctouch(f, "g3", "h1", T0 + 7500, "r1").late);
    /* Odd and even window numbers alike (the script's doubles hold them exactly). */
    ctouch(f, "g1", "e10", T0 + 9500, "p10");
    ctouch(f, "g1", "e11", T0 + 10500, "p11");
    g = cdue(f, T0 + 11000, 10);
    assert_int_equal(g.a.n, 2);
    assert_int_equal(g.a.last[0], T0 + 9000);
    assert_int_equal(g.a.last[1], T0 + 10000);
}

/* ---- the shared watermark ---- */

typedef struct wgot {
    int calls, status;
    bool known;
    int64_t wm;
} wgot;

static void wgot_cb(void *ud, int status, bool known, int64_t wm)
{
    wgot *g = ud;
    g->calls++;
    g->status = status;
    g->known = known;
    g->wm = wm;
}

static bool wgot_done(void *ud)
{
    return ((wgot *)ud)->calls > 0;
}

static wgot wmark(fx *f, int64_t now, const kx_watermark_entry *e, size_t n)
{
    wgot g = {0};
    kx_watermark_op op = {
        .key = "wm", .mine = e, .n = n, .now_ms = now, .quiet_ms = 100, .ttl_ms = 10000};
    assert_int_equal(kx_store_watermark(f->s, &op, wgot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, wgot_done, &g, 5000));
    assert_int_equal(g.status, 0);
    return g;
}

static void test_watermark(void **state)
{
    fx *f = *state;
    assert_false(wmark(f, 1000, NULL, 0).known);
    kx_watermark_entry a[] = {{"auth/0", 500, false}, {"auth/1", 700, false}};
    wgot g = wmark(f, 1000, a, 2);
    assert_true(g.known);
    assert_int_equal(g.wm, 500); /* the minimum over the partitions */
    /* A new owner re-reading older events does not move a partition back. */
    kx_watermark_entry b[] = {{"auth/0", 400, false}};
    assert_int_equal(wmark(f, 1050, b, 1).wm, 500);
    /* auth/0 has not moved for 200 ms (> quiet 100): quiet, it counts as now - quiet (1100);
     * auth/1 holds the minimum. */
    kx_watermark_entry c[] = {{"auth/1", 800, false}};
    assert_int_equal(wmark(f, 1200, c, 1).wm, 800);
    /* Live without a newer event: still moving, so not quiet at 1290 (a stalled 1190 would
     * be quiet for auth/1 too). */
    kx_watermark_entry l[] = {{"auth/1", 800, true}};
    assert_int_equal(wmark(f, 1290, l, 1).wm, 800);
    assert_int_equal(wmark(f, 1395, NULL, 0).wm, 1295); /* both quiet: now - quiet */
    /* Another process's partition joins the minimum. */
    kx_watermark_entry d[] = {{"auth/2", 550, false}};
    assert_int_equal(wmark(f, 1400, d, 1).wm, 550);
    /* Nothing moved for longer than ttl: forgotten. */
    assert_false(wmark(f, 20000, NULL, 0).known);
}

/* ---- claims ---- */

typedef struct claimgot {
    int calls, status;
    kx_claim_state st;
    int64_t ttl;
} claimgot;

static void claimgot_cb(void *ud, int status, kx_claim_state st, int64_t ttl)
{
    claimgot *g = ud;
    g->calls++;
    g->status = status;
    g->st = st;
    g->ttl = ttl;
}

static bool claimgot_done(void *ud)
{
    return ((claimgot *)ud)->calls > 0;
}

static claimgot claim(fx *f, const char *key, const char *holder, kx_claim_mode mode, int64_t lease)
{
    claimgot g = {0};
    kx_claim_op op = {
        .key = key, .holder = holder, .mode = mode, .lease_ms = lease, .keep_ms = 60000};
    assert_int_equal(kx_store_claim(f->s, &op, claimgot_cb, &g), 0);
    assert_true(kx_test_run_until(f->loop, claimgot_done, &g, 5000));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, 0);
    return g;
}

static void test_claim(void **state)
{
    fx *f = *state;
    /* Taken, renewed by its holder, refused to another while the lease runs. */
    claimgot g = claim(f, "c1", "a", KX_CLAIM_TAKE, 10000);
    assert_int_equal(g.st, KX_CLAIM_MINE);
    assert_int_equal(g.ttl, 10000);
    assert_int_equal(claim(f, "c1", "a", KX_CLAIM_TAKE, 20000).st, KX_CLAIM_MINE);
    g = claim(f, "c1", "b", KX_CLAIM_TAKE, 10000);
    assert_int_equal(g.st, KX_CLAIM_HELD);
    assert_true(g.ttl > 19000 && g.ttl <= 20000);
    /* Another's release changes nothing; the holder's frees it at once. */
    assert_int_equal(claim(f, "c1", "b", KX_CLAIM_RELEASE, 0).st, KX_CLAIM_HELD);
    assert_int_equal(claim(f, "c1", "a", KX_CLAIM_RELEASE, 0).st, KX_CLAIM_MINE);
    assert_int_equal(claim(f, "c1", "b", KX_CLAIM_TAKE, 10000).st, KX_CLAIM_MINE);
    /* Done (by whoever) is final for everyone, for keep_ms, and says so again on a retry. */
    g = claim(f, "c1", "a", KX_CLAIM_DONE, 0);
    assert_int_equal(g.st, KX_CLAIM_DONE_STATE);
    assert_int_equal(g.ttl, 60000);
    for (int i = 0; i < 3; i++) {
        g = claim(f, "c1", i == 1 ? "b" : "a", (kx_claim_mode)i, 10000);
        assert_int_equal(g.st, KX_CLAIM_DONE_STATE);
        assert_true(g.ttl > 59000 && g.ttl <= 60000);
    }
    /* A lease that runs out lets another holder take over (its holder died). */
    assert_int_equal(claim(f, "c2", "a", KX_CLAIM_TAKE, 150).st, KX_CLAIM_MINE);
    assert_int_equal(claim(f, "c2", "b", KX_CLAIM_TAKE, 150).st, KX_CLAIM_HELD);
    usleep(250 * 1000);
    ev_now_update(f->loop);
    assert_int_equal(claim(f, "c2", "b", KX_CLAIM_TAKE, 10000).st, KX_CLAIM_MINE);
    assert_int_equal(claim(f, "c2", "a", KX_CLAIM_TAKE, 10000).st, KX_CLAIM_HELD);
    /* Bad calls are refused without a callback. */
    claimgot none = {0};
    kx_claim_op bad = {.key = "c3", .holder = "d", .mode = KX_CLAIM_TAKE, .lease_ms = 1};
    assert_int_equal(kx_store_claim(f->s, &bad, claimgot_cb, &none), -EINVAL);
    bad.holder = "a";
    bad.lease_ms = 0;
    assert_int_equal(kx_store_claim(f->s, &bad, claimgot_cb, &none), -EINVAL);
    bad.mode = KX_CLAIM_DONE;
    assert_int_equal(kx_store_claim(f->s, &bad, claimgot_cb, &none), -EINVAL);
    ev_run(f->loop, EVRUN_NOWAIT);
    assert_int_equal(none.calls, 0);
}

/* ---- several adds of one key in one call ---- */

typedef struct mgot {
    int calls;
    int status;
    size_t n;
    got r[16];
} mgot;

static void mgot_cb(void *ud, int status, const kx_window_result *res, size_t n)
{
    mgot *g = ud;
    g->calls++;
    g->status = status;
    g->n = n;
    for (size_t i = 0; i < n && i < 16; i++)
        got_cb(&g->r[i], 0, &res[i]);
}

static bool mgot_done(void *ud)
{
    return ((mgot *)ud)->calls > 0;
}

/* An add's result alone (a) and within a call of several (b): the same but for count, first
 * and last, which a call of several does not compute. */
static void assert_same_result(const got *a, const got *b)
{
    assert_int_equal(a->added, b->added);
    assert_int_equal(a->late, b->late);
    assert_int_equal(a->crossed, b->crossed);
    assert_int_equal(a->cfirst, b->cfirst);
    assert_int_equal(a->clast, b->clast);
    assert_int_equal(a->ccount, b->ccount);
    assert_true(a->cvalue == b->cvalue);
    assert_int_equal(a->suppressed, b->suppressed);
    assert_int_equal(a->prev_alerted, b->prev_alerted);
    assert_int_equal(a->prev_first, b->prev_first);
    assert_int_equal(a->met, b->met);
    assert_int_equal(a->met_ms, b->met_ms);
    assert_int_equal(a->nev, b->nev);
    for (size_t k = 0; k < a->nev && k < 8; k++)
        assert_string_equal(a->ev[k], b->ev[k]);
}

/* A COUNT add with a condition as the pipeline makes it: the member is its own evidence, which
 * comes only with a crossing. */
static kx_window_add count_add(const char *key, const char *m, int64_t t, size_t max_ev,
                               const kx_cmp_term *cond, int64_t suppress)
{
    return (kx_window_add){.key = key,
                           .member = m,
                           .time_ms = t,
                           .window_ms = WIN,
                           .ttl_ms = TTL,
                           .evidence = m,
                           .evidence_len = strlen(m),
                           .max_evidence = max_ev,
                           .cond = cond,
                           .ncond = 1,
                           .suppress_ms = suppress,
                           .evidence_if_crossed = true};
}

/* The same adds one by one (key "one") and in one call (key "many") give the same results,
 * the crossing's evidence included; count/first/last are not computed in one call. */
static void test_add_many(void **state)
{
    fx *f = *state;
    static const kx_cmp_term gte3 = {KX_CMP_GTE, 3};
    static const struct {
        const char *m;
        int64_t t;
    } seq[] = {
        {"a", T0},         {"b", T0 + 1000},  {"a", T0},        /* a replayed */
        {"c", T0 + 500},   {"d", T0 + 9000},  {"e", T0 + 9500}, /* crossing at c; d, e suppressed */
        {"old", T0 - TTL}, {"f", T0 + 30000}, {"g", T0 + 30001}, {"h", T0 + 30002},
    };
    size_t n = sizeof(seq) / sizeof(seq[0]);
    kx_window_add ops[16];
    for (size_t i = 0; i < n; i++)
        ops[i] = count_add("one", seq[i].m, seq[i].t, 4, &gte3, 5000);
    got one[16];
    for (size_t i = 0; i < n; i++) {
        got g = {0};
        assert_int_equal(kx_store_window_add(f->s, &ops[i], got_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, got_done, &g, 5000));
        one[i] = g;
    }
    for (size_t i = 0; i < n; i++)
        ops[i].key = "many";
    mgot mg = {0};
    assert_int_equal(kx_store_window_add_many(f->s, ops, n, mgot_cb, &mg), 0);
    assert_true(kx_test_run_until(f->loop, mgot_done, &mg, 5000));
    assert_int_equal(mg.calls, 1);
    assert_int_equal(mg.status, 0);
    assert_int_equal(mg.n, n);
    int crossings = 0;
    for (size_t i = 0; i < n; i++) {
        const got *b = &mg.r[i];
        assert_same_result(&one[i], b);
        assert_int_equal(b->count, 0);
        assert_int_equal(b->first, 0);
        crossings += b->crossed;
        /* Evidence only with a crossing (evidence_if_crossed). */
        assert_int_equal(b->nev > 0, b->crossed);
    }
    /* c crosses [T0, T0 + 1000]; f..h start after T0 + 1000 + suppress: h crosses again; the
     * add older than the key keeps is late. */
    assert_int_equal(crossings, 2);
    assert_true(mg.r[3].crossed);
    assert_int_equal(mg.r[3].cfirst, T0);
    assert_int_equal(mg.r[3].clast, T0 + 1000);
    assert_int_equal(mg.r[3].ccount, 3);
    assert_string_equal(mg.r[3].ev[0], "c");
    assert_true(mg.r[6].late);
    assert_true(mg.r[9].crossed);
    assert_false(mg.r[2].added);
    /* Mixed keys are refused, and so are mixed aggregates. */
    ops[1].key = "other";
    assert_int_equal(kx_store_window_add_many(f->s, ops, 2, mgot_cb, &mg), -EINVAL);
    ops[1].key = "many";
    ops[0].agg = KX_AGG_BASELINE;
    ops[0].history = 1;
    assert_int_equal(kx_store_window_add_many(f->s, ops, 2, mgot_cb, &mg), -EINVAL);
    assert_int_equal(mg.calls, 1);
}

/* Sends ops[0..n) again to key, the adds with one call number in one call, and checks each
 * result against one[] (the same adds one by one). */
static void calls_like_one(fx *f, kx_window_add *ops, const size_t *call, const got *one, size_t n,
                           const char *key)
{
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        while (i + k < n && call[i + k] == call[i])
            ops[i + k++].key = key;
        mgot mg = {0};
        assert_int_equal(kx_store_window_add_many(f->s, &ops[i], k, mgot_cb, &mg), 0);
        assert_true(kx_test_run_until(f->loop, mgot_done, &mg, 5000));
        assert_int_equal(mg.status, 0);
        assert_int_equal(mg.n, k);
        for (size_t j = 0; j < k; j++)
            assert_same_result(&one[i + j], &mg.r[j]);
        i += k;
    }
}

/* COUNT adds in one call as the pipeline sends them (evidence only with a crossing): the
 * script appends the leading adds that cannot report anything in one go and counts their
 * windows locally. Each result is the one-by-one result: a member exactly at a window's start
 * counts, the call stops appending at the add that meets the condition, and adds after an
 * alert still report it (prev_alerted). */
static void test_count_append_only(void **state)
{
    fx *f = *state;
    static const kx_cmp_term gte3 = {KX_CMP_GTE, 3};
    static const struct {
        const char *m;
        int64_t t;
        size_t call; /* adds of one call share a number */
    } seq[] = {
        {"x1", T0, 0},          {"x2", T0 + 5000, 0},   /* two members, no alert */
        {"y1", T0 + 10000, 1},  {"y2", T0 + 10001, 1},  /* y1's window starts at x1: alert */
        {"z1", T0 + 40000, 2},  {"z2", T0 + 40010, 2},  /* sparse: nothing met, after */
        {"z3", T0 + 40020, 2},  {"z4", T0 + 60000, 2},  /*   an alert; z3 meets it again */
        {"w1", T0 + 100000, 3}, {"w2", T0 + 105000, 3}, /* w3's window starts at w1, an */
        {"w3", T0 + 110000, 3},                         /*   add of the same call: alert */
    };
    enum { N = sizeof(seq) / sizeof(seq[0]) };
    kx_window_add ops[N];
    got one[N];
    for (size_t i = 0; i < N; i++) {
        ops[i] = count_add("one", seq[i].m, seq[i].t, 2, &gte3, 0);
        one[i] = add_on(f->loop, f->s, &ops[i]);
    }
    assert_true(one[2].crossed);
    assert_int_equal(one[2].cfirst, T0);
    assert_int_equal(one[2].ccount, 3);
    assert_false(one[3].crossed);
    for (size_t i = 4; i < 7; i++) {
        assert_true(one[i].prev_alerted);
        assert_int_equal(one[i].prev_first, T0);
    }
    assert_false(one[4].met);
    assert_false(one[5].met);
    assert_true(one[6].crossed); /* z1..z3, after the last alert's end plus suppress 0 */
    assert_int_equal(one[6].cfirst, T0 + 40000);
    assert_int_equal(one[7].prev_first, T0 + 40000);
    assert_false(one[9].met);
    assert_true(one[10].crossed);
    assert_int_equal(one[10].cfirst, T0 + 100000);
    assert_int_equal(one[10].ccount, 3);
    size_t calls[N];
    for (size_t i = 0; i < N; i++)
        calls[i] = seq[i].call;
    calls_like_one(f, ops, calls, one, N, "many");
}

/* DISTINCT adds in one call as the pipeline sends them: the leading adds that cannot report
 * anything are slid over a tally of the newest window's values (built from the window when
 * there is none or it is stale, kept across calls). Each result is the one-by-one result:
 * a value still held by another member of the window, a member exactly at a window's start,
 * the add that meets the condition. */
static void test_distinct_append_only(void **state)
{
    fx *f = *state;
    static const kx_cmp_term gte3 = {KX_CMP_GTE, 3};
    static const struct {
        const char *m;
        int64_t t;
        size_t call;
    } seq[] = {
        {"x1\037a", T0, 0},         {"x2\037b", T0 + 5000, 0},
        {"y1\037a", T0 + 9000, 1},  {"y2\037b", T0 + 10000, 1}, /* x1 still in */
        {"y3\037c", T0 + 10001, 1},                             /* a b c: alert */
        {"z1\037a", T0 + 30000, 2}, {"z2\037a", T0 + 30001, 2}, /* tally built */
        {"z3\037b", T0 + 30002, 2}, {"u1\037b", T0 + 35000, 3},
        {"u2\037a", T0 + 40001, 3}, /* tally kept */
        {"u3\037c", T0 + 40002, 3}, /* z3 exactly at its window's start: a b c, alert */
    };
    enum { N = sizeof(seq) / sizeof(seq[0]) };
    kx_window_add ops[N];
    got one[N];
    for (size_t i = 0; i < N; i++) {
        ops[i] = count_add("one", seq[i].m, seq[i].t, 2, &gte3, 0);
        ops[i].agg = KX_AGG_DISTINCT;
        one[i] = add_on(f->loop, f->s, &ops[i]);
    }
    assert_false(one[3].met);
    assert_true(one[4].crossed);
    assert_int_equal(one[4].cfirst, T0 + 5000);
    assert_true(one[4].cvalue == 3);
    for (size_t i = 5; i < 10; i++)
        assert_false(one[i].met);
    assert_true(one[10].crossed);
    assert_int_equal(one[10].cfirst, T0 + 30002);
    size_t calls[N];
    for (size_t i = 0; i < N; i++)
        calls[i] = seq[i].call;
    calls_like_one(f, ops, calls, one, N, "many");

    /* A late member changes the window without moving its newest time: the tally from before
     * must not be used (r1's window holds a b c with it). Then a member exactly at a window's
     * start whose value no other member holds: s4's window has a b c. */
    static const struct {
        const char *m;
        int64_t t;
        size_t call;
    } seq2[] = {
        {"p1\037a", T0, 0},
        {"p2\037b", T0 + 1, 0}, /* tally: a b */
        {"q1\037c", T0 - 5, 1}, /* late: a b c */
        {"r1\037a", T0 + 2, 2},
        {"r2\037d", T0 + 3, 2},
        {"s1\037e", T0 + 50000, 3},
        {"s2\037f", T0 + 50100, 3}, /* a new tally */
        {"s3\037f", T0 + 55000, 4},
        {"s4\037g", T0 + 60000, 4}, /* s1 at the start */
        /* t3's window starts exactly at t1, a member from before its call; u3's at u1, a
         * member of its own call: each completes e f g, a b c */
        {"t1\037e", T0 + 100000, 5},
        {"t2\037f", T0 + 100100, 5},
        {"t3\037g", T0 + 110000, 6},
        {"t4\037h", T0 + 110001, 6},
        {"u1\037a", T0 + 130000, 7},
        {"u2\037b", T0 + 135000, 7},
        {"u3\037c", T0 + 140000, 7},
    };
    enum { N2 = sizeof(seq2) / sizeof(seq2[0]) };
    kx_window_add ops2[N2];
    got one2[N2];
    size_t calls2[N2];
    for (size_t i = 0; i < N2; i++) {
        ops2[i] = count_add("one2", seq2[i].m, seq2[i].t, 2, &gte3, 0);
        ops2[i].agg = KX_AGG_DISTINCT;
        one2[i] = add_on(f->loop, f->s, &ops2[i]);
        calls2[i] = seq2[i].call;
    }
    assert_true(one2[2].crossed); /* the late c completes a b c */
    assert_true(one2[3].met);
    assert_false(one2[7].met);
    assert_true(one2[8].crossed);
    assert_int_equal(one2[8].cfirst, T0 + 50000);
    assert_true(one2[11].crossed);
    assert_int_equal(one2[11].cfirst, T0 + 100000);
    assert_true(one2[15].crossed);
    assert_int_equal(one2[15].cfirst, T0 + 130000);
    calls_like_one(f, ops2, calls2, one2, N2, "many2");
}

/* A replay dated after every member: its member keeps its first time, so the key's newest
 * time does not move and nothing is pruned (the Redis script once pruned by the replay's
 * time; its memory twin did not). m5's window then holds a b c d: no alert. */
static void test_distinct_replay_newer(void **state)
{
    fx *f = *state;
    static const kx_cmp_term eq2 = {KX_CMP_EQ, 2};
    static const struct {
        const char *m;
        int64_t t;
        size_t call;
    } seq[] = {
        {"m1\037a", T0 + 1000, 0},  {"m2\037b", T0 + 5000, 1}, /* a b: alert */
        {"m3\037c", T0 + 6000, 2},  {"m4\037c", T0 + 7000, 2},
        {"m3\037c", T0 + 16000, 2}, /* the replay: a and b pruned */
        {"m5\037d", T0 + 8000, 3},  {"m6\037d", T0 + 9000, 3},
    };
    enum { N = sizeof(seq) / sizeof(seq[0]) };
    kx_window_add ops[N];
    got one[N];
    size_t calls[N];
    for (size_t i = 0; i < N; i++) {
        ops[i] = count_add("one", seq[i].m, seq[i].t, 0, &eq2, 0);
        ops[i].agg = KX_AGG_DISTINCT;
        ops[i].ttl_ms = WIN;
        one[i] = add_on(f->loop, f->s, &ops[i]);
        calls[i] = seq[i].call;
    }
    assert_true(one[1].crossed);
    assert_false(one[4].added);
    assert_false(one[5].met);
    assert_false(one[6].met);
    calls_like_one(f, ops, calls, one, N, "many");
}

/* DISTINCT: thousands of members leave the windows of one call's adds (more than Lua can
 * pass to one command at once): the script reads and writes its tally in parts. */
static void test_distinct_many_leaving(void **state)
{
    fx *f = *state;
    enum { CALLS = 9, PER = 1000 };
    static char names[CALLS * PER + 2][32];
    static kx_window_add ops[PER];
    static const kx_cmp_term never = {KX_CMP_GTE, 1e9};
    int64_t t = T0;
    for (size_t c = 0; c <= CALLS; c++) {
        size_t n = c < CALLS ? PER : 2; /* the last call: two adds a window later */
        for (size_t i = 0; i < n; i++) {
            char *m = names[c * PER + i];
            t += c < CALLS || i > 0 ? 1 : WIN + 5;
            snprintf(m, 32, "m%zu\037v%zu", c * PER + i, c * PER + i);
            ops[i] = count_add("k", m, t, 0, &never, 0);
            ops[i].agg = KX_AGG_DISTINCT;
            ops[i].ttl_ms = 4 * WIN;
        }
        mgot mg = {0};
        assert_int_equal(kx_store_window_add_many(f->s, ops, n, mgot_cb, &mg), 0);
        assert_true(kx_test_run_until(f->loop, mgot_done, &mg, 20000));
        assert_int_equal(mg.status, 0);
        assert_int_equal(mg.n, n);
        for (size_t i = 0; i < n && i < 16; i++) /* (mgot keeps the first 16) */
            assert_true(mg.r[i].added);
    }
    assert_int_equal(cmd_int(f, "ZCARD %s", PREFIX "{k}:z"), CALLS * PER + 2);
    /* The tally now holds the last two adds' values alone. */
    assert_int_equal(cmd_int(f, "HLEN %s", PREFIX "{k}:t"), 4);
}

/* Sends ops[0..n) to key in calls of 1 to 16 adds and checks every result against one[] (the
 * same adds one by one); returns the crossings. */
static int many_like_one(fx *f, kx_window_add *ops, const got *one, size_t n, const char *key,
                         uint32_t *x)
{
    int crossings = 0;
    for (size_t i = 0; i < n;) {
        size_t k = chunk_len(x, i, n, 0);
        for (size_t j = i; j < i + k; j++)
            ops[j].key = key;
        mgot mg = {0};
        assert_int_equal(kx_store_window_add_many(f->s, &ops[i], k, mgot_cb, &mg), 0);
        assert_true(kx_test_run_until(f->loop, mgot_done, &mg, 5000));
        assert_int_equal(mg.status, 0);
        assert_int_equal(mg.n, k);
        for (size_t j = 0; j < k; j++) {
            assert_same_result(&one[i + j], &mg.r[j]);
            crossings += mg.r[j].crossed;
        }
        i += k;
    }
    return crossings;
}

/* The next add of a pseudo-random stream: a replay of an earlier add (1 in `replay`), a late
 * one, sometimes past what is kept (1 in `late`), else a step forward (with `ties`, a third
 * of the steps are 0). *src is the add replayed (i when none); returns the add's time. */
static int64_t stream_next(uint32_t *x, size_t i, const kx_window_add *ops, int64_t *t,
                           unsigned replay, unsigned late, bool ties, size_t *src)
{
    *x ^= *x << 13, *x ^= *x >> 17, *x ^= *x << 5;
    *src = i;
    if (i > 0 && *x % replay == 0) {
        *src = (*x >> 8) % i;
        return ops[*src].time_ms;
    }
    if (*x % late == 0)
        return *t - (int64_t)((*x >> 5) % 14000);
    if (ties)
        *t += (*x >> 3) % 3 == 0 ? 0 : (int64_t)((*x >> 4) % 2000);
    else
        *t += (int64_t)((*x >> 3) % 900);
    return *t;
}

/* An add of such a stream: a 10 s window kept 12 s, the newest 3 evidence. */
static kx_window_add stream_add(const char *key, const char *member, int64_t t, const char *ev,
                                kx_agg agg, const kx_cmp_term *cond, size_t ncond, int64_t suppress,
                                bool ev_if_crossed)
{
    return (kx_window_add){.key = key,
                           .member = member,
                           .time_ms = t,
                           .window_ms = WIN,
                           .ttl_ms = WIN + 2000,
                           .evidence = ev,
                           .evidence_len = strlen(ev),
                           .max_evidence = 3,
                           .agg = agg,
                           .cond = cond,
                           .ncond = ncond,
                           .suppress_ms = suppress,
                           .evidence_if_crossed = ev_if_crossed};
}

/* A pseudo-random stream per aggregate — times mostly rising with late members, replays,
 * values from a small set, a window of 10 s kept 12 s — through calls of up to 16 adds
 * ("many") and one by one ("one"): every result the same. The many path prunes and reads its
 * DISTINCT window once per call; the one-by-one path does both per add. COUNT wants evidence
 * with every reply (evidence_if_crossed false), so no add may be answered without it. */
static void test_add_many_random(void **state)
{
    fx *f = *state;
    /* The last pass: COUNT as the pipeline sends it (evidence only with a crossing), so the
     * calls of several adds take the script's append-only path. */
    static const kx_agg aggs[] = {KX_AGG_COUNT, KX_AGG_DISTINCT, KX_AGG_SUM, KX_AGG_COUNT};
    static const kx_cmp_term conds[] = {
        {KX_CMP_GTE, 6}, {KX_CMP_GTE, 4}, {KX_CMP_GTE, 30}, {KX_CMP_GTE, 6}};
    enum { N = 400 };
    static char members[N][32], evs[N][8];
    static kx_window_add ops[N];
    static got one[N];
    uint32_t x = 2463534242u;
    for (size_t a = 0; a < sizeof(aggs) / sizeof(aggs[0]); a++) {
        int64_t t = T0;
        for (size_t i = 0; i < N; i++) {
            size_t src;
            int64_t at = stream_next(&x, i, ops, &t, 23, 7, false, &src);
            if (src == i)
                snprintf(members[i], sizeof(members[i]), "m%zu\x1f%u", i, (x >> 11) % 9);
            snprintf(evs[i], sizeof(evs[i]), "e%zu", i % 1000);
            ops[i] =
                stream_add("one", members[src], at, evs[i], aggs[a], &conds[a], 1, 4000, a != 0);
        }
        char key_one[16], key_many[16];
        snprintf(key_one, sizeof(key_one), "one%zu", a);
        snprintf(key_many, sizeof(key_many), "many%zu", a);
        for (size_t i = 0; i < N; i++) {
            ops[i].key = key_one;
            got g = {0};
            assert_int_equal(kx_store_window_add(f->s, &ops[i], got_cb, &g), 0);
            assert_true(kx_test_run_until(f->loop, got_done, &g, 5000));
            one[i] = g;
        }
        int crossings = many_like_one(f, ops, one, N, key_many, &x);
        assert_true(crossings > 5); /* the stream does cross, for every aggregate */
    }
}

/* first_seen: several adds of one key in one call give what they give one by one (the values
 * kept too, as cross_count), with values forgotten by age and by the cap among them. */
static void test_first_seen_many_random(void **state)
{
    fx *f = *state;
    enum { N = 500 };
    static char members[N][24];
    static kx_window_add ops[N];
    static got one[N];
    kx__store_set_member_cap(f->s, 6);
    uint32_t x = 362436069u;
    int64_t t = T0;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        if (i > 0 && x % 17 == 0) {
            ops[i] = ops[(x >> 7) % i]; /* a replay of an earlier event */
            continue;
        }
        if (x % 29 == 0)
            t += FS_TTL; /* a long quiet: every value is forgotten */
        else
            t += (int64_t)((x >> 9) % (FS_D / 3));
        snprintf(members[i], sizeof(members[i]), "id%zu\x1fv%u", i, (x >> 4) % 10);
        ops[i] = (kx_window_add){.member = members[i],
                                 .time_ms = x % 11 == 0 ? t - (int64_t)((x >> 3) % FS_TTL) : t,
                                 .window_ms = FS_D,
                                 .ttl_ms = FS_TTL,
                                 .agg = KX_AGG_FIRST_SEEN};
    }
    int news = 0, capped = 0;
    for (size_t i = 0; i < N; i++) {
        ops[i].key = "fone";
        got g = {0};
        assert_int_equal(kx_store_window_add(f->s, &ops[i], got_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, got_done, &g, 5000));
        assert_int_equal(g.status, 0);
        one[i] = g;
        news += g.added;
        capped += g.count == 6;
    }
    assert_true(news > 20 && news < N - 20 && capped > 20);
    many_like_one(f, ops, one, N, "fmany", &x);
}

/* baseline: several adds of one key in one call give what they give one by one: bursts over
 * a quiet history cross, late and replayed events and silent intervals among them. */
static void test_baseline_many_random(void **state)
{
    fx *f = *state;
    static const kx_cmp_term min3 = {KX_CMP_GTE, 3};
    enum { N = 500 };
    static char members[N][16], evs[N][8];
    static kx_window_add ops[N];
    static got one[N];
    uint32_t x = 521288629u;
    int64_t t = T0;
    for (size_t i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        if (i > 0 && x % 19 == 0) {
            ops[i] = ops[(x >> 7) % i]; /* a replay of an earlier event */
            continue;
        }
        /* Mostly one event an interval; now and then a burst, now and then a silence. */
        if (x % 23 == 0)
            t += 6 * BL_I;
        else if ((x >> 5) % 8 != 0)
            t += (int64_t)(BL_I - 50 + (x >> 9) % 100);
        else
            t += (int64_t)((x >> 9) % 60);
        snprintf(members[i], sizeof(members[i]), "b%zu", i);
        snprintf(evs[i], sizeof(evs[i]), "e%zu", i);
        ops[i] = (kx_window_add){.member = members[i],
                                 .time_ms = x % 13 == 0 ? t - (int64_t)((x >> 3) % (3 * BL_I)) : t,
                                 .window_ms = BL_I,
                                 .ttl_ms = BL_I + 500,
                                 .evidence = evs[i],
                                 .evidence_len = strlen(evs[i]),
                                 .max_evidence = 3,
                                 .agg = KX_AGG_BASELINE,
                                 .cond = &min3,
                                 .ncond = 1,
                                 .deviations = 2,
                                 .history = 3,
                                 .evidence_if_crossed = true};
    }
    int crossed = 0, late = 0;
    for (size_t i = 0; i < N; i++) {
        ops[i].key = "bone";
        got g = {0};
        assert_int_equal(kx_store_window_add(f->s, &ops[i], got_cb, &g), 0);
        assert_true(kx_test_run_until(f->loop, got_done, &g, 5000));
        assert_int_equal(g.status, 0);
        one[i] = g;
        crossed += g.crossed;
        late += g.late;
    }
    assert_true(crossed > 3 && late > 3);
    many_like_one(f, ops, one, N, "bmany", &x);
}

typedef struct destroyer {
    fx *f;
    int calls;
    int status[4];
} destroyer;

static void destroy_cb(void *ud, int status, const kx_window_result *res)
{
    (void)res;
    destroyer *d = ud;
    d->status[d->calls++] = status;
    if (d->calls == 1) {
        kx_store_destroy(d->f->s);
        d->f->s = NULL;
    }
}

static bool destroyer_done(void *ud)
{
    return ((destroyer *)ud)->calls >= (((destroyer *)ud)->f->redis ? 2 : 1);
}

static void test_destroy_in_callback(void **state)
{
    fx *f = *state;
    destroyer d = {.f = f};
    kx_window_add op = {.key = "k", .member = "m1", .time_ms = T0, .window_ms = WIN, .ttl_ms = TTL};
    assert_int_equal(kx_store_window_add(f->s, &op, destroy_cb, &d), 0);
    if (f->redis) {
        op.member = "m2";
        assert_int_equal(kx_store_window_add(f->s, &op, destroy_cb, &d), 0);
    }
    assert_true(kx_test_run_until(f->loop, destroyer_done, &d, 5000));
    assert_int_equal(d.status[0], 0);
    if (f->redis) {
        assert_int_equal(d.calls, 2);
        assert_int_equal(d.status[1], -ECANCELED);
    } else {
        assert_int_equal(d.calls, 1);
    }
    assert_null(f->s); /* teardown has nothing more to destroy */
}

static int teardown_maybe_destroyed(void **state)
{
    fx *f = *state;
    if (!f->s) {
        assert_false(ev_run(f->loop, EVRUN_NOWAIT));
        if (f->sync)
            redisFree(f->sync);
        ev_loop_destroy(f->loop);
        free(f);
        return 0;
    }
    return teardown(state);
}

/* ---- memory only ---- */

static void test_memory_key_cap(void **state)
{
    fx *f = *state;
    kx_store_destroy(f->s);
    assert_int_equal(kx_store_memory_create(f->loop, 2, &f->s), 0);
    add(f, "k1", "m", T0);
    add(f, "k2", "m", T0);
    got g = add(f, "k3", "m", T0);
    assert_int_equal(g.status, -ENOSPC);
    assert_int_equal(kx_metric_get(KX_M_STATE_KEYS_CAPPED), 1);
    /* Existing keys still take updates. */
    g = add(f, "k1", "m2", T0 + 1);
    assert_window(g, 2, T0, T0 + 1, true);
    /* Once keys expire there is room again. */
    int64_t now = (int64_t)(ev_now(f->loop) * 1000.0);
    assert_int_equal(kx__store_memory_sweep(f->s, now + TTL + 1, 0), 2);
    g = add(f, "k3", "m", T0);
    assert_window(g, 1, T0, T0, true);
}

static void test_memory_many_members(void **state)
{
    fx *f = *state;
    /* Enough members to grow, prune and compact every internal array several times, in an
     * order that inserts in the middle; checked against the obvious count. */
    addp p = {.key = "big", .window = 1000, .ttl = 2000};
    char m[32];
    for (int i = 0; i < 20000; i++) {
        int64_t t = T0 + i - (i % 7) * 3; /* slightly out of order */
        snprintf(m, sizeof(m), "member-%d", i);
        p.member = m;
        p.t = t;
        got g = add_full(f, p);
        assert_int_equal(g.added, true);
        /* Expected: members j <= i with t_j in [t - 1000, t] and not pruned (t_j >= max - 2000,
         * which is below t - 1000 here since lateness <= 18). */
        int64_t expect = 0;
        for (int j = i; j >= 0 && j >= i - 1100; j--) {
            int64_t tj = T0 + j - (j % 7) * 3;
            if (tj >= t - 1000 && tj <= t)
                expect++;
        }
        assert_int_equal(g.count, expect);
    }
    /* Re-adding recent members finds them all. */
    for (int i = 19990; i < 20000; i++) {
        snprintf(m, sizeof(m), "member-%d", i);
        p.member = m;
        p.t = T0 + i - (i % 7) * 3;
        assert_int_equal(add_full(f, p).added, false);
    }
}

/* ---- redis only ---- */

static void test_redis_noscript(void **state)
{
    fx *f = *state;
    add(f, "k", "m1", T0);
    redisReply *r = cmd(f, "SCRIPT FLUSH");
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    /* Two adds in one pipeline: both get NOSCRIPT, both are resent after one reload. */
    got g2 = {0}, g3 = {0};
    kx_window_add op = {
        .key = "k", .member = "m2", .time_ms = T0 + 1, .window_ms = WIN, .ttl_ms = TTL};
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g2), 0);
    op.member = "m3";
    op.time_ms = T0 + 2;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g3), 0);
    assert_int_equal(kx_store_pending(f->s), 2);
    assert_true(kx_test_run_until(f->loop, got_done, &g3, 5000));
    assert_int_equal(g2.calls, 1);
    assert_window(g2, 2, T0, T0 + 1, true);
    assert_window(g3, 3, T0, T0 + 2, true);
    assert_int_equal(kx_store_pending(f->s), 0);
    assert_int_equal(kx_metric_get(KX_M_STORE_ERRORS), 0);
}

/* ---- live lists: SSCAN of a set another system fills ---- */

typedef struct scanned {
    int calls, status;
    char cursor[32];
    size_t n;
    char seen[3000]; /* member "mNNNN" seen */
    size_t dups;
} scanned;

static void scan_cb(void *ud, int status, const char *cursor, const char *const *members,
                    const size_t *lens, size_t n)
{
    scanned *sc = ud;
    sc->calls++;
    sc->status = status;
    if (status)
        return;
    snprintf(sc->cursor, sizeof(sc->cursor), "%s", cursor);
    for (size_t i = 0; i < n; i++) {
        char m[16];
        snprintf(m, sizeof(m), "%.*s", (int)lens[i], members[i]);
        int k = atoi(m + 1);
        assert_true(m[0] == 'm' && k >= 0 && k < 3000 && lens[i] == 5);
        if (sc->seen[k])
            sc->dups++;
        else
            sc->n++;
        sc->seen[k] = 1;
    }
}

static bool scan_done(void *ud)
{
    return ((scanned *)ud)->calls > 0;
}

static void test_set_scan(void **state)
{
    fx *f = *state;
    for (int i = 0; i < 2500; i++)
        freeReplyObject(cmd(f, "SADD hr:terminated m%04d", i));
    freeReplyObject(cmd(f, "SET not:a:set x"));
    scanned sc = {0};
    snprintf(sc.cursor, sizeof(sc.cursor), "0");
    int pages = 0;
    do {
        char cur[32];
        snprintf(cur, sizeof(cur), "%s", sc.cursor);
        sc.calls = 0;
        assert_int_equal(kx_store_set_scan(f->s, "hr:terminated", cur, scan_cb, &sc), 0);
        assert_true(kx_test_run_until(f->loop, scan_done, &sc, 5000));
        assert_int_equal(sc.calls, 1);
        assert_int_equal(sc.status, 0);
        pages++;
    } while (strcmp(sc.cursor, "0") != 0 && pages < 100);
    assert_string_equal(sc.cursor, "0");
    assert_true(pages >= 2); /* COUNT 1000: 2,500 members take pages */
    assert_int_equal(sc.n, 2500);
    /* the key as written, without the store's prefix */
    scanned none = {0};
    assert_int_equal(kx_store_set_scan(f->s, "no:such:set", "0", scan_cb, &none), 0);
    assert_true(kx_test_run_until(f->loop, scan_done, &none, 5000));
    assert_int_equal(none.status, 0);
    assert_string_equal(none.cursor, "0");
    assert_int_equal(none.n, 0);
    /* another type: an error, not members */
    scanned wrong = {0};
    assert_int_equal(kx_store_set_scan(f->s, "not:a:set", "0", scan_cb, &wrong), 0);
    assert_true(kx_test_run_until(f->loop, scan_done, &wrong, 5000));
    assert_int_equal(wrong.status, -EPROTO);
    assert_int_equal(kx_store_pending(f->s), 0);
}

static void test_set_scan_memory(void **state)
{
    fx *f = *state;
    scanned sc = {0};
    assert_int_equal(kx_store_set_scan(f->s, "hr:terminated", "0", scan_cb, &sc), -ENOTSUP);
    assert_int_equal(sc.calls, 0);
}

static void test_redis_key_layout(void **state)
{
    fx *f = *state;
    add_full(f, (addp){.key = "tenant/rule/10.0.0.1",
                       .member = "m1",
                       .t = T0,
                       .evidence = "line one",
                       .max_ev = 5});
    redisReply *r = cmd(f, "KEYS *");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    freeReplyObject(r);
    r = cmd(f, "ZRANGE %s 0 -1 WITHSCORES", PREFIX "{tenant/rule/10.0.0.1}:z");
    assert_int_equal(r->elements, 2);
    assert_string_equal(r->element[0]->str, "m1");
    assert_string_equal(r->element[1]->str, "1700000000000");
    freeReplyObject(r);
    r = cmd(f, "LRANGE %s 0 -1", PREFIX "{tenant/rule/10.0.0.1}:e");
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, "line one");
    freeReplyObject(r);
    /* Both keys hash to one cluster slot, as a multi-key script needs. */
    r = cmd(f, "CLUSTER KEYSLOT %s", PREFIX "{tenant/rule/10.0.0.1}:z");
    long long slot_z = r->integer;
    freeReplyObject(r);
    r = cmd(f, "CLUSTER KEYSLOT %s", PREFIX "{tenant/rule/10.0.0.1}:e");
    assert_int_equal(r->integer, slot_z);
    freeReplyObject(r);
}

/* The Redis script and its memory twin give the same result for every add of a pseudo-random
 * stream, for every aggregate: times rising with ties (members of one time in byte order,
 * "m12" before "m3"), late members, some past what is kept, replays, a member cap that drops
 * the oldest, evidence with every reply. Then the same stream in calls of several adds. */
static void test_window_redis_like_memory(void **state)
{
    fx *f = *state;
    kx_store *mem = NULL;
    assert_int_equal(kx_store_memory_create(f->loop, 0, &mem), 0);
    kx__store_set_member_cap(f->s, 24);
    kx__store_set_member_cap(mem, 24);
    static const kx_agg aggs[] = {KX_AGG_COUNT, KX_AGG_DISTINCT, KX_AGG_SUM,
                                  KX_AGG_AVG,   KX_AGG_SHARE,    KX_AGG_ORDERED};
    static const kx_cmp_term conds[][2] = {{{KX_CMP_GTE, 6}, {KX_CMP_LT, 12}},
                                           {{KX_CMP_GTE, 4}, {0}},
                                           {{KX_CMP_GTE, 30}, {0}},
                                           {{KX_CMP_GT, 4.5}, {0}},
                                           {{KX_CMP_GTE, 40}, {0}},
                                           {{KX_CMP_GTE, 2}, {0}}};
    static const size_t nconds[] = {2, 1, 1, 1, 1, 1};
    enum { N = 300 };
    static char members[N][32], evs[N][8];
    static kx_window_add ops[N];
    static got ones[N];
    uint32_t x = 88172645u;
    for (size_t a = 0; a < sizeof(aggs) / sizeof(aggs[0]); a++) {
        int64_t t = T0;
        int crossings = 0;
        char key[16], key_many[16];
        snprintf(key, sizeof(key), "diff%zu", a);
        snprintf(key_many, sizeof(key_many), "diffmany%zu", a);
        for (size_t i = 0; i < N; i++) {
            size_t src;
            int64_t at = stream_next(&x, i, ops, &t, 19, 6, true, &src);
            if (src != i && (x >> 9) % 3 == 0)
                at = t; /* a replay dated now: its member keeps its first time */
            /* ORDERED wants values 0, 1, 2...; the others a small set. */
            unsigned v = aggs[a] == KX_AGG_ORDERED ? (x >> 11) % 4 : (x >> 11) % 9;
            if (src == i)
                snprintf(members[i], sizeof(members[i]), "m%zu\x1f%u", (i * 7919) % 1000, v);
            snprintf(evs[i], sizeof(evs[i]), "e%zu", i);
            ops[i] = stream_add(key, members[src], at, evs[i], aggs[a], conds[a], nconds[a], 3000,
                                a % 2 == 0 || aggs[a] == KX_AGG_DISTINCT);
            got r = add_on(f->loop, f->s, &ops[i]);
            got m = add_on(f->loop, mem, &ops[i]);
            assert_same_result(&m, &r);
            assert_int_equal(m.count, r.count);
            assert_int_equal(m.first, r.first);
            assert_int_equal(m.last, r.last);
            assert_int_equal(m.status, r.status);
            crossings += r.crossed;
            ones[i] = r;
        }
        assert_true(crossings > 3); /* the stream does cross, for every aggregate */
        assert_int_equal(many_like_one(f, ops, ones, N, key_many, &x), crossings);
    }
    /* COUNT's calls of several adds took the append-only path (its one ZMSCORE a call). */
    redisReply *info = cmd(f, "INFO commandstats");
    assert_non_null(strstr(info->str, "cmdstat_zmscore:calls="));
    freeReplyObject(info);
    kx_store_destroy(mem);
}

/* The window log shared by several processes: three stores on one Redis take turns adding
 * to the same windows, and every answer is the memory store's for the same adds in the same
 * order. Appends that lose a race read the other's records first; one store is made anew
 * now and then (its replica rebuilt from the log, often from a snapshot: snapshots are due
 * after 8 records here); the key is forgotten once mid-stream; and a replica cap of 1 key
 * drops a replica whenever the adds move to the other key. */
static kx_store *log_store(fx *f)
{
    kx_store *s = NULL;
    assert_int_equal(kx_store_redis_create(f->loop, "127.0.0.1", g_srv.port, PREFIX, &s), 0);
    assert_int_equal(kx_store_redis_use_log(s), 0);
    kx__store_redis_set_log_limits(s, 8, 1);
    kx__store_set_member_cap(s, 24);
    assert_true(kx_test_run_until(f->loop, store_up, s, 5000));
    return s;
}

static void test_log_processes(void **state)
{
    fx *f = *state;
    kx_store *mem = NULL, *p[3];
    assert_int_equal(kx_store_memory_create(f->loop, 0, &mem), 0);
    kx__store_set_member_cap(mem, 24);
    for (int i = 0; i < 3; i++)
        p[i] = log_store(f);
    static const kx_agg aggs[] = {KX_AGG_COUNT, KX_AGG_DISTINCT, KX_AGG_SUM,
                                  KX_AGG_AVG,   KX_AGG_SHARE,    KX_AGG_ORDERED};
    static const kx_cmp_term conds[][1] = {{{KX_CMP_GTE, 6}},  {{KX_CMP_GTE, 4}},
                                           {{KX_CMP_GTE, 30}}, {{KX_CMP_GT, 4.5}},
                                           {{KX_CMP_GTE, 40}}, {{KX_CMP_GTE, 2}}};
    enum { N = 300 };
    static char members[N][32], evs[N][8];
    static kx_window_add ops[N];
    uint32_t x = 2463534242u;
    int snapshots = 0;
    for (size_t a = 0; a < sizeof(aggs) / sizeof(aggs[0]); a++) {
        int64_t t = T0;
        int crossings = 0;
        char key[16], other[16];
        snprintf(key, sizeof(key), "log%zu", a);
        snprintf(other, sizeof(other), "logx%zu", a);
        for (size_t i = 0; i < N; i++) {
            size_t src;
            int64_t at = stream_next(&x, i, ops, &t, 19, 6, true, &src);
            unsigned v = aggs[a] == KX_AGG_ORDERED ? (x >> 11) % 4 : (x >> 11) % 9;
            if (src == i)
                snprintf(members[i], sizeof(members[i]), "m%zu\x1f%u", (i * 7919) % 1000, v);
            snprintf(evs[i], sizeof(evs[i]), "e%zu", i);
            /* every third add goes to a second key: replicas come and go under the cap */
            ops[i] = stream_add(i % 3 == 2 ? other : key, members[src], at, evs[i], aggs[a],
                                conds[a], 1, 3000, a % 2 == 0);
            kx_store *s = p[(x >> 5) % 3];
            got r = add_on(f->loop, s, &ops[i]);
            got m = add_on(f->loop, mem, &ops[i]);
            assert_same_result(&m, &r);
            assert_int_equal(m.count, r.count);
            assert_int_equal(m.first, r.first);
            assert_int_equal(m.last, r.last);
            crossings += r.crossed;
            if ((x >> 3) % 40 == 0) { /* a process restarts: its replicas are gone */
                kx_store_destroy(p[2]);
                p[2] = log_store(f);
            }
            if (i == N / 2) { /* a group cap drops the key: every process starts it over */
                assert_int_equal(kx_store_forget(p[0], key), 0);
                assert_int_equal(kx_store_forget(mem, key), 0);
            }
            char full[64];
            snprintf(full, sizeof(full), PREFIX "{%s}:l", key);
            redisReply *first = cmd(f, "XRANGE %s - + COUNT 1", full);
            if (first->elements == 1 && first->element[0]->element[1]->element[0]->str[0] == 's')
                snapshots++;
            freeReplyObject(first);
        }
        assert_true(crossings > 3);
    }
    assert_true(snapshots > 100);
    assert_true(kx_metric_get(KX_M_STATE_LOG_CONFLICTS) > 50);
    assert_true(kx_metric_get(KX_M_STATE_LOG_DROPPED) > 50);
    for (int i = 0; i < 3; i++)
        kx_store_destroy(p[i]);
    kx_store_destroy(mem);
}

static bool waited(void *ud)
{
    (void)ud;
    return false;
}

/* A window expires ttl after its last update, as in memory, although the log's stream lives
 * on (its TTL is renewed to twice the window's): the records' clocks tell a second process
 * that reads the stream that the window had expired before its add. */
static void test_log_gap(void **state)
{
    fx *f = *state;
    kx_store *b = log_store(f);
    kx_window_add op = {
        .key = "gap", .member = "m1", .time_ms = T0, .window_ms = 300, .ttl_ms = 300};
    assert_int_equal(add_on(f->loop, f->s, &op).count, 1);
    op.member = "m2";
    op.time_ms = T0 + 1;
    assert_int_equal(add_on(f->loop, b, &op).count, 2); /* within ttl: the same window */
    kx_test_run_until(f->loop, waited, NULL, 400);
    assert_true(cmd_int(f, "EXISTS %s", PREFIX "{gap}:l") == 1);
    op.member = "m3";
    op.time_ms = T0 + 2;
    got g = add_on(f->loop, b, &op);
    assert_int_equal(g.count, 1); /* 400 ms without an add: it starts over */
    assert_true(g.added);
    op.member = "m4";
    op.time_ms = T0 + 3;
    assert_int_equal(add_on(f->loop, f->s, &op).count, 2); /* and the first process agrees */
    kx_store_destroy(b);
}

/* Evidence stays out of the log: the record holds a reference to a page of this process (the
 * blobs of one loop iteration), the answer reads the blob back; a page that is gone leaves
 * its blobs out, counted. */
static void test_log_evidence_pages(void **state)
{
    fx *f = *state;
    add_full(f,
             (addp){.key = "ev", .member = "m1", .t = T0, .evidence = "EVIDENCE-ONE", .max_ev = 3});
    got g = add_full(
        f,
        (addp){.key = "ev", .member = "m2", .t = T0 + 1, .evidence = "EVIDENCE-TWO", .max_ev = 3});
    assert_int_equal(g.nev, 2);
    assert_string_equal(g.ev[0], "EVIDENCE-TWO");
    assert_string_equal(g.ev[1], "EVIDENCE-ONE");
    redisReply *rec = cmd(f, "XRANGE %s - +", PREFIX "{ev}:l");
    assert_int_equal(rec->elements, 2);
    for (size_t i = 0; i < 2; i++) {
        const redisReply *v = rec->element[i]->element[1]->element[1];
        assert_null(memmem(v->str, v->len, "EVIDENCE", 8));
    }
    freeReplyObject(rec);
    /* one page per loop iteration that added: here one per add */
    redisReply *keys = cmd(f, "KEYS %s", PREFIX "ev:*");
    assert_int_equal(keys->elements, 2);
    int seen = 0; /* bit 0: the first blob's page, bit 1: the second's */
    for (size_t i = 0; i < 2; i++) {
        redisReply *page = cmd(f, "GET %s", keys->element[i]->str);
        seen |= !strcmp(page->str, "EVIDENCE-ONE") ? 1 : !strcmp(page->str, "EVIDENCE-TWO") ? 2 : 4;
        freeReplyObject(page);
        int64_t pttl = cmd_int(f, "PTTL %s", keys->element[i]->str);
        assert_true(pttl > TTL && pttl <= TTL + 60000); /* the window's ttl and a minute */
        freeReplyObject(cmd(f, "DEL %s", keys->element[i]->str));
    }
    assert_int_equal(seen, 3);
    freeReplyObject(keys);
    g = add_full(
        f, (addp){.key = "ev", .member = "m3", .t = T0 + 2, .evidence = "EVIDENCE-3", .max_ev = 3});
    assert_int_equal(g.nev, 1); /* the two on the deleted pages are left out */
    assert_string_equal(g.ev[0], "EVIDENCE-3");
    assert_int_equal(kx_metric_get(KX_M_STATE_LOG_EVIDENCE_MISSING), 2);
}

/* A replica unused for its window's ttl is dropped (checked once a second): a process does
 * not keep every window it ever saw. */
static bool one_replica(void *ud)
{
    return kx__store_redis_log_replicas(ud) == 1;
}

static void test_log_idle_replicas(void **state)
{
    fx *f = *state;
    kx_window_add op = {
        .key = "idle", .member = "m1", .time_ms = T0, .window_ms = 1500, .ttl_ms = 1500};
    add_on(f->loop, f->s, &op);
    op.key = "busy";
    add_on(f->loop, f->s, &op);
    assert_int_equal(kx__store_redis_log_replicas(f->s), 2);
    kx_test_run_until(f->loop, waited, NULL, 1000);
    op.member = "m2"; /* "busy" is used again: it stays */
    add_on(f->loop, f->s, &op);
    /* the sweep at 2 s drops "idle" (unused for 2 s), not "busy" (1 s) */
    assert_true(kx_test_run_until(f->loop, one_replica, f->s, 3000));
    op.member = "m3";
    assert_int_equal(add_on(f->loop, f->s, &op).count, 3); /* its replica answers on */
    assert_int_equal(kx__store_redis_log_replicas(f->s), 1);
}

/* kx_store_forget after adds still in flight applies after them, as the script's DEL follows
 * its calls on one connection (found in review: the log's DEL overtook them). */
static void test_log_forget_order(void **state)
{
    fx *f = *state;
    kx_window_add op = {
        .key = "fo", .member = "m0", .time_ms = T0, .window_ms = WIN, .ttl_ms = TTL};
    assert_int_equal(add_on(f->loop, f->s, &op).count, 1);
    got g1 = {0}, g2 = {0};
    op.member = "m1";
    op.time_ms = T0 + 1;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g1), 0);
    op.member = "m2";
    op.time_ms = T0 + 2;
    assert_int_equal(kx_store_window_add(f->s, &op, got_cb, &g2), 0);
    assert_int_equal(kx_store_forget(f->s, "fo"), 0);
    assert_true(kx_test_run_until(f->loop, got_done, &g2, 5000));
    assert_int_equal(g1.count, 2);
    assert_int_equal(g2.count, 3);
    op.member = "m3";
    op.time_ms = T0 + 3;
    assert_int_equal(add_on(f->loop, f->s, &op).count, 1); /* forgotten after m2 */
}

/* A write Redis acknowledged and then lost (a failover, AOF everysec), made here by XDEL of
 * the newest entry: a process reading the stream takes it as it is (it does not refuse the
 * gap), and its answers are those of the adds Redis kept. */
static void test_log_lost_write(void **state)
{
    fx *f = *state;
    kx_window_add op = {
        .key = "lw", .member = "m1", .time_ms = T0, .window_ms = WIN, .ttl_ms = TTL};
    add_on(f->loop, f->s, &op);
    op.member = "m2";
    op.time_ms = T0 + 1;
    add_on(f->loop, f->s, &op);
    redisReply *top = cmd(f, "XREVRANGE %s + - COUNT 1", PREFIX "{lw}:l");
    freeReplyObject(cmd(f, "XDEL %s %s", PREFIX "{lw}:l", top->element[0]->element[0]->str));
    freeReplyObject(top);
    op.member = "m3";
    op.time_ms = T0 + 2;
    add_on(f->loop, f->s, &op); /* the writer still counts m2: it cannot know */
    kx_store *b = log_store(f);
    op.member = "m4";
    op.time_ms = T0 + 3;
    got g = add_on(f->loop, b, &op); /* m1, m3, m4: what Redis has */
    assert_int_equal(g.count, 3);
    kx_store_destroy(b);
}

static bool store_down(void *ud)
{
    return !kx_store_is_up(ud);
}

/* A lost connection may have lost writes Redis had acknowledged (a failover, a restart): the
 * writer reads its windows again before its next append instead of trusting its replica.
 * Here the newest entry is deleted and the store's connection killed: the next add counts
 * what Redis has. */
static void test_log_conn_lost_rereads(void **state)
{
    fx *f = *state;
    kx_window_add op = {
        .key = "cl", .member = "m1", .time_ms = T0, .window_ms = WIN, .ttl_ms = TTL};
    add_on(f->loop, f->s, &op);
    op.member = "m2";
    op.time_ms = T0 + 1;
    assert_int_equal(add_on(f->loop, f->s, &op).count, 2);
    redisReply *top = cmd(f, "XREVRANGE %s + - COUNT 1", PREFIX "{cl}:l");
    freeReplyObject(cmd(f, "XDEL %s %s", PREFIX "{cl}:l", top->element[0]->element[0]->str));
    freeReplyObject(top);
    freeReplyObject(cmd(f, "CLIENT KILL TYPE normal SKIPME yes"));
    assert_true(kx_test_run_until(f->loop, store_down, f->s, 5000));
    assert_true(kx_test_run_until(f->loop, store_up, f->s, 5000));
    op.member = "m3";
    op.time_ms = T0 + 2;
    assert_int_equal(add_on(f->loop, f->s, &op).count, 2); /* m1, m3: m2 was lost */
}

/* A late add does not renew a window, in the log as in memory (found in review). */
static void test_log_late_renews_nothing(void **state)
{
    fx *f = *state;
    kx_store *mem = NULL;
    assert_int_equal(kx_store_memory_create(f->loop, 0, &mem), 0);
    kx_window_add op = {
        .key = "lr", .member = "m1", .time_ms = T0, .window_ms = 300, .ttl_ms = 300};
    add_on(f->loop, f->s, &op);
    add_on(f->loop, mem, &op);
    kx_test_run_until(f->loop, waited, NULL, 200);
    op.member = "late";
    op.time_ms = T0 - 1000;
    assert_true(add_on(f->loop, f->s, &op).late);
    assert_true(add_on(f->loop, mem, &op).late);
    kx_test_run_until(f->loop, waited, NULL, 200);
    op.member = "m2";
    op.time_ms = T0 + 1;
    got l = add_on(f->loop, f->s, &op);
    got m = add_on(f->loop, mem, &op);
    assert_int_equal(m.count, 1);
    assert_int_equal(l.count, m.count);
    kx_store_destroy(mem);
}

typedef struct cancel_rec {
    int calls;
    int status[3];
} cancel_rec;

static void cancel_cb(void *ud, int status, const kx_window_result *res)
{
    (void)res;
    cancel_rec *c = ud;
    c->status[c->calls++] = status;
}

static void test_redis_destroy_cancels_pending(void **state)
{
    fx *f = *state;
    cancel_rec c = {0};
    kx_window_add op = {.key = "k", .member = "m", .time_ms = T0, .window_ms = WIN, .ttl_ms = TTL};
    for (int i = 0; i < 3; i++)
        assert_int_equal(kx_store_window_add(f->s, &op, cancel_cb, &c), 0);
    assert_int_equal(kx_store_pending(f->s), 3);
    kx_store_destroy(f->s);
    f->s = NULL;
    assert_int_equal(c.calls, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(c.status[i], -ECANCELED);
}

/* ---- URLs (no server needed) ---- */

static void test_url(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    kx_store *s = NULL;
    kx_err err;
    assert_int_equal(kx_store_create_from_url(loop, "memory", NULL, &s, &err), 0);
    assert_string_equal(kx_store_kind(s), "memory");
    kx_store_destroy(s);
    /* Port 1 on loopback: nothing listens; the store is created and retries quietly. */
    assert_int_equal(kx_store_create_from_url(loop, "redis://127.0.0.1:1/x:", NULL, &s, &err), 0);
    assert_string_equal(kx_store_kind(s), "redis");
    assert_false(kx_store_is_up(s));
    kx_store_destroy(s);
    assert_int_equal(kx_store_create_from_url(loop, "redis://localhost:1", NULL, &s, &err), 0);
    kx_store_destroy(s);
    assert_int_equal(kx_store_create_from_url(loop, "redis://[::1]:1/p", NULL, &s, &err), 0);
    kx_store_destroy(s);

    assert_int_equal(kx_store_create_from_url(loop, "redis://redis.example:6379", NULL, &s, &err),
                     -EINVAL);
    assert_string_equal(err.msg, "store url \"redis://redis.example:6379\": host must be a numeric "
                                 "IP address or \"localhost\" (names are not resolved: that "
                                 "would block the loop)");
    assert_int_equal(kx_store_create_from_url(loop, "mysql://1.2.3.4", NULL, &s, &err), -EINVAL);
    /* Not parsed: not shown (it may hold a password). */
    assert_string_equal(err.msg, "store url: expected \"memory\" or "
                                 "\"redis://[USER:PASSWORD@]HOST:PORT[/PREFIX]\"");
    assert_int_equal(kx_store_create_from_url(loop, "redis://127.0.0.1:99999", NULL, &s, &err),
                     -EINVAL);
    assert_string_equal(err.msg, "store url \"redis://127.0.0.1:99999\": bad port");
    assert_int_equal(kx_store_create_from_url(loop, "redis://127.0.0.1:80x", NULL, &s, &err),
                     -EINVAL);
    assert_string_equal(err.msg, "store url \"redis://127.0.0.1:80x\": bad port");
    assert_int_equal(kx_store_create_from_url(loop, "redis://:80", NULL, &s, &err), -EINVAL);
    assert_string_equal(err.msg, "store url \"redis://:80\": bad host");
    /* Credentials: percent-decoded, and the password never shown. */
    assert_int_equal(
        kx_store_create_from_url(loop, "redis://kx:pa%40ss@127.0.0.1:1/p:", NULL, &s, &err), 0);
    kx_store_destroy(s);
    assert_int_equal(kx_store_create_from_url(loop, "redis://:pw@127.0.0.1:1", NULL, &s, &err), 0);
    kx_store_destroy(s);
    assert_int_equal(
        kx_store_create_from_url(loop, "redis://kx:S3CRET@redis.example:1/p", NULL, &s, &err),
        -EINVAL);
    assert_string_equal(err.msg, "store url \"redis://kx:***@redis.example:1/p\": host must be a "
                                 "numeric IP address or \"localhost\" (names are not resolved: "
                                 "that would block the loop)");
    assert_int_equal(
        kx_store_create_from_url(loop, "redis://kx:S3%zzT@127.0.0.1:1", NULL, &s, &err), -EINVAL);
    assert_string_equal(err.msg, "store url \"redis://kx:***@127.0.0.1:1\": bad user or password "
                                 "(percent-encode '@', ':', '/' and '%'; at most 255 and 511 "
                                 "bytes)");
    /* An unencoded '/' in the password: refused, and still masked. */
    assert_int_equal(
        kx_store_create_from_url(loop, "redis://kx:s3cr/et@127.0.0.1:1", NULL, &s, &err), -EINVAL);
    assert_null(strstr(err.msg, "s3cr"));
    assert_non_null(strstr(err.msg, "redis://kx:***@127.0.0.1:1"));
    assert_int_equal(kx_store_create_from_url(loop, "redis://kx@127.0.0.1:1", NULL, &s, &err),
                     -EINVAL);
    assert_string_equal(err.msg,
                        "store url \"redis://kx@127.0.0.1:1\": user \"kx\" without a password");
    /* The options' password serves a URL without one; the memory store takes max_keys. */
    kx_store_opts o = {.username = "kx", .password = "pw", .max_keys = 1};
    assert_int_equal(kx_store_create_from_url(loop, "redis://127.0.0.1:1", &o, &s, &err), 0);
    kx_store_destroy(s);
    assert_int_equal(kx_store_create_from_url(loop, "memory", &o, &s, &err), 0);
    kx_store_destroy(s);
    assert_false(ev_run(loop, EVRUN_NOWAIT));
    ev_loop_destroy(loop);
}

static void test_url_prefix_redis(void **state)
{
    fx *f = *state;
    kx_store_destroy(f->s);
    char url[64];
    kx_err err;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/pfx:", g_srv.port);
    assert_int_equal(kx_store_create_from_url(f->loop, url, NULL, &f->s, &err), 0);
    assert_true(kx_test_run_until(f->loop, store_up, f->s, 5000));
    add(f, "k", "m", T0);
    assert_int_equal(cmd_int(f, "EXISTS %s", "pfx:{k}:z"), 1);
    kx_store_destroy(f->s);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", g_srv.port);
    assert_int_equal(kx_store_create_from_url(f->loop, url, NULL, &f->s, &err), 0);
    assert_true(kx_test_run_until(f->loop, store_up, f->s, 5000));
    add(f, "k", "m", T0);
    assert_int_equal(cmd_int(f, "EXISTS %s", "klaxon:{k}:z"), 1);
    /* state.windows: log -- the window is a stream, and its answers are the same */
    kx_store_destroy(f->s);
    kx_store_opts o = {.log_windows = true};
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/lg:", g_srv.port);
    assert_int_equal(kx_store_create_from_url(f->loop, url, &o, &f->s, &err), 0);
    assert_true(kx_test_run_until(f->loop, store_up, f->s, 5000));
    add(f, "k", "m", T0);
    got g = add(f, "k", "m2", T0 + 1);
    assert_window(g, 2, T0, T0 + 1, true);
    assert_int_equal(cmd_int(f, "EXISTS %s", "lg:{k}:z"), 0);
    assert_int_equal(cmd_int(f, "XLEN %s", "lg:{k}:l"), 2);
    /* a memory store ignores it */
    kx_store *m = NULL;
    assert_int_equal(kx_store_create_from_url(f->loop, "memory", &o, &m, &err), 0);
    kx_store_destroy(m);
}

#define SHARED_TESTS(setup)                                                                        \
    cmocka_unit_test_setup_teardown(test_kind, setup, teardown),                                   \
        cmocka_unit_test_setup_teardown(test_count_within_window, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_exact_boundary, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),                       \
        cmocka_unit_test_setup_teardown(test_crossing, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_prune_by_ttl, setup, teardown),                       \
        cmocka_unit_test_setup_teardown(test_value_count, setup, teardown),                        \
        cmocka_unit_test_setup_teardown(test_value_count_window_edge, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_value_sum_avg, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_suppressed_before_first_alert, setup, teardown),      \
        cmocka_unit_test_setup_teardown(test_share, setup, teardown),                              \
        cmocka_unit_test_setup_teardown(test_ordered, setup, teardown),                            \
        cmocka_unit_test_setup_teardown(test_ordered_late_middle, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_suppress, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_suppress_dense, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(test_pruned_window_not_reported, setup, teardown),         \
        cmocka_unit_test_setup_teardown(test_range_condition, setup, teardown),                    \
        cmocka_unit_test_setup_teardown(test_duplicate_member, setup, teardown),                   \
        cmocka_unit_test_setup_teardown(test_forget, setup, teardown),                             \
        cmocka_unit_test_setup_teardown(test_evidence_order_and_cap, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_ttl, setup, teardown),                                \
        cmocka_unit_test_setup_teardown(test_member_cap, setup, teardown),                         \
        cmocka_unit_test_setup_teardown(test_invalid_args, setup, teardown),                       \
        cmocka_unit_test_setup_teardown(test_first_seen, setup, teardown),                         \
        cmocka_unit_test_setup_teardown(test_first_seen_cap, setup, teardown),                     \
        cmocka_unit_test_setup_teardown(test_baseline, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_baseline_lateness, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_extension_invalid_args, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_absence, setup, teardown),                            \
        cmocka_unit_test_setup_teardown(test_absence_touch_modes, setup, teardown),                \
        cmocka_unit_test_setup_teardown(test_absence_late_replace, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_touch_many_random, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_close_touch_many_random, setup, teardown),            \
        cmocka_unit_test_setup_teardown(test_add_many, setup, teardown),                           \
        cmocka_unit_test_setup_teardown(test_add_many_random, setup, teardown),                    \
        cmocka_unit_test_setup_teardown(test_count_append_only, setup, teardown),                  \
        cmocka_unit_test_setup_teardown(test_distinct_append_only, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_distinct_replay_newer, setup, teardown),              \
        cmocka_unit_test_setup_teardown(test_first_seen_many_random, setup, teardown),             \
        cmocka_unit_test_setup_teardown(test_baseline_many_random, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_close_windows, setup, teardown),                      \
        cmocka_unit_test_setup_teardown(test_watermark, setup, teardown),                          \
        cmocka_unit_test_setup_teardown(test_claim, setup, teardown),                              \
        cmocka_unit_test_setup_teardown(test_absence_invalid_args, setup, teardown),               \
        cmocka_unit_test_setup_teardown(test_destroy_in_callback, setup, teardown_maybe_destroyed)

int main(void)
{
    /* hiredis writes with write(2): a peer that went away must give EPIPE, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest memory_tests[] = {
        SHARED_TESTS(setup_memory),
        cmocka_unit_test_setup_teardown(test_memory_key_cap, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_set_scan_memory, setup_memory, teardown),
        cmocka_unit_test_setup_teardown(test_memory_many_members, setup_memory, teardown),
        cmocka_unit_test(test_url),
    };
    const struct CMUnitTest redis_tests[] = {
        SHARED_TESTS(setup_redis),
        cmocka_unit_test_setup_teardown(test_redis_noscript, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_redis_key_layout, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_set_scan, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_window_redis_like_memory, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_absence_due_retry, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_absence_touch_retry_token, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_absence_replace_retry_token, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_absence_answers_apart, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_distinct_many_leaving, setup_redis, teardown),
        cmocka_unit_test_setup_teardown(test_redis_destroy_cancels_pending, setup_redis,
                                        teardown_maybe_destroyed),
        cmocka_unit_test_setup_teardown(test_url_prefix_redis, setup_redis, teardown),
    };
    const struct CMUnitTest log_tests[] = {
        SHARED_TESTS(setup_redis_log),
        cmocka_unit_test_setup_teardown(test_log_processes, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_gap, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_idle_replicas, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_forget_order, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_lost_write, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_conn_lost_rereads, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_late_renews_nothing, setup_redis_log, teardown),
        cmocka_unit_test_setup_teardown(test_log_evidence_pages, setup_redis_log, teardown),
    };
    int failed =
        cmocka_run_group_tests_name("store_memory", memory_tests, group_setup_memory, NULL);
    failed += cmocka_run_group_tests_name("store_redis_log", log_tests, group_setup_redis,
                                          group_teardown_redis);
    failed += cmocka_run_group_tests_name("store_redis", redis_tests, group_setup_redis,
                                          group_teardown_redis);
    return failed;
}
