/*
 * Matching: one table row per modifier/value case (a one-field selection against one
 * event), plus keywords, repeated fields, logsource filtering, match counting and callback
 * order, the regex match limit, time of day, and the four example rules in
 * tests/fixtures/rules against realistic events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "detect/detect_int.h"
#include "klaxon/detect.h"
#include "klaxon/metrics.h"
#include "kx_test.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/kx_match_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return rmdir(dir);
}

static kx_ruleset *load_yaml(const char *yaml)
{
    return kx_test_load_rules(dir, yaml);
}

typedef struct mcase {
    const char *sel;   /* one line of the selection map, field "f" */
    const char *value; /* value of field f; NULL = field absent */
    kx_val_type type;
    bool expect;
} mcase;

static const mcase cases[] = {
    /* plain strings: whole-value, ASCII case-insensitive */
    {"f: foo", "foo", KX_VAL_STR, true},
    {"f: foo", "FoO", KX_VAL_STR, true},
    {"f: foo", "foo ", KX_VAL_STR, false},
    {"f: foo", "xfoo", KX_VAL_STR, false},
    {"f: foo", NULL, KX_VAL_STR, false},
    {"f: 'Ünïcode'", "Ünïcode", KX_VAL_STR, true},
    {"f|cased: Foo", "Foo", KX_VAL_STR, true},
    {"f|cased: Foo", "foo", KX_VAL_STR, false},
    /* lists are OR */
    {"f: [a, b]", "b", KX_VAL_STR, true},
    {"f: [a, b]", "c", KX_VAL_STR, false},
    /* contains / startswith / endswith */
    {"f|contains: foo", "xxFOOyy", KX_VAL_STR, true},
    {"f|contains: foo", "fo", KX_VAL_STR, false},
    {"f|contains|cased: Foo", "xFoox", KX_VAL_STR, true},
    {"f|contains|cased: Foo", "xfoox", KX_VAL_STR, false},
    {"f|startswith: foo", "FOObar", KX_VAL_STR, true},
    {"f|startswith: foo", "barfoo", KX_VAL_STR, false},
    {"f|endswith: '\\cmd.exe'", "C:\\Windows\\CMD.EXE", KX_VAL_STR, true},
    {"f|endswith: '\\cmd.exe'", "C:\\Windows\\cmd.exe.bak", KX_VAL_STR, false},
    /* |all: every value must match */
    {"f|contains|all: [a, b]", "xaxb", KX_VAL_STR, true},
    {"f|contains|all: [a, b]", "xax", KX_VAL_STR, false},
    /* wildcards and escapes */
    {"f: 'a*c'", "abbc", KX_VAL_STR, true},
    {"f: 'a*c'", "ac", KX_VAL_STR, true},
    {"f: 'a*c'", "abcd", KX_VAL_STR, false},
    {"f: 'a?c'", "aBc", KX_VAL_STR, true},
    {"f: 'a?c'", "ac", KX_VAL_STR, false},
    {"f: 'a?c'", "abbc", KX_VAL_STR, false},
    {"f: 'caf?'", "café", KX_VAL_STR, true}, /* ? is one character, not one byte */
    {"f: '*'", "", KX_VAL_STR, true},
    {"f: '*'", NULL, KX_VAL_STR, false},
    {"f: '*a*b?c*'", "xxAyyBzCww", KX_VAL_STR, true},
    {"f: '*a*b?c*'", "xxAyyBCww", KX_VAL_STR, false},
    {"f: '*a*b?c*'", "bzc a", KX_VAL_STR, false},
    {"f: 'a\\*c'", "a*c", KX_VAL_STR, true},
    {"f: 'a\\*c'", "abc", KX_VAL_STR, false},
    {"f: 'a\\?c'", "a?c", KX_VAL_STR, true},
    {"f: 'a\\?c'", "abc", KX_VAL_STR, false},
    {"f: 'C:\\\\Windows\\\\*'", "c:\\windows\\system32", KX_VAL_STR, true}, /* \\* = \ then * */
    {"f: 'C:\\\\Windows\\\\*'", "c:\\windowsx", KX_VAL_STR, false},
    {"f: 'a\\\\\\*'", "a\\*", KX_VAL_STR, true}, /* \\\* = \ then literal * */
    {"f: 'a\\\\\\*'", "a\\b", KX_VAL_STR, false},
    {"f: 'C:\\Windows\\System32'", "c:\\windows\\system32", KX_VAL_STR, true},
    /* numbers and booleans compare as text */
    {"f: 4624", "4624", KX_VAL_NUM, true},
    {"f: 4624", "04624", KX_VAL_NUM, false},
    {"f: true", "true", KX_VAL_BOOL, true},
    /* null and empty */
    {"f: null", NULL, KX_VAL_STR, true},
    {"f: null", "", KX_VAL_NULL, true},
    {"f: null", "", KX_VAL_STR, false},
    {"f: null", "x", KX_VAL_STR, false},
    {"f: ''", "", KX_VAL_STR, true},
    {"f: ''", "x", KX_VAL_STR, false},
    {"f: ''", NULL, KX_VAL_STR, false},
    {"f: ''", "", KX_VAL_NULL, false},
    /* exists */
    {"f|exists: true", "", KX_VAL_STR, true},
    {"f|exists: true", "", KX_VAL_NULL, true},
    {"f|exists: true", NULL, KX_VAL_STR, false},
    {"f|exists: false", NULL, KX_VAL_STR, true},
    {"f|exists: false", "x", KX_VAL_STR, false},
    /* re and its sub-modifiers (case-sensitive by default, unanchored) */
    {"f|re: '^ab+c$'", "abbbc", KX_VAL_STR, true},
    {"f|re: '^ab+c$'", "ABC", KX_VAL_STR, false},
    {"f|re|i: '^ab+c$'", "ABC", KX_VAL_STR, true},
    {"f|re: 'b\\d{2}'", "xb42y", KX_VAL_STR, true},
    {"f|re: '^b$'", "a\nb", KX_VAL_STR, false},
    {"f|re|m: '^b$'", "a\nb", KX_VAL_STR, true},
    {"f|re: 'a.b'", "a\nb", KX_VAL_STR, false},
    {"f|re|s: 'a.b'", "a\nb", KX_VAL_STR, true},
    {"f|re: 'caf.$'", "caf\xc3\xa9", KX_VAL_STR, true},
    {"f|re: 'x'", "\xff\xfex", KX_VAL_STR, true}, /* invalid UTF-8 in the event is fine */
    /* numeric comparisons */
    {"f|gt: 10", "11", KX_VAL_NUM, true},
    {"f|gt: 10", "10", KX_VAL_NUM, false},
    {"f|gte: 10", "10", KX_VAL_STR, true},
    {"f|lt: 10", "9.5", KX_VAL_NUM, true},
    {"f|lt: 10", "10", KX_VAL_NUM, false},
    {"f|lte: 1.5", "1.5", KX_VAL_NUM, true},
    {"f|lte: 1.5", "1.6", KX_VAL_NUM, false},
    {"f|gt: 10", "abc", KX_VAL_STR, false},
    {"f|gt: 10", "11abc", KX_VAL_STR, false},
    {"f|gt: 10", NULL, KX_VAL_STR, false},
    /* cidr */
    {"f|cidr: 10.0.0.0/8", "10.1.2.3", KX_VAL_STR, true},
    {"f|cidr: 10.0.0.0/8", "11.0.0.1", KX_VAL_STR, false},
    {"f|cidr: 192.168.1.0/25", "192.168.1.127", KX_VAL_STR, true},
    {"f|cidr: 192.168.1.0/25", "192.168.1.128", KX_VAL_STR, false},
    {"f|cidr: 10.0.0.0/8", "not-an-ip", KX_VAL_STR, false},
    {"f|cidr: '2001:db8::/32'", "2001:db8:1::1", KX_VAL_STR, true},
    {"f|cidr: '2001:db8::/32'", "2001:db9::1", KX_VAL_STR, false},
    {"f|cidr: '2001:db8::/32'", "10.1.2.3", KX_VAL_STR, false},
    {"f|cidr: 10.1.2.3", "10.1.2.3", KX_VAL_STR, true},
    /* windash: a leading - or / may be any dash or a slash */
    {"f|contains|windash: ' -enc '", "ps /enc x", KX_VAL_STR, true},
    {"f|contains|windash: ' -enc '", "ps -ENC x", KX_VAL_STR, true},
    {"f|contains|windash: ' -enc '",
     "ps \xe2\x80\x93"
     "enc x",
     KX_VAL_STR, true},
    {"f|contains|windash: ' -enc '",
     "ps \xe2\x80\x95"
     "enc x",
     KX_VAL_STR, true},
    {"f|contains|windash: ' -enc '", "ps enc x", KX_VAL_STR, false},
    {"f|windash: 'a-b'", "a/b", KX_VAL_STR, false}, /* not at a word start: literal */
    {"f|windash: 'a-b'", "a-b", KX_VAL_STR, true},
    /* encodings */
    {"f|base64: abc", "YWJj", KX_VAL_STR, true},
    {"f|base64: abc", "ywjj", KX_VAL_STR, true}, /* case-insensitive as every Sigma string */
    {"f|base64|cased: abc", "ywjj", KX_VAL_STR, false},
    {"f|base64|contains: ab", "xxYWI=yy", KX_VAL_STR, true},
    {"f|base64offset|contains: /bin/sh", "eHgvYmluL3No", KX_VAL_STR, true},
    {"f|base64offset|contains: /bin/sh", "eC9iaW4vc2g=", KX_VAL_STR, true},
    {"f|base64offset|contains: /bin/sh", "L2Jpbi9zaA==", KX_VAL_STR, true},
    {"f|base64offset|contains: /bin/sh", "L2Jpbi9aaA==", KX_VAL_STR, false},
    {"f|wide|base64offset|contains: ping", "IAAgAHAAaQBuAGcAIAA=", KX_VAL_STR, true},
    {"f|utf16le|base64: a", "YQA=", KX_VAL_STR, true},
    {"f|utf16be|base64: a", "AGE=", KX_VAL_STR, true},
    {"f|utf16|base64: a", "//5hAA==", KX_VAL_STR, true},
    /* neq: present and different */
    {"f|neq: foo", "bar", KX_VAL_STR, true},
    {"f|neq: foo", "FOO", KX_VAL_STR, false},
    {"f|neq: foo", NULL, KX_VAL_STR, false},
};

static void add(kx_event *ev, const char *name, const char *value, kx_val_type t)
{
    assert_int_equal(kx_event_add(ev, name, strlen(name), value, strlen(value), t), 0);
}

static void test_modifier_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const mcase *c = &cases[i];
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 "title: t\ndetection:\n    sel:\n        %s\n    condition: sel\n", c->sel);
        kx_ruleset *rs = load_yaml(yaml);
        kx_event ev;
        kx_event_init(&ev);
        ev.raw = "unrelated";
        ev.raw_len = strlen(ev.raw);
        add(&ev, "other", "x", KX_VAL_STR);
        if (c->value)
            add(&ev, "f", c->value, c->type);
        size_t n = kx_ruleset_match(rs, &ev, NULL, NULL);
        if (n != (c->expect ? 1u : 0u))
            fail_msg("case %zu: \"%s\" against %s%s%s: expected %s", i, c->sel,
                     c->value ? "\"" : "", c->value ? c->value : "(absent)", c->value ? "\"" : "",
                     c->expect ? "match" : "no match");
        kx_event_fini(&ev);
        kx_ruleset_destroy(rs);
    }
}

static size_t match_fields(kx_ruleset *rs, const char *raw, const char *const *kv)
{
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = raw;
    ev.raw_len = raw ? strlen(raw) : 0;
    for (size_t i = 0; kv && kv[i]; i += 2)
        add(&ev, kv[i], kv[i + 1], KX_VAL_STR);
    size_t n = kx_ruleset_match(rs, &ev, NULL, NULL);
    kx_event_fini(&ev);
    return n;
}

static void test_fieldref(void **state)
{
    (void)state;
    kx_ruleset *rs = load_yaml("title: t\ndetection:\n    sel:\n        f|fieldref: g\n"
                               "    condition: sel\n");
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", "Abc", "g", "aBC", NULL}), 1);
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", "abc", "g", "abd", NULL}), 0);
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", "abc", NULL}), 0);
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", "a", "g", "x", "g", "A", NULL}), 1);
    kx_ruleset_destroy(rs);
}

static void test_keywords(void **state)
{
    (void)state;
    kx_ruleset *rs = load_yaml("title: t\ndetection:\n    keywords:\n        - 'evil'\n"
                               "        - 'bad*thing'\n    condition: keywords\n");
    assert_int_equal(match_fields(rs, "an EVIL line", NULL), 1);
    assert_int_equal(match_fields(rs, "a BAD old thing!", NULL), 1);
    assert_int_equal(match_fields(rs, "a good line", NULL), 0);
    /* Found in a decoded field value even when the raw text has it JSON-escaped. */
    assert_int_equal(
        match_fields(rs, "{\"m\":\"e\\u0076il\"}", (const char *[]){"m", "evil", NULL}), 1);
    kx_ruleset_destroy(rs);

    rs = load_yaml("title: t\ndetection:\n    kw:\n        '|all':\n            - 'Oab'\n"
                   "            - ' -ExternalUrl '\n    condition: kw\n");
    assert_int_equal(match_fields(rs, "Set-OabVirtualDirectory -ExternalUrl x", NULL), 1);
    assert_int_equal(match_fields(rs, "Set-OabVirtualDirectory", NULL), 0);
    kx_ruleset_destroy(rs);

    /* A list mixing keywords and maps: OR of all of them. */
    rs = load_yaml("title: t\ndetection:\n    sel:\n        - 'needle'\n        - f: x\n"
                   "          g: y\n    condition: sel\n");
    assert_int_equal(match_fields(rs, "hay needle", NULL), 1);
    assert_int_equal(match_fields(rs, "hay", (const char *[]){"f", "x", "g", "y", NULL}), 1);
    assert_int_equal(match_fields(rs, "hay", (const char *[]){"f", "x", "g", "z", NULL}), 0);
    kx_ruleset_destroy(rs);
}

static void test_repeated_fields(void **state)
{
    (void)state;
    kx_ruleset *rs = load_yaml("title: t\ndetection:\n    sel:\n        tag: prod\n"
                               "    condition: sel\n");
    assert_int_equal(match_fields(rs, "", (const char *[]){"tag", "dev", "tag", "PROD", NULL}), 1);
    assert_int_equal(match_fields(rs, "", (const char *[]){"tag", "dev", "tag", "qa", NULL}), 0);
    kx_ruleset_destroy(rs);
    /* |all over an array: each value must be found in some element. */
    rs = load_yaml("title: t\ndetection:\n    sel:\n        tag|all: [a, b]\n"
                   "    condition: sel\n");
    assert_int_equal(match_fields(rs, "", (const char *[]){"tag", "b", "tag", "a", NULL}), 1);
    assert_int_equal(match_fields(rs, "", (const char *[]){"tag", "b", "tag", "c", NULL}), 0);
    kx_ruleset_destroy(rs);
    /* A map is AND across fields; a list of maps is OR. */
    rs = load_yaml("title: t\ndetection:\n    sel:\n        - {a: '1', b: '2'}\n"
                   "        - {c: '3'}\n    condition: sel\n");
    assert_int_equal(match_fields(rs, "", (const char *[]){"a", "1", "b", "2", NULL}), 1);
    assert_int_equal(match_fields(rs, "", (const char *[]){"a", "1", "b", "3", NULL}), 0);
    assert_int_equal(match_fields(rs, "", (const char *[]){"c", "3", NULL}), 1);
    kx_ruleset_destroy(rs);
}

static size_t match_ls(kx_ruleset *rs, const char *product, const char *service,
                       const char *category)
{
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = "x";
    ev.raw_len = 1;
    ev.product = product;
    ev.service = service;
    ev.category = category;
    add(&ev, "f", "x", KX_VAL_STR);
    size_t n = kx_ruleset_match(rs, &ev, NULL, NULL);
    kx_event_fini(&ev);
    return n;
}

/* Sigma's time modifiers (minute, hour, day, week, month, year): a part of the field's time,
 * in the rule's `timezone` (UTC by default), compared as a number. */
static void test_time_parts(void **state)
{
    (void)state;
    static const struct {
        const char *zone, *sel, *value;
        bool expect;
    } tp[] = {
        {NULL, "t|hour: 1", "2026-03-11T01:16:44Z", true},
        {NULL, "t|hour: 2", "2026-03-11T01:16:44Z", false},
        {"Europe/Madrid", "t|hour: 2", "2026-03-11T01:16:44Z", true}, /* CET, +01:00 */
        {"Europe/Madrid", "t|hour: 3", "2026-07-11T01:16:44Z", true}, /* CEST, +02:00 */
        {NULL, "t|hour: 3", "2026-03-11T05:16:44+02:00", true},       /* the offset given */
        {NULL, "t|minute: 16", "2026-03-11T01:16:44.250Z", true},
        {NULL, "t|day: 11", "2026-03-11T01:16:44Z", true},
        {NULL, "t|month: 3", "2026-03-11T01:16:44Z", true},
        {NULL, "t|year: 2026", "2026-03-11T01:16:44Z", true},
        {NULL, "t|week: 1", "2026-01-01T12:00:00Z", true},  /* a Thursday */
        {NULL, "t|week: 53", "2027-01-01T12:00:00Z", true}, /* 2026 has 53 */
        {NULL, "t|week: 52", "2028-01-01T12:00:00Z", true}, /* a Saturday */
        {NULL, "t|week: 1", "2024-12-30T12:00:00Z", true},  /* Monday of 2025's */
        {NULL, "t|week: 11", "2026-03-11T01:16:44Z", true},
        {"America/New_York", "t|day: 10", "2026-03-11T01:16:44Z", true}, /* still the 10th */
        {NULL, "t|hour|gte: 20", "2026-03-11T21:00:00Z", true},
        {NULL, "t|hour|gte: 20", "2026-03-11T19:59:59Z", false},
        {NULL, "t|hour|lt: 6", "2026-03-11T05:59:59Z", true},
        {NULL, "t|hour: [1, 2, 3]", "2026-03-11T02:00:00Z", true},
        {NULL, "t|hour: 1", "1773191804", true},    /* seconds since the epoch: 01:16:44 */
        {NULL, "t|hour: 1", "1773191804000", true}, /* milliseconds */
        {NULL, "t|hour: 1", "yesterday at one", false},
        {NULL, "t|hour: 1", "", false},
    };
    for (size_t i = 0; i < sizeof(tp) / sizeof(tp[0]); i++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 "title: t\n%s%s%sdetection:\n    sel:\n        %s\n"
                 "    condition: sel\n",
                 tp[i].zone ? "timezone: " : "", tp[i].zone ? tp[i].zone : "",
                 tp[i].zone ? "\n" : "", tp[i].sel);
        kx_ruleset *rs = load_yaml(yaml);
        const char *kv[] = {"t", tp[i].value, NULL};
        if (match_fields(rs, "x", kv) != (tp[i].expect ? 1u : 0u))
            fail_msg("case %zu: %s (zone %s) against \"%s\": expected %s", i, tp[i].sel,
                     tp[i].zone ? tp[i].zone : "UTC", tp[i].value,
                     tp[i].expect ? "match" : "no match");
        kx_ruleset_destroy(rs);
    }
}

static void test_logsource(void **state)
{
    (void)state;
    kx_ruleset *rs = load_yaml("title: t\nlogsource:\n    product: linux\n    service: sshd\n"
                               "detection:\n    sel:\n        f: x\n    condition: sel\n");
    assert_int_equal(match_ls(rs, "linux", "sshd", NULL), 1);
    assert_int_equal(match_ls(rs, "Linux", "SSHD", "auth"), 1);
    assert_int_equal(match_ls(rs, "linux", NULL, NULL), 0);
    assert_int_equal(match_ls(rs, NULL, "sshd", NULL), 0);
    assert_int_equal(match_ls(rs, "windows", "sshd", NULL), 0);
    kx_ruleset_destroy(rs);
    rs = load_yaml("title: t\nlogsource:\n    category: process_creation\n"
                   "detection:\n    sel:\n        f: x\n    condition: sel\n");
    assert_int_equal(match_ls(rs, "windows", NULL, "process_creation"), 1);
    assert_int_equal(match_ls(rs, "windows", NULL, NULL), 0);
    kx_ruleset_destroy(rs);
    rs = load_yaml("title: t\ndetection:\n    sel:\n        f: x\n    condition: sel\n");
    assert_int_equal(match_ls(rs, NULL, NULL, NULL), 1);
    assert_int_equal(match_ls(rs, "aws", "cloudtrail", NULL), 1);
    kx_ruleset_destroy(rs);
}

typedef struct seen {
    const char *titles[8];
    size_t n;
} seen;

static void on_match(kx_rule *r, void *ud)
{
    seen *s = ud;
    if (s->n < 8)
        s->titles[s->n] = r->title;
    s->n++;
}

static void test_counts_and_order(void **state)
{
    (void)state;
    kx_ruleset *rs = load_yaml("title: first\ndetection:\n    s:\n        f: x\n    condition: s\n"
                               "---\n"
                               "title: second\ndetection:\n    s:\n        f: y\n    condition: s\n"
                               "---\n"
                               "title: third\ndetection:\n    s:\n        f|contains: ''\n"
                               "    condition: s\n");
    seen s = {0};
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", "x", NULL}), 2);
    kx_event ev;
    kx_event_init(&ev);
    add(&ev, "f", "x", KX_VAL_STR);
    assert_int_equal(kx_ruleset_match(rs, &ev, on_match, &s), 2);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.titles[0], "first");
    assert_string_equal(s.titles[1], "third");
    kx_event_fini(&ev);
    assert_int_equal(kx_ruleset_at(rs, 0)->matches, 2);
    assert_int_equal(kx_ruleset_at(rs, 1)->matches, 0);
    assert_int_equal(kx_ruleset_at(rs, 2)->matches, 2);
    kx_ruleset_destroy(rs);
}

static void test_regex_limit(void **state)
{
    (void)state;
    /* Catastrophic backtracking for PCRE2; Hyperscan answers it exactly, in linear time. */
    kx_ruleset *rs = load_yaml("title: t\ndetection:\n    s:\n        f|re: '^(a+)+$'\n"
                               "    condition: s\n");
    char v[64];
    memset(v, 'a', 40);
    v[40] = 'b';
    v[41] = '\0';
    uint64_t given_up = kx_metric_get(KX_M_REGEX_GIVEN_UP);
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", v, NULL}), 0);
    v[40] = '\0';
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", v, NULL}), 1);
    kx_ruleset_destroy(rs);
    /* Unanchored, the last "a" before the end matches: PCRE2 with a limit used to miss it. */
    rs = load_yaml("title: t\ndetection:\n    s:\n        f|re: '(a+)+$'\n    condition: s\n");
    assert_int_equal(match_fields(rs, "", (const char *[]){"f", "aaaaaaaaaaaaaaaaaaaaba", NULL}),
                     1);
    kx_ruleset_destroy(rs);
    /* SigmaHQ file_and_directory_discovery: a padded command line must not hide. */
    rs = load_yaml("title: t\ndetection:\n    s:\n        CommandLine|re: '(.){200,}'\n"
                   "    condition: s\n");
    static char line[20001];
    memset(line, 'x', sizeof(line) - 1);
    assert_int_equal(match_fields(rs, "", (const char *[]){"CommandLine", line, NULL}), 1);
    line[199] = '\0';
    assert_int_equal(match_fields(rs, "", (const char *[]){"CommandLine", line, NULL}), 0);
    kx_ruleset_destroy(rs);
    assert_int_equal(kx_metric_get(KX_M_REGEX_GIVEN_UP), given_up);
}

typedef struct degraded {
    size_t n;
    const char *reason[4];
    kx_ruleset *rs;
} degraded;

static void on_degraded(kx_rule *r, void *ud)
{
    degraded *d = ud;
    (void)r;
    if (d->n < 4)
        d->reason[d->n] = kx_ruleset_match_reason(d->rs);
    d->n++;
}

/* One event, many values: the PCRE2 work of a rule is bounded by its limits and the work of
 * the event by its budget, and the outcome of a regex given up is the rule's policy. */
static size_t match_hostile(kx_ruleset *rs, size_t nvals, const char *extra, degraded *d)
{
    /* A lookbehind keeps it on PCRE2, where ^(a+)+ backtracks exponentially on "aa..ab". */
    static char v[64];
    memset(v, 'a', 30);
    v[30] = 'b';
    v[31] = '\0';
    kx_event ev;
    kx_event_init(&ev);
    for (size_t i = 0; i < nvals; i++)
        add(&ev, "ua", v, KX_VAL_STR);
    if (extra)
        add(&ev, "cmd", extra, KX_VAL_STR);
    memset(d, 0, sizeof(*d));
    d->rs = rs;
    size_t n = kx_ruleset_match(rs, &ev, on_degraded, d);
    kx_event_fini(&ev);
    return n;
}

#define HOSTILE "ua|re: '^(a+)+(?<!x)$'"

static void test_regex_fail_open_closed(void **state)
{
    (void)state;
    char yaml[512];
    degraded d;
    static const struct {
        const char *level, *policy;
        size_t expect;
    } pol[] = {
        {"medium", NULL, 0},        {"low", NULL, 0},
        {"informational", NULL, 0}, {"high", NULL, 1},
        {"critical", NULL, 1},      {"high", "fail_open", 0},
        {"low", "fail_closed", 1},  {"critical", "fail_closed", 1},
    };
    for (size_t i = 0; i < KX_ARRAY_LEN(pol); i++) {
        snprintf(yaml, sizeof(yaml),
                 "title: t\nlevel: %s\n%s%s%sdetection:\n    s:\n        " HOSTILE "\n"
                 "    condition: s\n",
                 pol[i].level, pol[i].policy ? "regex_budget: " : "",
                 pol[i].policy ? pol[i].policy : "", pol[i].policy ? "\n" : "");
        kx_ruleset *rs = load_yaml(yaml);
        uint64_t up = kx_metric_get(KX_M_REGEX_GIVEN_UP);
        uint64_t closed = kx_metric_get(KX_M_REGEX_FAILED_CLOSED);
        uint64_t open = kx_metric_get(KX_M_REGEX_FAILED_OPEN);
        if (match_hostile(rs, 1, NULL, &d) != pol[i].expect)
            fail_msg("case %zu (%s, %s): expected %zu", i, pol[i].level,
                     pol[i].policy ? pol[i].policy : "default", pol[i].expect);
        assert_int_equal(kx_metric_get(KX_M_REGEX_GIVEN_UP) - up, 1);
        assert_int_equal(kx_metric_get(KX_M_REGEX_FAILED_CLOSED) - closed, pol[i].expect);
        assert_int_equal(kx_metric_get(KX_M_REGEX_FAILED_OPEN) - open, !pol[i].expect);
        if (pol[i].expect)
            assert_string_equal(d.reason[0], "regex match limit reached in ua|re");
        /* A harmless value is answered, without a reason. */
        kx_event ev;
        kx_event_init(&ev);
        add(&ev, "ua", "aaaa", KX_VAL_STR);
        memset(&d, 0, sizeof(d));
        d.rs = rs;
        assert_int_equal(kx_ruleset_match(rs, &ev, on_degraded, &d), 1);
        assert_null(d.reason[0]);
        kx_event_fini(&ev);
        kx_ruleset_destroy(rs);
    }
}

/* A given-up regex decides a rule only when the rule's answer depends on it: "b and a" with a
 * false is false whatever b says (no alert, though fail closed), "b or a" with a true is a
 * plain match (no reason). And so the prefilter, which skips the first rule (its trigger a
 * did not hit), gives exactly what evaluating every rule gives. */
static void test_regex_give_up_decided(void **state)
{
    (void)state;
    kx_ruleset *rs =
        load_yaml("title: and\nlevel: critical\ndetection:\n    b:\n        " HOSTILE
                  "\n    a:\n        cmd|contains: qqq\n    condition: b and a\n"
                  "---\ntitle: or\nlevel: critical\ndetection:\n    b:\n        " HOSTILE
                  "\n    a:\n        cmd|contains: evil\n    condition: b or a\n");
    degraded d;
    for (int prefilter = 1; prefilter >= 0; prefilter--) {
        kx_ruleset_set_prefilter(rs, prefilter);
        uint64_t closed = kx_metric_get(KX_M_REGEX_FAILED_CLOSED);
        uint64_t and0 = kx_ruleset_at(rs, 0)->matches;
        /* cmd "run evil": "and" is decided false, "or" decided true. */
        if (match_hostile(rs, 1, "run evil", &d) != 1)
            fail_msg("prefilter %d: %zu matches, expected 1 (\"or\")", prefilter, d.n);
        assert_null(d.reason[0]);
        assert_int_equal(kx_ruleset_at(rs, 0)->matches, and0);
        assert_int_equal(kx_metric_get(KX_M_REGEX_FAILED_CLOSED) - closed, 0);
        /* cmd "qqq": "and" now depends on b: fail closed, a match with the reason. */
        size_t m = match_hostile(rs, 1, "qqq", &d);
        assert_int_equal(m, 2);
        assert_string_equal(d.reason[0], "regex match limit reached in ua|re");
        assert_int_equal(kx_metric_get(KX_M_REGEX_FAILED_CLOSED) - closed, 2);
    }
    kx_ruleset_destroy(rs);
}

/* The budget is per event and shared: hostile values spend it, regexes of other rules that
 * need PCRE2 are then given up too (and their rules' policy applies), regexes Hyperscan
 * answers are not affected, and the next event starts with a full budget. */
static void test_regex_budget_per_event(void **state)
{
    (void)state;
    kx_ruleset *rs = load_yaml("title: slow\ndetection:\n    s:\n        " HOSTILE "\n"
                               "    condition: s\n---\n"
                               "title: lookahead open\ndetection:\n    s:\n"
                               "        cmd|re: 'ev(?=il)'\n    condition: s\n---\n"
                               "title: lookahead closed\nregex_budget: fail_closed\n"
                               "detection:\n    s:\n        cmd|re: 'ev(?=il)'\n"
                               "    condition: s\n---\n"
                               "title: linear\ndetection:\n    s:\n        cmd|re: 'ev(il)'\n"
                               "    condition: s\n");
    degraded d;
    /* Each hostile run is charged 1,000 + 10,000 + 100,000 steps and gives up at the match
     * limit; 18 of them leave 2,000 of the 2,000,000; the 19th spends those; the other 31
     * are not run. All 50 are given up: the slow rule's value and the two lookaheads. */
    uint64_t up = kx_metric_get(KX_M_REGEX_GIVEN_UP);
    assert_int_equal(match_hostile(rs, 50, "run evil", &d), 2);
    assert_int_equal(kx_metric_get(KX_M_REGEX_GIVEN_UP) - up, 52);
    assert_string_equal(d.reason[0], "regex budget exceeded in cmd|re");
    assert_null(d.reason[1]); /* "linear": Hyperscan, not affected by the budget */
    assert_int_equal(kx_ruleset_at(rs, 2)->matches, 1);
    assert_int_equal(kx_ruleset_at(rs, 3)->matches, 1);
    /* A fresh event, a fresh budget: all three cmd rules answer, without a reason. */
    assert_int_equal(match_hostile(rs, 1, "run evil", &d), 3);
    assert_null(d.reason[0]);
    assert_null(d.reason[1]);
    assert_null(d.reason[2]);
    /* And a value that does not match the closed rule is not an alert. */
    assert_int_equal(match_hostile(rs, 0, "run evel", &d), 0);
    kx_ruleset_destroy(rs);
}

/* ---- the example rules ---- */

static kx_ruleset *load_fixtures(void)
{
    const char *p = KX_SOURCE_DIR "/tests/fixtures/rules";
    kx_ruleset *rs = NULL;
    kx_err err;
    if (kx_ruleset_load(&p, 1, &rs, &err)) {
        char buf[1024];
        kx_err_format(&err, buf, sizeof(buf));
        fail_msg("%s", buf);
    }
    return rs;
}

static const char *match_one(kx_ruleset *rs, kx_event *ev)
{
    seen s = {0};
    kx_ruleset_match(rs, ev, on_match, &s);
    assert_true(s.n <= 1);
    return s.n ? s.titles[0] : "";
}

static void syslog_event(kx_event *ev, const char *service, const char *program,
                         const char *message, int64_t time_ms)
{
    kx_event_reset(ev);
    ev->raw = message;
    ev->raw_len = strlen(message);
    ev->product = "linux";
    ev->service = service;
    ev->time_ms = time_ms;
    add(ev, "host", "web1", KX_VAL_STR);
    add(ev, "program", program, KX_VAL_STR);
    add(ev, "message", message, KX_VAL_STR);
}

/* 2026-03-02 is a Monday. Madrid is UTC+1 in March before the 29th. */
#define MON_2026_03_02_UTC 1772409600000LL
#define HOUR_MS 3600000LL

static void test_example_rules(void **state)
{
    (void)state;
    kx_ruleset *rs = load_fixtures();
    kx_event ev;
    kx_event_init(&ev);

    syslog_event(&ev, "sshd", "sshd", "Failed password for root from 203.0.113.9 port 4242 ssh2",
                 MON_2026_03_02_UTC);
    assert_string_equal(match_one(rs, &ev), "Failed SSH login");
    syslog_event(&ev, "sshd", "sshd", "Invalid user admin from 203.0.113.9 port 4243",
                 MON_2026_03_02_UTC);
    assert_string_equal(match_one(rs, &ev), "Failed SSH login");
    syslog_event(&ev, "sudo", "sshd", "Failed password for root from 203.0.113.9",
                 MON_2026_03_02_UTC);
    assert_string_equal(match_one(rs, &ev), ""); /* wrong logsource */

    syslog_event(&ev, "sudo", "sudo",
                 "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash",
                 MON_2026_03_02_UTC);
    assert_string_equal(match_one(rs, &ev), "Sudo to root");
    syslog_event(&ev, "sudo", "sudo", "root : TTY=pts/0 ; PWD=/root ; USER=root ; COMMAND=/bin/ls",
                 MON_2026_03_02_UTC);
    assert_string_equal(match_one(rs, &ev), "");
    syslog_event(&ev, "sudo", "sudo",
                 "alice : TTY=pts/0 ; PWD=/home/alice ; USER=postgres ; COMMAND=/bin/psql",
                 MON_2026_03_02_UTC);
    assert_string_equal(match_one(rs, &ev), "");

    /* Monday 10:00 Madrid (09:00 UTC): office hours. 22:00 Madrid: off hours. */
    const char *acc = "Accepted publickey for alice from 198.51.100.7 port 50022 ssh2";
    syslog_event(&ev, "sshd", "sshd", acc, MON_2026_03_02_UTC + 9 * HOUR_MS);
    assert_string_equal(match_one(rs, &ev), "");
    syslog_event(&ev, "sshd", "sshd", acc, MON_2026_03_02_UTC + 21 * HOUR_MS);
    assert_string_equal(match_one(rs, &ev), "Interactive SSH login outside office hours");
    syslog_event(&ev, "sshd", "sshd", acc, MON_2026_03_02_UTC + 5 * 24 * HOUR_MS + 9 * HOUR_MS);
    assert_string_equal(match_one(rs, &ev), "Interactive SSH login outside office hours");

    kx_event_reset(&ev);
    const char *ct = "{\"eventSource\":\"iam.amazonaws.com\",\"eventName\":\"AttachUserPolicy\"}";
    ev.raw = ct;
    ev.raw_len = strlen(ct);
    ev.product = "aws";
    ev.service = "cloudtrail";
    add(&ev, "eventSource", "iam.amazonaws.com", KX_VAL_STR);
    add(&ev, "eventName", "AttachUserPolicy", KX_VAL_STR);
    add(&ev, "requestParameters.userName", "bob", KX_VAL_STR);
    add(&ev, "requestParameters.policyArn", "arn:aws:iam::aws:policy/AdministratorAccess",
        KX_VAL_STR);
    assert_string_equal(match_one(rs, &ev), "AdministratorAccess policy attached to an IAM user");
    add(&ev, "errorCode", "AccessDenied", KX_VAL_STR);
    assert_string_equal(match_one(rs, &ev), "");
    kx_event_reset(&ev);
    ev.product = "aws";
    ev.service = "cloudtrail";
    add(&ev, "eventSource", "iam.amazonaws.com", KX_VAL_STR);
    add(&ev, "eventName", "AttachUserPolicy", KX_VAL_STR);
    add(&ev, "requestParameters.policyArn", "arn:aws:iam::aws:policy/ReadOnlyAccess", KX_VAL_STR);
    assert_string_equal(match_one(rs, &ev), "");

    kx_event_fini(&ev);
    kx_ruleset_destroy(rs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_modifier_table),
        cmocka_unit_test(test_fieldref),
        cmocka_unit_test(test_keywords),
        cmocka_unit_test(test_repeated_fields),
        cmocka_unit_test(test_logsource),
        cmocka_unit_test(test_time_parts),
        cmocka_unit_test(test_counts_and_order),
        cmocka_unit_test(test_regex_limit),
        cmocka_unit_test(test_regex_fail_open_closed),
        cmocka_unit_test(test_regex_give_up_decided),
        cmocka_unit_test(test_regex_budget_per_event),
        cmocka_unit_test(test_example_rules),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
