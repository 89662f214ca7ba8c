/*
 * Incident claims (src/alert/claim.c) with a real redis-server and a real HTTP receiver:
 * two routers on two store connections stand for two klaxon processes sharing a Redis.
 * One incident sent by both is paged once; a holder that dies mid-attempt is taken over when
 * its lease runs out; the same spool after a restart renews its own claim at once; a
 * resolve is an incident of its own; a store that cannot be reached does not hold a page
 * (sent unclaimed, counted); sinks that do not claim (file) are not held; the metrics.
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
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/alert.h"
#include "klaxon/metrics.h"
#include "klaxon/store.h"
#include "http_receiver.h"
#include "kx_test.h"
#include "redis_server.h"

#define T0 1774747800000LL

static kx_test_redis g_srv;

typedef struct proc {
    kx_store *store;
    kx_yaml_doc *doc;
    kx_router *router;
} proc;

typedef struct fixture {
    struct ev_loop *loop;
    char *dir;
    kx_http_receiver *rx;
    proc p[2];
} fixture;

static bool store_up(void *ud)
{
    return kx_store_is_up(ud);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->dir = kx_test_tmpdir("claims");
    assert_non_null(f->dir);
    assert_int_equal(kx_http_receiver_start(&f->rx), 0);
    kx_metrics_reset();
    /* A fresh prefix per test: nothing claimed by an earlier test. */
    static int n;
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "t%d:", ++n);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            kx_store_redis_create(f->loop, "127.0.0.1", g_srv.port, prefix, &f->p[i].store), 0);
        assert_true(kx_test_run_until(f->loop, store_up, f->p[i].store, 5000));
    }
    *state = f;
    return 0;
}

static void proc_stop(proc *p)
{
    kx_router_destroy(p->router);
    p->router = NULL;
    kx_yaml_free(p->doc);
    p->doc = NULL;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 2; i++) {
        proc_stop(&f->p[i]);
        kx_store_destroy(f->p[i].store);
    }
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0); /* nothing left on the loop */
    ev_loop_destroy(f->loop);
    kx_http_receiver_stop(f->rx);
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Process i's router: one webhook sink "pager" at the receiver; extra goes into `alerting:`
 * (claims, spool), sink into the sink's map. */
static void start(fixture *f, int i, const char *extra, const char *sink, kx_store *store)
{
    char url[128], yaml[2048];
    kx_http_receiver_url(f->rx, "/hook", url, sizeof(url));
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dead_letter: \"%s/dead%d.jsonl\"\n"
             "%s"
             "  sinks:\n"
             "    pager: {type: webhook, url: \"%s\", backoff: 10ms%s}\n",
             f->dir, i, extra ? extra : "", url, sink ? sink : "");
    kx_err err;
    proc *p = &f->p[i];
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &p->doc, &err), 0);
    kx_router_opts o = {.store = store};
    int rc = kx_router_create(f->loop, kx_yaml_get(p->doc->root, "alerting"), "alert.yaml", &o,
                              &p->router, &err);
    if (rc) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
}

static const kx_kv group[] = {{"user", "root"}};

static kx_alert incident(const char *status)
{
    kx_alert a = {
        .rule_id = "ssh-brute",
        .rule_title = "SSH brute force",
        .rule_level = "critical",
        .team = "secops",
        .tenant = "acme",
        .group = group,
        .ngroup = 1,
        .count = 7,
        .window_s = 60,
        .first_seen_ms = T0,
        .last_seen_ms = T0 + 42,
        .status = status,
    };
    return a;
}

static bool both_idle(void *ud)
{
    fixture *f = ud;
    /* ... and the claims settled in the store (a done is sent after the delivery ends). */
    for (int i = 0; i < 2; i++)
        if ((f->p[i].router && kx_router_pending(f->p[i].router)) ||
            kx_store_pending(f->p[i].store))
            return false;
    return true;
}

static bool rx_has(void *ud)
{
    const size_t *want = ((void **)ud)[1];
    return kx_http_receiver_count(((void **)ud)[0]) >= *want;
}

static void wait_requests(fixture *f, size_t n, int ms)
{
    void *arg[2] = {f->rx, &n};
    assert_true(kx_test_run_until(f->loop, rx_has, arg, ms));
}

/* The value of one line of the router's metrics, -1 when absent. */
static long long metric(kx_router *r, const char *line)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_router_render_metrics(r, &b), 0);
    const char *p = b.data ? strstr(b.data, line) : NULL;
    long long v = p ? strtoll(p + strlen(line), NULL, 10) : -1;
    kx_buf_fini(&b);
    return v;
}

static void test_two_processes_one_page(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 2; i++)
        start(f, i, "  claims: {lease: 1s}\n", NULL, f->p[i].store);
    kx_alert a = incident(NULL);
    /* Both raise it (a partition read again after a rebalance): the first to claim sends, the
     * other waits out the lease, then finds it delivered. */
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->p[1].router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 10000));
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    assert_int_equal(kx_http_receiver_status(f->rx, 0), 200);
    const char *taken = "klaxon_sink_claims_total{sink=\"pager\",outcome=\"taken\"} ";
    const char *held = "klaxon_sink_claims_total{sink=\"pager\",outcome=\"held\"} ";
    const char *else_ = "klaxon_sink_claims_total{sink=\"pager\",outcome=\"delivered_elsewhere\"} ";
    /* Two connections race to claim: either may win, exactly one does. */
    int w = metric(f->p[0].router, taken) == 1 ? 0 : 1, o = 1 - w;
    assert_int_equal(metric(f->p[w].router, taken), 1);
    assert_int_equal(metric(f->p[w].router, held), 0);
    assert_int_equal(metric(f->p[o].router, taken), 0);
    assert_int_equal(metric(f->p[o].router, held), 1);
    assert_int_equal(metric(f->p[o].router, else_), 1);
    /* Only the sender counts a delivery. */
    assert_int_equal(metric(f->p[w].router, "klaxon_sink_delivered_total{sink=\"pager\","
                                            "type=\"webhook\"} "),
                     1);
    assert_int_equal(metric(f->p[o].router, "klaxon_sink_delivered_total{sink=\"pager\","
                                            "type=\"webhook\"} "),
                     0);
    /* Per team: both raised it; only the sender delivered it. */
    const char *raised = "klaxon_team_alerts_raised_total{team=\"secops\"} ";
    const char *tdel = "klaxon_team_delivered_total{team=\"secops\",sink=\"pager\"} ";
    assert_int_equal(metric(f->p[w].router, raised), 1);
    assert_int_equal(metric(f->p[o].router, raised), 1);
    assert_int_equal(metric(f->p[w].router, tdel), 1);
    assert_int_equal(metric(f->p[o].router, tdel), -1); /* a pair that never happened */
    /* Raised again later (a replay): done is remembered, not paged again. */
    assert_int_equal(kx_router_send(f->p[1].router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    /* Its resolve is news of its own: paged once as well. */
    kx_alert res = incident("resolved");
    assert_int_equal(kx_router_send(f->p[0].router, &res, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->p[1].router, &res, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 10000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    size_t len;
    char *body = kx_http_receiver_body(f->rx, 1, &len);
    assert_non_null(strstr(body, ",\"status\":\"resolved\""));
    free(body);
}

/* The holder dies with its attempt hung: the other process pages once the lease is out. */
static void test_takeover_after_holder_died(void **state)
{
    fixture *f = *state;
    start(f, 0, "  claims: {lease: 1s}\n", ", timeout: 30s", f->p[0].store);
    start(f, 1, "  claims: {lease: 1s}\n", NULL, f->p[1].store);
    kx_http_receiver_hang_next(f->rx, 1);
    kx_alert a = incident(NULL);
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    wait_requests(f, 1, 5000);
    proc_stop(&f->p[0]); /* kill -9: the claim stays, nobody releases it */
    int64_t t = kx_mono_ms();
    assert_int_equal(kx_router_send(f->p[1].router, &a, NULL, NULL), 0);
    wait_requests(f, 2, 10000);
    int64_t took = kx_http_receiver_time_ms(f->rx, 1) - t;
    assert_true(took >= 900 && took < 5000); /* the rest of the 1s lease, then sent */
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 200);
}

/* A restart on the same spool is the same holder: it renews its claim at once instead of
 * waiting out its dead self's lease. */
static void test_restart_same_spool_is_same_holder(void **state)
{
    fixture *f = *state;
    char extra[512];
    snprintf(extra, sizeof(extra), "  claims: {lease: 60s}\n  spool: {dir: \"%s/spool\"}\n",
             f->dir);
    start(f, 0, extra, ", timeout: 30s", f->p[0].store);
    kx_http_receiver_hang_next(f->rx, 1);
    kx_alert a = incident(NULL);
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    wait_requests(f, 1, 5000);
    proc_stop(&f->p[0]);
    int64_t t = kx_mono_ms();
    start(f, 0, extra, NULL, f->p[1].store); /* reads the spool back, sends again */
    wait_requests(f, 2, 5000);
    assert_true(kx_http_receiver_time_ms(f->rx, 1) - t < 3000); /* not the 60s lease */
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 200);
}

/* A route's realert: how long a page is remembered as sent, across processes. */
static void test_route_realert(void **state)
{
    fixture *f = *state;
    start(f, 0, "  dedup_window: 0\n",
          "}\n  routes:\n    - {team: secops, sinks: [pager], realert: 1s}\n"
          "    - {default: true, sinks: [pager]",
          f->p[0].store);
    start(f, 1, "  dedup_window: 0\n", NULL, f->p[1].store);
    kx_alert a = incident(NULL);
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    /* Within the period: remembered by either process. */
    assert_int_equal(kx_router_send(f->p[1].router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    /* After it: paged again. */
    usleep(1200 * 1000);
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    /* The rule's own realert (no route's here): the same. */
    kx_alert r2 = incident(NULL);
    r2.rule_id = "ssh-brute-2";
    r2.realert_ms = 1000;
    assert_int_equal(kx_router_send(f->p[1].router, &r2, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_router_send(f->p[1].router, &r2, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
    usleep(1200 * 1000);
    assert_int_equal(kx_router_send(f->p[1].router, &r2, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 4);
    /* Without a realert the default keep (24h) holds, past any period above. */
    kx_alert r3 = incident(NULL);
    r3.rule_id = "ssh-brute-3";
    assert_int_equal(kx_router_send(f->p[1].router, &r3, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 5);
    usleep(1200 * 1000);
    assert_int_equal(kx_router_send(f->p[1].router, &r3, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 5);
}

/* No store answer: the page goes out unclaimed after `wait`, counted. */
static void test_store_down_sends_unclaimed(void **state)
{
    fixture *f = *state;
    kx_store *dead;
    assert_int_equal(kx_store_redis_create(f->loop, "127.0.0.1", 1, NULL, &dead), 0);
    start(f, 0, "  claims: {wait: 300ms}\n", NULL, dead);
    kx_alert a = incident(NULL);
    int64_t t = kx_mono_ms();
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    wait_requests(f, 1, 5000);
    assert_true(kx_http_receiver_time_ms(f->rx, 0) - t >= 250);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(
        metric(f->p[0].router, "klaxon_sink_claims_total{sink=\"pager\",outcome=\"unavailable\"} "),
        1);
    proc_stop(&f->p[0]);
    kx_store_destroy(dead);
}

/* `claims: off`, `claim: false` on the sink, and sinks that do not claim by default: no
 * claim is made, so both processes send. */
static void test_claims_off(void **state)
{
    fixture *f = *state;
    start(f, 0, "  claims: off\n", NULL, f->p[0].store);
    start(f, 1, NULL, ", claim: false", f->p[1].store);
    kx_alert a = incident(NULL);
    assert_int_equal(kx_router_send(f->p[0].router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->p[1].router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, both_idle, f, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    assert_int_equal(
        metric(f->p[0].router, "klaxon_sink_claims_total{sink=\"pager\",outcome=\"taken\"} "), -1);
}

static void test_config_errors(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *yaml, *msg;
    } cases[] = {
        {"alerting:\n  claims: {lease: 10ms}\n  sinks: {s: {type: stdout}}\n",
         "alert.yaml:2:19: claims.lease must be between 1s and 24h"},
        {"alerting:\n  claims: {keep: 0s}\n  sinks: {s: {type: stdout}}\n",
         "alert.yaml:2:18: claims.keep must be between 1s and 30d"},
        {"alerting:\n  claims: {lease: 1m, hold: 2}\n  sinks: {s: {type: stdout}}\n",
         "alert.yaml:2:23: unknown key \"hold\""},
        {"alerting:\n  claims: yes\n  sinks: {s: {type: stdout}}\n",
         "alert.yaml:2:11: claims: expected off or a map with lease, keep and wait"},
        {"alerting:\n  sinks: {s: {type: webhook, url: \"http://127.0.0.1:1/\", claim: 3}}\n",
         "alert.yaml:2:65: expected true or false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        kx_yaml_doc *doc;
        kx_err err;
        assert_int_equal(
            kx_yaml_load_mem("alert.yaml", cases[i].yaml, strlen(cases[i].yaml), &doc, &err), 0);
        kx_router *r = NULL;
        kx_router_opts o = {.store = f->p[0].store};
        assert_int_not_equal(kx_router_create(f->loop, kx_yaml_get(doc->root, "alerting"),
                                              "alert.yaml", &o, &r, &err),
                             0);
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        assert_string_equal(m, cases[i].msg);
        kx_yaml_free(doc);
    }
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    return kx_test_redis_start(&g_srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    kx_test_redis_stop(&g_srv);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_processes_one_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_takeover_after_holder_died, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_same_spool_is_same_holder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_realert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_down_sends_unclaimed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, setup, teardown),
    };
    return cmocka_run_group_tests_name("claims", tests, group_setup, group_teardown);
}
