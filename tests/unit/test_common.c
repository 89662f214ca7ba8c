#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "klaxon/common.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"

static void test_err_format(void **state)
{
    (void)state;
    kx_err e;
    char out[600];
    assert_int_equal(kx_err_set(&e, "rules/ssh.yml", 14, 9, "unknown key \"%s\"", "treshold"),
                     -EINVAL);
    kx_err_format(&e, out, sizeof(out));
    assert_string_equal(out, "rules/ssh.yml:14:9: unknown key \"treshold\"");
    kx_err_set(&e, "cfg.yml", 0, 0, "cannot open");
    kx_err_format(&e, out, sizeof(out));
    assert_string_equal(out, "cfg.yml: cannot open");
}

static void test_buf_cap(void **state)
{
    (void)state;
    kx_buf b;
    kx_buf_init(&b, 8);
    assert_int_equal(kx_buf_puts(&b, "12345678"), 0);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(kx_buf_putc(&b, '9'), -E2BIG);
    assert_int_equal(b.len, 8);
    kx_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(kx_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "42-x");
    kx_buf_fini(&b);
}

/* The fast number writers print what printf prints, at the edges too. */
static void test_buf_numbers(void **state)
{
    (void)state;
    kx_buf b;
    kx_buf_init(&b, 0);
    const int64_t is[] = {0, 7, -7, 10, 99, 100, 1700000000000, INT64_MAX, INT64_MIN, -1};
    for (size_t i = 0; i < sizeof(is) / sizeof(is[0]); i++) {
        char want[32];
        snprintf(want, sizeof(want), "%lld", (long long)is[i]);
        kx_buf_reset(&b);
        assert_int_equal(kx_buf_put_i64(&b, is[i]), 0);
        assert_string_equal(b.data, want);
    }
    char hex[17] = {0};
    kx_hex64(hex, 0x0123456789abcdefULL);
    assert_string_equal(hex, "0123456789abcdef");
    kx_hex64(hex, 0);
    assert_string_equal(hex, "0000000000000000");
    kx_hex64(hex, UINT64_MAX);
    assert_string_equal(hex, "ffffffffffffffff");
    kx_buf_reset(&b);
    assert_int_equal(kx_buf_put_u64(&b, UINT64_MAX), 0);
    assert_string_equal(b.data, "18446744073709551615");
    const double ds[] = {
        0.0,  -0.0,  1000.0,  -3.0,      0.5, 4.5,     1e15, 9007199254740991.0, 9007199254740992.0,
        1e16, 1e300, -2.5e-7, 1.0 / 3.0, NAN, INFINITY};
    for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++) {
        char want[40];
        snprintf(want, sizeof(want), "%.17g", ds[i]);
        kx_buf_reset(&b);
        assert_int_equal(kx_buf_put_g17(&b, ds[i]), 0);
        assert_string_equal(b.data, want);
    }
    /* A capped buffer refuses what does not fit, as every writer does. */
    kx_buf small;
    kx_buf_init(&small, 4);
    assert_int_equal(kx_buf_put_i64(&small, 12345), -E2BIG);
    assert_int_equal(kx_buf_put_i64(&small, -123), 0);
    assert_string_equal(small.data, "-123");
    kx_buf_fini(&small);
    kx_buf_fini(&b);
}

static void test_buf_json_str(void **state)
{
    (void)state;
    kx_buf b;
    kx_buf_init(&b, 0);
    const char in[] = "a\"b\\c\n\t\x01 \xc3\xa9 \xff end";
    kx_buf_json_str(&b, in, sizeof(in) - 1);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\t\\u0001 \xc3\xa9 \xef\xbf\xbd end\"");
    kx_buf_reset(&b);
    /* overlong encoding of '/' and a lone surrogate are invalid */
    kx_buf_json_str(&b, "\xc0\xaf|\xed\xa0\x80", 6);
    assert_string_equal(b.data,
                        "\"\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    kx_buf_fini(&b);
}

static void test_json_number_in_range(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool in;
    } cases[] = {
        {"0", true},
        {"-0", true},
        {"9223372036854775807", true},
        {"9223372036854775808", false},
        {"-9223372036854775808", true},
        {"-9223372036854775809", false},
        {"999999999999999999", true},
        {"18446744073709551616", false},
        {"123456789012345678901234567890", false},
        {"1e3", true},
        {"1.5", true},
        {"123456789012345678901234567890.5", true}, /* a double, rounded: still readable */
        {"1.7976931348623157e308", true},
        {"1.7976931348623159e308", false},
        {"1e308", true},
        {"1e309", false},
        {"-1e309", false},
        {"0.0001e310", true},
        {"0.0001e313", false},
        {"0e99999999", true},
        {"1e-400", true}, /* underflows to 0: every parser reads it */
        {"1E+999999999999", false},
    };
    for (size_t i = 0; i < KX_ARRAY_LEN(cases); i++)
        if (kx_json_number_in_range(cases[i].s, strlen(cases[i].s)) != cases[i].in)
            fail_msg("%s: want %d", cases[i].s, cases[i].in);
}

static void test_arena(void **state)
{
    (void)state;
    kx_arena a;
    kx_arena_init(&a, 64);
    char *s = kx_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    void *big = kx_arena_alloc(&a, 1000);
    assert_non_null(big);
    assert_int_equal((uintptr_t)big % 8, 0);
    kx_arena_reset(&a);
    /* After reset the largest block is kept: the same allocation fits without growing. */
    void *again = kx_arena_alloc(&a, 1000);
    assert_ptr_equal(again, big);
    kx_arena_fini(&a);
}

static void test_time_format(void **state)
{
    (void)state;
    char out[40];
    kx_time_format(0, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    kx_time_format(1774747800123LL, out, sizeof(out));
    assert_string_equal(out, "2026-03-29T01:30:00.123Z");
    kx_time_format(951782400000LL, out, sizeof(out)); /* leap day 2000 */
    assert_string_equal(out, "2000-02-29T00:00:00.000Z");
    kx_time_format(-1, out, sizeof(out));
    assert_string_equal(out, "1969-12-31T23:59:59.999Z");
    kx_time_format(253402300799999LL, out, sizeof(out)); /* the last ms of year 9999 */
    assert_string_equal(out, "9999-12-31T23:59:59.999Z");
    kx_time_format(253402300800000LL, out, sizeof(out)); /* five digits of year: printf's */
    assert_string_equal(out, "10000-01-01T00:00:00.000Z");
    char small[11];
    kx_time_format(0, small, sizeof(small)); /* cut as snprintf cuts */
    assert_string_equal(small, "1970-01-01");
    /* Against the C library's calendar, over 400 years of pseudo-random instants. */
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t ms = (int64_t)(x % 12622780800000ULL) - 2208988800000LL; /* 1900..2300 */
        time_t secs = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
        struct tm tm;
        assert_non_null(gmtime_r(&secs, &tm));
        char want[40], date[32];
        strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(want, sizeof(want), "%s.%03dZ", date, (int)(ms - (int64_t)secs * 1000));
        kx_time_format(ms, out, sizeof(out));
        assert_string_equal(out, want);
    }
    assert_int_equal(kx_days_from_civil(2026, 3, 29), 20541);
    assert_int_equal(kx_days_from_civil(1970, 1, 1), 0);
}

static void test_hash(void **state)
{
    (void)state;
    assert_int_equal(kx_hash64("abc", 3, 0), kx_hash64("abc", 3, 0));
    assert_true(kx_hash64("abc", 3, 0) != kx_hash64("abd", 3, 0));
    assert_true(kx_hash64("abc", 3, 0) != kx_hash64("abc", 3, 1));
}

static void test_metrics_render(void **state)
{
    (void)state;
    kx_metrics_reset();
    kx_metric_inc(KX_M_EVENTS_MALFORMED);
    kx_metric_add(KX_M_EVENTS_MALFORMED, 2);
    assert_int_equal(kx_metric_get(KX_M_EVENTS_MALFORMED), 3);
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_metrics_render(&b), 0);
    assert_non_null(strstr(b.data, "\n# TYPE klaxon_events_malformed_total counter\n"
                                   "klaxon_events_malformed_total 3\n"));
    assert_non_null(strstr(b.data, "klaxon_events_consumed_total 0\n"));
    assert_non_null(strstr(b.data, "klaxon_store_up 0\n"));
    assert_non_null(strstr(b.data, "\nklaxon_decode_limit_depth_total 0\n"));
    kx_buf_fini(&b);
    kx_metrics_reset();
}

static void test_ratelimit(void **state)
{
    (void)state;
    kx_ratelimit rl = {.interval_ms = 60000, .burst = 2};
    for (int i = 0; i < 10; i++)
        kx_log_limited(&rl, KX_LOG_WARN, "test", "malformed %d", i);
    assert_int_equal(rl.in_window, 2);
    assert_int_equal(rl.suppressed, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_format),           cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_buf_json_str),         cmocka_unit_test(test_buf_numbers),
        cmocka_unit_test(test_json_number_in_range), cmocka_unit_test(test_arena),
        cmocka_unit_test(test_time_format),          cmocka_unit_test(test_hash),
        cmocka_unit_test(test_metrics_render),       cmocka_unit_test(test_ratelimit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
