/*
 * Sigma filters (src/detect/filter.c), from the Sigma filters specification's text: a filter
 * document names rules (ids or names, or any) and a logsource, and the rules it applies to
 * match only when their condition and the filter's both hold; it never touches a rule
 * outside its logsource, nor a correlation; its errors point into its own file.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/detect.h"
#include "kx_test.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = kx_test_tmpdir("filters");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kx_test_rmrf(dir);
    free(dir);
    return 0;
}

static const char rules_yaml[] = "title: sudo to root\nid: 11111111-0000-4000-8000-000000000001\n"
                                 "name: sudo_root\nlogsource: {product: linux, service: sudo}\n"
                                 "detection:\n  sel: {target_user: root}\n  condition: sel\n"
                                 "---\n"
                                 "title: sudo anything\nname: sudo_any\n"
                                 "logsource: {product: linux, service: sudo}\n"
                                 "detection:\n  sel: {program: sudo}\n  condition: sel\n"
                                 "---\n"
                                 "title: ssh root\nname: ssh_root\n"
                                 "logsource: {product: linux, service: sshd}\n"
                                 "detection:\n  sel: {user: root}\n  condition: sel\n";

/* Loads the rules above plus `filter` (a file of its own, loaded first: a filter may come
 * before the rules it names); NULL and why on a refusal. */
static kx_ruleset *load(const char *filter, char *why, size_t cap)
{
    char a[512], b[512];
    snprintf(a, sizeof(a), "%s/a_filter.yml", dir);
    snprintf(b, sizeof(b), "%s/b_rules.yml", dir);
    assert_int_equal(kx_test_write_file(a, filter), 0);
    assert_int_equal(kx_test_write_file(b, rules_yaml), 0);
    return kx_test_load_dir(dir, why, cap);
}

static kx_ruleset *load_ok(const char *filter)
{
    char why[1024];
    kx_ruleset *rs = load(filter, why, sizeof(why));
    if (!rs)
        fail_msg("%s", why);
    return rs;
}

typedef struct seen {
    char names[256];
} seen;

static void on_match(kx_rule *r, void *ud)
{
    seen *s = ud;
    strcat(s->names, s->names[0] ? "," : "");
    strcat(s->names, r->name ? r->name : r->id);
}

/* The names of the rules matching an event of product/service with fields kv. */
static const char *matches(kx_ruleset *rs, const char *service, const char *const *kv, seen *s)
{
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = "x";
    ev.raw_len = 1;
    ev.product = "linux";
    ev.service = service;
    for (size_t i = 0; kv[i]; i += 2)
        assert_int_equal(
            kx_event_add(&ev, kv[i], strlen(kv[i]), kv[i + 1], strlen(kv[i + 1]), KX_VAL_STR), 0);
    s->names[0] = '\0';
    kx_ruleset_match(rs, &ev, on_match, s);
    kx_event_fini(&ev);
    return s->names;
}

static void test_named_rule_narrowed(void **state)
{
    (void)state;
    kx_ruleset *rs = load_ok("title: Backups run as root by the agent\n"
                             "logsource: {product: linux, service: sudo}\n"
                             "filter:\n  rules: [sudo_root]\n"
                             "  agent: {user: backup-agent}\n  condition: not agent\n");
    seen s;
    const char *alice[] = {"program", "sudo", "user", "alice", "target_user", "root", NULL};
    const char *agent[] = {"program", "sudo", "user", "backup-agent", "target_user", "root", NULL};
    assert_string_equal(matches(rs, "sudo", alice, &s), "sudo_root,sudo_any");
    /* the filter silences sudo_root for the agent; sudo_any, not named, still matches */
    assert_string_equal(matches(rs, "sudo", agent, &s), "sudo_any");
    const kx_rule *r = kx_ruleset_at(rs, 0);
    assert_string_equal(r->name, "sudo_root");
    assert_int_equal(r->nfilters, 1);
    assert_string_equal(r->filters[0], "Backups run as root by the agent");
    assert_int_equal(kx_ruleset_at(rs, 1)->nfilters, 0);
    kx_ruleset_destroy(rs);
}

static void test_any_within_logsource(void **state)
{
    (void)state;
    /* by id, and `any`: every detection rule of the logsource (sudo's), not sshd's */
    kx_ruleset *rs = load_ok("title: lab hosts\nlogsource: {product: linux, service: sudo}\n"
                             "filter:\n  rules: any\n"
                             "  lab: {host|startswith: lab-}\n  condition: not lab\n"
                             "---\n"
                             "title: by id\nlogsource: {product: Linux}\n"
                             "filter:\n  rules: 11111111-0000-4000-8000-000000000001\n"
                             "  tty: {tty: pts/9}\n  other: {tty: pts/8}\n"
                             "  condition: not 1 of them\n");
    seen s;
    const char *lab[] = {"program", "sudo", "host", "lab-3", "target_user", "root", NULL};
    const char *prod[] = {"program", "sudo", "host", "db-1", "target_user", "root", NULL};
    const char *tty[] = {"program", "sudo", "host",  "db-1", "target_user",
                         "root",    "tty",  "pts/8", NULL};
    const char *ssh[] = {"user", "root", "host", "lab-3", NULL};
    assert_string_equal(matches(rs, "sudo", lab, &s), "");
    assert_string_equal(matches(rs, "sudo", prod, &s), "sudo_root,sudo_any");
    assert_string_equal(matches(rs, "sudo", tty, &s), "sudo_any");
    assert_string_equal(matches(rs, "sshd", ssh, &s), "ssh_root");
    assert_int_equal(kx_ruleset_at(rs, 0)->nfilters, 2);
    assert_int_equal(kx_ruleset_at(rs, 2)->nfilters, 0);
    kx_ruleset_destroy(rs);
}

/* A filter's time parts read times in the zone of the rule it narrows; a filter never lends
 * its own time of day to the rule before it in the file. */
static void test_zones(void **state)
{
    (void)state;
    char why[1024], p[600], sub[512];
    snprintf(sub, sizeof(sub), "%s/zones", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(p, sizeof(p), "%s/z.yml", sub);
    assert_int_equal(
        kx_test_write_file(
            p, "title: tokyo evening\nname: tokyo\ntimezone: Asia/Tokyo\n"
               "logsource: {product: app}\n"
               "detection:\n  sel: {t|hour: 18}\n  condition: sel\n"
               "---\n"
               "title: not at 18 Tokyo time with x\nlogsource: {product: app}\n"
               "filter:\n  rules: [tokyo]\n  x: {t|hour: 18, x: y}\n"
               "  condition: not x\n"
               "---\n"
               "title: f2\nlogsource: {product: other}\n"
               "filter:\n  rules: any\n"
               "  night: {timeofday: {timezone: Asia/Tokyo, from: '00:00', to: '06:00'}}\n"
               "  condition: not night\n"),
        0);
    kx_ruleset *rs = kx_test_load_dir(sub, why, sizeof(why));
    if (!rs)
        fail_msg("%s", why);
    /* 09:30 UTC is 18:30 in Tokyo: the rule's part holds, and so does the filter's (read in
     * Tokyo too), so x silences it */
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = "x";
    ev.raw_len = 1;
    ev.product = "app";
    assert_int_equal(kx_event_add(&ev, "t", 1, "2026-03-11T09:30:00Z", 20, KX_VAL_STR), 0);
    assert_int_equal(kx_ruleset_match(rs, &ev, NULL, NULL), 1);
    assert_int_equal(kx_event_add(&ev, "x", 1, "y", 1, KX_VAL_STR), 0);
    assert_int_equal(kx_ruleset_match(rs, &ev, NULL, NULL), 0);
    kx_event_fini(&ev);
    const kx_rule *r = NULL;
    for (size_t i = 0; i < kx_ruleset_size(rs); i++)
        if (!strcmp(kx_ruleset_at(rs, i)->title, "tokyo evening"))
            r = kx_ruleset_at(rs, i);
    assert_non_null(r);
    assert_null(r->timezone); /* f2's timeofday is not the rule's */
    kx_ruleset_destroy(rs);
    remove(p);
    rmdir(sub);
}

static void expect_error(const char *filter, const char *want)
{
    char got[1024], full[1024];
    assert_null(load(filter, got, sizeof(got)));
    snprintf(full, sizeof(full), "%s/a_filter.yml:%s", dir, want);
    assert_string_equal(got, full);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("title: f\nlogsource: {product: linux}\nfilter:\n  rules: [nope]\n"
                 "  s: {a: b}\n  condition: not s\n",
                 "4:11: filter names unknown rule \"nope\"");
    expect_error("title: f\nlogsource: {product: linux}\nfilter:\n  rules: [sudo_root]\n"
                 "  s: {a: b}\n  condition: not t\n",
                 "6:18: condition references unknown identifier \"t\"");
    expect_error("title: f\nfilter:\n  rules: [sudo_root]\n  s: {a: b}\n  condition: not s\n",
                 "1:1: a filter needs a logsource (a mapping): the rules it may narrow");
    expect_error("title: f\nlogsource: {product: linux}\nfilter:\n  s: {a: b}\n"
                 "  condition: not s\n",
                 "4:3: a filter needs \"rules\": the rules' ids or names, or any");
    expect_error("title: f\nlevel: high\nlogsource: {product: linux}\nfilter:\n  rules: any\n"
                 "  s: {a: b}\n  condition: not s\n",
                 "2:1: unknown key \"level\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_rule_narrowed),
        cmocka_unit_test(test_any_within_logsource),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_zones),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
