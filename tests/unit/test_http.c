/*
 * http endpoint: real TCP requests to /metrics and /healthz served on a libev loop (the
 * client is a raw socket read without blocking while the loop runs MHD), exact bodies,
 * status codes, headers, several connections at once, and create errors.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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
#include <ev.h>

#include "klaxon/http.h"
#include "klaxon/metrics.h"
#include "kx_test.h"

typedef struct app {
    bool healthy;
    const char *reason;
    const char *detail; /* written when healthy too (the rules in force) */
    int extra_calls;
    int extra_rc;
} app;

static int render_extra(void *ud, kx_buf *out)
{
    app *a = ud;

    a->extra_calls++;
    if (a->extra_rc)
        return a->extra_rc;
    return kx_buf_puts(out, "# TYPE klaxon_rule_matches counter\n"
                            "klaxon_rule_matches{rule=\"ssh_brute\"} 7\n");
}

static bool health(void *ud, bool ready_only, kx_buf *reason)
{
    app *a = ud;

    (void)ready_only;
    if (!a->healthy)
        kx_buf_puts(reason, a->reason);
    if (a->detail)
        kx_buf_puts(reason, a->detail);
    return a->healthy;
}

typedef struct client {
    int fd;
    kx_buf resp;
    bool done;
} client;

static void client_send(client *c, int port, const char *method, const char *path)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    char req[512];
    int n;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c->fd >= 0);
    /* The kernel completes the handshake from the listen backlog: no loop needed yet. */
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    n = snprintf(req, sizeof(req),
                 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 "Content-Length: 0\r\n\r\n",
                 method, path);
    assert_int_equal(send(c->fd, req, (size_t)n, 0), n);
    kx_buf_init(&c->resp, 1 << 20);
    c->done = false;
}

/* Reads what is there without blocking; done at EOF (the server closes: Connection: close). */
static bool client_poll(client *c)
{
    char buf[4096];

    while (!c->done) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            assert_int_equal(kx_buf_append(&c->resp, buf, (size_t)n), 0);
        else if (n == 0)
            c->done = true;
        else
            break;
    }
    return c->done;
}

static bool client_done(void *ud)
{
    return client_poll(ud);
}

static void client_fini(client *c)
{
    close(c->fd);
    kx_buf_fini(&c->resp);
}

typedef struct response {
    int status;
    char headers[2048];
    char *body;
} response;

static void parse(client *c, response *r)
{
    const char *end;

    assert_non_null(c->resp.data);
    assert_int_equal(sscanf(c->resp.data, "HTTP/1.1 %d ", &r->status), 1);
    end = strstr(c->resp.data, "\r\n\r\n");
    assert_non_null(end);
    assert_true((size_t)(end - c->resp.data) < sizeof(r->headers));
    memcpy(r->headers, c->resp.data, (size_t)(end - c->resp.data));
    r->headers[end - c->resp.data] = '\0';
    r->body = strdup(end + 4);
}

static void get(struct ev_loop *loop, int port, const char *method, const char *path, response *r)
{
    client c;

    client_send(&c, port, method, path);
    assert_true(kx_test_run_until(loop, client_done, &c, 5000));
    parse(&c, r);
    client_fini(&c);
}

typedef struct fixture {
    struct ev_loop *loop;
    kx_http *http;
    app app;
    int port;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    kx_err err;

    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->app.healthy = true;
    kx_metrics_reset();
    assert_int_equal(
        kx_http_create(f->loop, "127.0.0.1", 0, render_extra, health, &f->app, &f->http, &err), 0);
    f->port = kx_http_port(f->http);
    assert_true(f->port > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    kx_http_destroy(f->http);
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(f->loop);
    free(f);
    return 0;
}

static void test_metrics(void **state)
{
    fixture *f = *state;
    response r;
    kx_buf want;

    kx_metric_add(KX_M_EVENTS_CONSUMED, 3);
    kx_metric_inc(KX_M_SOURCE_PAUSES);
    get(f->loop, f->port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "\r\nContent-Type: text/plain; version=0.0.4; "
                                      "charset=utf-8"));
    assert_non_null(strstr(r.body, "\nklaxon_events_consumed_total 3\n"));
    assert_non_null(strstr(r.body, "\nklaxon_source_pauses_total 1\n"));
    assert_non_null(strstr(r.body, "\nklaxon_offsets_stored_total 0\n"));
    /* The whole body: process counters, then the caller's extra text. */
    kx_buf_init(&want, 0);
    assert_int_equal(kx_metrics_render(&want), 0);
    assert_int_equal(kx_buf_puts(&want, "# TYPE klaxon_rule_matches counter\n"
                                        "klaxon_rule_matches{rule=\"ssh_brute\"} 7\n"),
                     0);
    assert_string_equal(r.body, want.data);
    assert_int_equal(f->app.extra_calls, 1);
    kx_buf_fini(&want);
    free(r.body);

    /* Counters are read at scrape time. */
    kx_metric_add(KX_M_EVENTS_CONSUMED, 2);
    get(f->loop, f->port, "GET", "/metrics", &r);
    assert_non_null(strstr(r.body, "\nklaxon_events_consumed_total 5\n"));
    free(r.body);

    f->app.extra_rc = -ENOMEM;
    get(f->loop, f->port, "GET", "/metrics", &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "metrics rendering failed\n");
    free(r.body);
}

/* Label values (per-rule lines' rule ids) are escaped as the exposition format says. */
static void test_label_escaping(void **state)
{
    (void)state;
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_metrics_put_label(&b, "5d2e7b91-0c3f"), 0);
    assert_string_equal(b.data, "5d2e7b91-0c3f");
    kx_buf_reset(&b);
    assert_int_equal(kx_metrics_put_label(&b, "a\"b\\c\nd\"\""), 0);
    assert_string_equal(b.data, "a\\\"b\\\\c\\nd\\\"\\\"");
    kx_buf_reset(&b);
    assert_int_equal(kx_metrics_put_label(&b, ""), 0);
    assert_int_equal(b.len, 0);
    kx_buf_fini(&b);
}

static void test_healthz(void **state)
{
    fixture *f = *state;
    response r;

    get(f->loop, f->port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    assert_non_null(strstr(r.headers, "\r\nContent-Type: text/plain; charset=utf-8"));
    free(r.body);

    f->app.healthy = false;
    f->app.reason = "state store down";
    get(f->loop, f->port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "state store down\n");
    free(r.body);

    f->app.reason = "";
    get(f->loop, f->port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "unhealthy\n");
    free(r.body);

    /* healthy with detail: "ok" first, then the detail */
    f->app.healthy = true;
    f->app.detail = "rules: 5 in force\n";
    get(f->loop, f->port, "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\nrules: 5 in force\n");
    free(r.body);
    f->app.detail = NULL;
}

static void test_other_paths_and_methods(void **state)
{
    fixture *f = *state;
    response r;

    get(f->loop, f->port, "GET", "/nope", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "not found\n");
    free(r.body);

    get(f->loop, f->port, "POST", "/metrics", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(r.body, "method not allowed\n");
    assert_non_null(strstr(r.headers, "\r\nAllow: GET, HEAD"));
    free(r.body);

    get(f->loop, f->port, "DELETE", "/healthz", &r);
    assert_int_equal(r.status, 405);
    free(r.body);

    get(f->loop, f->port, "GET", "/metrics/extra", &r);
    assert_int_equal(r.status, 404);
    free(r.body);
}

static bool all_done(void *ud)
{
    client *c = ud;
    bool done = true;

    for (int i = 0; i < 4; i++)
        done = client_poll(&c[i]) && done;
    return done;
}

/* Several connections open at once, all served by the one loop. */
static void test_concurrent(void **state)
{
    fixture *f = *state;
    client c[4];
    response r;

    for (int i = 0; i < 4; i++)
        client_send(&c[i], f->port, "GET", i % 2 ? "/healthz" : "/metrics");
    assert_true(kx_test_run_until(f->loop, all_done, c, 5000));
    for (int i = 0; i < 4; i++) {
        parse(&c[i], &r);
        assert_int_equal(r.status, 200);
        if (i % 2)
            assert_string_equal(r.body, "ok\n");
        else
            assert_non_null(strstr(r.body, "klaxon_events_consumed_total 0\n"));
        free(r.body);
        client_fini(&c[i]);
    }
    assert_int_equal(f->app.extra_calls, 2);
}

static void test_create_errors(void **state)
{
    fixture *f = *state;
    kx_http *h = (kx_http *)1;
    kx_err err;
    char want[256];

    assert_int_equal(kx_http_create(f->loop, "metrics.internal", 0, NULL, NULL, NULL, &h, &err),
                     -EINVAL);
    assert_null(h);
    assert_string_equal(err.msg, "http: \"metrics.internal\" is not an IP address");
    assert_int_equal(kx_http_create(f->loop, NULL, 70000, NULL, NULL, NULL, &h, &err), -EINVAL);
    assert_string_equal(err.msg, "http: port 70000 out of range");
    /* The port is taken by the fixture's endpoint. */
    assert_int_equal(kx_http_create(f->loop, "127.0.0.1", f->port, NULL, NULL, NULL, &h, &err),
                     -EADDRINUSE);
    assert_null(h);
    snprintf(want, sizeof(want), "http: cannot listen on 127.0.0.1 port %d: %s", f->port,
             strerror(EADDRINUSE));
    assert_string_equal(err.msg, want);
}

/* No callbacks: always healthy, only the process counters; IPv6 loopback. */
static void test_defaults_ipv6(void **state)
{
    fixture *f = *state;
    kx_http *h;
    kx_err err;
    response r;
    kx_buf want;

    assert_int_equal(kx_http_create(f->loop, NULL, 0, NULL, NULL, NULL, &h, &err), 0);
    get(f->loop, kx_http_port(h), "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    free(r.body);
    get(f->loop, kx_http_port(h), "GET", "/metrics", &r);
    kx_buf_init(&want, 0);
    kx_metrics_render(&want);
    assert_string_equal(r.body, want.data);
    kx_buf_fini(&want);
    free(r.body);
    kx_http_destroy(h);

    assert_int_equal(kx_http_create(f->loop, "localhost", 0, NULL, NULL, NULL, &h, &err), 0);
    get(f->loop, kx_http_port(h), "GET", "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    kx_http_destroy(h);

    for (int i = 0; i < 2; i++) {
        if (kx_http_create(f->loop, i ? "[::1]" : "::1", 0, NULL, NULL, NULL, &h, &err) == 0) {
            assert_true(kx_http_port(h) > 0);
            kx_http_destroy(h);
        } else {
            /* Only acceptable reason: no IPv6 in this environment. */
            assert_null(strstr(err.msg, "is not an IP address"));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test_setup_teardown(test_healthz, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_paths_and_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_ipv6, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
