/*
 * The decoder around the formats: config parsing and its errors (file:line:col), event time
 * (time_field, the default time fields, epoch seconds vs milliseconds), tenant and
 * tenant_field, logsource from the input and from the program map, and kx_parse_rfc3339.
 * Anchor for hand-worked times: 1700000000 s is 2023-11-14T22:13:20Z.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "klaxon/decode.h"
#include "klaxon/tz.h"
#include "klaxon/yaml.h"

#define T0 1700000000000LL

/* The link wraps malloc/calloc/realloc for calls made from klaxon's own (static) code, see
 * tests/unit/decode.cmake; libc's internal allocations are not counted. JSON decoding is all
 * klaxon's own code (no jansson), so every allocation it makes is counted. */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
static unsigned long allocs;

void *__wrap_malloc(size_t n)
{
    allocs++;
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
    allocs++;
    return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
    allocs++;
    return __real_realloc(p, n);
}
#define FALLBACK 42LL

static int mk(const char *yaml, int fmt, kx_decoder **d, char *errtext, size_t errlen)
{
    kx_yaml_doc *doc = NULL;
    kx_err err;
    memset(&err, 0, sizeof(err));
    assert_int_equal(kx_yaml_load_mem("cfg.yaml", yaml, strlen(yaml), &doc, &err), 0);
    const kx_yaml_node *root = doc ? doc->root : NULL;
    int rc = kx_decoder_create(kx_yaml_get(root, "input"), kx_yaml_get(root, "decode"), fmt,
                               "cfg.yaml", d, &err);
    if (errtext)
        kx_err_format(&err, errtext, errlen);
    kx_yaml_free(doc);
    return rc;
}

static kx_decoder *mk_ok(const char *yaml)
{
    kx_decoder *d = NULL;
    char errtext[600];
    if (mk(yaml, -1, &d, errtext, sizeof(errtext)))
        fail_msg("config: %s", errtext);
    return d;
}

/* Decodes s with d into ev and checks the event time. */
static void expect_time(kx_decoder *d, kx_event *ev, const char *s, int64_t want, bool from_log)
{
    const char *why;
    kx_event_reset(ev);
    assert_int_equal(kx_decode(d, s, strlen(s), FALLBACK, ev, &why), 0);
    if (ev->time_ms != want || ev->time_from_log != from_log)
        fail_msg("%s: time %lld (from log %d), want %lld (%d)", s, (long long)ev->time_ms,
                 ev->time_from_log, (long long)want, from_log);
}

static void test_time_field(void **state)
{
    (void)state;
    kx_event ev;
    kx_decoder *d = mk_ok("input:\n  time_field: ts\n");
    kx_event_init(&ev);
    expect_time(d, &ev, "{\"ts\":1700000000}", T0, true);
    expect_time(d, &ev, "{\"ts\":1700000000123}", T0 + 123, true);
    expect_time(d, &ev, "{\"ts\":1700000000.5}", T0 + 500, true);
    expect_time(d, &ev, "{\"ts\":1700000000123.0}", T0 + 123, true);
    expect_time(d, &ev, "{\"ts\":\"1700000000\"}", T0, true);
    expect_time(d, &ev, "{\"ts\":\"2023-11-14T23:13:20.25+01:00\"}", T0 + 250, true);
    /* Seconds below 1e11, milliseconds from there on. */
    expect_time(d, &ev, "{\"ts\":99999999999}", 99999999999000LL, true);
    expect_time(d, &ev, "{\"ts\":100000000000}", 100000000000LL, true);
    expect_time(d, &ev, "{\"ts\":-1}", -1000, true);
    expect_time(d, &ev, "{\"ts\":0}", 0, true);
    /* Not a time: the fallback, flagged as such. */
    expect_time(d, &ev, "{\"ts\":true}", FALLBACK, false);
    expect_time(d, &ev, "{\"ts\":null}", FALLBACK, false);
    expect_time(d, &ev, "{\"ts\":\"yesterday\"}", FALLBACK, false);
    expect_time(d, &ev, "{\"ts\":\"0x10\"}", FALLBACK, false);
    expect_time(d, &ev, "{\"ts\":\"inf\"}", FALLBACK, false);
    expect_time(d, &ev, "{\"ts\":1e300}", FALLBACK, false);
    /* A configured time_field is the only one consulted. */
    expect_time(d, &ev, "{\"@timestamp\":\"2023-11-14T22:13:20Z\"}", FALLBACK, false);
    /* Nested names work as everywhere else. */
    kx_decoder_destroy(d);
    d = mk_ok("input:\n  time_field: meta.when\n");
    expect_time(d, &ev, "{\"meta\":{\"when\":1700000000}}", T0, true);
    kx_event_fini(&ev);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

static void test_default_time_fields(void **state)
{
    (void)state;
    kx_event ev;
    kx_decoder *d = mk_ok("input: {format: json}\n");
    kx_event_init(&ev);
    /* Order: @timestamp, timestamp, eventTime, time - whatever the document order. */
    expect_time(d, &ev,
                "{\"time\":\"2023-11-14T22:13:20Z\",\"@timestamp\":\"2023-11-14T22:13:21Z\"}",
                T0 + 1000, true);
    /* The first one that parses wins. */
    expect_time(d, &ev, "{\"@timestamp\":\"garbage\",\"timestamp\":1700000002}", T0 + 2000, true);
    expect_time(d, &ev, "{\"eventTime\":\"2023-11-14T22:13:23Z\",\"time\":1}", T0 + 3000, true);
    /* No zone: UTC. */
    expect_time(d, &ev, "{\"time\":\"2023-11-14 22:13:24\"}", T0 + 4000, true);
    expect_time(d, &ev, "{\"msg\":\"x\"}", FALLBACK, false);
    expect_time(d, &ev, "{\"Time\":1700000000}", FALLBACK, false);
    kx_event_fini(&ev);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

static void expect_tenant(kx_decoder *d, kx_event *ev, const char *s, const char *want)
{
    const char *why;
    kx_event_reset(ev);
    assert_int_equal(kx_decode(d, s, strlen(s), FALLBACK, ev, &why), 0);
    assert_non_null(ev->tenant);
    assert_string_equal(ev->tenant, want);
}

static void test_tenant(void **state)
{
    (void)state;
    kx_event ev;
    kx_event_init(&ev);
    kx_decoder *d = mk_ok("input: {}\n");
    expect_tenant(d, &ev, "{\"org\":\"x\"}", "default");
    kx_decoder_destroy(d);
    d = mk_ok("input:\n  tenant: acme\n");
    expect_tenant(d, &ev, "{\"org\":\"x\"}", "acme");
    kx_decoder_destroy(d);
    /* tenant_field wins when present and not empty; else the static tenant. */
    d = mk_ok("input:\n  tenant: acme\n  tenant_field: customer.id\n");
    expect_tenant(d, &ev, "{\"customer\":{\"id\":\"blue\"}}", "blue");
    expect_tenant(d, &ev, "{\"customer\":{\"id\":\"\"}}", "acme");
    expect_tenant(d, &ev, "{\"customer\":{\"id\":7}}", "7");
    expect_tenant(d, &ev, "{\"other\":1}", "acme");
    kx_decoder_destroy(d);
    d = mk_ok("input:\n  tenant_field: org\n");
    expect_tenant(d, &ev, "{\"org\":\"red\"}", "red");
    expect_tenant(d, &ev, "{}", "default");
    /* Malformed events still carry a tenant. */
    const char *why;
    kx_event_reset(&ev);
    assert_int_equal(kx_decode(d, "{", 1, 0, &ev, &why), -EINVAL);
    assert_string_equal(ev.tenant, "default");
    kx_decoder_destroy(d);
    kx_event_fini(&ev);
    kx_tz_cache_clear();
}

static const char syslog_cfg[] = "input:\n"
                                 "  topic: auth\n"
                                 "  format: syslog\n"
                                 "  tenant: acme\n"
                                 "  tenant_field: org\n"
                                 "  logsource: {product: linux, category: auth}\n"
                                 "decode:\n"
                                 "  programs:\n"
                                 "    sshd: {product: linux, service: sshd}\n"
                                 "    sudo:\n"
                                 "      service: sudo\n"
                                 "      category: process_creation\n"
                                 "    nginx: {product: nginx}\n"
                                 "  extractors:\n"
                                 "    - pattern: 'org=(?<org>\\w+)'\n";

static void expect_ls(kx_decoder *d, kx_event *ev, const char *line, const char *product,
                      const char *service, const char *category, const char *tenant)
{
    const char *why;
    kx_event_reset(ev);
    assert_int_equal(kx_decode(d, line, strlen(line), FALLBACK, ev, &why), 0);
#define EXPECT_STR(got, want)                                                                      \
    do {                                                                                           \
        if (want)                                                                                  \
            assert_string_equal(got, want);                                                        \
        else                                                                                       \
            assert_null(got);                                                                      \
    } while (0)
    EXPECT_STR(ev->product, product);
    EXPECT_STR(ev->service, service);
    EXPECT_STR(ev->category, category);
    EXPECT_STR(ev->tenant, tenant);
}

static void collect_ls(const char *product, const char *service, const char *category, void *ud)
{
    char *out = ud;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s/%s/%s ", product ? product : "-", service ? service : "-",
             category ? category : "-");
}

static void test_logsource(void **state)
{
    (void)state;
    kx_event ev;
    kx_event_init(&ev);
    kx_decoder *d = mk_ok(syslog_cfg);
    assert_int_equal(kx_decoder_format(d), KX_FMT_SYSLOG);
    /* The program's logsource overrides what it sets; the input's fills the rest. */
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 sshd[1]: Accepted publickey for bob", "linux", "sshd",
              "auth", "acme");
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 sudo:   bob : COMMAND=/bin/id", "linux", "sudo",
              "process_creation", "acme");
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 nginx: GET /", "nginx", NULL, "auth", "acme");
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 cron[2]: run", "linux", NULL, "auth", "acme");
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 no tag here", "linux", NULL, "auth", "acme");
    /* The tenant can come from an extracted field. */
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 sshd[1]: org=blue x", "linux", "sshd", "auth", "blue");
    /* Every logsource the decoder can give, as the rule set's routes are prepared from. */
    char all[256] = "";
    kx_decoder_logsources(d, collect_ls, all);
    assert_string_equal(all,
                        "linux/-/auth nginx/-/auth linux/sshd/auth linux/sudo/process_creation ");
    kx_decoder_destroy(d);
    /* No logsource configured: all unknown. */
    d = mk_ok("input: {format: syslog}\n");
    expect_ls(d, &ev, "Mar 29 01:30:00 web1 sshd[1]: x", NULL, NULL, NULL, "default");
    kx_decoder_destroy(d);
    kx_event_fini(&ev);
    kx_tz_cache_clear();
}

static void test_format_override(void **state)
{
    (void)state;
    kx_decoder *d = NULL;
    assert_int_equal(mk("input: {format: json}\n", KX_FMT_SYSLOG, &d, NULL, 0), 0);
    assert_int_equal(kx_decoder_format(d), KX_FMT_SYSLOG);
    kx_decoder_destroy(d);
    assert_int_equal(mk("x: 1\n", KX_FMT_JSON, &d, NULL, 0), 0);
    assert_int_equal(kx_decoder_format(d), KX_FMT_JSON);
    kx_decoder_destroy(d);
    assert_int_equal(mk("input:\n", -1, &d, NULL, 0), 0); /* null input: defaults */
    assert_int_equal(kx_decoder_format(d), KX_FMT_JSON);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

static void expect_err(const char *yaml, const char *want)
{
    kx_decoder *d = (kx_decoder *)1;
    char errtext[600];
    assert_int_equal(mk(yaml, -1, &d, errtext, sizeof(errtext)), -EINVAL);
    assert_null(d);
    assert_string_equal(errtext, want);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_err("input:\n  format: json\n  tenant_feild: org\n",
               "cfg.yaml:3:3: unknown key \"tenant_feild\"");
    expect_err("input:\n  format: xml\n", "cfg.yaml:2:11: unknown format \"xml\" (json, syslog)");
    expect_err("input: [a]\n", "cfg.yaml:1:8: input must be a map");
    expect_err("input:\n  tenant: ''\n", "cfg.yaml:2:11: must not be empty");
    expect_err("input:\n  time_field: {a: 1}\n", "cfg.yaml:2:15: expected a string");
    expect_err("input:\n  logsource: {product: linux, prodcut: x}\n",
               "cfg.yaml:2:31: unknown key \"prodcut\"");
    expect_err("input:\n  syslog: {timezone: Mars/Olympus_Mons}\n",
               "cfg.yaml:2:22: unknown time zone \"Mars/Olympus_Mons\"");
    expect_err("input:\n  syslog: {zone: UTC}\n", "cfg.yaml:2:12: unknown key \"zone\"");
    expect_err("input:\n  syslog:\n    year: 1969\n",
               "cfg.yaml:3:11: 1969 is out of range [1970, 9999]");
    expect_err("input:\n  syslog:\n    year: soon\n",
               "cfg.yaml:3:11: expected an integer, got \"soon\"");
    expect_err("decode:\n  programs:\n    sshd: {product: linux, servce: sshd}\n",
               "cfg.yaml:3:28: unknown key \"servce\"");
    expect_err("decode:\n  programs:\n    sshd: {service: a}\n    sshd: {service: b}\n",
               "cfg.yaml:4:5: duplicate program \"sshd\"");
    expect_err("decode:\n  programs: [sshd]\n",
               "cfg.yaml:2:13: programs must be a map of program -> logsource");
    expect_err("decode:\n  extractors: []\n  parsers: {}\n",
               "cfg.yaml:3:3: unknown key \"parsers\"");
    kx_tz_cache_clear();
}

static void test_rfc3339(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ms;
    } good[] = {
        {"2023-11-14T22:13:20Z", T0},
        {"2023-11-14t22:13:20z", T0},
        {"2023-11-14 22:13:20Z", T0},
        {"2023-11-14T22:13:20", T0},
        {"2023-11-14T22:13:20.1Z", T0 + 100},
        {"2023-11-14T22:13:20.12Z", T0 + 120},
        {"2023-11-14T22:13:20.123456789Z", T0 + 123},
        {"2023-11-14T22:13:20,5Z", T0 + 500},
        {"2023-11-14T23:13:20+01:00", T0},
        {"2023-11-14T23:13:20+0100", T0},
        {"2023-11-14T23:13:20+01", T0},
        {"2023-11-14T16:43:20-05:30", T0},
        {"2023-11-14T16:43:20.999-0530", T0 + 999},
        {"1970-01-01T00:00:00Z", 0},
        {"1969-12-31T23:59:59Z", -1000},
        {"2024-02-29T00:00:00Z", 1709164800000LL},
        {"2016-12-31T23:59:60Z", 1483228800000LL}, /* leap second: the next minute's :00 */
    };
    static const char *const bad[] = {
        "",
        "2023-11-14",
        "2023-11-14T22:13",
        "2023-11-14T22:13:20.",
        "2023-11-14T22:13:20+01:",
        "2023-11-14T22:13:20+1",
        "2023-11-14T22:13:20+01:0",
        "2023-11-14T22:13:20Z ",
        "2023-11-14T22:13:20ZZ",
        "2023-11-14X22:13:20Z",
        "2023-02-29T00:00:00Z",
        "2023-04-31T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-00-01T00:00:00Z",
        "2023-11-00T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T22:60:00Z",
        "2023-11-14T22:13:61Z",
        "2023-11-14T22:13:20+24:00",
        "23-11-14T22:13:20Z",
        "2023-1-14T22:13:20Z",
        "Tue, 14 Nov 2023 22:13:20 GMT",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int64_t ms = -7;
        if (kx_parse_rfc3339(good[i].s, strlen(good[i].s), &ms) != 0 || ms != good[i].ms)
            fail_msg("%s: got %lld, want %lld", good[i].s, (long long)ms, (long long)good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = -7;
        if (kx_parse_rfc3339(bad[i], strlen(bad[i]), &ms) != -EINVAL || ms != -7)
            fail_msg("%s: accepted as %lld", bad[i], (long long)ms);
    }
    /* The length bounds the parse: no reliance on a terminator. */
    int64_t ms;
    assert_int_equal(kx_parse_rfc3339("2023-11-14T22:13:20Zjunk", 20, &ms), 0);
    assert_int_equal(ms, T0);
}

/* A JSON document that hits every decode limit: nesting past the depth limit (and past the
 * scanner's inline container stack, 4096 levels), a name too long, more fields than the cap,
 * an integer beyond 64 bits, escapes and invalid UTF-8. */
static char *hostile_json(void)
{
    size_t cap = 256 * 1024, off = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    off += (size_t)sprintf(s + off, "{\"big\":18446744073709551616,\"esc\":\"a\\u0041\\n\xff\","
                                    "\"deep\":");
    for (int i = 0; i < 5000; i++)
        s[off++] = '[';
    for (int i = 0; i < 5000; i++)
        s[off++] = ']';
    off += (size_t)sprintf(s + off, ",\"");
    memset(s + off, 'k', 2000);
    off += 2000;
    off += (size_t)sprintf(s + off, "\":1");
    for (int i = 0; i < 5000; i++)
        off += (size_t)sprintf(s + off, ",\"f%d\":\"v\"", i);
    s[off++] = '}';
    s[off] = '\0';
    return s;
}

/* Steady state: once the event's arena and field array have grown, decoding the same kinds
 * of lines again allocates nothing in klaxon's code (syslog, extractors, the JSON scanner,
 * also when it hits its limits). */
static void test_no_steady_state_alloc(void **state)
{
    (void)state;
    static const char *const lines[] = {
        "<38>Mar 29 01:30:00 web1 sshd[4242]: Failed password for invalid user admin from "
        "203.0.113.7 port 52144 ssh2 org=blue",
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] org=red entry",
        "Mar 29 01:31:00 web1 sudo:   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root",
    };
    kx_event ev;
    const char *why;
    kx_decoder *d = mk_ok(syslog_cfg);
    kx_decoder *j = mk_ok("input: {tenant_field: org}\ndecode:\n  extractors:\n"
                          "    - {field: msg, pattern: 'id=(?<id>\\d+)'}\n");
    static const char doc[] = "{\"@timestamp\":\"2023-11-14T22:13:20Z\",\"org\":\"x\","
                              "\"msg\":[\"id=1\",\"id=2\"],\"a\":{\"b\":[1,2.5,true,null]},"
                              "\"ua\":\"Mozilla\\/5.0 \\\"x\\\" \\u00e9\\ud83d\\ude00\"}";
    char *hostile = hostile_json();
    kx_event_init(&ev);
    for (int round = 0; round < 2; round++) {
        unsigned long before = allocs;
        for (int i = 0; i < 100; i++) {
            for (size_t k = 0; k < sizeof(lines) / sizeof(lines[0]); k++) {
                kx_event_reset(&ev);
                assert_int_equal(kx_decode(d, lines[k], strlen(lines[k]), 0, &ev, &why), 0);
            }
            kx_event_reset(&ev);
            assert_int_equal(kx_decode(j, doc, strlen(doc), 0, &ev, &why), 0);
            assert_string_equal(kx_event_get(&ev, "id")->value, "1");
            kx_event_reset(&ev);
            assert_int_equal(kx_decode(j, hostile, strlen(hostile), 0, &ev, &why), 0);
            assert_int_equal(ev.limits, KX_EV_LIMIT_DEPTH | KX_EV_LIMIT_KEY | KX_EV_LIMIT_FIELDS |
                                            KX_EV_LIMIT_NUMBER);
            assert_string_equal(kx_event_get(&ev, "big")->value, "18446744073709551616");
        }
        /* Round 0 warms the arena and field array up; round 1 must not allocate. */
        if (round == 1)
            assert_int_equal(allocs - before, 0);
        else
            assert_true(allocs - before > 0);
    }
    kx_event_fini(&ev);
    free(hostile);
    kx_decoder_destroy(j);
    kx_decoder_destroy(d);
    kx_tz_cache_clear();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_field),      cmocka_unit_test(test_default_time_fields),
        cmocka_unit_test(test_tenant),          cmocka_unit_test(test_logsource),
        cmocka_unit_test(test_format_override), cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_rfc3339),         cmocka_unit_test(test_no_steady_state_alloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
