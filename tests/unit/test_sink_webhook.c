/*
 * webhook sink and its queue against a real HTTP server (tests/support/http_receiver): the
 * exact body and headers delivered; retries after 5xx, 408, 429 and dropped connections; no
 * retry after a 400; Retry-After in seconds and as an HTTP date; retry_for ending in the
 * dead-letter file (checked field by field); timeouts on a hung receiver; refused
 * connections; concurrency; the circuit breaker; a hung sink that delays nobody else's
 * alerts; sends from a done callback; drain; cancellation on destroy. Every test ends with an
 * empty loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>

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
             "    pager: {type: webhook, url: \"%s\"%s%s}\n",
             f->dir, top ? top : "", url,
             extra && strstr(extra, "backoff:") ? "" : ", backoff: 10ms", extra ? extra : "");
    kx_err err;
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    int rc = kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml", NULL,
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

static void assert_body(fixture *f, size_t i, const char *expect)
{
    size_t len = 0;
    char *body = kx_http_receiver_body(f->rx, i, &len);
    assert_non_null(body);
    assert_string_equal(body, expect);
    assert_int_equal(len, strlen(expect));
    free(body);
}

/* The dead-letter file's only line has these fields, and the alert a as rendered. */
static void assert_dead_letter(fixture *f, const kx_alert *a, const char *reason, unsigned attempts,
                               long status, const char *error)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/dead.jsonl", f->dir);
    size_t len = 0;
    char *got = kx_test_read_file(path, &len);
    assert_non_null(got);
    assert_true(len > 0);
    assert_null(memchr(got, '\n', len - 1));
    json_error_t je;
    json_t *o = json_loadb(got, len, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "sink")), "pager");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), reason);
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), attempts);
    assert_int_equal(json_integer_value(json_object_get(o, "status")), status);
    assert_string_equal(json_string_value(json_object_get(o, "error")), error);
    char *expect = render(a);
    char *dumped = json_dumps(json_object_get(o, "alert"), JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_t *e = json_loads(expect, 0, &je);
    char *edumped = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(dumped, edumped);
    /* ... and byte for byte as it was sent. */
    assert_non_null(strstr(got, expect));
    free(dumped);
    free(edumped);
    json_decref(e);
    json_decref(o);
    free(expect);
    free(got);
}

static void assert_no_dead_letter(fixture *f)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/dead.jsonl", f->dir);
    char *got = kx_test_read_file(path, NULL);
    assert_non_null(got);
    assert_string_equal(got, "");
    free(got);
}

static bool nothing_pending(void *ud)
{
    return kx_router_pending(ud) == 0;
}

static bool rx_got_one(void *ud)
{
    return kx_http_receiver_count(ud) > 0;
}

static void test_delivered(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", headers: {Authorization: \"Token x\", X-Klaxon-Tenant: acme}", NULL);
    kx_alert a = alert_at(T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    /* No spool directory: done runs once the alert is queued; delivery goes on. */
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(kx_router_pending(f->router), 1);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));

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
    create(f, NULL, NULL, NULL);
    /* A dropped connection, 503 twice, then 200: all retryable. */
    kx_http_receiver_drop_next(f->rx, 1);
    kx_http_receiver_fail_next(f->rx, 503, 2);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 4);
    assert_int_equal(kx_http_receiver_status(f->rx, 0), 0); /* dropped */
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 503);
    assert_int_equal(kx_http_receiver_status(f->rx, 2), 503);
    assert_int_equal(kx_http_receiver_status(f->rx, 3), 200);
    char *expect = render(&a);
    for (size_t i = 0; i < 4; i++)
        assert_body(f, i, expect);
    free(expect);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 3);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
    assert_no_dead_letter(f);
}

/* An outage longer than the old budget (3 retries): 12 failures in a row, then delivered. */
static void test_long_outage_then_delivered(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", backoff: 5ms, backoff_max: 20ms, breaker_failures: 0", NULL);
    kx_http_receiver_fail_next(f->rx, 503, 12);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(kx_http_receiver_count(f->rx), 13);
    assert_int_equal(kx_http_receiver_status(f->rx, 12), 200);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
    assert_no_dead_letter(f);
}

static void test_permanent_error_not_retried(void **state)
{
    fixture *f = *state;
    create(f, NULL, NULL, NULL);
    /* 400: the request itself is wrong; sending it again cannot help. */
    kx_http_receiver_fail_next(f->rx, 400, 100);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    assert_dead_letter(f, &a, "refused, not retried", 1, 400, "HTTP 400");
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 0);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
}

static void test_408_and_429_retried(void **state)
{
    fixture *f = *state;
    create(f, NULL, NULL, NULL);
    kx_http_receiver_fail_next(f->rx, 408, 1);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    kx_http_receiver_fail_next(f->rx, 429, 1);
    kx_alert b = alert_at(T0 + 60000);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 4);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 2);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 2);
}

static void test_retry_after_honoured(void **state)
{
    fixture *f = *state;
    /* backoff 10ms: only Retry-After can make the second attempt wait a second. */
    create(f, NULL, NULL, NULL);
    kx_http_receiver_retry_after(f->rx, "1");
    kx_http_receiver_fail_next(f->rx, 429, 1);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    assert_int_equal(kx_http_receiver_status(f->rx, 0), 429);
    assert_true(kx_http_receiver_time_ms(f->rx, 1) - kx_http_receiver_time_ms(f->rx, 0) >= 990);

    /* The same as an HTTP date (two seconds ahead: its resolution is a second). */
    kx_http_receiver_retry_after(f->rx, NULL);
    char date[64];
    time_t t = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    kx_http_receiver_retry_after(f->rx, date);
    kx_http_receiver_fail_next(f->rx, 503, 1);
    kx_alert b = alert_at(T0 + 60000);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 6000));
    assert_int_equal(kx_http_receiver_count(f->rx), 4);
    assert_true(kx_http_receiver_time_ms(f->rx, 3) - kx_http_receiver_time_ms(f->rx, 2) >= 900);
}

static void test_retry_for_then_dead_letter(void **state)
{
    fixture *f = *state;
    /* No breaker: an open circuit at the deadline would give another reason (timing). */
    create(f, NULL, ", retry_for: 300ms, breaker_failures: 0", NULL);
    kx_http_receiver_fail_next(f->rx, 500, 1000);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    size_t n = kx_http_receiver_count(f->rx);
    assert_true(n >= 3); /* backoff 10ms doubling within 300ms, and one at the deadline */
    char reason[] = "retry_for spent";
    assert_dead_letter(f, &a, reason, (unsigned)n, 500, "HTTP 500");
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), n);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 0);
}

/* The last attempt is made at the deadline: a backoff longer than retry_for is cut to it. */
static void test_last_attempt_at_deadline(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", retry_for: 1s, backoff: 5s", NULL);
    kx_http_receiver_fail_next(f->rx, 503, 1);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 200);
    assert_true(kx_http_receiver_time_ms(f->rx, 1) - kx_http_receiver_time_ms(f->rx, 0) >= 900);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
}

static void test_timeout_then_success(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", timeout: 200ms", NULL);
    kx_http_receiver_hang_next(f->rx, 1);
    kx_alert a = alert_at(T0);
    int64_t t = kx_mono_ms();
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_true(kx_mono_ms() - t >= 200); /* the first attempt waited for its timeout */
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    assert_int_equal(kx_http_receiver_status(f->rx, 1), 200);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 1);
}

static void test_connection_refused(void **state)
{
    fixture *f = *state;
    /* A port bound but not listening: connections are refused, and no other test process
     * can take the port meanwhile (as it could a stopped receiver's). */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/hook", (unsigned)ntohs(sa.sin_port));
    create(f, url, ", retry_for: 100ms", NULL);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    close(fd);
    assert_true(kx_metric_get(KX_M_ALERT_RETRIES) >= 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
}

static void test_concurrent(void **state)
{
    fixture *f = *state;
    create(f, NULL, NULL, NULL);
    kx_http_receiver_fail_next(f->rx, 503, 3);
    char *expect[8];
    for (int i = 0; i < 8; i++) {
        kx_alert a = alert_at(T0 + i * 60000);
        expect[i] = render(&a);
        assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    }
    assert_int_equal(kx_router_pending(f->router), 8);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
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

static void test_circuit_breaker(void **state)
{
    fixture *f = *state;
    /* One failure opens the circuit for a second (backoff 1s): the next alert is not even
     * tried meanwhile, then one probe goes out, succeeds, and both are delivered. */
    create(f, NULL, ", breaker_failures: 1, backoff: 1s", NULL);
    kx_http_receiver_fail_next(f->rx, 503, 1);
    kx_alert a = alert_at(T0), b = alert_at(T0 + 60000);
    int64_t t0 = kx_mono_ms();
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_false(kx_test_run_until(f->loop, nothing_pending, f->router, 300));
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_false(kx_test_run_until(f->loop, nothing_pending, f->router, 200));
    assert_int_equal(kx_http_receiver_count(f->rx), 1); /* b waits for the circuit */
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
    assert_true(kx_http_receiver_time_ms(f->rx, 1) - t0 >= 500);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 2);
}

static bool three_pending(void *ud)
{
    return kx_router_pending(ud) == 3;
}

/* Two teams, two webhooks: one hangs. The other team's alert must not wait for it. */
static void test_hung_sink_delays_only_itself(void **state)
{
    fixture *f = *state;
    kx_http_receiver *other;
    assert_int_equal(kx_http_receiver_start(&other), 0);
    char hung_url[128], ok_url[128], yaml[2048];
    kx_http_receiver_url(f->rx, "/hook", hung_url, sizeof(hung_url));
    kx_http_receiver_url(other, "/chat", ok_url, sizeof(ok_url));
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dead_letter: \"%s/dead.jsonl\"\n"
             "  sinks:\n"
             "    pager: {type: webhook, url: \"%s\", timeout: 30s, concurrency: 1}\n"
             "    chat: {type: webhook, url: \"%s\"}\n"
             "  routes:\n"
             "    - {team: secops, sinks: [pager]}\n"
             "    - {team: default, sinks: [chat]}\n",
             f->dir, hung_url, ok_url);
    kx_err err;
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    assert_int_equal(kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml",
                                      NULL, &f->router, &err),
                     0);
    kx_http_receiver_hang_next(f->rx, 10);
    /* Three secops pages: the first hangs, the others wait behind it (concurrency 1). */
    for (int i = 0; i < 3; i++) {
        kx_alert a = alert_at(T0 + i * 60000);
        assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    }
    assert_true(kx_test_run_until(f->loop, rx_got_one, f->rx, 5000));
    kx_alert c = alert_at(T0 + 10 * 60000);
    c.team = NULL; /* the default route: chat */
    int64_t t = kx_mono_ms();
    assert_int_equal(kx_router_send(f->router, &c, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, rx_got_one, other, 5000));
    int64_t took = kx_http_receiver_time_ms(other, 0) - t;
    assert_true(took < 1000); /* milliseconds in practice; a second is the bound asserted */
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    /* The chat's answer reaches the loop a moment after the receiver records the request. */
    assert_true(kx_test_run_until(f->loop, three_pending, f->router, 5000));
    kx_router_destroy(f->router);
    f->router = NULL;
    kx_http_receiver_stop(other);
}

static void test_signed(void **state)
{
    fixture *f = *state;
    setenv("KX_TEST_HOOK_SECRET", "s3cr3t-\u00e9", 1);
    create(f, NULL, ", secret: \"${KX_TEST_HOOK_SECRET}\"", NULL);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    char *ts = kx_http_receiver_header(f->rx, 0, "X-Klaxon-Timestamp");
    char *sig = kx_http_receiver_header(f->rx, 0, "X-Klaxon-Signature");
    size_t blen = 0;
    char *body = kx_http_receiver_body(f->rx, 0, &blen);
    assert_non_null(ts);
    assert_non_null(sig);
    long long t = atoll(ts);
    assert_true(llabs(t - kx_now_ms() / 1000) <= 5);
    /* What a receiver does: HMAC-SHA256(secret, timestamp "." raw body), hex, compared. */
    kx_buf m;
    kx_buf_init(&m, 0);
    kx_buf_printf(&m, "%s.", ts);
    kx_buf_append(&m, body, blen);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *key = "s3cr3t-\u00e9";
    assert_non_null(
        HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)m.data, m.len, md, &mdlen));
    char want[80] = "sha256=";
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(want + 7 + 2 * i, 3, "%02x", md[i]);
    assert_int_equal(mdlen, 32);
    assert_string_equal(sig, want);
    /* A retry is signed anew: the same body, its own timestamp and signature. */
    kx_http_receiver_fail_next(f->rx, 503, 1);
    kx_alert b = alert_at(T0 + 60000);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    char *s1 = kx_http_receiver_header(f->rx, 1, "X-Klaxon-Signature");
    char *s2 = kx_http_receiver_header(f->rx, 2, "X-Klaxon-Signature");
    assert_non_null(s1);
    assert_non_null(s2);
    free(s1);
    free(s2);
    kx_buf_fini(&m);
    free(ts);
    free(sig);
    free(body);
    unsetenv("KX_TEST_HOOK_SECRET");
}

/* Secrets from the environment or a file; errors name the key, variable or path, never the
 * value. */
static void test_secret_sources(void **state)
{
    fixture *f = *state;
    char rxurl[128], path[512];
    kx_http_receiver_url(f->rx, "/hook?token=", rxurl, sizeof(rxurl));
    setenv("KX_TEST_HOOK_URL", rxurl, 1);
    snprintf(path, sizeof(path), "%s/token", f->dir);
    assert_int_equal(kx_test_write_file(path, "tok-FILE-42\n"), 0);
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  sinks:\n"
             "    pager: {type: webhook, url: \"${KX_TEST_HOOK_URL}abc\", "
             "headers: {Authorization_file: \"%s\", X-Env: \"v-${KX_TEST_HOOK_URL}\"}}\n",
             path);
    kx_err err;
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    assert_int_equal(kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml",
                                      NULL, &f->router, &err),
                     0);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    char *p = kx_http_receiver_path(f->rx, 0);
    assert_string_equal(p, "/hook");
    free(p);
    char *h = kx_http_receiver_header(f->rx, 0, "Authorization");
    assert_string_equal(h, "tok-FILE-42");
    free(h);

    const struct {
        const char *cfg, *msg;
    } bad[] = {
        {"    pager: {type: webhook, url: \"${KX_TEST_UNSET_VAR}\"}\n",
         "alert.yaml:3:33: url: environment variable KX_TEST_UNSET_VAR is not set"},
        {"    pager: {type: webhook, url: \"http://x/${1x}\"}\n",
         "alert.yaml:3:33: url: \"${\" must start ${NAME} (letters, digits, _)"},
        {"    pager: {type: webhook, url: \"http://x/\", url_file: /nonexistent/u}\n",
         "alert.yaml:3:56: give url or url_file, not both"},
        {"    pager: {type: webhook, url_file: /nonexistent/u}\n",
         "alert.yaml:3:38: url_file: cannot read \"/nonexistent/u\": No such file or directory"},
        {"    pager: {type: webhook, url: \"ftp://secret-token@x/\"}\n",
         "alert.yaml:3:33: url must start with http:// or https://"},
        {"    pager: {type: webhook, url: \"http://x/\", secret: \"\"}\n",
         "alert.yaml:3:54: sink \"pager\": the secret is empty"},
        {"    pager: {type: webhook, url: \"http://x/\", retries: 3}\n",
         "alert.yaml:3:55: sink \"pager\": \"retries\" was replaced by \"retry_for\" (how long "
         "an alert is retried, default 6h)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char y[1024];
        snprintf(y, sizeof(y), "alerting:\n  sinks:\n%s", bad[i].cfg);
        kx_yaml_doc *doc = NULL;
        kx_router *r = NULL;
        memset(&err, 0, sizeof(err));
        assert_int_equal(kx_yaml_load_mem("alert.yaml", y, strlen(y), &doc, &err), 0);
        assert_true(kx_router_create(f->loop, kx_yaml_get(doc->root, "alerting"), "alert.yaml",
                                     NULL, &r, &err) < 0);
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        assert_string_equal(m, bad[i].msg);
        assert_null(strstr(m, "secret-token"));
        kx_yaml_free(doc);
    }
    unsetenv("KX_TEST_HOOK_URL");
}

/* A done callback that sends the next alert: the router must accept work from inside its
 * own completion path. */
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

static void test_send_from_done(void **state)
{
    fixture *f = *state;
    create(f, NULL, NULL, NULL);
    chain c = {.f = f, .sent = 1};
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, on_chain, &c), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(c.done, 3);
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
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
    create(f, NULL, NULL, NULL);
    kx_http_receiver_fail_next(f->rx, 503, 1);
    drained = 0;
    kx_alert a = alert_at(T0), b = alert_at(T0 + 60000);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    kx_router_drain(f->router, on_drain, NULL);
    assert_int_equal(drained, 0);
    /* Without a spool directory, drain waits for every delivery, retries included. */
    assert_true(kx_test_run_until(f->loop, is_drained, NULL, 5000));
    assert_int_equal(drained, 1);
    assert_int_equal(kx_router_pending(f->router), 0);
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
}

static void test_destroy_cancels(void **state)
{
    fixture *f = *state;
    create(f, NULL, ", timeout: 30s", NULL);
    kx_http_receiver_hang_next(f->rx, 1);
    kx_alert a = alert_at(T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    /* Wait until the receiver holds the request, then shut down under it: no spool
     * directory keeps the alert, so the dead letters do. */
    assert_true(kx_test_run_until(f->loop, rx_got_one, f->rx, 5000));
    kx_router_destroy(f->router);
    f->router = NULL;
    assert_dead_letter(f, &a, "not delivered before shutdown, and no alerting.spool keeps it", 1, 0,
                       "cancelled");
}

int main(void)
{
    kx_log_set_level(KX_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_outage_then_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_error_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_408_and_429_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_honoured, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_for_then_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_attempt_at_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_circuit_breaker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hung_sink_delays_only_itself, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_sources, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_from_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_cancels, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
