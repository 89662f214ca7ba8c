/*
 * Field mappings (src/detect/mapping.c): a generic Sigma rule written with the taxonomy's
 * field names matches events that carry the decoders' names, within the mapping's
 * logsource only; one name mapped to several reads any of them; correlations read their
 * group-by fields under the same mapping.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "klaxon/detect.h"
#include "kx_test.h"

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = kx_test_tmpdir("mappings");
    return dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    kx_test_rmrf(dir);
    free(dir);
    return 0;
}

static const char mapping[] = "title: Linux as klaxon decodes it\n"
                              "logsource: {product: linux}\n"
                              "fieldmapping:\n"
                              "  User: user\n"
                              "  SourceIp: src_ip\n"
                              "  Image: [exe, process]\n";

static kx_ruleset *load_with(const char *rules, const char *map, char *why, size_t cap)
{
    char a[512], b[512];
    snprintf(a, sizeof(a), "%s/m.yml", dir);
    snprintf(b, sizeof(b), "%s/r.yml", dir);
    assert_int_equal(kx_test_write_file(a, map), 0);
    assert_int_equal(kx_test_write_file(b, rules), 0);
    return kx_test_load_dir(dir, why, cap);
}

static kx_ruleset *load_ok(const char *rules)
{
    char why[1024];
    kx_ruleset *rs = load_with(rules, mapping, why, sizeof(why));
    if (!rs)
        fail_msg("%s", why);
    return rs;
}

static void test_taxonomy_names_read_decoder_fields(void **state)
{
    (void)state;
    kx_ruleset *rs =
        load_ok("title: root from outside\nlogsource: {product: linux, service: sshd}\n"
                "detection:\n  sel: {User: root, SourceIp|cidr: 203.0.113.0/24}\n"
                "  condition: sel\n");
    const char *ours[] = {"user", "root", "src_ip", "203.0.113.7", NULL};
    const char *theirs[] = {"User", "root", "SourceIp", "203.0.113.7", NULL};
    assert_int_equal(kx_test_match(rs, "linux", "sshd", ours), 1);
    assert_int_equal(kx_test_match(rs, "linux", "sshd", theirs),
                     0); /* the rule now reads our names */
    kx_ruleset_destroy(rs);
}

static void test_one_to_many_and_logsource_scope(void **state)
{
    (void)state;
    kx_ruleset *rs = load_ok("title: shell\nlogsource: {product: linux}\n"
                             "detection:\n  sel: {Image|endswith: /bash, User: root}\n"
                             "  condition: sel\n"
                             "---\n"
                             "title: windows user\nlogsource: {product: windows}\n"
                             "detection:\n  sel: {User: root}\n  condition: sel\n");
    const char *exe[] = {"exe", "/bin/bash", "user", "root", NULL};
    const char *process[] = {"process", "/usr/bin/bash", "user", "root", NULL};
    const char *neither[] = {"image", "/bin/bash", "user", "root", NULL};
    const char *not_root[] = {"exe", "/bin/bash", "user", "bob", NULL};
    assert_int_equal(kx_test_match(rs, "linux", NULL, exe), 1);
    assert_int_equal(kx_test_match(rs, "linux", NULL, process), 1);
    assert_int_equal(kx_test_match(rs, "linux", NULL, neither), 0);
    assert_int_equal(kx_test_match(rs, "linux", NULL, not_root), 0);
    /* outside the mapping's logsource the taxonomy name stays */
    /* explain shows the mapped names, modifiers kept */
    json_t *e = kx_rule_explain(rs, kx_ruleset_at(rs, 0), &(kx_event){.raw = "x", .raw_len = 1});
    assert_non_null(e);
    json_t *conds = json_object_get(
        json_array_get(json_object_get(json_array_get(json_object_get(e, "searches"), 0), "groups"),
                       1),
        "conditions");
    assert_string_equal(json_string_value(json_object_get(json_array_get(conds, 0), "key")),
                        "process|endswith");
    assert_string_equal(json_string_value(json_object_get(json_array_get(conds, 1), "key")),
                        "user");
    json_decref(e);
    const char *win[] = {"User", "root", NULL};
    const char *win_ours[] = {"user", "root", NULL};
    assert_int_equal(kx_test_match(rs, "windows", NULL, win), 1);
    assert_int_equal(kx_test_match(rs, "windows", NULL, win_ours), 0);
    kx_ruleset_destroy(rs);
}

static void test_correlation_fields(void **state)
{
    (void)state;
    kx_ruleset *rs = load_ok("title: failed\nname: failed\nlogsource: {product: linux}\n"
                             "detection:\n  sel: {outcome: Failed}\n  condition: sel\n"
                             "---\n"
                             "title: spray\ncorrelation:\n  type: value_count\n  rules: [failed]\n"
                             "  group-by: [SourceIp]\n  timespan: 5m\n"
                             "  condition: {field: User, gte: 5}\n");
    const kx_rule *c = kx_ruleset_at(rs, 1);
    assert_int_equal(c->kind, KX_RULE_CORRELATION);
    assert_string_equal(c->group_by[0], "SourceIp"); /* as written, in the alert */
    assert_string_equal(c->group_fields[0], "src_ip");
    assert_string_equal(c->value_fields[0], "user");
    kx_ruleset_destroy(rs);
}

/* A fieldref names a field too, and `fields` names what the alert shows: both mapped. */
static void test_fieldref_and_shown_fields(void **state)
{
    (void)state;
    kx_ruleset *rs = load_ok("title: same user\nlogsource: {product: linux}\n"
                             "detection:\n  sel: {target_user|fieldref: User}\n  condition: sel\n"
                             "fields: [User, SourceIp, pwd]\n");
    const char *same[] = {"user", "bob", "target_user", "BOB", NULL};
    const char *other[] = {"user", "bob", "target_user", "root", NULL};
    const char *theirs[] = {"User", "bob", "target_user", "bob", NULL};
    assert_int_equal(kx_test_match(rs, "linux", NULL, same), 1);
    assert_int_equal(kx_test_match(rs, "linux", NULL, other), 0);
    assert_int_equal(kx_test_match(rs, "linux", NULL, theirs), 0);
    const kx_rule *r = kx_ruleset_at(rs, 0);
    assert_int_equal(r->nfields, 3);
    assert_string_equal(r->fields[0], "user");
    assert_string_equal(r->fields[1], "src_ip");
    assert_string_equal(r->fields[2], "pwd");
    kx_ruleset_destroy(rs);
}

static void test_errors(void **state)
{
    (void)state;
    char got[1024], want[1024];
    assert_null(load_with("title: t\ndetection:\n  s: {a: b}\n  condition: s\n",
                          "title: m\nlogsource: {product: linux}\nfieldmapping:\n  User: {}\n", got,
                          sizeof(got)));
    snprintf(want, sizeof(want),
             "%s/m.yml:4:9: a field mapping maps a field name to a field name or a list of them",
             dir);
    assert_string_equal(got, want);
    assert_null(load_with("title: t\ndetection:\n  s: {a: b}\n  condition: s\n",
                          "title: m\nfieldmapping:\n  User: user\n", got, sizeof(got)));
    snprintf(want, sizeof(want),
             "%s/m.yml:1:1: a field mapping needs a logsource (a mapping): the rules it maps", dir);
    assert_string_equal(got, want);
}

/* conditions: a selection every rule within the logsource must also meet (pySigma's
 * add-condition), in the decoders' names, after the renames. */
static void test_conditions_per_logsource(void **state)
{
    (void)state;
    char why[1024];
    kx_ruleset *rs =
        load_with("title: root login\nid: a\nlogsource: {product: linux, service: sshd}\n"
                  "detection:\n  sel: {User: root}\n  condition: sel\n---\n"
                  "title: any sudo\nid: b\nlogsource: {product: linux, service: sudo}\n"
                  "detection:\n  sel: {User: root}\n  condition: sel\n",
                  "title: sshd events are sshd's\nlogsource: {product: linux, service: sshd}\n"
                  "fieldmapping: {User: user}\n"
                  "conditions:\n  program: sshd\n  pid|gt: 1\n",
                  why, sizeof(why));
    if (!rs)
        fail_msg("%s", why);
    const char *from_sshd[] = {"user", "root", "program", "SSHD", "pid", "812", NULL};
    const char *from_other[] = {"user", "root", "program", "login", "pid", "812", NULL};
    const char *no_pid[] = {"user", "root", "program", "sshd", NULL};
    const char *other_user[] = {"user", "bob", "program", "sshd", "pid", "812", NULL};
    assert_int_equal(kx_test_match(rs, "linux", "sshd", from_sshd), 1);
    assert_int_equal(kx_test_match(rs, "linux", "sshd", from_other), 0);
    assert_int_equal(kx_test_match(rs, "linux", "sshd", no_pid), 0);
    assert_int_equal(kx_test_match(rs, "linux", "sshd", other_user), 0);
    /* outside the logsource: neither renamed nor narrowed */
    const char *sudo[] = {"User", "root", "program", "sudo", NULL};
    assert_int_equal(kx_test_match(rs, "linux", "sudo", sudo), 1);
    /* the mapping is listed among the rule's filters */
    const kx_rule *a = kx_ruleset_at(rs, 0);
    assert_int_equal(a->nfilters, 1);
    assert_string_equal(a->filters[0], "sshd events are sshd's");
    assert_int_equal(kx_ruleset_at(rs, 1)->nfilters, 0);
    kx_ruleset_destroy(rs);

    /* a second mapping renames the rules' taxonomy names, never the first one's conditions
     * (written in the decoders' names) */
    rs = load_with(
        "title: root login\nlogsource: {product: linux, service: sshd}\n"
        "detection:\n  sel: {Program: root}\n  condition: sel\n",
        "title: a\nlogsource: {product: linux}\nfieldmapping: {}\n"
        "conditions: {program: sshd}\n---\n"
        "title: b\nlogsource: {product: linux}\nfieldmapping: {Program: user, program: x}\n",
        why, sizeof(why));
    if (!rs)
        fail_msg("%s", why);
    const char *ok[] = {"user", "root", "program", "sshd", NULL};
    assert_int_equal(kx_test_match(rs, "linux", "sshd", ok), 1);
    kx_ruleset_destroy(rs);

    char want[1024];
    assert_null(load_with("title: t\nlogsource: {product: linux}\ndetection:\n  s: {a: b}\n"
                          "  condition: s\n",
                          "title: m\nlogsource: {product: linux}\nfieldmapping: {}\n"
                          "conditions:\n  program|nosuch: x\n",
                          why, sizeof(why)));
    snprintf(want, sizeof(want), "%s/m.yml:5:3: unknown modifier \"nosuch\"", dir);
    assert_string_equal(why, want);
    assert_null(load_with("title: t\nlogsource: {product: linux}\ndetection:\n  s: {a: b}\n"
                          "  condition: s\n",
                          "title: m\nlogsource: {product: linux}\nfieldmapping: {}\n", why,
                          sizeof(why)));
    snprintf(want, sizeof(want),
             "%s/m.yml:3:15: \"fieldmapping\" maps Sigma field names to the decoders' fields", dir);
    assert_string_equal(why, want);
}

typedef struct warnings {
    char lines[4][1024];
    size_t n;
} warnings;

static void warn_cb(void *ud, kx_lint_level level, const kx_err *err)
{
    warnings *w = ud;
    assert_int_equal(level, KX_LINT_WARNING);
    assert_true(w->n < 4);
    kx_err_format(err, w->lines[w->n++], sizeof(w->lines[0]));
}

/* A mapping that lists its logsource's fields: lint warns of a field a rule reads that the
 * events do not carry (a typo, or a field of another source), once per rule and field. */
static void test_unknown_fields(void **state)
{
    (void)state;
    char a[200], b[200], want[1024];
    snprintf(a, sizeof(a), "%s/m.yml", dir);
    snprintf(b, sizeof(b), "%s/r.yml", dir);
    assert_int_equal(kx_test_write_file(a,
                                        "title: sshd\nlogsource: {product: linux, service: sshd}\n"
                                        "fieldmapping: {User: user}\n"
                                        "fields: [user, src_ip, outcome, program]\n"),
                     0);
    assert_int_equal(
        kx_test_write_file(b, "title: typo\nlogsource: {product: linux, service: sshd}\n"
                              "detection:\n  s: {User: root, src_ipp: 1.2.3.4}\n"
                              "  t: {src_ipp|contains: '1.2', outcome|fieldref: usr}\n"
                              "  condition: s or t\n---\n"
                              "title: good\nlogsource: {product: linux, service: sshd}\n"
                              "detection:\n  s: {User: root, outcome: Accepted}\n  condition: s\n"
                              "---\ntitle: elsewhere\nlogsource: {product: linux, service: sudo}\n"
                              "detection:\n  s: {command: x}\n  condition: s\n"),
        0);
    const char *paths[] = {dir};
    warnings w = {.n = 0};
    kx_lint_totals t;
    assert_int_equal(kx_ruleset_lint(paths, 1, warn_cb, &w, &t), 0);
    assert_int_equal(t.warnings, 2);
    snprintf(want, sizeof(want),
             "%s:1:1: rule \"typo\" reads field \"src_ipp\", which the events of its logsource do "
             "not carry (field mapping \"sshd\" in %s lists their fields)",
             b, a);
    assert_string_equal(w.lines[0], want);
    snprintf(want, sizeof(want),
             "%s:1:1: rule \"typo\" reads field \"usr\", which the events of its logsource do not "
             "carry (field mapping \"sshd\" in %s lists their fields)",
             b, a);
    assert_string_equal(w.lines[1], want);
    remove(a);
    remove(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taxonomy_names_read_decoder_fields),
        cmocka_unit_test(test_one_to_many_and_logsource_scope),
        cmocka_unit_test(test_correlation_fields),
        cmocka_unit_test(test_fieldref_and_shown_fields),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_conditions_per_logsource),
        cmocka_unit_test(test_unknown_fields),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
