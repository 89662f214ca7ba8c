/*
 * Rule loading: the rule records the example rules produce, defaults, file discovery, and
 * every loader error as a whole "file:line:col: message" string, with *out left untouched.
 *
 * Run with arguments (tests/unit/sigma_corpus.sh does) it is instead a corpus checker: each
 * argument is a rule file loaded on its own, failures are printed as "FAIL file:line:col:
 * msg", and a summary "loaded N of M files (R rules)" ends the output.
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

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kx_rules_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof(path), "%s/r.yml", dir);
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

/* Loads yaml from r.yml, expects failure with message "r.yml:<want_suffix>". */
static void expect_err(const char *yaml, const char *want_suffix)
{
    write_file(path, yaml);
    char got[1024], want[1024];
    kx_err err;
    kx_ruleset *rs = (kx_ruleset *)&err, *before = rs;
    const char *p = path;
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    assert_ptr_equal(rs, before);
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want), "%s:%s", path, want_suffix);
    assert_string_equal(got, want);
}

static void test_fixtures(void **state)
{
    (void)state;
    kx_ruleset *rs = load_ok(KX_SOURCE_DIR "/tests/fixtures/rules");
    assert_int_equal(kx_ruleset_size(rs), 5);
    /* Files sorted by name; rules in file order. */
    static const char *const titles[] = {
        "AdministratorAccess policy attached to an IAM user",
        "Interactive SSH login outside office hours",
        "SSH brute force from one source",
        "Failed SSH login",
        "Sudo to root",
    };
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(kx_ruleset_at(rs, i)->index, i);
        assert_string_equal(kx_ruleset_at(rs, i)->title, titles[i]);
    }
    assert_null(kx_ruleset_at(rs, 5));

    const kx_rule *r = kx_ruleset_at(rs, 0);
    assert_int_equal(r->kind, KX_RULE_DETECTION);
    assert_string_equal(r->id, "7c3a1d9e-4b2f-4a6c-8e5d-1f2a3b4c5d03");
    assert_null(r->name);
    assert_string_equal(r->level, "high");
    assert_string_equal(r->team, "cloud");
    assert_null(r->category);
    assert_int_equal(r->ntags, 3);
    assert_string_equal(r->tags[0], "attack.persistence");
    assert_string_equal(r->tags[2], "attack.t1098");
    assert_string_equal(r->file, KX_SOURCE_DIR "/tests/fixtures/rules/aws_iam_admin_policy.yml");
    assert_int_equal(r->line, 1);
    assert_true(r->generate);
    assert_int_equal(r->ncorrelations, 0);
    assert_int_equal(r->matches, 0);

    r = kx_ruleset_at(rs, 1);
    assert_string_equal(r->team, "platform");
    assert_string_equal(r->category, "access");
    assert_string_equal(r->level, "medium");
    assert_int_equal(r->line, 2); /* after the leading comment */

    r = kx_ruleset_at(rs, 3);
    assert_string_equal(r->name, "ssh_failed_login");
    assert_string_equal(r->level, "low");
    assert_int_equal(r->line, 24); /* second document of ssh_bruteforce.yml */
    assert_false(r->generate);     /* counted by a correlation */

    r = kx_ruleset_at(rs, 4);
    assert_string_equal(r->category, "privilege");
    assert_int_equal(r->ntags, 2);
    kx_ruleset_destroy(rs);
}

static void test_defaults_and_custom_keys(void **state)
{
    (void)state;
    write_file(path, "title: Only a title\n"
                     "custom_attribute: {anything: [goes, here]}\n"
                     "status: test\n"
                     "description: d\n"
                     "references: [https://example.org]\n"
                     "author: me\n"
                     "date: 2026-01-01\n"
                     "modified: 2026-01-02\n"
                     "related:\n    - id: 9d4e2f1a-6c3b-4d7e-a1f2-3b4c5d6e7f04\n"
                     "      type: derived\n"
                     "license: MIT\n"
                     "taxonomy: sigma\n"
                     "scope: [server]\n"
                     "fields: [a, b]\n"
                     "falsepositives: [none]\n"
                     "logsource:\n    product: linux\n    definition: whatever\n"
                     "detection:\n    s: {f: x}\n    condition: s\n"
                     "---\n"
                     "title: Named\nname: my_rule\ntags:\nrealert: 30m\n"
                     "detection:\n    s: {f: x}\n"
                     "    condition: s\n");
    kx_ruleset *rs = load_ok(path);
    assert_int_equal(kx_ruleset_size(rs), 2);
    const kx_rule *r = kx_ruleset_at(rs, 0);
    assert_string_equal(r->id, "Only a title");
    assert_string_equal(r->level, "medium");
    assert_null(r->team);
    assert_null(r->name);
    assert_int_equal(r->ntags, 0);
    assert_true(r->generate);
    assert_int_equal(r->realert_ms, 0);
    r = kx_ruleset_at(rs, 1);
    assert_int_equal(r->realert_ms, 30 * 60 * 1000);
    assert_string_equal(r->id, "my_rule");
    assert_string_equal(r->name, "my_rule");
    assert_int_equal(r->line, 24);
    kx_ruleset_destroy(rs);
}

static void test_directory_walk(void **state)
{
    (void)state;
    char p[256];
    char body[128];
    snprintf(p, sizeof(p), "%s/sub", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/sub/deeper", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/sub/.hidden", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    struct {
        const char *name, *title;
    } files[] = {
        {"sub/b.yml", "B"},
        {"sub/a.yaml", "A"},
        {"sub/deeper/c.yml", "C"},
        {"sub/notes.txt", "not a rule"},
        {"sub/.swap.yml", "hidden"},
        {"sub/.hidden/h.yml", "hidden dir"},
        {"sub/b.tests.yml", "a rule's tests"},
        {"sub/a.tests.yaml", "a rule's tests"},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i].name);
        snprintf(body, sizeof(body), "title: %s\ndetection:\n    s: {f: x}\n    condition: s\n",
                 files[i].title);
        write_file(p, body);
    }
    snprintf(p, sizeof(p), "%s/sub", dir);
    write_file(path, "title: single\ndetection:\n    s: {f: x}\n    condition: s\n");
    const char *paths[] = {p, path};
    kx_ruleset *rs = NULL;
    kx_err err;
    assert_int_equal(kx_ruleset_load(paths, 2, &rs, &err), 0);
    assert_int_equal(kx_ruleset_size(rs), 4);
    assert_string_equal(kx_ruleset_at(rs, 0)->title, "A");
    assert_string_equal(kx_ruleset_at(rs, 1)->title, "B");
    assert_string_equal(kx_ruleset_at(rs, 2)->title, "C");
    assert_string_equal(kx_ruleset_at(rs, 3)->title, "single");
    kx_ruleset_destroy(rs);
}

typedef struct lint_seen {
    char lines[8][600];
    size_t n;
    kx_lint_level level; /* what every report must be */
} lint_seen;

static void lint_cb(void *ud, kx_lint_level level, const kx_err *err)
{
    lint_seen *s = ud;
    assert_int_equal(level, s->level);
    assert_true(s->n < 8);
    kx_err_format(err, s->lines[s->n++], sizeof(s->lines[0]));
}

/* kx_ruleset_lint goes on after an error: every bad document of every file, each duplicate,
 * each unresolved correlation; a clean set reports nothing. */
static void test_lint_every_error(void **state)
{
    (void)state;
    char sub[128], a[160], b[160], want[6][600];
    snprintf(sub, sizeof(sub), "%s/lint", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(a, sizeof(a), "%s/a.yml", sub);
    snprintf(b, sizeof(b), "%s/b.yml", sub);
    write_file(a, "title: x\ndetection:\n    s: {f|nope: x}\n    condition: s\n---\n"
                  "title: y\nid: same\ndetection:\n    s: {f: x}\n    condition: s\n---\n"
                  "title: c\ncorrelation:\n    type: event_count\n    rules: [missing]\n"
                  "    group-by: [h]\n    timespan: 5m\n    condition: {gte: 2}\n");
    write_file(b, "title: z\nid: same\ndetection:\n    s: {f: x}\n    condition: s\n---\n"
                  "title: w\ndetection:\n    s: {f: x}\n    condition: t\n");
    const char *paths[] = {sub};
    lint_seen seen = {.n = 0, .level = KX_LINT_ERROR};
    kx_lint_totals t;
    assert_int_equal(kx_ruleset_lint(paths, 1, lint_cb, &seen, &t), 4);
    /* left out: the two bad documents; kept: y, z and the unresolved correlation */
    assert_int_equal(t.errors, 4);
    assert_int_equal(t.detection, 2);
    assert_int_equal(t.correlation, 1);
    snprintf(want[0], sizeof(want[0]), "%s:3:9: unknown modifier \"nope\"", a);
    snprintf(want[1], sizeof(want[1]), "%s:10:16: condition references unknown identifier \"t\"",
             b);
    snprintf(want[2], sizeof(want[2]), "%s:2:5: duplicate rule id \"same\" (first defined at %s:6)",
             b, a);
    snprintf(want[3], sizeof(want[3]), "%s:15:13: correlation references unknown rule \"missing\"",
             a);
    assert_int_equal(seen.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(seen.lines[i], want[i]);
    /* what would load: nothing to say */
    write_file(a, "title: x\ndetection:\n    s: {f: x}\n    condition: s\n");
    write_file(b, "title: z\ndetection:\n    s: {f: y}\n    condition: s\n");
    seen.n = 0;
    assert_int_equal(kx_ruleset_lint(paths, 1, lint_cb, &seen, NULL), 0);
    assert_int_equal(seen.n, 0);
}

/* Warnings for rules no event can match, each with its reason; rules that can match (however
 * unlikely) say nothing. */
static void test_lint_never_matches(void **state)
{
    (void)state;
    char sub[128], a[160], want[600];
    snprintf(sub, sizeof(sub), "%s/never", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(a, sizeof(a), "%s/a.yml", sub);
    char list[160];
    snprintf(list, sizeof(list), "%s/nobody.list", sub);
    write_file(list, "# nobody this week\n");
    write_file(a, "title: contradiction\ndetection:\n    s: {f: x}\n    condition: s and not s\n"
                  "---\ntitle: empty list\ndetection:\n    s: {user|expand: '%nobody%'}\n"
                  "    t: {f: x}\n    condition: s and t\n"
                  "---\ntitle: absent and present\ndetection:\n"
                  "    s: {user|exists: false, user|contains: adm}\n    condition: s\n"
                  "---\ntitle: hour 24\ndetection:\n    s: {t|hour: 24}\n    condition: s\n"
                  "---\ntitle: fine\ndetection:\n    s: {user|exists: false}\n"
                  "    t: {user: [null, x], t|hour: 23}\n    n: {user|expand: '%nobody%'}\n"
                  "    condition: (s or t) and not n\n");
    const char *paths[] = {sub};
    lint_seen seen = {.n = 0, .level = KX_LINT_WARNING};
    kx_lint_totals t;
    assert_int_equal(kx_ruleset_lint(paths, 1, lint_cb, &seen, &t), 0);
    assert_int_equal(t.warnings, 4);
    assert_int_equal(seen.n, 4);
    snprintf(want, sizeof(want),
             "%s:1:1: rule \"contradiction\" can never match: its condition is false whatever "
             "its search identifiers say",
             a);
    assert_string_equal(seen.lines[0], want);
    snprintf(want, sizeof(want),
             "%s:6:1: rule \"empty list\" can never match: search \"s\": \"user|expand\" has no "
             "value to compare (an empty list)",
             a);
    assert_string_equal(seen.lines[1], want);
    snprintf(want, sizeof(want),
             "%s:12:1: rule \"absent and present\" can never match: search \"s\": "
             "\"user|exists\" and \"user|contains\" in one map: absent and with a value",
             a);
    assert_string_equal(seen.lines[2], want);
    snprintf(want, sizeof(want),
             "%s:17:1: rule \"hour 24\" can never match: search \"s\": \"t|hour\" asks for a "
             "time part no time has",
             a);
    assert_string_equal(seen.lines[3], want);
}

/* A reload keeps the counters of the rules whose document did not change; the files'
 * fingerprint moves when one is written. */
static void test_reload_counters_and_fingerprint(void **state)
{
    (void)state;
    char sub[128], a[160];
    snprintf(sub, sizeof(sub), "%s/reload", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(a, sizeof(a), "%s/a.yml", sub);
    const char *paths[] = {sub};
    write_file(a, "title: same\nid: r1\ndetection:\n    s: {f: x}\n    condition: s\n---\n"
                  "title: edited\nid: r2\ndetection:\n    s: {f: x}\n    condition: s\n");
    uint64_t fp1 = kx_rule_files_fingerprint(paths, 1);
    assert_true(fp1 != 0);
    assert_int_equal(kx_rule_files_fingerprint(paths, 1), fp1);
    kx_ruleset *old = load_ok(sub);
    kx_ruleset_at(old, 0)->matches = 7;
    kx_ruleset_at(old, 1)->matches = 9;
    write_file(a, "title: same\nid: r1\ndetection:\n    s: {f: x}\n    condition: s\n---\n"
                  "title: edited\nid: r2\ndetection:\n    s: {f: y}\n    condition: s\n---\n"
                  "title: new\nid: r3\ndetection:\n    s: {f: x}\n    condition: s\n");
    assert_true(kx_rule_files_fingerprint(paths, 1) != fp1);
    kx_ruleset *rs = load_ok(sub);
    assert_int_equal(kx_ruleset_carry_counters(rs, old), 1);
    assert_int_equal(kx_ruleset_at(rs, 0)->matches, 7); /* unchanged */
    assert_int_equal(kx_ruleset_at(rs, 1)->matches, 0); /* its selection changed */
    assert_int_equal(kx_ruleset_at(rs, 2)->matches, 0); /* new */
    kx_ruleset_destroy(rs);
    kx_ruleset_destroy(old);
    const char *missing[] = {"/nonexistent/klaxon-rules"};
    assert_int_equal(kx_rule_files_fingerprint(missing, 1), 0);
}

static void test_nothing_half_loaded(void **state)
{
    (void)state;
    char good[256], bad[256], got[1024], want[512];
    snprintf(good, sizeof(good), "%s/good.yml", dir);
    snprintf(bad, sizeof(bad), "%s/zbad.yml", dir);
    write_file(good, "title: good\ndetection:\n    s: {f: x}\n    condition: s\n");
    write_file(bad, "title: bad\ndetection:\n    s: {f|contians: x}\n    condition: s\n");
    kx_err err;
    kx_ruleset *rs = (kx_ruleset *)&err, *before = rs;
    const char *p = dir;
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    assert_ptr_equal(rs, before);
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want), "%s:3:9: unknown modifier \"contians\"", bad);
    assert_string_equal(got, want);
    unlink(good);
    unlink(bad);

    p = "/nonexistent/rules";
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    assert_ptr_equal(rs, before);
    kx_err_format(&err, got, sizeof(got));
    assert_string_equal(got, "/nonexistent/rules: No such file or directory");
}

static void test_errors(void **state)
{
    (void)state;
    expect_err("detection:\n    s: {f: x}\n    condition: s\n",
               "1:1: missing required key \"title\"");
    expect_err("title: t\nlevel: high\n", "1:1: missing required key \"detection\"");
    expect_err("title: [a]\ndetection: {}\n", "1:8: \"title\" must be a non-empty string");
    expect_err("title: t\nfilter: {rules: [x]}\n",
               "1:1: a filter needs a logsource (a mapping): the rules it may narrow");
    expect_err("- a\n- b\n", "1:1: a rule must be a YAML mapping");
    expect_err("title: t\ndetection: [a]\n", "2:12: \"detection\" must be a mapping");
    expect_err("title: t\nlevel: severe\ndetection:\n    s: {f: x}\n    condition: s\n",
               "2:8: invalid level \"severe\" (expected informational, low, medium, high or "
               "critical)");
    expect_err("title: t\nrealert: 10ms\ndetection:\n    s: {f: x}\n    condition: s\n",
               "2:10: realert must be between 1s and 30d");
    expect_err("title: t\ntags: {a: b}\ndetection:\n    s: {f: x}\n    condition: s\n",
               "2:7: \"tags\" must be a list of strings");
    expect_err("title: t\nlogsource: linux\ndetection:\n    s: {f: x}\n    condition: s\n",
               "2:12: \"logsource\" must be a mapping");
    expect_err("title: t\ndetection:\n    s: x\n    condition: s\n",
               "3:8: search identifier \"s\" must be a non-empty mapping or list");
    expect_err("title: t\ndetection:\n    s: {}\n    condition: s\n",
               "3:5: search identifier \"s\" is empty");
    expect_err("title: t\ndetection:\n    s:\n        - [a]\n    condition: s\n",
               "4:11: expected a keyword or a mapping of field conditions");
    expect_err("title: t\ndetection:\n    s:\n        f: {a: b}\n    condition: s\n",
               "4:12: expected a value or a list of values");
    expect_err("title: t\ndetection:\n    s:\n        f: []\n    condition: s\n",
               "4:9: empty list of values");
    expect_err("title: t\ndetection:\n    s:\n        f|contians: x\n    condition: s\n",
               "4:9: unknown modifier \"contians\"");
    expect_err("title: t\ndetection:\n    s:\n        f||contains: x\n    condition: s\n",
               "4:9: empty modifier in \"f||contains\"");
    expect_err("title: t\ndetection:\n    s:\n        f|re|contains: x\n    condition: s\n",
               "4:9: modifier \"contains\" cannot be combined with \"re\"");
    expect_err("title: t\ndetection:\n    s:\n        f|startswith|endswith: x\n"
               "    condition: s\n",
               "4:9: modifier \"endswith\" cannot be combined with \"startswith\"");
    expect_err("title: t\ndetection:\n    s:\n        f|i: x\n    condition: s\n",
               "4:9: modifier \"i\" is only valid after \"re\"");
    expect_err("title: t\ndetection:\n    s:\n        f|re|base64: x\n    condition: s\n",
               "4:9: modifier \"re\" cannot be combined with encoding or windash modifiers");
    expect_err("title: t\ndetection:\n    s:\n        f|re: 'a(b'\n    condition: s\n",
               "4:15: invalid regular expression at offset 3: missing closing parenthesis");
    expect_err("title: t\ndetection:\n    s:\n        f|cidr: 10.0.0.0/33\n    condition: s\n",
               "4:17: invalid CIDR network \"10.0.0.0/33\"");
    expect_err("title: t\ndetection:\n    s:\n        f|cidr: nope\n    condition: s\n",
               "4:17: invalid CIDR network \"nope\"");
    expect_err("title: t\ndetection:\n    s:\n        f|gt: ten\n    condition: s\n",
               "4:15: expected a number, got \"ten\"");
    expect_err("title: t\ndetection:\n    s:\n        f|exists: maybe\n    condition: s\n",
               "4:19: exists expects true or false");
    expect_err("title: t\ndetection:\n    s:\n        f|base64: 'a*'\n    condition: s\n",
               "4:19: base64 cannot encode a value with wildcards: escape * and ? with a "
               "backslash");
    expect_err("title: t\ndetection:\n    s:\n        f|expand: '%servers%'\n"
               "    condition: s\n",
               "4:19: placeholder %servers% names no list (a file servers.list in the rules "
               "tree)");
    expect_err("title: t\ndetection:\n    s:\n        f|hour|contains: 3\n    condition: s\n",
               "4:9: a time-part modifier takes a number, compared as is or with lt/lte/gt/gte: "
               "not with \"contains\"");
    expect_err("title: t\ndetection:\n    s:\n        f|hour|day: 3\n    condition: s\n",
               "4:9: one time-part modifier (minute, hour, day, week, month, year) per field");
    expect_err("title: t\ndetection:\n    s:\n        f|hour: three\n    condition: s\n",
               "4:17: expected a number, got \"three\"");
    expect_err("title: t\ntimezone: Mars/Olympus\ndetection:\n    s:\n        f|hour: 3\n"
               "    condition: s\n",
               "2:11: unknown time zone \"Mars/Olympus\"");
    expect_err("title: t\ndetection:\n    s:\n        '|exists': true\n    condition: s\n",
               "4:9: modifier \"exists\" needs a field name");
    expect_err("title: t\ndetection:\n    s:\n        - null\n    condition: s\n",
               "4:11: a keyword cannot be null");
    expect_err("title: t\ndetection:\n    s:\n        timeofday:\n            timezone: "
               "Mars/Olympus\n    condition: s\n",
               "5:23: unknown time zone \"Mars/Olympus\"");
    expect_err("title: t\nregex_budget: fail_shut\ndetection:\n    s: {f|re: x}\n"
               "    condition: s\n",
               "2:15: invalid regex_budget \"fail_shut\" (expected fail_closed or fail_open)");
    expect_err("title: t\nregex_budget: [fail_open]\ndetection:\n    s: {f|re: x}\n"
               "    condition: s\n",
               "2:15: invalid regex_budget \"(not a string)\" (expected fail_closed or "
               "fail_open)");
    expect_err("title: t\nregex_budget: fail_open\ncorrelation:\n    type: event_count\n"
               "    rules: [x]\n    timespan: 1m\n    condition: {gte: 2}\n",
               "2:15: \"regex_budget\" applies to detection rules only");
    char want[512];
    snprintf(want, sizeof(want), "8:5: duplicate rule id \"x\" (first defined at %s:1)", path);
    expect_err("title: a\nid: x\ndetection:\n    s: {f: x}\n    condition: s\n---\n"
               "title: b\nid: x\ndetection:\n    s: {f: x}\n    condition: s\n",
               want);
    snprintf(want, sizeof(want), "8:7: duplicate rule name \"n\" (first defined at %s:1)", path);
    expect_err("title: a\nname: n\ndetection:\n    s: {f: x}\n    condition: s\n---\n"
               "title: b\nname: n\ndetection:\n    s: {f: x}\n    condition: s\n",
               want);
}

static void test_yaml_error(void **state)
{
    (void)state;
    write_file(path, "title: t\ndetection: [unclosed\n");
    kx_err err;
    kx_ruleset *rs = NULL;
    const char *p = path;
    assert_int_equal(kx_ruleset_load(&p, 1, &rs, &err), -EINVAL);
    assert_null(rs);
    char got[1024], want[256];
    kx_err_format(&err, got, sizeof(got));
    snprintf(want, sizeof(want), "%s:3:1: YAML: ", path);
    assert_memory_equal(got, want, strlen(want)); /* the rest is libyaml's wording */
}

/* Corpus mode: see the file comment. Exit 0 when every file loads, 1 otherwise. */
static int corpus(int argc, char **argv)
{
    int ok = 0;
    size_t rules = 0;
    for (int i = 1; i < argc; i++) {
        kx_ruleset *rs = NULL;
        kx_err err;
        const char *p = argv[i];
        if (kx_ruleset_load(&p, 1, &rs, &err)) {
            char buf[1024];
            kx_err_format(&err, buf, sizeof(buf));
            printf("FAIL %s\n", buf);
            continue;
        }
        ok++;
        rules += kx_ruleset_size(rs);
        kx_ruleset_destroy(rs);
    }
    printf("loaded %d of %d files (%zu rules)\n", ok, argc - 1, rules);
    return ok == argc - 1 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return corpus(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_defaults_and_custom_keys),
        cmocka_unit_test(test_directory_walk),
        cmocka_unit_test(test_nothing_half_loaded),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_yaml_error),
        cmocka_unit_test(test_lint_every_error),
        cmocka_unit_test(test_lint_never_matches),
        cmocka_unit_test(test_reload_counters_and_fingerprint),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
