/*
 * Correlation rules: loading (type event_count), reference resolution by id and by name
 * across files, the generate flag, back-links from detection rules, kx_cmp_one and kx_cmp_holds,
 * and every correlation error as a whole "file:line:col: message" string.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/detect.h"

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kx_corr_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/c.yml", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd);
}

static void write_file(const char *p, const char *s)
{
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static kx_ruleset *load_ok(const char *p)
{
    kx_ruleset *rs = NULL;
    kx_err err;
    if (kx_ruleset_load(&p, 1, &rs, &err)) {
        char buf[1024];
        kx_err_format(&err, buf, sizeof(buf));
        fail_msg("%s", buf);
    }
    return rs;
}

static void test_fixture(void **state)
{
    (void)state;
    kx_ruleset *rs = load_ok(KX_SOURCE_DIR "/tests/fixtures/rules/ssh_bruteforce.yml");
    assert_int_equal(kx_ruleset_size(rs), 2);
    const kx_rule *c = kx_ruleset_at(rs, 0), *d = kx_ruleset_at(rs, 1);
    assert_int_equal(c->kind, KX_RULE_CORRELATION);
    assert_string_equal(c->id, "6a5f0c1e-2f55-4c7e-9f0b-0d9d2b1e7a01");
    assert_string_equal(c->title, "SSH brute force from one source");
    assert_string_equal(c->level, "high");
    assert_string_equal(c->team, "platform");
    assert_int_equal(c->ntags, 2);
    assert_int_equal(c->corr_type, KX_CORR_EVENT_COUNT);
    assert_int_equal(c->nrefs, 1);
    assert_ptr_equal(c->refs[0], d);
    assert_int_equal(c->ngroup_by, 1);
    assert_string_equal(c->group_by[0], "src_ip");
    assert_int_equal(c->timespan_ms, 300000);
    assert_int_equal(c->ncond, 1);
    assert_int_equal(c->cond[0].op, KX_CMP_GTE);
    assert_true(c->cond[0].value == 5.0);
    assert_int_equal(c->suppress_ms, 300000); /* default: the timespan */
    assert_int_equal(c->lateness_ms, -1);     /* default: the config's */
    assert_string_equal(c->group_fields[0], "src_ip");
    assert_true(c->generate);
    assert_int_equal(c->ncorrelations, 0);

    assert_int_equal(d->kind, KX_RULE_DETECTION);
    assert_false(d->generate);
    assert_int_equal(d->ncorrelations, 1);
    assert_ptr_equal(d->correlations[0], c);

    /* Correlations are not evaluated per event: only the detection rule matches. */
    kx_event ev;
    kx_event_init(&ev);
    ev.product = "linux";
    ev.service = "sshd";
    assert_int_equal(kx_event_add(&ev, "program", 7, "sshd", 4, KX_VAL_STR), 0);
    assert_int_equal(kx_event_add(&ev, "message", 7, "Failed password for x", 21, KX_VAL_STR), 0);
    assert_int_equal(kx_ruleset_match(rs, &ev, NULL, NULL), 1);
    assert_int_equal(d->matches, 1);
    assert_int_equal(c->matches, 0);
    kx_event_fini(&ev);
    kx_ruleset_destroy(rs);
}

static const char *const det_a = "title: A\nid: 11111111-0000-0000-0000-000000000001\n"
                                 "name: rule_a\ndetection:\n    s: {f: a}\n    condition: s\n";
static const char *const det_b = "title: B\nid: 11111111-0000-0000-0000-000000000002\n"
                                 "detection:\n    s: {f: b}\n    condition: s\n";

static void test_refs_across_files(void **state)
{
    (void)state;
    char p[256];
    snprintf(p, sizeof(p), "%s/a_corr.yml", dir); /* sorted before the rules it names */
    write_file(p, "title: C1\ncorrelation:\n    type: event_count\n    rules:\n"
                  "        - rule_a\n        - 11111111-0000-0000-0000-000000000002\n"
                  "    group-by: [user, host]\n    timespan: 1h\n    condition: {gt: 10}\n"
                  "generate: true\n"
                  "---\n"
                  "title: C2\ncorrelation:\n    type: event_count\n    rules: rule_a\n"
                  "    timespan: 30s\n    condition:\n        gt: 1\n        lte: 3\n");
    snprintf(p, sizeof(p), "%s/b_rules.yml", dir);
    char both[1024];
    snprintf(both, sizeof(both), "%s---\n%s", det_a, det_b);
    write_file(p, both);
    kx_ruleset *rs = load_ok(dir);
    assert_int_equal(kx_ruleset_size(rs), 4);
    const kx_rule *c1 = kx_ruleset_at(rs, 0), *c2 = kx_ruleset_at(rs, 1);
    const kx_rule *a = kx_ruleset_at(rs, 2), *b = kx_ruleset_at(rs, 3);
    assert_string_equal(c1->id, "C1"); /* no id, no name: the title */
    assert_int_equal(c1->nrefs, 2);
    assert_ptr_equal(c1->refs[0], a);
    assert_ptr_equal(c1->refs[1], b);
    assert_int_equal(c1->ngroup_by, 2);
    assert_string_equal(c1->group_by[1], "host");
    assert_int_equal(c1->timespan_ms, 3600000);
    assert_int_equal(c1->ncond, 1);
    assert_int_equal(c1->cond[0].op, KX_CMP_GT);
    assert_true(c1->cond[0].value == 10.0);
    assert_int_equal(c2->nrefs, 1);
    assert_ptr_equal(c2->refs[0], a);
    assert_int_equal(c2->ngroup_by, 0);
    assert_int_equal(c2->timespan_ms, 30000);
    assert_int_equal(c2->ncond, 2); /* a range: gt 1 and lte 3 */
    assert_int_equal(c2->cond[1].op, KX_CMP_LTE);
    assert_true(c2->cond[1].value == 3.0);
    assert_true(kx_cmp_holds(c2->cond, c2->ncond, 2));
    assert_false(kx_cmp_holds(c2->cond, c2->ncond, 4));
    /* a is counted by both; C1 says generate: true, so a still raises its own alerts. */
    assert_int_equal(a->ncorrelations, 2);
    assert_ptr_equal(a->correlations[0], c1);
    assert_ptr_equal(a->correlations[1], c2);
    assert_true(a->generate);
    assert_int_equal(b->ncorrelations, 1);
    assert_true(b->generate);
    kx_ruleset_destroy(rs);
}

static void test_generate_false_and_eq(void **state)
{
    (void)state;
    char y[1024];
    snprintf(y, sizeof(y),
             "title: C\ncorrelation:\n    type: event_count\n    rules: [rule_a]\n"
             "    timespan: 2d\n    condition: {eq: 4}\n    generate: false\n---\n%s",
             det_a);
    write_file(path, y);
    kx_ruleset *rs = load_ok(path);
    assert_int_equal(kx_ruleset_at(rs, 0)->cond[0].op, KX_CMP_EQ);
    assert_true(kx_ruleset_at(rs, 0)->cond[0].value == 4.0);
    assert_int_equal(kx_ruleset_at(rs, 0)->timespan_ms, 172800000);
    assert_false(kx_ruleset_at(rs, 1)->generate);
    kx_ruleset_destroy(rs);
}

static void expect_err(const char *corr_body, const char *want_suffix)
{
    char y[2048], got[1024], want[1024];
    snprintf(y, sizeof(y), "title: C\ncorrelation:\n%s---\n%s", corr_body, det_a);
    write_file(path, y);
    kx_err err;
    kx_ruleset *rs = (kx_ruleset *)&err, *before = rs;
    const char *p = path;
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    assert_ptr_equal(rs, before);
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want), "%s:%s", path, want_suffix);
    assert_string_equal(got, want);
}

#define OK_REST "    rules: [rule_a]\n    timespan: 5m\n    condition: {gte: 5}\n"

static void test_errors(void **state)
{
    (void)state;
    expect_err("    type: value_count\n" OK_REST,
               "6:16: value_count needs a \"field\" in its condition");
    expect_err("    type: value_sum\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {gte: 5, field: [a, b]}\n",
               "6:32: value_sum takes one field");
    expect_err("    type: temporal\n" OK_REST "    field: x\n",
               "7:12: \"field\" does not apply to temporal");
    expect_err("    type: evnt_count\n" OK_REST, "3:11: unknown correlation type \"evnt_count\"");
    expect_err(OK_REST, "3:5: missing required key \"type\"");
    expect_err("    type: event_count\n    rules: [rule_a, nosuch]\n    timespan: 5m\n"
               "    condition: {gte: 5}\n",
               "4:21: correlation references unknown rule \"nosuch\"");
    expect_err("    type: event_count\n    rules:\n        - rule_a\n        - rule_a\n"
               "    timespan: 5m\n    condition: {gte: 5}\n",
               "6:11: rule \"rule_a\" is listed twice");
    expect_err("    type: event_count\n    rules: []\n    timespan: 5m\n    condition: {gte: 5}\n",
               "4:12: \"rules\" must not be empty");
    expect_err("    type: event_count\n    timespan: 5m\n    condition: {gte: 5}\n",
               "3:5: missing required key \"rules\"");
    expect_err("    type: event_count\n    rules: [rule_a]\n    condition: {gte: 5}\n",
               "3:5: missing required key \"timespan\"");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5 minutes\n"
               "    condition: {gte: 5}\n",
               "5:15: expected a duration like 30s, 5m, 2h, 1d or 500ms, got \"5 minutes\"");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 0s\n"
               "    condition: {gte: 5}\n",
               "5:15: timespan must be greater than zero");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n",
               "3:5: missing required key \"condition\"");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {lt: 1}\n",
               "6:16: this condition holds only for a window without events, and klaxon judges "
               "only windows with events: use an absence rule for \"no event in the timespan\"");
    expect_err("    type: value_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {field: user, lte: 200}\n",
               "6:16: this condition holds for an empty window (lt, lte, neq or a range from 0): "
               "klaxon judges such conditions when windows close for event_count only; use "
               "event_count, or value_avg / value_percentile");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {gte: 2.5}\n",
               "6:22: condition value must be a whole number >= 0 for a count");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {ge: 1}\n",
               "6:17: unknown condition operator \"ge\" (expected gt, gte, lt, lte, eq or neq)");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {gte: many}\n",
               "6:22: condition value must be a number");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: 5\n",
               "6:16: condition must be a mapping such as {gte: 10}");
    expect_err("    type: event_count\n" OK_REST "    timespam: 5m\n",
               "7:5: unknown key \"timespam\" in correlation");
    expect_err("    type: event_count\n    rules: [rule_a]\n    timespan: 5m\n"
               "    condition: {gte: 5}\n    group-by: [ip]\n    aliases: {ip: {other: src}}\n",
               "8:15: alias \"ip\" gives no field for rule \"rule_a\"");
    expect_err("    type: event_count\n" OK_REST "    aliases: [ip]\n",
               "7:14: \"aliases\" must map alias names to {rule name: field}");
    expect_err("    type: event_count\n" OK_REST "    suppress: soon\n",
               "7:15: expected a duration like 30s, 5m, 2h, 1d or 500ms, got \"soon\"");
    expect_err("    type: event_count\n" OK_REST "    group-by: {a: b}\n",
               "7:15: \"group-by\" must be a list of strings");
    expect_err("    type: event_count\n" OK_REST "    generate: maybe\n",
               "7:15: expected true or false");
    expect_err("    - not a map\n", "3:5: \"correlation\" must be a mapping");
}

static void test_chaining_and_both(void **state)
{
    (void)state;
    char got[1024], want[1024];
    kx_err err;
    kx_ruleset *rs = NULL;
    const char *p = path;
    write_file(path, "title: C1\nname: c1\ncorrelation:\n    type: event_count\n"
                     "    rules: [c2]\n    timespan: 5m\n    condition: {gte: 2}\n---\n"
                     "title: C2\nname: c2\ncorrelation:\n    type: event_count\n"
                     "    rules: [c1]\n    timespan: 5m\n    condition: {gte: 2}\n");
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want),
             "%s:1:1: correlation \"c1\" is part of a reference cycle or a chain deeper than 8",
             path);
    assert_string_equal(got, want);

    write_file(path, "title: X\ncorrelation: {type: event_count}\ndetection:\n"
                     "    s: {f: x}\n    condition: s\n");
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want),
             "%s:2:14: a rule cannot have both \"detection\" and \"correlation\"", path);
    assert_string_equal(got, want);
    assert_null(rs);
}

static void test_cmp(void **state)
{
    (void)state;
    static const struct {
        kx_cmp op;
        double x, v;
        bool want;
    } t[] = {
        {KX_CMP_GT, 5, 5, false},  {KX_CMP_GT, 5, 6, true},      {KX_CMP_GTE, 5, 4, false},
        {KX_CMP_GTE, 5, 5, true},  {KX_CMP_LT, 5, 4, true},      {KX_CMP_LT, 5, 5, false},
        {KX_CMP_LTE, 5, 5, true},  {KX_CMP_LTE, 5, 6, false},    {KX_CMP_EQ, 5, 5, true},
        {KX_CMP_EQ, 5, 6, false},  {KX_CMP_EQ, 0, 0, true},      {KX_CMP_NEQ, 5, 6, true},
        {KX_CMP_NEQ, 5, 5, false}, {KX_CMP_GT, 0.5, 0.75, true},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        assert_int_equal(kx_cmp_one(t[i].op, t[i].v, t[i].x), t[i].want);
    /* A condition is the AND of its terms; none holds always. */
    static const kx_cmp_term range[] = {{KX_CMP_GTE, 3}, {KX_CMP_LT, 10}};
    assert_false(kx_cmp_holds(range, 2, 2));
    assert_true(kx_cmp_holds(range, 2, 3));
    assert_true(kx_cmp_holds(range, 2, 9.5));
    assert_false(kx_cmp_holds(range, 2, 10));
    assert_true(kx_cmp_holds(range, 0, -1));
}

static void test_extensions(void **state)
{
    (void)state;
    write_file(path, "title: Login\nname: login\ndetection:\n  sel: {action: ok}\n"
                     "  condition: sel\n---\n"
                     "title: New address\nid: fs\ncorrelation:\n  type: first_seen\n"
                     "  rules: [login]\n  group-by: [user]\n  field: [src_ip, country]\n"
                     "  timespan: 30d\n---\n"
                     "title: Above baseline\nid: bl\ncorrelation:\n  type: baseline\n"
                     "  rules: [login]\n  group-by: [user]\n  timespan: 1h\n"
                     "  deviations: 2.5\n  history: 48\n  condition: {gte: 10}\n---\n"
                     "title: Defaults\nid: bl2\ncorrelation:\n  type: baseline\n"
                     "  rules: [login]\n  timespan: 1h\n  condition: {gte: 1}\n---\n"
                     "title: At most\nid: am\ncorrelation:\n  type: event_count\n"
                     "  rules: [login]\n  timespan: 1h\n  condition: {lt: 3}\n");
    kx_ruleset *rs = load_ok(path);
    assert_int_equal(kx_ruleset_size(rs), 5);
    /* lt on a count: judged when windows close; gte: when it is crossed. */
    assert_true(kx_ruleset_at(rs, 4)->closing);
    assert_false(kx_ruleset_at(rs, 2)->closing);
    const kx_rule *fs = kx_ruleset_at(rs, 1), *bl = kx_ruleset_at(rs, 2),
                  *bl2 = kx_ruleset_at(rs, 3);
    assert_int_equal(fs->corr_type, KX_CORR_FIRST_SEEN);
    assert_int_equal(fs->timespan_ms, 30LL * 24 * 3600 * 1000);
    assert_int_equal(fs->ncond, 0);
    assert_int_equal(fs->nvalue_fields, 2);
    assert_string_equal(fs->value_names[0], "src_ip");
    assert_string_equal(fs->value_names[1], "country");
    assert_int_equal(bl->corr_type, KX_CORR_BASELINE);
    assert_true(bl->deviations == 2.5);
    assert_int_equal(bl->history, 48);
    assert_int_equal(bl->ncond, 1);
    assert_int_equal(bl->cond[0].op, KX_CMP_GTE);
    assert_true(bl->cond[0].value == 10);
    assert_true(bl2->deviations == 3);
    assert_int_equal(bl2->history, 24);
    /* The referenced rule raises no alert of its own (Sigma generate). */
    assert_false(kx_ruleset_at(rs, 0)->generate);
    kx_ruleset_destroy(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture),
        cmocka_unit_test(test_refs_across_files),
        cmocka_unit_test(test_generate_false_and_eq),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_chaining_and_both),
        cmocka_unit_test(test_cmp),
        cmocka_unit_test(test_extensions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
