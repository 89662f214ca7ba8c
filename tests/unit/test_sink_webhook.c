/*
 * webhook sink against a real HTTP server (tests/support/http_receiver): the exact body and
 * headers delivered, retries after 503s, giving up into the dead-letter file, timeouts on a
 * hung receiver, refused connections, concurrency, sends from a done callback, drain, and
 * cancellation on destroy. Every test ends with an empty loop.
 */
#include <errno.h>
#include <ev.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "klaxon/alert.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "http_receiver.h"
#include "kx_test.h"

#define T0 1774747800000LL

typedef struct fixture {
    struct ev_loop *loop;
    char *dir;
    kx_http_receiver *rx;
    kx_yaml_doc *doc;
    kx_router *router;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->dir = kx_test_tmpdir("webhook");
    assert_non_null(f->dir);
    assert_int_equal(kx_http_receiver_start(&f->rx), 0);
    kx_metrics_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kx_router_destroy(f->router);
    kx_yaml_free(f->doc);
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0); /* nothing left on the loop */
    ev_loop_destroy(f->loop);
    kx_http_receiver_stop(f->rx);
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Creates the router with one webhook sink "pager" at the receiver's /hook; extra is more
 * YAML for the sink's flow map (", retries: 2"), top more top-level `alerting:` keys. */
static void create(fixture *f, const char *url, const char *extra, const char *top)
{
    char rxurl[128], yaml[2048];
    if (!url) {
        kx_http_receiver_url(f->rx, "/hook", rxurl, sizeof(rxurl));
        url = rxurl;
    }
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dead_letter: \"%s/dead.jsonl\"\n"
             "%s"
             "  sinks:\n"
             "    pager: {type: webhook, url: \"%s\", backoff: 10ms%s}\n",
             f->dir, top ? top : "", url, extra ? extra : "");
    kx_err err;
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    int rc = kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml",
                              &f->router, &err);
    if (rc) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
}

static const kx_kv group[] = {{"user", "root"}};

static kx_alert alert_at(int64_t first_seen)
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
        .first_seen_ms = first_seen,
        .last_seen_ms = first_seen + 42,
    };
    return a;
}

static char *render(const kx_alert *a)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(a, "secops", &b), 0);
    return b.data;
}

typedef struct done_rec {
    int calls;
    int status;
} done_rec;

static void on_done(void *ud, int status)
{
    done_rec *d = ud;
    d->calls++;
    d->status = status;
}

static bool is_done(void *ud)
{
    return ((done_rec *)ud)->calls > 0;
}

static void assert_body(fixture *f, size_t i, const char *expect)
{
    size_t len = 0;
    char *body = kx_http_receiver_body(f->rx, i, &len);
    assert_non_null(body);
    assert_string_equal(body, expect);
    assert_int_equal(len, strlen(expect));
    free(body);
}

static void assert_dead_letter(fixture *f, const char *expect)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/dead.jsonl", f->dir);
    char *got = kx_test_read_file(path, NULL);
    assert_non_null(got);
    assert_string_equal(got, expect);
    free(got);
}

static void test_delivered(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", headers: {Authorization: \"Token x\", X-Klaxon-Tenant: acme}", NULL);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_int_equal(d.calls, 0); /* asynchronous */
    assert_int_equal(kx_router_pending(f->router), 1);
    assert_true(kx_test_run_until(f->loop, is_done, &d, 5000));
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(kx_router_pending(f->router), 0);

    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    char *expect = render(&a);
    assert_body(f, 0, expect);
    free(expect);
    char *s;
    assert_string_equal(s = kx_http_receiver_method(f->rx, 0), "POST");
    free(s);
    assert_string_equal(s = kx_http_receiver_path(f->rx, 0), "/hook");
    free(s);
    assert_string_equal(s = kx_http_receiver_header(f->rx, 0, "Content-Type"), "application/json");
    free(s);
    assert_string_equal(s = kx_http_receiver_header(f->rx, 0, "authorization"), "Token x");
    free(s);
    assert_string_equal(s = kx_http_receiver_header(f->rx, 0, "X-Klaxon-Tenant"), "acme");
    free(s);
    assert_null(kx_http_receiver_header(f->rx, 0, "Expect"));
    assert_int_equal(kx_http_receiver_status(f->rx, 0), 200);

    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 0);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
}

static void test_retry_then_success(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", retries: 3", NULL);
    kx_http_receiver_fail_next(f->rx, 503, 2);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_true(kx_test_run_until(f->loop, is_done, &d, 5000));
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
    assert_int_equal(kx_http_receiver_status(f->rx, 0), 503);
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 503);
    assert_int_equal(kx_http_receiver_status(f->rx, 2), 200);
    char *expect = render(&a);
    for (size_t i = 0; i < 3; i++)
        assert_body(f, i, expect);
    free(expect);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 2);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
    assert_dead_letter(f, "");
}

static void test_give_up_dead_letter(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", retries: 2", NULL);
    kx_http_receiver_fail_next(f->rx, 500, 100);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_true(kx_test_run_until(f->loop, is_done, &d, 5000));
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, -EIO);
    assert_int_equal(kx_http_receiver_count(f->rx), 3); /* 1 + 2 retries */
    char *expect = render(&a);
    size_t n = strlen(expect);
    char *line = malloc(n + 2);
    memcpy(line, expect, n);
    memcpy(line + n, "\n", 2);
    assert_dead_letter(f, line);
    free(line);
    free(expect);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 2);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 0);
    assert_int_equal(kx_router_pending(f->router), 0);
}

static void test_timeout_then_success(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", timeout: 200ms, retries: 1", NULL);
    kx_http_receiver_hang_next(f->rx, 1);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    int64_t t = kx_mono_ms();
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_true(kx_test_run_until(f->loop, is_done, &d, 5000));
    assert_true(kx_mono_ms() - t >= 200); /* the first attempt waited for its timeout */
    assert_int_equal(d.status, 0);
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 200);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 1);
}

static void test_connection_refused(void **state)
{
    fixture *f = *state;
    /* A port nothing listens on: a receiver's, after it stopped. */
    kx_http_receiver *gone;
    char url[128];
    assert_int_equal(kx_http_receiver_start(&gone), 0);
    kx_http_receiver_url(gone, "/hook", url, sizeof(url));
    kx_http_receiver_stop(gone);
    create(f, url, ", retries: 1", NULL);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_true(kx_test_run_until(f->loop, is_done, &d, 5000));
    assert_int_equal(d.status, -EIO);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
}

typedef struct many {
    int done;
    int failed;
} many;

static void on_many(void *ud, int status)
{
    many *m = ud;
    m->done++;
    m->failed += status != 0;
}

static bool many_done(void *ud)
{
    return ((many *)ud)->done == 8;
}

static void test_concurrent(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", retries: 3", NULL);
    kx_http_receiver_fail_next(f->rx, 503, 3);
    many m = {0};
    char *expect[8];
    for (int i = 0; i < 8; i++) {
        kx_alert a = alert_at(T0 + i * 60000);
        expect[i] = render(&a);
        assert_int_equal(kx_router_send(f->router, &a, on_many, &m), 0);
    }
    assert_int_equal(kx_router_pending(f->router), 8);
    assert_true(kx_test_run_until(f->loop, many_done, &m, 5000));
    assert_int_equal(m.failed, 0);
    assert_int_equal(kx_http_receiver_count(f->rx), 11);
    /* Every alert arrived with a 200 exactly once (order is the network's). */
    for (int i = 0; i < 8; i++) {
        int ok = 0;
        for (size_t j = 0; j < 11; j++) {
            char *body = kx_http_receiver_body(f->rx, j, NULL);
            ok += !strcmp(body, expect[i]) && kx_http_receiver_status(f->rx, j) == 200;
            free(body);
        }
        assert_int_equal(ok, 1);
        free(expect[i]);
    }
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 8);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 3);
}

/* A done callback that sends the next alert: the sink must accept work from inside its own
 * completion path. */
typedef struct chain {
    fixture *f;
    int sent, done;
} chain;

static void on_chain(void *ud, int status)
{
    chain *c = ud;
    assert_int_equal(status, 0);
    c->done++;
    if (c->sent < 3) {
        kx_alert a = alert_at(T0 + c->sent++ * 60000);
        assert_int_equal(kx_router_send(c->f->router, &a, on_chain, c), 0);
    }
}

static bool chain_done(void *ud)
{
    return ((chain *)ud)->done == 3;
}

static void test_send_from_done(void **state)
{
    fixture *f = *state;
    create(f, NULL, NULL, NULL);
    chain c = {.f = f, .sent = 1};
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, on_chain, &c), 0);
    assert_true(kx_test_run_until(f->loop, chain_done, &c, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
    assert_int_equal(kx_router_pending(f->router), 0);
}

static int drained;

static void on_drain(void *ud)
{
    (void)ud;
    drained++;
}

static bool is_drained(void *ud)
{
    (void)ud;
    return drained > 0;
}

static void test_drain(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", retries: 2", NULL);
    kx_http_receiver_fail_next(f->rx, 503, 1);
    drained = 0;
    kx_alert a = alert_at(T0), b = alert_at(T0 + 60000);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    kx_router_drain(f->router, on_drain, NULL);
    assert_int_equal(drained, 0);
    assert_true(kx_test_run_until(f->loop, is_drained, NULL, 5000));
    assert_int_equal(drained, 1);
    assert_int_equal(kx_router_pending(f->router), 0);
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
}

static bool rx_got_one(void *ud)
{
    return kx_http_receiver_count(ud) > 0;
}

static void test_destroy_cancels(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", timeout: 30s", NULL);
    kx_http_receiver_hang_next(f->rx, 1);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    /* Wait until the receiver holds the request, then shut down under it. */
    assert_true(kx_test_run_until(f->loop, rx_got_one, f->rx, 5000));
    kx_router_destroy(f->router);
    f->router = NULL;
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, -ECANCELED);
    char *expect = render(&a);
    size_t n = strlen(expect);
    char *line = malloc(n + 2);
    memcpy(line, expect, n);
    memcpy(line + n, "\n", 2);
    assert_dead_letter(f, line);
    free(line);
    free(expect);
}

int main(void)
{
    kx_log_set_level(KX_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_give_up_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_from_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_cancels, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
