/*
 * The PagerDuty and Slack sinks against a real HTTP server, their bodies checked field by
 * field: PagerDuty Events API v2 (trigger with every payload field, resolve with only
 * routing_key/event_action/dedup_key, the severity map, the 1024-byte summary, 400 not
 * retried, 429 retried) and a Slack incoming-webhook message (header, fields, evidence,
 * context, the fallback text; log content escaped so it can neither ping @channel nor leave
 * its code block). Also: the routing key and the Slack URL never appear in config errors.
 */
#include <errno.h>
#include <ev.h>
#include <jansson.h>
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
#include "smtp_receiver.h"
#include "kx_test.h"

#define T0 1774747800000LL
#define PD_KEY "R0UT1NGKEY0123456789abcdefABCDEF"

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
    f->dir = kx_test_tmpdir("services");
    assert_int_equal(kx_http_receiver_start(&f->rx), 0);
    kx_metrics_reset();
    setenv("KX_TEST_PD_KEY", PD_KEY, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kx_router_destroy(f->router);
    kx_yaml_free(f->doc);
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(f->loop);
    kx_http_receiver_stop(f->rx);
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    unsetenv("KX_TEST_PD_KEY");
    return 0;
}

/* One sink "s" of the given type at the receiver's /in, plus extra keys. */
static void create(fixture *f, const char *type, const char *extra)
{
    char url[128], yaml[2048];
    kx_http_receiver_url(f->rx, "/in", url, sizeof(url));
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dead_letter: \"%s/dead.jsonl\"\n"
             "  sinks:\n"
             "    s: {type: %s, url: \"%s\", backoff: 10ms%s}\n",
             f->dir, type, url, extra ? extra : "");
    kx_err err = {0};
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    int rc = kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml", NULL,
                              &f->router, &err);
    if (rc) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
}

static bool nothing_pending(void *ud)
{
    return kx_router_pending(ud) == 0;
}

static const kx_kv group[] = {{"src_ip", "203.0.113.7"}, {"user", "root"}};
static const char *const tags[] = {"attack.credential-access", "attack.t1110"};
static const char *ev1 = "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"Failed password for "
                         "root from 203.0.113.7\",\"fields\":{}}";
static const char *ev2 = "{\"time\":\"2026-03-29T01:34:10.250Z\",\"raw\":\"<!channel> ```x``` "
                         "&\",\"fields\":{}}";

static kx_alert alert_at(int64_t first_seen)
{
    static const char *evs[2];
    static size_t lens[2];
    evs[0] = ev1;
    evs[1] = ev2;
    lens[0] = strlen(ev1);
    lens[1] = strlen(ev2);
    kx_alert a = {
        .rule_id = "ssh-brute",
        .rule_title = "SSH brute force",
        .rule_level = "high",
        .team = "secops",
        .tenant = "acme",
        .category = "credential-access",
        .group = group,
        .ngroup = 2,
        .count = 12,
        .window_s = 300,
        .first_seen_ms = first_seen,
        .last_seen_ms = first_seen + 250250,
        .tags = tags,
        .ntags = 2,
        .events = evs,
        .events_len = lens,
        .nevents = 2,
    };
    return a;
}

static json_t *body_json(fixture *f, size_t i)
{
    size_t len = 0;
    char *b = kx_http_receiver_body(f->rx, i, &len);
    assert_non_null(b);
    json_error_t je;
    json_t *o = json_loadb(b, len, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        fail_msg("not JSON (%s): %s", je.text, b);
    free(b);
    return o;
}

static const char *s_of(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        fail_msg("%s is not a string", k);
    return json_string_value(v);
}

static void test_pagerduty_trigger(void **state)
{
    fixture *f = *state;
    create(f, "pagerduty", ", routing_key: \"${KX_TEST_PD_KEY}\", client_url: \"https://k/\"");
    kx_alert a = alert_at(T0);
    char key[33];
    kx_alert_dedup_key(&a, key, sizeof(key));
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 1);
    char *ct = kx_http_receiver_header(f->rx, 0, "Content-Type");
    assert_string_equal(ct, "application/json");
    free(ct);
    json_t *o = body_json(f, 0);
    /* Top level: exactly these keys. */
    assert_int_equal(json_object_size(o), 6);
    assert_string_equal(s_of(o, "routing_key"), PD_KEY);
    assert_string_equal(s_of(o, "event_action"), "trigger");
    assert_string_equal(s_of(o, "dedup_key"), key);
    assert_string_equal(s_of(o, "client"), "klaxon");
    assert_string_equal(s_of(o, "client_url"), "https://k/");
    json_t *p = json_object_get(o, "payload");
    assert_int_equal(json_object_size(p), 8);
    assert_string_equal(s_of(p, "summary"),
                        "SSH brute force: src_ip=203.0.113.7, user=root (12 events in 300s)");
    assert_string_equal(s_of(p, "source"), "203.0.113.7");
    assert_string_equal(s_of(p, "severity"), "error"); /* high */
    assert_string_equal(s_of(p, "timestamp"), "2026-03-29T01:34:10.250Z");
    assert_string_equal(s_of(p, "component"), "ssh-brute");
    assert_string_equal(s_of(p, "group"), "secops");
    assert_string_equal(s_of(p, "class"), "credential-access");
    json_t *d = json_object_get(p, "custom_details");
    assert_string_equal(s_of(d, "rule"), "SSH brute force");
    assert_string_equal(s_of(d, "rule_id"), "ssh-brute");
    assert_string_equal(s_of(d, "level"), "high");
    assert_string_equal(s_of(d, "team"), "secops");
    assert_string_equal(s_of(d, "tenant"), "acme");
    assert_string_equal(s_of(json_object_get(d, "group"), "user"), "root");
    assert_int_equal(json_integer_value(json_object_get(d, "count")), 12);
    assert_int_equal(json_integer_value(json_object_get(d, "window")), 300);
    assert_string_equal(s_of(d, "first_seen"), "2026-03-29T01:30:00.000Z");
    assert_string_equal(json_string_value(json_array_get(json_object_get(d, "tags"), 1)),
                        "attack.t1110");
    json_t *evd = json_object_get(d, "evidence");
    assert_int_equal(json_array_size(evd), 2);
    assert_string_equal(json_string_value(json_array_get(evd, 0)),
                        "Failed password for root from 203.0.113.7");
    json_decref(o);
}

static void test_pagerduty_resolve_severity_and_errors(void **state)
{
    fixture *f = *state;
    create(f, "pagerduty",
           ", routing_key: \"${KX_TEST_PD_KEY}\", severity: {high: critical, low: warning}");
    kx_alert a = alert_at(T0);
    a.status = "resolved";
    a.count = 0;
    char key[33];
    kx_alert_dedup_key(&a, key, sizeof(key));
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    kx_alert b = alert_at(T0 + 600000);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    /* In order (one attempt at a time): the resolve first. */
    json_t *o = body_json(f, 0);
    assert_int_equal(json_object_size(o), 3);
    assert_string_equal(s_of(o, "routing_key"), PD_KEY);
    assert_string_equal(s_of(o, "event_action"), "resolve");
    assert_string_equal(s_of(o, "dedup_key"), key);
    json_decref(o);
    o = body_json(f, 1);
    assert_string_equal(s_of(json_object_get(o, "payload"), "severity"), "critical");
    json_decref(o);

    /* 429 is retried, 400 (an invalid event) is not. */
    kx_http_receiver_fail_next(f->rx, 429, 1);
    kx_alert c = alert_at(T0 + 1200000);
    assert_int_equal(kx_router_send(f->router, &c, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 4);
    kx_http_receiver_fail_next(f->rx, 400, 5);
    kx_alert e = alert_at(T0 + 1800000);
    assert_int_equal(kx_router_send(f->router, &e, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 5);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
}

/* A trigger being retried keeps its place: the resolve behind it waits (ordered queue). */
static void test_pagerduty_resolve_never_overtakes(void **state)
{
    fixture *f = *state;
    create(f, "pagerduty", ", routing_key: \"${KX_TEST_PD_KEY}\"");
    kx_http_receiver_fail_next(f->rx, 503, 2);
    kx_alert a = alert_at(T0), r = alert_at(T0);
    r.status = "resolved";
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &r, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 4);
    const char *want[] = {"trigger", "trigger", "trigger", "resolve"};
    for (size_t i = 0; i < 4; i++) {
        json_t *o = body_json(f, i);
        assert_string_equal(s_of(o, "event_action"), want[i]);
        json_decref(o);
    }
}

static void test_slack_message(void **state)
{
    fixture *f = *state;
    create(f, "slack", NULL);
    kx_alert a = alert_at(T0);
    char key[33];
    kx_alert_dedup_key(&a, key, sizeof(key));
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    json_t *o = body_json(f, 0);
    assert_int_equal(json_object_size(o), 2);
    assert_string_equal(s_of(o, "text"),
                        "[error] SSH brute force \xe2\x80\x94 src_ip=203.0.113.7, user=root");
    json_t *blocks = json_object_get(o, "blocks");
    assert_int_equal(json_array_size(blocks), 4);
    json_t *h = json_array_get(blocks, 0);
    assert_string_equal(s_of(h, "type"), "header");
    assert_string_equal(s_of(json_object_get(h, "text"), "type"), "plain_text");
    assert_string_equal(s_of(json_object_get(h, "text"), "text"),
                        "\xf0\x9f\x9a\xa8 SSH brute force");
    json_t *sec = json_array_get(blocks, 1);
    assert_string_equal(s_of(sec, "type"), "section");
    json_t *fields = json_object_get(sec, "fields");
    const char *want[] = {"*Severity*\nerror",
                          "*Team*\nsecops",
                          "*Tenant*\nacme",
                          "*Count*\n12 events in 300s",
                          "*Group*\nsrc_ip=203.0.113.7, user=root",
                          "*First / last seen (UTC)*\n2026-03-29T01:30:00.000Z \xe2\x86\x92 "
                          "2026-03-29T01:34:10.250Z"};
    assert_int_equal(json_array_size(fields), 6);
    for (size_t i = 0; i < 6; i++) {
        json_t *fl = json_array_get(fields, i);
        assert_string_equal(s_of(fl, "type"), "mrkdwn");
        assert_string_equal(s_of(fl, "text"), want[i]);
    }
    /* Evidence: escaped, backticks replaced, so "<!channel>" pings nobody. */
    json_t *evs = json_array_get(blocks, 2);
    assert_string_equal(s_of(json_object_get(evs, "text"), "text"),
                        "```Failed password for root from 203.0.113.7\n"
                        "&lt;!channel&gt; '''x''' &amp;\n```");
    json_t *ctx = json_array_get(blocks, 3);
    assert_string_equal(s_of(ctx, "type"), "context");
    char c[128];
    snprintf(c, sizeof(c), "rule ssh-brute \xc2\xb7 dedup_key %s", key);
    assert_string_equal(s_of(json_array_get(json_object_get(ctx, "elements"), 0), "text"), c);
    json_decref(o);

    /* A resolve says so; a 404 (webhook revoked) is not retried. */
    kx_alert r = alert_at(T0);
    r.status = "resolved";
    assert_int_equal(kx_router_send(f->router, &r, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    o = body_json(f, 1);
    assert_string_equal(
        s_of(json_object_get(json_array_get(json_object_get(o, "blocks"), 0), "text"), "text"),
        "\xe2\x9c\x85 Resolved: SSH brute force");
    assert_int_equal(strncmp(s_of(o, "text"), "[resolved] ", 11), 0);
    json_decref(o);
    kx_http_receiver_fail_next(f->rx, 404, 3);
    kx_alert n = alert_at(T0 + 600000);
    assert_int_equal(kx_router_send(f->router, &n, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 3);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
}

/* The rule's runbook and references become PagerDuty links; the description, runbook and
 * local time reach Slack and PagerDuty's custom_details. */
static void test_rule_context(void **state)
{
    fixture *f = *state;
    char url[128], yaml[2048];
    kx_http_receiver_url(f->rx, "/in", url, sizeof(url));
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  sinks:\n"
             "    pd: {type: pagerduty, url: \"%s\", routing_key: k}\n"
             "    chat: {type: slack, url: \"%s\"}\n",
             url, url);
    kx_err err = {0};
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    assert_int_equal(kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml",
                                      NULL, &f->router, &err),
                     0);
    static const char *const refs[] = {"https://attack.mitre.org/techniques/T1110/", "a book"};
    kx_alert a = alert_at(T0);
    a.description = "Many <failed> logins.";
    a.runbook = "https://wiki.example/rb|x";
    a.references = refs;
    a.nreferences = 2;
    a.local_time = "2026-03-29T03:30:00+02:00";
    a.timezone = "Europe/Madrid";
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_http_receiver_count(f->rx), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *o = body_json(f, i);
        if (json_object_get(o, "routing_key")) {
            json_t *links = json_object_get(o, "links");
            assert_int_equal(json_array_size(links), 2);
            assert_string_equal(s_of(json_array_get(links, 0), "href"),
                                "https://wiki.example/rb|x");
            assert_string_equal(s_of(json_array_get(links, 0), "text"), "Runbook");
            assert_string_equal(s_of(json_array_get(links, 1), "href"),
                                "https://attack.mitre.org/techniques/T1110/");
            json_t *d = json_object_get(json_object_get(o, "payload"), "custom_details");
            assert_string_equal(s_of(d, "description"), "Many <failed> logins.");
            assert_string_equal(s_of(d, "local_time"), "2026-03-29T03:30:00+02:00");
        } else {
            json_t *blocks = json_object_get(o, "blocks");
            json_t *fields = json_object_get(json_array_get(blocks, 1), "fields");
            assert_int_equal(json_array_size(fields), 7);
            assert_string_equal(s_of(json_array_get(fields, 6), "text"),
                                "*Local time*\n2026-03-29T03:30:00+02:00 (Europe/Madrid)");
            /* description escaped; the runbook a link, cut before its "|" */
            assert_string_equal(s_of(json_object_get(json_array_get(blocks, 3), "text"), "text"),
                                "Many &lt;failed&gt; logins.\n<https://wiki.example/rb|Runbook>");
        }
        json_decref(o);
    }
}

static char *render_alert(const kx_alert *a)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(a, "secops", &b), 0);
    return b.data;
}

/* Decodes quoted-printable (soft breaks and =XX) in place. */
static void unqp(char *s)
{
    char *o = s;
    for (char *p = s; *p;) {
        if (p[0] == '=' && p[1] == '\r' && p[2] == '\n') {
            p += 3;
        } else if (p[0] == '=' && p[1] && p[2]) {
            char h[3] = {p[1], p[2], 0};
            *o++ = (char)strtol(h, NULL, 16);
            p += 3;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
}

/* Starts an SMTP receiver and the router with one email sink "mail" to it; keys: the sink's
 * other keys (to, digest...). */
static kx_smtp_receiver *create_mail(fixture *f, const char *keys)
{
    kx_smtp_receiver *smtp;
    assert_int_equal(kx_smtp_receiver_start(&smtp), 0);
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  dead_letter: \"%s/dead.jsonl\"\n"
             "  sinks:\n"
             "    mail: {type: email, url: \"smtp://127.0.0.1:%d\", from: klaxon@example.com,\n"
             "           backoff: 10ms, %s}\n",
             f->dir, kx_smtp_receiver_port(smtp), keys);
    kx_err err = {0};
    assert_int_equal(kx_yaml_load_mem("alert.yaml", yaml, strlen(yaml), &f->doc, &err), 0);
    if (kx_router_create(f->loop, kx_yaml_get(f->doc->root, "alerting"), "alert.yaml", NULL,
                         &f->router, &err)) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
    return smtp;
}

/* Mail: the envelope, the headers, a quoted-printable body with the fields, the evidence
 * and the alert record; a 550 for the recipient is a dead letter, not retried. */
static void test_email(void **state)
{
    fixture *f = *state;
    kx_smtp_receiver *smtp = create_mail(f, "to: [soc@example.com, oncall@example.com]");
    kx_alert a = alert_at(T0);
    a.rule_title = "SSH brute force \xc3\xa9";
    char key[33];
    kx_alert_dedup_key(&a, key, sizeof(key));
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(kx_smtp_receiver_count(smtp), 1);
    char *from = kx_smtp_receiver_from(smtp, 0), *rcpt = kx_smtp_receiver_rcpt(smtp, 0);
    assert_string_equal(from, "<klaxon@example.com>");
    assert_string_equal(rcpt, "<soc@example.com>,<oncall@example.com>");
    char *data = kx_smtp_receiver_data(smtp, 0);
    assert_non_null(strstr(data, "\r\nFrom: klaxon@example.com\r\n"));
    assert_non_null(strstr(data, "\r\nTo: soc@example.com, oncall@example.com\r\n"));
    assert_non_null(strstr(data, "\r\nSubject: [klaxon] [error] SSH brute force ?? - "
                                 "src_ip=203.0.113.7, user=root\r\n"));
    assert_non_null(strstr(data, "Content-Transfer-Encoding: quoted-printable\r\n"));
    char hdr[80];
    snprintf(hdr, sizeof(hdr), "\r\nX-Klaxon-Dedup-Key: %s\r\n", key);
    assert_non_null(strstr(data, hdr));
    /* Every line within SMTP's limit. */
    for (char *p = data, *nl; (nl = strstr(p, "\r\n")); p = nl + 2)
        assert_true(nl - p <= 76 || p < strstr(data, "\r\n\r\n"));
    char *body = strstr(data, "\r\n\r\n") + 4;
    unqp(body);
    assert_non_null(strstr(body, "SSH brute force \xc3\xa9\r\n"));
    assert_non_null(strstr(body, "Severity:   error\r\nTeam:       secops\r\n"));
    assert_non_null(strstr(body, "Group:      src_ip=203.0.113.7, user=root\r\n"));
    assert_non_null(strstr(body, "Count:      12 in 300s\r\n"));
    assert_non_null(strstr(body, "  Failed password for root from 203.0.113.7\r\n"));
    char *rec = render_alert(&a);
    assert_non_null(strstr(body, rec));
    free(rec);
    free(from);
    free(rcpt);
    free(data);
    /* No such mailbox: dead-lettered at once. */
    kx_smtp_receiver_refuse_next(smtp, 550, 10);
    kx_alert b = alert_at(T0 + 600000);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(kx_smtp_receiver_count(smtp), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 0);
    kx_router_destroy(f->router);
    f->router = NULL;
    kx_smtp_receiver_stop(smtp);
}

static bool drained(void *ud)
{
    return *(bool *)ud;
}

static void on_drained(void *ud)
{
    *(bool *)ud = true;
}

/* `digest`: the alerts of a period in one mail; digest_max sends sooner; a refused digest is
 * retried alert by alert and they meet again in a later one; shutdown sends what waits. */
static void test_email_digest(void **state)
{
    fixture *f = *state;
    kx_smtp_receiver *smtp = create_mail(f, "to: soc@example.com, digest: 1s, digest_max: 3, "
                                            "breaker_failures: 2");
    /* Two alerts within the period: one mail, about a second after the first. */
    kx_alert a = alert_at(T0), b = alert_at(T0 + 600000);
    b.rule_level = "critical";
    int64_t t = kx_mono_ms();
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    int64_t took = kx_mono_ms() - t;
    assert_true(took >= 900 && took < 5000);
    assert_int_equal(kx_smtp_receiver_count(smtp), 1);
    char *data = kx_smtp_receiver_data(smtp, 0);
    assert_non_null(strstr(data, "\r\nSubject: [klaxon] [digest] digest: 2 alert(s), the most "
                                 "severe critical\r\n"));
    assert_non_null(strstr(data, "\r\nX-Klaxon-Alerts: 2\r\n"));
    for (char *p = data, *nl; (nl = strstr(p, "\r\n")); p = nl + 2)
        assert_true(nl - p <= 76 || p < strstr(data, "\r\n\r\n"));
    char *body = strstr(data, "\r\n\r\n") + 4;
    unqp(body);
    assert_non_null(strstr(body, "2 alert(s) in this digest, the most severe critical.\r\n\r\n"
                                 " 1. [error] SSH brute force - src_ip=203.0.113.7, user=root "
                                 "(2026-03-29T01:34:10.250Z)\r\n"
                                 " 2. [critical] SSH brute force - src_ip=203.0.113.7, user=root "
                                 "(2026-03-29T01:44:10.250Z)\r\n"));
    assert_non_null(strstr(body, "\r\n---- 2 ----\r\nSSH brute force\r\n\r\nSeverity:   "
                                 "critical\r\n"));
    char *ra = render_alert(&a), *rb = render_alert(&b);
    char *recs = strstr(body, "Alert records (docs/alerts.md), one per line:\r\n");
    assert_non_null(recs);
    assert_non_null(strstr(recs, ra));
    assert_non_null(strstr(recs, rb));
    free(ra);
    free(rb);
    free(data);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 2);
    /* digest_max (3) waiting: sent at once. */
    t = kx_mono_ms();
    for (int i = 0; i < 3; i++) {
        kx_alert c = alert_at(T0 + (2 + i) * 600000);
        assert_int_equal(kx_router_send(f->router, &c, NULL, NULL), 0);
    }
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_true(kx_mono_ms() - t < 900);
    assert_int_equal(kx_smtp_receiver_count(smtp), 2);
    data = kx_smtp_receiver_data(smtp, 1);
    assert_non_null(strstr(data, "\r\nX-Klaxon-Alerts: 3\r\n"));
    free(data);
    /* Refused for now (450): each alert is retried, and they go out together again. */
    kx_smtp_receiver_refuse_next(smtp, 450, 1);
    for (int i = 0; i < 2; i++) {
        kx_alert c = alert_at(T0 + (10 + i) * 600000);
        assert_int_equal(kx_router_send(f->router, &c, NULL, NULL), 0);
    }
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(kx_smtp_receiver_count(smtp), 3);
    data = kx_smtp_receiver_data(smtp, 2);
    assert_non_null(strstr(data, "\r\nX-Klaxon-Alerts: 2\r\n"));
    free(data);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 2);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 7);
    /* Refused for good (554): not dead letters, each retried; the circuit (2 failures) hears
     * one failed mail, not three, and stays closed. */
    kx_smtp_receiver_refuse_next(smtp, 554, 1);
    for (int i = 0; i < 3; i++) {
        kx_alert c = alert_at(T0 + (12 + i) * 600000);
        assert_int_equal(kx_router_send(f->router, &c, NULL, NULL), 0);
    }
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(kx_smtp_receiver_count(smtp), 4);
    data = kx_smtp_receiver_data(smtp, 3);
    assert_non_null(strstr(data, "\r\nX-Klaxon-Alerts: 3\r\n"));
    free(data);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
    assert_int_equal(kx_metric_get(KX_M_ALERT_RETRIES), 5);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 10);
    kx_buf mb;
    kx_buf_init(&mb, 0);
    assert_int_equal(kx_router_render_metrics(f->router, &mb), 0);
    assert_non_null(strstr(mb.data, "klaxon_sink_circuit_open{sink=\"mail\",type=\"email\"} 0\n"));
    kx_buf_fini(&mb);
    /* Shutdown does not wait for the period: what waits goes now. */
    kx_alert d = alert_at(T0 + 20 * 600000);
    assert_int_equal(kx_router_send(f->router, &d, NULL, NULL), 0);
    bool done = false;
    t = kx_mono_ms();
    kx_router_drain(f->router, on_drained, &done);
    assert_true(kx_test_run_until(f->loop, drained, &done, 10000));
    assert_true(kx_mono_ms() - t < 900);
    assert_int_equal(kx_smtp_receiver_count(smtp), 5);
    kx_router_destroy(f->router);
    f->router = NULL;
    kx_smtp_receiver_stop(smtp);
}

/* Long texts are cut on a UTF-8 boundary within the services' limits. */
static void test_limits(void **state)
{
    fixture *f = *state;
    create(f, "pagerduty", ", routing_key: \"${KX_TEST_PD_KEY}\"");
    char title[3000];
    size_t n = 0;
    while (n + 2 < sizeof(title) - 1) {
        memcpy(title + n, "\xc3\xa9", 2); /* é: two bytes */
        n += 2;
    }
    title[n] = '\0';
    kx_alert a = alert_at(T0);
    a.rule_title = title;
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    json_t *o = body_json(f, 0); /* parses: valid UTF-8 */
    const char *sum = s_of(json_object_get(o, "payload"), "summary");
    assert_true(strlen(sum) <= 1024);
    assert_true(strlen(sum) >= 1020);
    assert_string_equal(sum + strlen(sum) - 3, "\xe2\x80\xa6");
    json_decref(o);
}

static void test_config_errors_hide_secrets(void **state)
{
    fixture *f = *state;
    (void)f;
    const struct {
        const char *cfg, *msg;
    } bad[] = {
        {"    pd: {type: pagerduty}\n",
         "alert.yaml:3:9: missing \"routing_key\" (or \"routing_key_file\")"},
        {"    pd: {type: pagerduty, routing_key: \"\"}\n",
         "alert.yaml:3:9: sink \"pd\": the routing key is empty"},
        {"    pd: {type: pagerduty, routing_key: k, severity: {high: urgent}}\n",
         "alert.yaml:3:60: severity: expected critical, error, warning or info"},
        {"    pd: {type: pagerduty, routing_key: k, severity: {severe: error}}\n",
         "alert.yaml:3:54: severity: unknown level (expected critical, high, medium, low or "
         "informational)"},
        {"    chat: {type: slack, url: \"gopher://hooks/T0/B0/SeCrEt\"}\n",
         "alert.yaml:3:30: url must start with http:// or https://"},
        {"    chat: {type: slack}\n",
         "alert.yaml:3:11: sink \"chat\": missing \"url\" (or \"url_file\")"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char y[1024];
        snprintf(y, sizeof(y), "alerting:\n  sinks:\n%s", bad[i].cfg);
        kx_yaml_doc *doc = NULL;
        kx_router *r = NULL;
        kx_err err = {0};
        assert_int_equal(kx_yaml_load_mem("alert.yaml", y, strlen(y), &doc, &err), 0);
        assert_true(kx_router_create(f->loop, kx_yaml_get(doc->root, "alerting"), "alert.yaml",
                                     NULL, &r, &err) < 0);
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        assert_string_equal(m, bad[i].msg);
        assert_null(strstr(m, "SeCrEt"));
        kx_yaml_free(doc);
    }
}

int main(void)
{
    kx_log_set_level(KX_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pagerduty_trigger, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pagerduty_resolve_severity_and_errors, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pagerduty_resolve_never_overtakes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slack_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rule_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email, setup, teardown),
        cmocka_unit_test_setup_teardown(test_email_digest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_errors_hide_secrets, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
