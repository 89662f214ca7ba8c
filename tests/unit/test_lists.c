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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_list),
        cmocka_unit_test(test_inside_values_and_modifiers),
        cmocka_unit_test(test_empty_list_matches_nothing),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
