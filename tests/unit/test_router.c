/*
 * The router: `alerting:` config errors (exact file:line:col), routing by team to the
 * right sinks, the default route, dedup (and its bounded cache), the stdout and file sinks'
 * exact output, dead-lettering of a failed delivery, and the kafka sink against an
 * in-process mock cluster and against kx-broker (the alert is consumed back and compared
 * byte for byte).
 */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../../src/alert/alert_int.h"
#include "klaxon/alert.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"
#include "broker.h"
#include "kx_test.h"

#define T0 1774747800000LL

typedef struct fixture {
    struct ev_loop *loop;
    char *dir;
    kx_yaml_doc *doc;
    kx_router *router;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->loop = ev_loop_new(EVFLAG_AUTO);
    f->dir = kx_test_tmpdir("router");
    assert_non_null(f->dir);
    kx_metrics_reset();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    kx_router_destroy(f->router);
    kx_yaml_free(f->doc);
    /* The loop must be empty: no sink left a watcher behind. */
    assert_int_equal(ev_run(f->loop, EVRUN_NOWAIT), 0);
    ev_loop_destroy(f->loop);
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Replaces every "@DIR@" in text with the fixture's temp dir. */
static char *subst_dir(const fixture *f, const char *text)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    const char *p = text, *q;
    while ((q = strstr(p, "@DIR@"))) {
        kx_buf_append(&b, p, (size_t)(q - p));
        kx_buf_puts(&b, f->dir);
        p = q + 5;
    }
    kx_buf_puts(&b, p);
    return b.data;
}

/* Loads yaml (a document with a top-level `alerting:`) and creates the router from it. */
static int create(fixture *f, const char *yaml, kx_err *err)
{
    char *text = subst_dir(f, yaml);
    kx_err lerr;
    assert_int_equal(kx_yaml_load_mem("alert.yaml", text, strlen(text), &f->doc, &lerr), 0);
    free(text);
    const kx_yaml_node *cfg = kx_yaml_get(f->doc->root, "alerting");
    return kx_router_create(f->loop, cfg, "alert.yaml", NULL, &f->router, err);
}

static void expect_error(const char *yaml, const char *msg)
{
    fixture *f = NULL;
    setup((void **)&f);
    kx_err err;
    memset(&err, 0, sizeof(err));
    assert_int_equal(create(f, yaml, &err), -EINVAL);
    assert_null(f->router);
    char out[1024];
    kx_err_format(&err, out, sizeof(out));
    char *expect = subst_dir(f, msg);
    assert_string_equal(out, expect);
    free(expect);
    teardown((void **)&f);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_error("alerting:\n"
                 "  evidence: 5\n"
                 "  evidnce: 5\n",
                 "alert.yaml:3:3: unknown key \"evidnce\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - team: secops\n"
                 "      sinks: [console, pagr]\n"
                 "    - team: default\n"
                 "      sinks: [console]\n",
                 "alert.yaml:6:24: unknown sink \"pagr\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - team: secops\n"
                 "      sinks: [console]\n",
                 "alert.yaml:5:5: routes: a default route is required (`- default: true` or "
                 "`- team: default`): alerts no other route takes go there");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - match: {sevrity: high}\n"
                 "      sinks: [console]\n",
                 "alert.yaml:5:15: match: unknown field \"sevrity\" (expected team, severity, "
                 "level, tenant, category, rule, status or tags)");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - default: true\n"
                 "      sinks: [console]\n"
                 "    - default: true\n"
                 "      sinks: [console]\n",
                 "alert.yaml:7:7: routes: only one default route");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - sinks: [console]\n",
                 "alert.yaml:5:7: route: give match (or team), or make it the default route");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - match: {team: x}\n"
                 "      when: {timezone: Mars/Olympus}\n"
                 "      sinks: [console]\n"
                 "    - default: true\n"
                 "      sinks: [console]\n",
                 "alert.yaml:6:24: unknown time zone \"Mars/Olympus\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdoot}\n",
                 "alert.yaml:3:21: unknown sink type \"stdoot\" (expected stdout, file, "
                 "webhook, pagerduty, slack, email or kafka)");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {path: /tmp/x}\n",
                 "alert.yaml:3:14: sink \"console\": missing \"type\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    pager:\n"
                 "      type: webhook\n"
                 "      url: http://127.0.0.1:1/hook\n"
                 "      retrys: 3\n",
                 "alert.yaml:6:7: unknown key \"retrys\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    pager: {type: webhook, url: \"ftp://127.0.0.1/x\"}\n",
                 "alert.yaml:3:33: url must start with http:// or https://");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    audit: {type: file}\n",
                 "alert.yaml:3:12: sink \"audit\": missing \"path\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - team: default\n"
                 "      sinks: [console]\n"
                 "    - team: default\n"
                 "      sinks: [console]\n",
                 "alert.yaml:7:13: duplicate route for team \"default\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    console: {type: stdout}\n"
                 "  routes:\n"
                 "    - team: default\n"
                 "      sinks: [console]\n"
                 "      severity: high\n",
                 "alert.yaml:7:7: unknown key \"severity\"");
    expect_error(
        "alerting:\n"
        "  dedup_window: soon\n",
        "alert.yaml:2:17: expected a duration like 30s, 5m, 2h, 1d or 500ms, got \"soon\"");
    expect_error("alerting:\n"
                 "  sinks:\n"
                 "    audit: {type: file, path: \"@DIR@/no/such/dir/a.jsonl\"}\n",
                 "alert.yaml:3:31: sink \"audit\": cannot open \"@DIR@/no/such/dir/a.jsonl\": "
                 "No such file or directory");
}

static const kx_kv group[] = {{"user", "root"}, {"src_ip", "10.0.0.5"}};
static const char *const tags[] = {"attack.credential_access"};

static kx_alert alert_for(const char *team, int64_t first_seen)
{
    kx_alert a = {
        .rule_id = "ssh-brute",
        .rule_title = "SSH brute force",
        .rule_level = "high",
        .team = team,
        .tenant = "acme",
        .group = group,
        .ngroup = 2,
        .count = 5,
        .window_s = 60,
        .first_seen_ms = first_seen,
        .last_seen_ms = first_seen + 1500,
        .tags = tags,
        .ntags = 1,
    };
    return a;
}

/* The JSON line the router writes for alert a routed under team name. */
static char *line_for(const kx_alert *a, const char *team)
{
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(a, team, &b), 0);
    kx_buf_putc(&b, '\n');
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

static char *read_in(const fixture *f, const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    char *s = kx_test_read_file(path, NULL);
    return s ? s : strdup("<missing>");
}

static void assert_file(const fixture *f, const char *name, const char *expect)
{
    char *got = read_in(f, name);
    assert_string_equal(got, expect);
    free(got);
}

static const char routed_yaml[] = "alerting:\n"
                                  "  evidence: 3\n"
                                  "  sinks:\n"
                                  "    a: {type: file, path: \"@DIR@/a.jsonl\"}\n"
                                  "    b: {type: file, path: \"@DIR@/b.jsonl\"}\n"
                                  "    c: {type: file, path: \"@DIR@/c.jsonl\"}\n"
                                  "  routes:\n"
                                  "    - team: secops\n"
                                  "      sinks: [a, b]\n"
                                  "    - team: default\n"
                                  "      sinks: [c]\n";

static bool nothing_pending(void *ud);

/* The lines of a file in the fixture's dir; *out (may be NULL) keeps them until next call. */
static size_t lines_of(const fixture *f, const char *name, char ***out)
{
    static char *data;
    static char *lines[64];
    free(data);
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    data = kx_test_read_file(path, NULL);
    size_t n = 0;
    for (char *p = data, *nl; p && *p && n < 64; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = '\0';
        lines[n++] = p;
    }
    if (out)
        *out = lines;
    return n;
}

static bool muted_summary(void *ud)
{
    return lines_of(ud, "pager.jsonl", NULL) >= 5;
}

static void test_routing(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(create(f, routed_yaml, &err), 0);
    assert_int_equal(kx_router_max_evidence(f->router), 3);

    done_rec d1 = {0}, d2 = {0}, d3 = {0};
    kx_alert s = alert_for("secops", T0);
    kx_alert n = alert_for(NULL, T0 + 60000);
    kx_alert o = alert_for("netops", T0 + 120000);
    /* Without a spool directory done runs when send returns; file lines are written at once
     * and acknowledged after the loop's group fdatasync. */
    assert_int_equal(kx_router_send(f->router, &s, on_done, &d1), 0);
    assert_int_equal(d1.calls, 1);
    assert_int_equal(d1.status, 0);
    assert_int_equal(kx_router_send(f->router, &n, on_done, &d2), 0);
    assert_int_equal(kx_router_send(f->router, &o, on_done, &d3), 0);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d3.calls, 1);
    assert_int_equal(d3.status, 0);
    assert_int_equal(kx_router_pending(f->router), 3);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));

    char *ls = line_for(&s, "secops");
    char *ln = line_for(&n, "default");
    char *lo = line_for(&o, "netops"); /* no route: default sinks, own team name */
    assert_non_null(strstr(ls, "\"team\":\"secops\""));
    assert_non_null(strstr(lo, "\"team\":\"netops\""));
    assert_file(f, "a.jsonl", ls);
    assert_file(f, "b.jsonl", ls);
    char *both = malloc(strlen(ln) + strlen(lo) + 1);
    strcpy(both, ln);
    strcat(both, lo);
    assert_file(f, "c.jsonl", both);
    free(both);
    free(ls);
    free(ln);
    free(lo);

    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 3);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 4);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 0);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DEDUPED), 0);
}

/* The ordered table: match on severity, team (glob), tags, tenant, status and rule;
 * continue; time windows; the default route; each sink once. */
static void test_routing_table(void **state)
{
    fixture *f = *state;
    kx_err err;
    int rc = create(f,
                    "alerting:\n"
                    "  sinks:\n"
                    "    a: {type: file, path: \"@DIR@/a.jsonl\"}\n"
                    "    b: {type: file, path: \"@DIR@/b.jsonl\"}\n"
                    "    c: {type: file, path: \"@DIR@/c.jsonl\"}\n"
                    "    d: {type: file, path: \"@DIR@/d.jsonl\"}\n"
                    "  routes:\n"
                    "    - match: {severity: [critical, error]}\n"
                    "      sinks: [a]\n"
                    "      continue: true\n"
                    "    - match: {team: \"sec*\", tags: \"attack.cred*\"}\n"
                    "      sinks: [b, a]\n"
                    "    - match: {tenant: acme, status: resolved}\n"
                    "      sinks: [c]\n"
                    "    - match: {rule: \"never-*\"}\n"
                    "      when: {timezone: UTC}\n"
                    "      sinks: [c]\n"
                    "    - match: {level: low}\n"
                    "      when_not: {timezone: UTC}\n"
                    "      sinks: [c]\n"
                    "    - default: true\n"
                    "      sinks: [d]\n",
                    &err);
    assert_int_equal(rc, 0);
    kx_alert hi = alert_for("secops", T0);          /* high: error; secops; cred tag */
    kx_alert med = alert_for("secops", T0 + 60000); /* medium: only the team route */
    med.rule_level = "medium";
    kx_alert res = alert_for("netops", T0 + 120000); /* medium, resolved, tenant acme */
    res.rule_level = "medium";
    res.status = "resolved";
    kx_alert never = alert_for("netops", T0 + 180000);
    never.rule_level = "medium";
    never.rule_id = "never-fires";
    kx_alert low = alert_for("netops", T0 + 240000); /* low: when_not is never: default */
    low.rule_level = "low";
    kx_alert *all[] = {&hi, &med, &res, &never, &low};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(kx_router_send(f->router, all[i], NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    char *lhi = line_for(&hi, "secops"), *lmed = line_for(&med, "secops");
    char *lres = line_for(&res, "netops"), *lnev = line_for(&never, "netops");
    char *llow = line_for(&low, "netops");
    kx_buf b;
    kx_buf_init(&b, 0);
    kx_buf_puts(&b, lhi); /* a: hi (once, though two routes name it), med */
    kx_buf_puts(&b, lmed);
    assert_file(f, "a.jsonl", b.data);
    assert_file(f, "b.jsonl", b.data); /* b: the team route took both */
    kx_buf_reset(&b);
    kx_buf_puts(&b, lres);
    kx_buf_puts(&b, lnev);
    assert_file(f, "c.jsonl", b.data);
    assert_file(f, "d.jsonl", llow);
    kx_buf_fini(&b);
    free(lhi);
    free(lmed);
    free(lres);
    free(lnev);
    free(llow);
}

/* A flood: 10 alerts of one rule on a route allowing 3 per window give 3 alerts and a
 * notice; 7 are muted and counted; once a window passes quietly, a summary says how many.
 * Another route without a valve gets all 10. */
static void test_flood_valve(void **state)
{
    fixture *f = *state;
    kx_err err;
    int rc = create(f,
                    "alerting:\n"
                    "  flood: {max: 3, per: 1s}\n"
                    "  sinks:\n"
                    "    pager: {type: file, path: \"@DIR@/pager.jsonl\"}\n"
                    "    audit: {type: file, path: \"@DIR@/audit.jsonl\"}\n"
                    "  routes:\n"
                    "    - match: {team: secops}\n"
                    "      sinks: [pager]\n"
                    "      continue: true\n"
                    "    - match: {team: secops}\n"
                    "      flood: off\n"
                    "      sinks: [audit]\n"
                    "    - default: true\n"
                    "      sinks: [audit]\n",
                    &err);
    if (rc) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
    for (int i = 0; i < 10; i++) {
        kx_alert a = alert_for("secops", T0 + i * 60000LL);
        assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    }
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_metric_get(KX_M_ALERTS_MUTED), 7);
    char **pl = NULL;
    size_t np = lines_of(f, "pager.jsonl", &pl);
    assert_int_equal(np, 4);
    kx_alert a2 = alert_for("secops", T0 + 2 * 60000LL);
    char *l2 = line_for(&a2, "secops");
    l2[strlen(l2) - 1] = '\0';
    assert_string_equal(pl[2], l2); /* the third alert went out as it is */
    free(l2);
    assert_non_null(strstr(pl[3], "\"title\":\"Flood: \\\"SSH brute force\\\" alerts are muted "
                                  "until it calms down\""));
    assert_non_null(strstr(pl[3], "\"group\":{\"klaxon.flood\":\"started\",\"muted\":\"1\"}"));
    assert_non_null(strstr(pl[3], "\"category\":\"flood\""));
    assert_int_equal(lines_of(f, "audit.jsonl", NULL), 10); /* flood: off */
    /* Quiet for a window: the summary. */
    assert_true(kx_test_run_until(f->loop, muted_summary, f, 5000));
    np = lines_of(f, "pager.jsonl", &pl);
    assert_int_equal(np, 5);
    assert_non_null(strstr(pl[4], "\"title\":\"Flood over: 7 alerts of \\\"SSH brute force\\\" "
                                  "were muted\""));
    assert_non_null(strstr(pl[4], "\"group\":{\"klaxon.flood\":\"ended\",\"muted\":\"7\"}"));
    assert_non_null(strstr(pl[4], "\"count\":7"));
    /* Open again: the next alert goes out. */
    kx_alert b = alert_for("secops", T0 + 100 * 60000LL);
    assert_int_equal(kx_router_send(f->router, &b, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(lines_of(f, "pager.jsonl", NULL), 6);
}

/* A backfill alert (old events, catching up) is not paged: sinks that do not take backfill
 * skip it, counted; the others (files, Kafka by default) still get it. */
static void test_backfill_not_paged(void **state)
{
    fixture *f = *state;
    kx_err err;
    int rc = create(f,
                    "alerting:\n"
                    "  backfill_after: 30m\n"
                    "  sinks:\n"
                    "    audit: {type: file, path: \"@DIR@/audit.jsonl\"}\n"
                    "    pager: {type: file, path: \"@DIR@/pager.jsonl\", backfill: false}\n",
                    &err);
    assert_int_equal(rc, 0);
    assert_int_equal(kx_router_backfill_after_ms(f->router), 1800000);
    kx_alert old = alert_for("secops", T0), fresh = alert_for("secops", T0 + 60000);
    old.backfill = true;
    assert_int_equal(kx_router_send(f->router, &old, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &fresh, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(lines_of(f, "audit.jsonl", NULL), 2);
    char **pl = NULL;
    assert_int_equal(lines_of(f, "pager.jsonl", &pl), 1);
    assert_null(strstr(pl[0], "backfill"));
    assert_int_equal(kx_metric_get(KX_M_ALERTS_BACKFILL_HELD), 1);
    char **al = NULL;
    lines_of(f, "audit.jsonl", &al);
    assert_non_null(strstr(al[0], "\"status\":\"firing\",\"backfill\":true,"));
}

static void test_no_routes_all_sinks(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(create(f,
                            "alerting:\n"
                            "  sinks:\n"
                            "    a: {type: file, path: \"@DIR@/a.jsonl\"}\n"
                            "    b: {type: file, path: \"@DIR@/b.jsonl\"}\n",
                            &err),
                     0);
    assert_int_equal(kx_router_max_evidence(f->router), 5);
    kx_alert a = alert_for("secops", T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    char *l = line_for(&a, "secops");
    assert_file(f, "a.jsonl", l);
    assert_file(f, "b.jsonl", l);
    free(l);
}

static bool idle(void *ud)
{
    return kx_router_pending(ud) == 0;
}

/* Per-team counters: raised per team, delivered per team and sink; past 64 teams, "other". */
static void test_team_metrics(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(create(f,
                            "alerting:\n"
                            "  sinks:\n"
                            "    a: {type: file, path: \"@DIR@/a.jsonl\"}\n"
                            "    b: {type: file, path: \"@DIR@/b.jsonl\"}\n"
                            "  routes:\n"
                            "    - {team: secops, sinks: [a, b]}\n"
                            "    - {default: true, sinks: [a]}\n",
                            &err),
                     0);
    char team[16];
    for (int i = 0; i < 70; i++) {
        snprintf(team, sizeof(team), "t%02d", i);
        kx_alert a = alert_for(i ? team : "secops", T0 + i * 60000);
        assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    }
    assert_true(kx_test_run_until(f->loop, idle, f->router, 5000));
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_router_render_metrics(f->router, &b), 0);
    assert_non_null(strstr(b.data, "\nklaxon_team_alerts_raised_total{team=\"secops\"} 1\n"));
    assert_non_null(strstr(b.data, "\nklaxon_team_alerts_raised_total{team=\"t63\"} 1\n"));
    assert_null(strstr(b.data, "team=\"t64\""));
    /* secops and t01..t63 have names; t64..t69 are "other". */
    assert_non_null(strstr(b.data, "\nklaxon_team_alerts_raised_total{team=\"other\"} 6\n"));
    assert_non_null(
        strstr(b.data, "\nklaxon_team_delivered_total{team=\"secops\",sink=\"a\"} 1\n"));
    assert_non_null(
        strstr(b.data, "\nklaxon_team_delivered_total{team=\"secops\",sink=\"b\"} 1\n"));
    assert_non_null(strstr(b.data, "\nklaxon_team_delivered_total{team=\"t05\",sink=\"a\"} 1\n"));
    assert_null(strstr(b.data, "klaxon_team_delivered_total{team=\"t05\",sink=\"b\"}"));
    assert_non_null(strstr(b.data, "\nklaxon_team_delivered_total{team=\"other\",sink=\"a\"} 6\n"));
    kx_buf_fini(&b);
}

static void test_dedup(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(create(f, routed_yaml, &err), 0);
    done_rec d1 = {0}, d2 = {0};
    kx_alert a = alert_for(NULL, T0);
    kx_alert again = a;
    again.count = 9; /* same rule, group and window start: same dedup_key */
    again.last_seen_ms += 5000;
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d1), 0);
    assert_int_equal(kx_router_send(f->router, &again, on_done, &d2), 0);
    assert_int_equal(d1.calls, 1);
    assert_int_equal(d2.calls, 1);
    assert_int_equal(d2.status, 0);
    char *l = line_for(&a, "default");
    assert_file(f, "c.jsonl", l);
    free(l);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 2);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DEDUPED), 1);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);

    /* Another window start is another alert. */
    kx_alert next = alert_for(NULL, T0 + 60000);
    assert_int_equal(kx_router_send(f->router, &next, NULL, NULL), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 2);
    assert_int_equal(kx__router_dedup_size(f->router), 2);
}

static void test_dedup_disabled(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(create(f,
                            "alerting:\n"
                            "  dedup_window: 0\n"
                            "  sinks:\n"
                            "    a: {type: file, path: \"@DIR@/a.jsonl\"}\n",
                            &err),
                     0);
    kx_alert a = alert_for(NULL, T0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &a, NULL, NULL), 0);
    char *l = line_for(&a, "default");
    char *two = malloc(2 * strlen(l) + 1);
    strcpy(two, l);
    strcat(two, l);
    assert_file(f, "a.jsonl", two);
    free(two);
    free(l);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DEDUPED), 0);
}

static void test_dedup_bounded(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(create(f,
                            "alerting:\n"
                            "  dedup_capacity: 2\n"
                            "  sinks:\n"
                            "    a: {type: file, path: \"@DIR@/a.jsonl\"}\n",
                            &err),
                     0);
    kx_alert a1 = alert_for(NULL, T0), a2 = alert_for(NULL, T0 + 1), a3 = alert_for(NULL, T0 + 2);
    assert_int_equal(kx_router_send(f->router, &a1, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &a2, NULL, NULL), 0);
    assert_int_equal(kx_router_send(f->router, &a2, NULL, NULL), 0); /* deduped */
    assert_int_equal(kx__router_dedup_evictions(f->router), 0);
    assert_int_equal(kx_router_send(f->router, &a3, NULL, NULL), 0); /* evicts a1 */
    assert_int_equal(kx__router_dedup_evictions(f->router), 1);
    assert_int_equal(kx__router_dedup_size(f->router), 2);
    assert_int_equal(kx_router_send(f->router, &a3, NULL, NULL), 0); /* deduped */
    assert_int_equal(kx_router_send(f->router, &a1, NULL, NULL), 0); /* forgotten: sent */
    assert_int_equal(kx__router_dedup_evictions(f->router), 2);
    assert_int_equal(kx__router_dedup_size(f->router), 2);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_RAISED), 6);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DEDUPED), 2);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 4);
}

static void test_dedup_cache_churn(void **state)
{
    (void)state;
    /* Many keys through a small table: every key just inserted is found, every evicted one
     * is not (backward-shift deletion keeps probe chains intact). */
    kx__dedup d;
    assert_int_equal(kx__dedup_init(&d, 64), 0);
#define H1(i) (((uint64_t)(i)*0x9e3779b97f4a7c15ULL) & 0xff) /* force collisions */
    for (uint64_t i = 0; i < 10000; i++) {
        assert_false(kx__dedup_check(&d, H1(i), i, 0, 1000));
        /* A key that is present is reported and not touched, so these checks are pure. */
        assert_true(kx__dedup_check(&d, H1(i), i, 1, 1000));
        if (i % 997 == 0 && i >= 64)
            for (uint64_t k = i - 63; k <= i; k++)
                assert_true(kx__dedup_check(&d, H1(k), k, 1, 1000));
        assert_int_equal(d.count, i < 64 ? i + 1 : 64);
    }
    assert_int_equal(d.evictions, 10000 - 64);
    for (uint64_t k = 10000 - 64; k < 10000; k++)
        assert_true(kx__dedup_check(&d, H1(k), k, 1, 1000));
    /* The newest evicted key is gone (checking it inserts it again). */
    assert_false(kx__dedup_check(&d, H1(10000 - 65), 10000 - 65, 1, 1000));
#undef H1
    /* Expiry: seen at 0, window 1000 -> again at 999 is a duplicate, at 1000 it is not. */
    kx__dedup_fini(&d);
    assert_int_equal(kx__dedup_init(&d, 4), 0);
    assert_false(kx__dedup_check(&d, 1, 1, 0, 1000));
    assert_true(kx__dedup_check(&d, 1, 1, 999, 1000));
    assert_false(kx__dedup_check(&d, 1, 1, 1000, 1000));
    assert_true(kx__dedup_check(&d, 1, 1, 1999, 1000));
    assert_int_equal(d.count, 1);
    kx__dedup_fini(&d);
}

static void test_stdout_default(void **state)
{
    fixture *f = *state;
    kx_err err;
    /* No `alerting:` at all: one stdout sink. */
    assert_int_equal(kx_router_create(f->loop, NULL, "alert.yaml", NULL, &f->router, &err), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/stdout.txt", f->dir);
    fflush(stdout);
    int saved = dup(1);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    kx_alert a = alert_for("secops", T0);
    done_rec d = {0};
    int rc = kx_router_send(f->router, &a, on_done, &d);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    assert_int_equal(rc, 0);
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    char *l = line_for(&a, "secops");
    assert_file(f, "stdout.txt", l);
    free(l);
}

static void assert_dead(const fixture *f, const char *sink, const char *reason, unsigned attempts,
                        const char *error, const char *expect);

static void test_file_failure_dead_letter(void **state)
{
    fixture *f = *state;
    kx_err err;
    /* /dev/full accepts the open and fails every write with ENOSPC: retried (a disk may get
     * room again) until retry_for, 0 here, then dead-lettered. The other sink is not held up. */
    int rc = create(f,
                    "alerting:\n"
                    "  dead_letter: \"@DIR@/dead.jsonl\"\n"
                    "  sinks:\n"
                    "    full: {type: file, path: /dev/full, retry_for: 0}\n"
                    "    ok: {type: file, path: \"@DIR@/ok.jsonl\"}\n",
                    &err);
    assert_int_equal(rc, 0);
    kx_alert a = alert_for(NULL, T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    /* Without a spool directory, done runs once the alert is queued. */
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    char *l = line_for(&a, "default");
    assert_file(f, "ok.jsonl", l);
    assert_dead(f, "full", "retry_for spent", 1, "write to /dev/full: No space left on device", l);
    free(l);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
}

/* The dead-letter file holds exactly one line: that line's fields, and its alert is expect
 * (the alert's JSON line, with its newline). */
static void assert_dead(const fixture *f, const char *sink, const char *reason, unsigned attempts,
                        const char *error, const char *expect)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/dead.jsonl", f->dir);
    size_t len = 0;
    char *data = kx_test_read_file(path, &len);
    assert_non_null(data);
    assert_int_equal(data[len - 1], '\n');
    assert_null(memchr(data, '\n', len - 1)); /* one line */
    json_error_t je;
    json_t *o = json_loadb(data, len, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "sink")), sink);
    assert_string_equal(json_string_value(json_object_get(o, "reason")), reason);
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), attempts);
    assert_string_equal(json_string_value(json_object_get(o, "error")), error);
    assert_int_equal(strlen(json_string_value(json_object_get(o, "key"))), 32);
    assert_non_null(json_string_value(json_object_get(o, "time")));
    /* The alert is embedded as it was rendered, byte for byte. */
    const char *at = strstr(data, ",\"alert\":");
    assert_non_null(at);
    at += strlen(",\"alert\":");
    assert_int_equal(strlen(at), strlen(expect) + 1); /* + the closing brace */
    assert_memory_equal(at, expect, strlen(expect) - 1);
    assert_string_equal(at + strlen(expect) - 1, "}\n");
    json_decref(o);
    free(data);
}

static bool nothing_pending(void *ud)
{
    return kx_router_pending(ud) == 0;
}

static int drained;
static void on_drain(void *ud)
{
    (void)ud;
    drained++;
}

static void test_drain_idle(void **state)
{
    fixture *f = *state;
    kx_err err;
    assert_int_equal(kx_router_create(f->loop, NULL, "alert.yaml", NULL, &f->router, &err), 0);
    drained = 0;
    kx_router_drain(f->router, on_drain, NULL);
    assert_int_equal(drained, 1);
    assert_int_equal(kx_router_pending(f->router), 0);
}

/* ---- the spool ---- */

static bool done_called(void *ud)
{
    return ((done_rec *)ud)->calls > 0;
}

static size_t count_lines(const fixture *f, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    char *d = kx_test_read_file(path, NULL);
    size_t n = 0;
    for (const char *p = d; p && *p; p++)
        n += *p == '\n';
    free(d);
    return n;
}

static size_t count_segments(const fixture *f)
{
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "ls %s/spool | grep -c '\\.seg$'", f->dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = 0;
    if (fscanf(p, "%zu", &n) != 1)
        n = 0;
    pclose(p);
    return n;
}

static void recreate(fixture *f, const char *yaml)
{
    kx_router_destroy(f->router);
    f->router = NULL;
    kx_yaml_free(f->doc);
    f->doc = NULL;
    kx_err err = {0};
    int rc = create(f, yaml, &err);
    if (rc) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
}

/* With a spool directory: done runs once the alert is synced, not before; a sink that cannot
 * deliver keeps it in the spool across a restart, and only that sink gets it again. */
static void test_spool_restart_delivers(void **state)
{
    fixture *f = *state;
    recreate(f, "alerting:\n"
                "  spool: {dir: \"@DIR@/spool\"}\n"
                "  sinks:\n"
                "    audit: {type: file, path: \"@DIR@/audit.jsonl\"}\n"
                "    pager: {type: file, path: /dev/full, backoff: 1h}\n");
    kx_alert a = alert_for("secops", T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_int_equal(d.calls, 0); /* not durable yet */
    assert_true(kx_test_run_until(f->loop, done_called, &d, 5000));
    assert_int_equal(d.status, 0);
    assert_int_equal(count_lines(f, "audit.jsonl"), 1);
    assert_int_equal(kx_router_pending(f->router), 1); /* pager keeps failing */
    assert_int_equal(count_segments(f), 1);

    /* Restart with the pager's disk fixed: it gets the alert, audit does not again. */
    recreate(f, "alerting:\n"
                "  spool: {dir: \"@DIR@/spool\"}\n"
                "  sinks:\n"
                "    audit: {type: file, path: \"@DIR@/audit.jsonl\"}\n"
                "    pager: {type: file, path: \"@DIR@/pager.jsonl\"}\n");
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    char *l = line_for(&a, "secops");
    assert_file(f, "pager.jsonl", l);
    assert_file(f, "audit.jsonl", l);
    free(l);
    kx_router_destroy(f->router);
    f->router = NULL;
    assert_int_equal(count_segments(f), 0); /* nothing left to deliver: nothing kept */
}

static void test_spool_sink_removed(void **state)
{
    fixture *f = *state;
    recreate(f, "alerting:\n"
                "  spool: {dir: \"@DIR@/spool\"}\n"
                "  sinks:\n"
                "    audit: {type: file, path: \"@DIR@/audit.jsonl\"}\n"
                "    old: {type: file, path: /dev/full, backoff: 1h}\n");
    kx_alert a = alert_for(NULL, T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_true(kx_test_run_until(f->loop, done_called, &d, 5000));
    recreate(f, "alerting:\n"
                "  spool: {dir: \"@DIR@/spool\"}\n"
                "  sinks:\n"
                "    audit: {type: file, path: \"@DIR@/audit.jsonl\"}\n");
    assert_int_equal(kx_router_pending(f->router), 0);
    char *l = line_for(&a, "default");
    char *spool = subst_dir(f, "@DIR@/spool");
    char *saved = f->dir;
    f->dir = spool; /* the dead letters are in the spool directory */
    /* Attempts and errors of the earlier run are not kept in the spool. */
    assert_dead(f, "old", "its sink is no longer configured", 0, "", l);
    f->dir = saved;
    free(spool);
    free(l);
    assert_int_equal(count_lines(f, "audit.jsonl"), 1);
}

typedef struct counter {
    int calls;
} counter;

static void on_count(void *ud, int status)
{
    assert_int_equal(status, 0);
    ((counter *)ud)->calls++;
}

/* A full spool holds done back (the caller's batch waits, consumption pauses), drops
 * nothing, and keeps the order. */
static void test_spool_full_back_pressure(void **state)
{
    fixture *f = *state;
    recreate(f, "alerting:\n"
                "  spool: {dir: \"@DIR@/spool\", max_bytes: 65536, segment_bytes: 8192}\n"
                "  sinks:\n"
                "    pager: {type: file, path: /dev/full, backoff: 1h}\n");
    counter c = {0};
    for (int i = 0; i < 200; i++) {
        kx_alert a = alert_for(NULL, T0 + i * 60000LL);
        assert_int_equal(kx_router_send(f->router, &a, on_count, &c), 0);
    }
    kx_test_run_until(f->loop, nothing_pending, f->router, 300);
    assert_true(c.calls > 10 && c.calls < 200);
    assert_int_equal(kx_router_pending(f->router), 200);
    assert_true(kx_metric_get(KX_M_SPOOL_FULL) >= 1);
    int spooled = c.calls;
    /* After a restart, exactly the spooled ones come back; the others never had done, so
     * their caller never stored their offsets and will send them again. */
    recreate(f, "alerting:\n"
                "  spool: {dir: \"@DIR@/spool\", max_bytes: 65536, segment_bytes: 8192}\n"
                "  sinks:\n"
                "    pager: {type: file, path: \"@DIR@/pager.jsonl\"}\n");
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 5000));
    assert_int_equal(count_lines(f, "pager.jsonl"), spooled);
    kx_alert a0 = alert_for(NULL, T0);
    char *l0 = line_for(&a0, "default");
    char path[4200];
    snprintf(path, sizeof(path), "%s/pager.jsonl", f->dir);
    char *all = kx_test_read_file(path, NULL);
    assert_memory_equal(all, l0, strlen(l0)); /* in order: the first alert first */
    free(all);
    free(l0);
}

/* ---- kafka ---- */

/* Sends one alert through a kafka sink at bootstrap and consumes it back from "alerts". */
static void kafka_roundtrip(fixture *f, const char *bootstrap)
{
    char errstr[512];
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "alerting:\n"
             "  sinks:\n"
             "    bus: {type: kafka, brokers: \"%s\", topic: alerts, timeout: 10s}\n",
             bootstrap);
    kx_err err;
    int rc = create(f, yaml, &err);
    if (rc) {
        char m[1024];
        kx_err_format(&err, m, sizeof(m));
        fail_msg("%s", m);
    }
    kx_alert a = alert_for("secops", T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_int_equal(kx_router_pending(f->router), 1);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_DELIVERED), 1);

    /* Consume it back. */
    rd_kafka_conf_t *cconf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(cconf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    assert_int_equal(rd_kafka_conf_set(cconf, "group.id", "test", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    assert_int_equal(
        rd_kafka_conf_set(cconf, "enable.auto.commit", "false", errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, errstr, sizeof(errstr));
    assert_non_null(c);
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(parts, "alerts", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_message_t *m = NULL;
    int64_t deadline = kx_mono_ms() + 10000;
    while (!m && kx_mono_ms() < deadline) {
        m = rd_kafka_consumer_poll(c, 100);
        if (m && m->err) {
            rd_kafka_message_destroy(m);
            m = NULL;
        }
    }
    assert_non_null(m);
    char *expect = line_for(&a, "secops");
    expect[strlen(expect) - 1] = '\0'; /* no newline in a Kafka message */
    assert_int_equal(m->len, strlen(expect));
    assert_memory_equal(m->payload, expect, m->len);
    char key[33];
    kx_alert_dedup_key(&a, key, sizeof(key));
    assert_int_equal(m->key_len, 32);
    assert_memory_equal(m->key, key, 32);
    free(expect);
    rd_kafka_message_destroy(m);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);

    kx_router_destroy(f->router);
    f->router = NULL;
}

static void test_kafka_sink_mock(void **state)
{
    fixture *f = *state;
    char errstr[512];
    /* librdkafka's mock cluster in this process: a real Kafka-protocol broker on 127.0.0.1. */
    rd_kafka_conf_t *mconf = rd_kafka_conf_new();
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, errstr, sizeof(errstr));
    assert_non_null(mrk);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    assert_non_null(mc);
    assert_int_equal(rd_kafka_mock_topic_create(mc, "alerts", 1, 1), 0);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    assert_non_null(strstr(bootstrap, "127.0.0.1:"));
    kafka_roundtrip(f, bootstrap);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
}

static void test_kafka_sink_broker(void **state)
{
    fixture *f = *state;
    /* The same through kx-broker, the out-of-process broker the integration tests use. */
    kx_test_broker b = {0};
    const char *topics[] = {"alerts:1"};
    assert_int_equal(kx_test_broker_start(&b, topics, 1), 0);
    kafka_roundtrip(f, b.bootstrap);
    assert_int_equal(kx_test_broker_stop(&b), 0);
}

static void test_kafka_unreachable_dead_letter(void **state)
{
    fixture *f = *state;
    /* Nothing listens on port 1: each delivery report fails after message.timeout.ms, the
     * queue retries until retry_for, then the alert is dead-lettered. */
    kx_err err;
    assert_int_equal(create(f,
                            "alerting:\n"
                            "  dead_letter: \"@DIR@/dead.jsonl\"\n"
                            "  sinks:\n"
                            "    bus: {type: kafka, brokers: \"127.0.0.1:1\", topic: alerts, "
                            "timeout: 300ms, retry_for: 500ms, backoff: 50ms}\n",
                            &err),
                     0);
    kx_alert a = alert_for(NULL, T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    assert_true(kx_test_run_until(f->loop, nothing_pending, f->router, 10000));
    assert_int_equal(d.status, 0);
    char *l = line_for(&a, "default");
    char path[4200];
    snprintf(path, sizeof(path), "%s/dead.jsonl", f->dir);
    char *dead = kx_test_read_file(path, NULL);
    assert_non_null(dead);
    assert_non_null(strstr(dead, "\"sink\":\"bus\",\"reason\":\"retry_for spent\""));
    free(dead);
    free(l);
    assert_int_equal(kx_metric_get(KX_M_ALERTS_FAILED), 1);
    assert_true(kx_metric_get(KX_M_ALERT_RETRIES) >= 1);
}

static void test_kafka_destroy_purges(void **state)
{
    fixture *f = *state;
    /* Shutdown with an alert in flight and no spool directory: flush waits flush_timeout,
     * then the message is purged and the alert goes to the dead letters. */
    kx_err err;
    assert_int_equal(create(f,
                            "alerting:\n"
                            "  dead_letter: \"@DIR@/dead.jsonl\"\n"
                            "  sinks:\n"
                            "    bus: {type: kafka, brokers: \"127.0.0.1:1\", topic: alerts, "
                            "timeout: 60s, flush_timeout: 100ms}\n",
                            &err),
                     0);
    kx_alert a = alert_for(NULL, T0);
    done_rec d = {0};
    assert_int_equal(kx_router_send(f->router, &a, on_done, &d), 0);
    int64_t t = kx_mono_ms();
    kx_router_destroy(f->router);
    f->router = NULL;
    assert_true(kx_mono_ms() - t < 5000);
    assert_int_equal(d.calls, 1);
    char *l = line_for(&a, "default");
    assert_dead(f, "bus", "not delivered before shutdown, and no alerting.spool keeps it", 1,
                "Local: Purged in queue", l);
    free(l);
}

int main(void)
{
    kx_log_set_level(KX_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test_setup_teardown(test_routing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routing_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood_valve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backfill_not_paged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_routes_all_sinks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_team_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_bounded, setup, teardown),
        cmocka_unit_test(test_dedup_cache_churn),
        cmocka_unit_test_setup_teardown(test_stdout_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_failure_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_restart_delivers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_sink_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spool_full_back_pressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_sink_mock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_sink_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_unreachable_dead_letter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_destroy_purges, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
