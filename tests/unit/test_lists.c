/*
 * Named lists and Sigma placeholders (src/detect/lists.c, value.c), from the Sigma
 * modifiers appendix: `expand` expands placeholders (%name%) in values, here to the values of
 * NAME.list in the rules tree ("expand to value list"), after which the value's other
 * modifiers apply to each value.
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
    dir = kx_test_tmpdir("lists");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kx_test_rmrf(dir);
    free(dir);
    return 0;
}

static void put(const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    assert_int_equal(kx_test_write_file(p, text), 0);
}

static void drop(const char *name)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    remove(p);
}

static kx_ruleset *load(const char *rule, char *why, size_t cap)
{
    put("r.yml", rule);
    return kx_test_load_dir(dir, why, cap);
}

static kx_ruleset *load_ok(const char *rule)
{
    char why[1024];
    kx_ruleset *rs = load(rule, why, sizeof(why));
    if (!rs)
        fail_msg("%s", why);
    return rs;
}

/* Does the rule match an event whose field f is v? */
static bool hit(kx_ruleset *rs, const char *f, const char *v)
{
    const char *kv[] = {f, v, NULL};
    return kx_test_match(rs, NULL, NULL, kv) == 1;
}

static void test_value_list(void **state)
{
    (void)state;
    put("terminated_users.list", "# people who left (HR offboarding)\n"
                                 "  jdoe  \n"
                                 "\n"
                                 "mallory\r\n"
                                 "# not.a.value\n"
                                 "eve");
    kx_ruleset *rs = load_ok("title: t\ndetection:\n  sel:\n    user|expand: '%terminated_users%'\n"
                             "  condition: sel\n");
    assert_true(hit(rs, "user", "jdoe"));
    assert_true(hit(rs, "user", "MALLORY")); /* plain values: case-insensitive, as always */
    assert_true(hit(rs, "user", "eve"));
    assert_false(hit(rs, "user", "alice"));
    assert_false(hit(rs, "user", "# not.a.value"));
    assert_false(hit(rs, "user", "%terminated_users%"));
    kx_ruleset_destroy(rs);
    drop("terminated_users.list");
}

static void test_inside_values_and_modifiers(void **state)
{
    (void)state;
    put("env.list", "prod\ndev\n");
    put("tier.list", "web\ndb\n");
    put("office_nets.list", "10.0.0.0/8\n192.168.1.0/24\n2001:db8::/32\n");
    /* a placeholder inside a value, two in one (every combination), modifiers after expand */
    kx_ruleset *rs = load_ok("title: t\ndetection:\n"
                             "  a: {host|expand: 'svc-%env%-%tier%'}\n"
                             "  b: {src_ip|expand|cidr: '%office_nets%'}\n"
                             "  c: {cmd|expand|contains: 'deploy %env%'}\n"
                             "  d: {note: '100% %env%'}\n"
                             "  condition: 1 of them\n");
    assert_true(hit(rs, "host", "svc-prod-web"));
    assert_true(hit(rs, "host", "svc-dev-db"));
    assert_false(hit(rs, "host", "svc-prod"));
    assert_false(hit(rs, "host", "svc-%env%-%tier%"));
    assert_true(hit(rs, "src_ip", "10.20.30.40"));
    assert_true(hit(rs, "src_ip", "192.168.1.7"));
    assert_true(hit(rs, "src_ip", "2001:db8::1"));
    assert_false(hit(rs, "src_ip", "192.168.2.7"));
    assert_true(hit(rs, "cmd", "sudo ./deploy dev --force"));
    assert_false(hit(rs, "cmd", "deploy staging"));
    /* without expand a value is what it says, percent signs and all */
    assert_true(hit(rs, "note", "100% %env%"));
    assert_false(hit(rs, "note", "100% prod"));
    kx_ruleset_destroy(rs);
    drop("env.list");
    drop("tier.list");
    drop("office_nets.list");
}

static void test_empty_list_matches_nothing(void **state)
{
    (void)state;
    put("nobody.list", "# nobody has left this week\n");
    kx_ruleset *rs = load_ok("title: t\ndetection:\n  sel:\n    user|expand|all: '%nobody%'\n"
                             "  other: {user: bob}\n  condition: sel or other\n");
    assert_false(hit(rs, "user", "alice"));
    assert_false(hit(rs, "user", ""));
    assert_true(hit(rs, "user", "bob"));
    kx_ruleset_destroy(rs);
    /* an empty list after large ones: nothing, at once (not every combination walked); an
     * item without a placeholder stays what it was written as (null: the field is missing) */
    char big[8192] = "";
    for (int i = 0; i < 1000; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "v%d\n", i);
    put("big.list", big);
    rs = load_ok("title: t\ndetection:\n  s: {user|expand: '%big%%big%%big%%nobody%'}\n"
                 "  n: {user|expand: ['%nobody%', null]}\n  condition: s or n\n");
    assert_false(hit(rs, "user", "v1v2v3"));
    assert_false(hit(rs, "user", "null"));
    assert_true(hit(rs, "other", "x")); /* user missing: null holds */
    kx_ruleset_destroy(rs);
    drop("big.list");
    drop("nobody.list");
}

static void test_errors(void **state)
{
    (void)state;
    char why[1024], want[1024];
    assert_null(load("title: t\ndetection:\n  sel: {user|expand: 'x-%missing%'}\n"
                     "  condition: sel\n",
                     why, sizeof(why)));
    snprintf(want, sizeof(want),
             "%s/r.yml:3:22: placeholder %%missing%% names no list (a file missing.list in the "
             "rules tree)",
             dir);
    assert_string_equal(why, want);
    char sub[512];
    snprintf(sub, sizeof(sub), "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    put("admins.list", "root\n");
    put("sub/admins.list", "admin\n");
    assert_null(
        load("title: t\ndetection:\n  sel: {user: x}\n  condition: sel\n", why, sizeof(why)));
    snprintf(want, sizeof(want),
             "%s/sub/admins.list: list \"admins\" is defined twice (first in %s/admins.list)", dir,
             dir);
    assert_string_equal(why, want);
    drop("sub/admins.list");
    drop("admins.list");
    rmdir(sub);
}

/* NAME.list.yml: a YAML sequence, or a map with values (and a description). */
static void test_yaml_lists(void **state)
{
    (void)state;
    put("admins.list.yml", "- root\n- 'ops-lead'\n- 42\n");
    put("nets.list.yaml", "description: office networks\nvalues: [10.0.0.0/8, '2001:db8::/32']\n");
    kx_ruleset *rs = load_ok("title: t\ndetection:\n  a: {user|expand: '%admins%'}\n"
                             "  n: {src_ip|expand|cidr: '%nets%'}\n  condition: a or n\n");
    assert_true(hit(rs, "user", "ROOT"));
    assert_true(hit(rs, "user", "ops-lead"));
    assert_true(hit(rs, "user", "42"));
    assert_false(hit(rs, "user", "admins"));
    assert_true(hit(rs, "src_ip", "10.1.2.3"));
    assert_true(hit(rs, "src_ip", "2001:db8::7"));
    assert_false(hit(rs, "src_ip", "11.1.2.3"));
    assert_int_equal(kx_ruleset_live_lists(rs), 0); /* no redis: plain lists, expanded */
    kx_ruleset_destroy(rs);
    drop("admins.list.yml");
    drop("nets.list.yaml");
}

static void expect_list_error(const char *file, const char *text, const char *rule, const char *msg)
{
    char why[1024], want[1024];
    put(file, text);
    assert_null(load(rule, why, sizeof(why)));
    snprintf(want, sizeof(want), "%s/%s", dir, msg);
    assert_string_equal(why, want);
    drop(file);
}

static void test_yaml_list_errors(void **state)
{
    (void)state;
    const char *rule = "title: t\ndetection:\n  sel: {user: x}\n  condition: sel\n";
    expect_list_error("a.list.yml", "values: [x]\ncolour: red\n", rule,
                      "a.list.yml:2:1: unknown key \"colour\"");
    expect_list_error("a.list.yml", "description: nothing\n", rule,
                      "a.list.yml:1:1: a list needs values, redis, or both");
    expect_list_error("a.list.yml", "values: [x, [y]]\n", rule,
                      "a.list.yml:1:13: expected a value (a string or number)");
    expect_list_error("a.list.yml", "redis: {refresh: 1s}\n", rule,
                      "a.list.yml:1:8: redis: needs a key (the Redis set)");
    expect_list_error("a.list.yml", "redis: {key: k, refresh: 10ms}\n", rule,
                      "a.list.yml:1:26: refresh: between 100ms and 1d");
}

/* A list backed by a Redis set: matched as a set whose values are given while the rules
 * run, not expanded at load. */
static void test_live_list(void **state)
{
    (void)state;
    put("terminated.list.yml", "description: offboarded by HR\nvalues: [former.admin]\n"
                               "redis: {key: 'hr:terminated', refresh: 250ms}\n");
    kx_ruleset *rs = load_ok("title: t\ndetection:\n  sel: {user|expand: '%terminated%'}\n"
                             "  cased: {login|expand|cased: ['%terminated%', guest]}\n"
                             "  condition: sel or cased\n");
    assert_int_equal(kx_ruleset_live_lists(rs), 1);
    kx_live_list l;
    kx_ruleset_live_list(rs, 0, &l);
    assert_string_equal(l.name, "terminated");
    assert_string_equal(l.key, "hr:terminated");
    assert_int_equal(l.refresh_ms, 250);
    assert_int_equal(l.loaded_ms, 0);
    assert_int_equal(l.nvalues, 0);

    /* not read yet: klaxon cannot say, so the rule fails closed and says why */
    const char *kv[] = {"user", "alice", NULL};
    assert_int_equal(kx_test_match(rs, NULL, NULL, kv), 1);
    assert_string_equal(kx_ruleset_match_reason(rs), "list terminated is not read from Redis yet");
    /* an answer that does not depend on the list stands */
    assert_true(hit(rs, "login", "guest"));
    assert_false(hit(rs, "other", "x"));

    /* the set's values with the file's: equality, caseless unless |cased */
    static const char vals[] = "jdoe\0Mallory\0";
    assert_int_equal(kx_ruleset_live_list_set(rs, 0, vals, sizeof(vals) - 1, 2, 1000), 0);
    kx_ruleset_live_list(rs, 0, &l);
    assert_int_equal(l.nvalues, 3);
    assert_int_equal(l.loaded_ms, 1000);
    assert_true(hit(rs, "user", "JDOE"));
    assert_true(hit(rs, "user", "mallory"));
    assert_true(hit(rs, "user", "former.admin"));
    assert_false(hit(rs, "user", "alice"));
    assert_false(hit(rs, "user", "jdoe2"));
    assert_false(hit(rs, "user", ""));
    assert_true(hit(rs, "login", "Mallory"));
    assert_false(hit(rs, "login", "mallory"));
    assert_false(hit(rs, "login", "GUEST"));

    /* a value taken out of the set is gone at the next swap */
    assert_int_equal(kx_ruleset_live_list_set(rs, 0, "jdoe", 5, 1, 2000), 0);
    assert_false(hit(rs, "user", "mallory"));
    assert_true(hit(rs, "user", "jdoe"));

    /* a reload carries the set's values (not the old file's) to the new rules */
    put("terminated.list.yml", "values: [new.leaver]\nredis: {key: 'hr:terminated'}\n");
    kx_ruleset *rs2 = load_ok("title: t\ndetection:\n  sel: {user|expand: '%terminated%'}\n"
                              "  condition: sel\n");
    kx_ruleset_carry_live_lists(rs2, rs);
    kx_ruleset_live_list(rs2, 0, &l);
    assert_int_equal(l.loaded_ms, 2000);
    assert_int_equal(l.refresh_ms, 30000); /* the default */
    assert_true(hit(rs2, "user", "jdoe"));
    assert_true(hit(rs2, "user", "new.leaver"));
    assert_false(hit(rs2, "user", "former.admin"));
    kx_ruleset_destroy(rs2);
    /* another key: nothing carried, not read yet */
    put("terminated.list.yml", "redis: other:key\n");
    rs2 = load_ok("title: t\ndetection:\n  sel: {user|expand: '%terminated%'}\n"
                  "  condition: sel\n");
    kx_ruleset_carry_live_lists(rs2, rs);
    kx_ruleset_live_list(rs2, 0, &l);
    assert_int_equal(l.loaded_ms, 0);
    kx_ruleset_destroy(rs2);
    kx_ruleset_destroy(rs);
    drop("terminated.list.yml");
}

/* Not read yet, the list's answer is unknown, for and against at once: `a and not b` over
 * one list is judged in three values, not by one guess for the list. */
static void test_live_list_unknown_three_values(void **state)
{
    (void)state;
    put("t.list.yml", "redis: hr:t\n");
    kx_ruleset *rs = load_ok("title: t\ndetection:\n  sel: {user|expand: '%t%'}\n"
                             "  tgt: {target|expand: '%t%'}\n  ok: {kind: login}\n"
                             "  condition: ok and sel and not tgt\n");
    const char *both[] = {"kind", "login", "user", "a", "target", "b", NULL};
    assert_int_equal(kx_test_match(rs, NULL, NULL, both), 1); /* a listed, b not: a match */
    assert_string_equal(kx_ruleset_match_reason(rs), "list t is not read from Redis yet");
    const char *no_user[] = {"kind", "login", "target", "b", NULL};
    assert_int_equal(kx_test_match(rs, NULL, NULL, no_user), 0); /* no user: no list has it */
    const char *other[] = {"kind", "logout", "user", "a", "target", "b", NULL};
    assert_int_equal(kx_test_match(rs, NULL, NULL, other), 0); /* decided without the list */
    const char *no_target[] = {"kind", "login", "user", "a", NULL};
    assert_int_equal(kx_test_match(rs, NULL, NULL, no_target), 1); /* still the list's call */
    assert_int_equal(kx_ruleset_live_list_set(rs, 0, "a", 2, 1, 1), 0);
    assert_int_equal(kx_test_match(rs, NULL, NULL, both), 1);
    assert_null(kx_ruleset_match_reason(rs));
    assert_int_equal(kx_ruleset_live_list_set(rs, 0, "a\0b", 4, 2, 2), 0);
    assert_int_equal(kx_test_match(rs, NULL, NULL, both), 0);
    kx_ruleset_destroy(rs);
    drop("t.list.yml");
}

static void test_live_list_errors(void **state)
{
    (void)state;
    char why[1024], want[1024];
    put("t.list.yml", "redis: hr:t\n");
    static const struct {
        const char *rule, *msg;
    } cases[] = {
        {"title: t\ndetection:\n  sel: {user|expand: 'x-%t%'}\n  condition: sel\n",
         "r.yml:3:22: list t is read from Redis: it is matched as a whole value, write '%t%' "
         "alone"},
        {"title: t\ndetection:\n  sel: {user|expand|contains: '%t%'}\n  condition: sel\n",
         "r.yml:3:31: list t is read from Redis: it is matched by equality, only with |expand "
         "(and |cased), on a field"},
        {"title: t\ndetection:\n  sel:\n    - '%t%'\n  condition: sel\n", NULL},
    };
    for (size_t i = 0; i < 2; i++) {
        assert_null(load(cases[i].rule, why, sizeof(why)));
        snprintf(want, sizeof(want), "%s/%s", dir, cases[i].msg);
        assert_string_equal(why, want);
    }
    /* a keyword is no placeholder (no expand): it is the text '%t%' */
    kx_ruleset *rs = load_ok(cases[2].rule);
    assert_int_equal(kx_ruleset_live_lists(rs), 1);
    kx_ruleset_destroy(rs);
    drop("t.list.yml");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_list),
        cmocka_unit_test(test_inside_values_and_modifiers),
        cmocka_unit_test(test_empty_list_matches_nothing),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_yaml_lists),
        cmocka_unit_test(test_yaml_list_errors),
        cmocka_unit_test(test_live_list),
        cmocka_unit_test(test_live_list_unknown_three_values),
        cmocka_unit_test(test_live_list_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
