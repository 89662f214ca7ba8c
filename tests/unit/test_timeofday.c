/*
 * kx_timeofday: parsing from YAML (with exact "file:line:col: message" errors) and matching
 * event instants against local-time windows, across Madrid's 2026 DST changes.
 * Instants are written as UTC civil times (utc_ms) next to the local time they stand for.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "klaxon/timeofday.h"
#include "klaxon/tz.h"

/* Allocation counter: timeofday.cmake links this test with -Wl,--wrap for malloc, calloc
 * and realloc, so calls from klaxon's code (not from shared libraries) land here. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
static long allocations;

void *__wrap_malloc(size_t n)
{
    allocations++;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    allocations++;
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    allocations++;
    return __real_realloc(p, n);
}

static int64_t utc_ms(int y, int mo, int d, int h, int mi, int s)
{
    return ((kx_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400) + h * 3600 + mi * 60 + s) *
           1000;
}

/* Loads `yaml` (whose root map has a `timeofday:` key) and parses that node. Returns the
 * parse result; on failure fills msg with the formatted error. */
static int parse(const char *yaml, kx_timeofday **out, char *msg, size_t msglen)
{
    kx_yaml_doc *doc = NULL;
    kx_err err;
    memset(&err, 0, sizeof(err));
    int rc = kx_yaml_load_mem("rules/t.yml", yaml, strlen(yaml), &doc, &err);
    assert_int_equal(rc, 0);
    const kx_yaml_node *node = kx_yaml_get(doc->root, "timeofday");
    assert_non_null(node);
    *out = NULL;
    rc = kx_timeofday_parse(node, "rules/t.yml", out, &err);
    if (rc < 0)
        kx_err_format(&err, msg, msglen);
    else
        msg[0] = '\0';
    kx_yaml_free(doc);
    return rc;
}

static kx_timeofday *parse_ok(const char *yaml)
{
    kx_timeofday *t = NULL;
    char msg[600];
    int rc = parse(yaml, &t, msg, sizeof(msg));
    if (rc != 0)
        fail_msg("unexpected parse error: %s", msg);
    assert_non_null(t);
    return t;
}

static void assert_parse_error(const char *yaml, const char *expect)
{
    kx_timeofday *t = NULL;
    char msg[600];
    assert_int_equal(parse(yaml, &t, msg, sizeof(msg)), -EINVAL);
    assert_null(t);
    assert_string_equal(msg, expect);
}

static int teardown(void **state)
{
    (void)state;
    kx_tz_cache_clear();
    return 0;
}

static void test_office_hours_madrid(void **state)
{
    (void)state;
    kx_timeofday *t = parse_ok("timeofday:\n"
                               "  timezone: Europe/Madrid\n"
                               "  days: [mon-fri]\n"
                               "  from: \"08:00\"\n"
                               "  to: \"19:00\"\n");
    /* Friday 2026-03-27, CET (+01:00). */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 27, 6, 59, 59))); /* 07:59:59 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 3, 27, 7, 0, 0)));    /* 08:00 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 3, 27, 17, 59, 59))); /* 18:59:59 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 27, 18, 0, 0)));  /* 19:00 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 3, 27, 17, 30, 0)));  /* 18:30 */
    /* Saturday 2026-03-28 11:00 local. */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 28, 10, 0, 0)));
    /* Monday 2026-03-30, after spring forward: CEST (+02:00). Same local hours, UTC one
     * hour earlier. */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 30, 5, 59, 59))); /* 07:59:59 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 3, 30, 6, 0, 0)));    /* 08:00 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 3, 30, 16, 59, 59))); /* 18:59:59 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 30, 17, 0, 0)));  /* 19:00 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 30, 17, 30, 0))); /* 19:30 */
    /* Friday 2026-10-23 is still CEST; Monday 2026-10-26 is back on CET. */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 10, 23, 6, 0, 0)));   /* 08:00 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 10, 23, 5, 59, 0))); /* 07:59 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 10, 23, 17, 0, 0))); /* 19:00 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 10, 26, 6, 30, 0))); /* 07:30 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 10, 26, 7, 0, 0)));   /* 08:00 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 10, 26, 17, 30, 0))); /* 18:30 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 10, 26, 18, 0, 0))); /* 19:00 */
    /* Sub-second: 07:59:59.999 is still before 08:00. */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 3, 27, 7, 0, 0) - 1));
    kx_timeofday_destroy(t);
}

/* 02:00-03:00 local every day: the hour that does not exist on 2026-03-29 matches nothing,
 * the hour that happens twice on 2026-10-25 matches both times. */
static void test_dst_change_days(void **state)
{
    (void)state;
    kx_timeofday *t = parse_ok("timeofday:\n"
                               "  timezone: Europe/Madrid\n"
                               "  from: '02:00'\n"
                               "  to: '03:00'\n");
    int in = 0;
    for (int64_t ms = utc_ms(2026, 3, 28, 22, 0, 0); ms < utc_ms(2026, 3, 29, 4, 0, 0); ms += 60000)
        in += kx_timeofday_match(t, ms);
    assert_int_equal(in, 0);
    in = 0;
    for (int64_t ms = utc_ms(2026, 10, 24, 22, 0, 0); ms < utc_ms(2026, 10, 25, 4, 0, 0);
         ms += 60000)
        in += kx_timeofday_match(t, ms);
    assert_int_equal(in, 120);
    assert_true(kx_timeofday_match(t, utc_ms(2026, 10, 25, 0, 30, 0))); /* 02:30 CEST */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 10, 25, 1, 30, 0))); /* 02:30 CET */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 3, 30, 0, 0, 0)));   /* 02:00 CEST */
    kx_timeofday_destroy(t);
}

static void test_crossing_midnight(void **state)
{
    (void)state;
    kx_timeofday *t = parse_ok("timeofday:\n"
                               "  timezone: Europe/Madrid\n"
                               "  days: [fri]\n"
                               "  from: \"22:00\"\n"
                               "  to: \"06:00\"\n");
    /* June 2026, CEST (+02:00). Friday is 2026-06-05. */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 5, 19, 59, 0))); /* Fri 21:59 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 5, 20, 0, 0)));   /* Fri 22:00 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 5, 21, 59, 59))); /* Fri 23:59:59 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 5, 22, 0, 0)));   /* Sat 00:00 */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 6, 3, 59, 0)));   /* Sat 05:59 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 6, 4, 0, 0)));   /* Sat 06:00 */
    /* Friday's early morning belongs to Thursday's window, which is not selected. */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 5, 1, 0, 0)));  /* Fri 03:00 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 4, 21, 0, 0))); /* Thu 23:00 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 6, 21, 0, 0))); /* Sat 23:00 */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 7, 1, 0, 0)));  /* Sun 03:00 */
    kx_timeofday_destroy(t);

    /* Sunday night into Monday, selected by "sun": week wrap in the day-before test. */
    t = parse_ok("timeofday:\n  timezone: UTC\n  days: sun\n  from: '23:00'\n  to: '01:00'\n");
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 7, 23, 30, 0))); /* Sun */
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 8, 0, 30, 0)));  /* Mon */
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 8, 23, 30, 0)));
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 7, 0, 30, 0))); /* Sun morning: Sat's */
    kx_timeofday_destroy(t);
}

/* Which weekdays of the week of Monday 2026-06-01 match at 12:00 UTC, as a bit string
 * "MTWTFSS". */
static void week_bits(const kx_timeofday *t, char out[8])
{
    for (int i = 0; i < 7; i++)
        out[i] = kx_timeofday_match(t, utc_ms(2026, 6, 1 + i, 12, 0, 0)) ? '1' : '0';
    out[7] = '\0';
}

static void test_days_forms(void **state)
{
    (void)state;
    static const struct {
        const char *days;
        const char *bits;
    } cases[] = {
        {"[mon-fri]", "1111100"},
        {"[fri-mon]", "1000111"},
        {"[sat-sun]", "0000011"},
        {"[sun-sat]", "1111111"},
        {"[tue-tue]", "0100000"},
        {"[mon, wed-thu]", "1011000"},
        {"Saturday", "0000010"},
        {"MON", "1000000"},
        {"[Monday - Wednesday]", "1110000"},
        {"[sun, SUNDAY, Sun]", "0000001"},
        {"thu-tue", "1101111"},
    };
    for (size_t i = 0; i < KX_ARRAY_LEN(cases); i++) {
        char yaml[256], bits[8];
        snprintf(yaml, sizeof(yaml), "timeofday:\n  timezone: Etc/UTC\n  days: %s\n",
                 cases[i].days);
        kx_timeofday *t = parse_ok(yaml);
        week_bits(t, bits);
        if (strcmp(bits, cases[i].bits) != 0)
            fail_msg("days %s: got %s want %s", cases[i].days, bits, cases[i].bits);
        kx_timeofday_destroy(t);
    }
}

static void test_whole_day_and_defaults(void **state)
{
    (void)state;
    /* Only a zone: every instant matches. */
    kx_timeofday *t = parse_ok("timeofday:\n  timezone: UTC\n");
    assert_true(kx_timeofday_match(t, 0));
    assert_true(kx_timeofday_match(t, -1));
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 6, 23, 59, 59)));
    kx_timeofday_destroy(t);

    /* from == to is the whole (selected) day. */
    t = parse_ok("timeofday:\n  timezone: UTC\n  days: wed\n  from: '09:00'\n  to: '09:00'\n");
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 3, 0, 0, 0)));
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 3, 8, 59, 0)));
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 3, 23, 59, 59)));
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 4, 0, 0, 0)));
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 2, 23, 59, 59)));
    kx_timeofday_destroy(t);

    /* to: 24:00 runs to the end of the day; from defaults to 00:00. */
    t = parse_ok("timeofday:\n  timezone: UTC\n  days: [wed]\n  from: 20:00\n  to: '24:00'\n");
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 3, 19, 59, 59)));
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 3, 23, 59, 59)));
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 4, 0, 0, 0)));
    kx_timeofday_destroy(t);
    t = parse_ok("timeofday:\n  timezone: UTC\n  to: '8:30'\n");
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 3, 0, 0, 0)));
    assert_true(kx_timeofday_match(t, utc_ms(2026, 6, 3, 8, 29, 59)));
    assert_false(kx_timeofday_match(t, utc_ms(2026, 6, 3, 8, 30, 0)));
    kx_timeofday_destroy(t);

    /* Before the epoch: -1 ms is Wednesday 1969-12-31 23:59:59.999. */
    t = parse_ok("timeofday:\n  timezone: UTC\n  days: wed\n  from: '23:59'\n");
    assert_true(kx_timeofday_match(t, -1));
    assert_false(kx_timeofday_match(t, 0));
    kx_timeofday_destroy(t);
}

/* Matching allocates nothing, on the table path (2026) and the footer path (2100). */
static void test_match_allocates_nothing(void **state)
{
    (void)state;
    long before = allocations;
    kx_timeofday *t = parse_ok("timeofday:\n  timezone: Europe/Madrid\n  days: [mon-fri]\n"
                               "  from: '22:00'\n  to: '06:00'\n");
    assert_true(allocations > before); /* the counter is live: the parse allocated */
    before = allocations;
    long in = 0;
    for (int64_t ms = utc_ms(2026, 1, 1, 0, 0, 0); ms < utc_ms(2026, 1, 8, 0, 0, 0); ms += 60000)
        in += kx_timeofday_match(t, ms);
    for (int64_t ms = utc_ms(2100, 1, 4, 0, 0, 0); ms < utc_ms(2100, 1, 11, 0, 0, 0); ms += 60000)
        in += kx_timeofday_match(t, ms);
    assert_int_equal(allocations, before);
    /* Mon..Fri nights of 8 h each, one full week twice: 2 * 5 * 480 minutes. */
    assert_int_equal(in, 2 * 5 * 480);
    kx_timeofday_destroy(t);
}

static void test_parse_errors(void **state)
{
    (void)state;
    assert_parse_error("timeofday:\n  timezone: Europe/Madird\n",
                       "rules/t.yml:2:13: unknown time zone \"Europe/Madird\"");
    assert_parse_error("timeofday:\n  timezone: ../../etc/passwd\n",
                       "rules/t.yml:2:13: unknown time zone \"../../etc/passwd\"");
    assert_parse_error(
        "timeofday:\n  timezone: UTC\n  zone: x\n",
        "rules/t.yml:3:3: unknown key \"zone\" (expected timezone, days, from or to)");
    assert_parse_error("timeofday:\n  days: [mon]\n  from: '08:00'\n",
                       "rules/t.yml:2:3: timeofday needs a timezone (an IANA name such as "
                       "Europe/Madrid)");
    assert_parse_error("timeofday:\n  timezone: UTC\n  timezone: Europe/Madrid\n",
                       "rules/t.yml:3:3: duplicate key \"timezone\"");
    assert_parse_error("timeofday:\n  timezone: [UTC]\n", "rules/t.yml:2:13: expected a string");
    assert_parse_error(
        "timeofday: business-hours\n",
        "rules/t.yml:1:12: timeofday must be a map with timezone, days, from and to");
    assert_parse_error("timeofday:\n  timezone: UTC\n  days: [mon, funday]\n",
                       "rules/t.yml:3:15: invalid day \"funday\" (expected mon..sun or a range "
                       "like mon-fri)");
    assert_parse_error("timeofday:\n  timezone: UTC\n  days: mon-\n",
                       "rules/t.yml:3:9: invalid day \"mon-\" (expected mon..sun or a range like "
                       "mon-fri)");
    assert_parse_error("timeofday:\n  timezone: UTC\n  days: [mond]\n",
                       "rules/t.yml:3:10: invalid day \"mond\" (expected mon..sun or a range like "
                       "mon-fri)");
    assert_parse_error("timeofday:\n  timezone: UTC\n  days: []\n",
                       "rules/t.yml:3:9: days must not be empty");
    assert_parse_error("timeofday:\n  timezone: UTC\n  days: {mon: 1}\n",
                       "rules/t.yml:3:9: days must be a day, a range or a list of them");
    assert_parse_error("timeofday:\n  timezone: UTC\n  from: \"24:00\"\n",
                       "rules/t.yml:3:9: invalid time \"24:00\" (expected HH:MM from 00:00 to "
                       "23:59)");
    assert_parse_error("timeofday:\n  timezone: UTC\n  to: \"24:01\"\n",
                       "rules/t.yml:3:7: invalid time \"24:01\" (expected HH:MM from 00:00 to "
                       "24:00)");
    static const char *const bad_times[] = {"25:00", "08:60", "0800", "8:5",    "08:00:00",
                                            "-1:00", "ab:cd", "",     "123:00", "08:0x"};
    for (size_t i = 0; i < KX_ARRAY_LEN(bad_times); i++) {
        char yaml[128], expect[256];
        snprintf(yaml, sizeof(yaml), "timeofday:\n  timezone: UTC\n  from: '%s'\n", bad_times[i]);
        snprintf(expect, sizeof(expect),
                 "rules/t.yml:3:9: invalid time \"%s\" (expected HH:MM from 00:00 to 23:59)",
                 bad_times[i]);
        assert_parse_error(yaml, expect);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_office_hours_madrid, teardown),
        cmocka_unit_test_teardown(test_dst_change_days, teardown),
        cmocka_unit_test_teardown(test_crossing_midnight, teardown),
        cmocka_unit_test_teardown(test_days_forms, teardown),
        cmocka_unit_test_teardown(test_whole_day_and_defaults, teardown),
        cmocka_unit_test_teardown(test_match_allocates_nothing, teardown),
        cmocka_unit_test_teardown(test_parse_errors, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
