/*
 * The alert record: severity, dedup_key, category, and the rendered JSON byte for byte
 * (docs/alerts.md is the contract these strings pin), plus evidence rendering.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../src/alert/alert_int.h"
#include "klaxon/alert.h"
#include "klaxon/event.h"

/* 2026-03-29T01:30:00.000Z */
#define T0 1774747800000LL

static const kx_kv ssh_group[] = {{"user", "root"}, {"src_ip", "10.0.0.5"}};
static const char *const ssh_tags[] = {"attack.credential-access", "attack.t1110"};
static const char *const ssh_events[] = {
    "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"a\",\"fields\":{}}",
    "{\"time\":\"2026-03-29T01:34:10.250Z\",\"raw\":\"b\",\"fields\":{}}",
};
static const size_t ssh_events_len[] = {57, 57};

static kx_alert ssh_alert(void)
{
    kx_alert a = {
        .rule_id = "0e95725d-7320-415d-80f7-004da920fc11",
        .rule_title = "SSH brute force",
        .rule_level = "high",
        .team = "secops",
        .tenant = "acme",
        .group = ssh_group,
        .ngroup = 2,
        .count = 12,
        .window_s = 300,
        .first_seen_ms = T0,
        .last_seen_ms = T0 + 250250,
        .tags = ssh_tags,
        .ntags = 2,
        .events = ssh_events,
        .events_len = ssh_events_len,
        .nevents = 2,
    };
    return a;
}

static const char *const exec_tags[] = {"attack.t1059.004", "attack.execution"};
static const char *const exec_events[] = {
    "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"curl x | sh\",\"fields\":{\"cmd\":"
    "\"curl x | sh\"}}"};

static kx_alert exec_alert(void)
{
    kx_alert a = {
        .rule_id = "curl-pipe-shell",
        .rule_title = "Download piped to \"sh\"",
        .rule_level = "medium",
        .tenant = "default",
        .count = 1,
        .first_seen_ms = T0,
        .last_seen_ms = T0,
        .tags = exec_tags,
        .ntags = 2,
        .events = exec_events,
        .events_len = NULL, /* NUL-terminated */
        .nevents = 1,
    };
    return a;
}

static void test_severity(void **state)
{
    (void)state;
    assert_string_equal(kx_alert_severity("critical"), "critical");
    assert_string_equal(kx_alert_severity("high"), "error");
    assert_string_equal(kx_alert_severity("medium"), "warning");
    assert_string_equal(kx_alert_severity("low"), "info");
    assert_string_equal(kx_alert_severity("informational"), "info");
    assert_string_equal(kx_alert_severity("HIGH"), "error");
    assert_string_equal(kx_alert_severity(NULL), "warning");
    assert_string_equal(kx_alert_severity("bogus"), "warning");
}

static const char ssh_json[] =
    "{\"id\":\"7f5e60366b664e5967dad5c5529520c0\",\"dedup_key\":"
    "\"9da4dfdf0a6815a5449d6a09e366ed62\","
    "\"rule\":{\"id\":\"0e95725d-7320-415d-80f7-004da920fc11\",\"title\":\"SSH brute force\","
    "\"level\":\"high\"},\"severity\":\"error\",\"team\":\"secops\",\"tenant\":\"acme\","
    "\"category\":\"credential-access\",\"group\":{\"user\":\"root\",\"src_ip\":\"10.0.0.5\"},"
    "\"count\":12,\"window\":300,\"first_seen\":\"2026-03-29T01:30:00.000Z\","
    "\"last_seen\":\"2026-03-29T01:34:10.250Z\",\"status\":\"firing\","
    "\"tags\":[\"attack.credential-access\","
    "\"attack.t1110\"],\"events\":["
    "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"a\",\"fields\":{}},"
    "{\"time\":\"2026-03-29T01:34:10.250Z\",\"raw\":\"b\",\"fields\":{}}]}";

static void test_render_correlation(void **state)
{
    (void)state;
    kx_alert a = ssh_alert();
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    assert_string_equal(b.data, ssh_json);
    assert_int_equal(b.len, strlen(ssh_json));
    /* Rendering again gives the same bytes (the id is derived, not random). */
    kx_buf_reset(&b);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    assert_string_equal(b.data, ssh_json);
    kx_buf_fini(&b);
}

static const char exec_json[] =
    "{\"id\":\"12642018a22119e443117f446ccf78e6\",\"dedup_key\":"
    "\"807c85c03254af5ba2740c61c2c3bff9\","
    "\"rule\":{\"id\":\"curl-pipe-shell\",\"title\":\"Download piped to \\\"sh\\\"\","
    "\"level\":\"medium\"},\"severity\":\"warning\",\"team\":\"default\","
    "\"tenant\":\"default\",\"category\":\"execution\",\"group\":{},\"count\":1,\"window\":0,"
    "\"first_seen\":\"2026-03-29T01:30:00.000Z\",\"last_seen\":\"2026-03-29T01:30:00.000Z\","
    "\"status\":\"firing\",\"tags\":[\"attack.t1059.004\",\"attack.execution\"],\"events\":["
    "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"curl x | sh\",\"fields\":{\"cmd\":"
    "\"curl x | sh\"}}]}";

/* Absence alerts carry "status" after last_seen; a resolve keeps the dedup_key, not the id. */
static void test_render_status(void **state)
{
    (void)state;
    kx_alert a = ssh_alert();
    a.count = 0;
    a.nevents = 0;
    a.ntags = 0;
    a.status = "firing";
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    char key[33];
    kx_alert_dedup_key(&a, key, sizeof(key));
    const char *p = strstr(b.data, ",\"window\":300,\"first_seen\":\"2026-03-29T01:30:00.000Z\","
                                   "\"last_seen\":\"2026-03-29T01:34:10.250Z\","
                                   "\"status\":\"firing\",\"tags\":[],\"events\":[]}");
    assert_non_null(p);
    assert_int_equal(strlen(p),
                     strlen(",\"window\":300,\"first_seen\":\"2026-03-29T01:30:00.000Z\","
                            "\"last_seen\":\"2026-03-29T01:34:10.250Z\","
                            "\"status\":\"firing\",\"tags\":[],\"events\":[]}"));
    char firing_id[80];
    const char *idp = strstr(b.data, "\"id\":\"");
    assert_non_null(idp);
    snprintf(firing_id, sizeof(firing_id), "%.32s", idp + 6);
    a.status = "resolved";
    kx_buf_reset(&b);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    char key2[33];
    kx_alert_dedup_key(&a, key2, sizeof(key2));
    assert_string_equal(key, key2);
    idp = strstr(b.data, "\"id\":\"");
    assert_non_null(idp);
    assert_memory_not_equal(idp + 6, firing_id, 32);
    assert_non_null(strstr(b.data, "\"status\":\"resolved\""));
    assert_true(kx__alert_json_resolved(b.data));
    /* No status: "firing", as every alert carries one. */
    a.status = NULL;
    kx_buf_reset(&b);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    assert_non_null(strstr(b.data, "\"status\":\"firing\","));
    assert_false(kx__alert_json_resolved(b.data));
    /* A group field named status, valued "resolved", is not the alert's status. */
    static const kx_kv g[] = {{"user", "root"}, {"status", "resolved"}};
    a.group = g;
    a.ngroup = 2;
    kx_buf_reset(&b);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    assert_non_null(strstr(b.data, ",\"status\":\"resolved\"}"));
    assert_false(kx__alert_json_resolved(b.data));
    kx_buf_fini(&b);
}

static void test_render_single(void **state)
{
    (void)state;
    kx_alert a = exec_alert();
    kx_buf b;
    kx_buf_init(&b, 0);
    /* team_name NULL and no team: rendered as "default". */
    assert_int_equal(kx_alert_render(&a, NULL, &b), 0);
    assert_string_equal(b.data, exec_json);
    kx_buf_fini(&b);
}

/* A match made with a regex given up carries the reason after last_seen (after status, which
 * single-event alerts never have); it is not part of the dedup_key or the id. */
static void test_render_degraded(void **state)
{
    (void)state;
    kx_alert a = exec_alert();
    a.degraded = "regex budget exceeded in CommandLine|re";
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(&a, NULL, &b), 0);
    assert_string_equal(
        b.data,
        "{\"id\":\"12642018a22119e443117f446ccf78e6\",\"dedup_key\":"
        "\"807c85c03254af5ba2740c61c2c3bff9\","
        "\"rule\":{\"id\":\"curl-pipe-shell\",\"title\":\"Download piped to \\\"sh\\\"\","
        "\"level\":\"medium\"},\"severity\":\"warning\",\"team\":\"default\","
        "\"tenant\":\"default\",\"category\":\"execution\",\"group\":{},\"count\":1,\"window\":0,"
        "\"first_seen\":\"2026-03-29T01:30:00.000Z\",\"last_seen\":\"2026-03-29T01:30:00.000Z\","
        "\"status\":\"firing\",\"degraded\":\"regex budget exceeded in CommandLine|re\","
        "\"tags\":[\"attack.t1059.004\",\"attack.execution\"],\"events\":["
        "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"curl x | sh\",\"fields\":{\"cmd\":"
        "\"curl x | sh\"}}]}");
    kx_buf_fini(&b);
}

/* The rule's words and the event's fields, after the tags; backfill after status. */
static void test_render_rule_context(void **state)
{
    (void)state;
    kx_alert a = ssh_alert();
    static const char *const refs[] = {"https://attack.mitre.org/techniques/T1110/"};
    static const char *const fps[] = {"a user who forgot a password", "a \"scanner\""};
    static const kx_kv fields[] = {{"src_ip", "10.0.0.5"}, {"user", "root"}};
    a.description = "Many failed SSH logins from one address.";
    a.runbook = "https://wiki/runbooks/ssh";
    a.author = "SOC team";
    a.references = refs;
    a.nreferences = 1;
    a.falsepositives = fps;
    a.nfalsepositives = 2;
    a.fields = fields;
    a.nfields = 2;
    a.backfill = true;
    a.nevents = 0;
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(&a, "secops", &b), 0);
    const char *rest = strstr(b.data, ",\"last_seen\"");
    assert_non_null(rest);
    assert_string_equal(
        rest, ",\"last_seen\":\"2026-03-29T01:34:10.250Z\",\"status\":\"firing\",\"backfill\":true,"
              "\"tags\":[\"attack.credential-access\",\"attack.t1110\"],"
              "\"description\":\"Many failed SSH logins from one address.\","
              "\"runbook\":\"https://wiki/runbooks/ssh\",\"author\":\"SOC team\","
              "\"references\":[\"https://attack.mitre.org/techniques/T1110/\"],"
              "\"falsepositives\":[\"a user who forgot a password\",\"a \\\"scanner\\\"\"],"
              "\"fields\":{\"src_ip\":\"10.0.0.5\",\"user\":\"root\"},\"events\":[]}");
    /* Neither part of the dedup_key nor of the id. */
    kx_alert plain = ssh_alert();
    plain.nevents = 0;
    kx_buf c;
    kx_buf_init(&c, 0);
    assert_int_equal(kx_alert_render(&plain, "secops", &c), 0);
    assert_memory_equal(b.data, c.data, 80);
    kx_buf_fini(&b);
    kx_buf_fini(&c);
}

static void test_render_nulls_and_cap(void **state)
{
    (void)state;
    kx_alert a = {.count = 1};
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_alert_render(&a, NULL, &b), 0);
    /* Only the fixed-width prefix differs between alerts; check the rest exactly. */
    const char *rest = strstr(b.data, ",\"rule\"");
    assert_non_null(rest);
    assert_string_equal(rest,
                        ",\"rule\":{\"id\":null,\"title\":null,\"level\":null},"
                        "\"severity\":\"warning\",\"team\":\"default\",\"tenant\":\"default\","
                        "\"category\":\"uncategorized\",\"group\":{},\"count\":1,\"window\":0,"
                        "\"first_seen\":\"1970-01-01T00:00:00.000Z\","
                        "\"last_seen\":\"1970-01-01T00:00:00.000Z\",\"status\":\"firing\","
                        "\"tags\":[],\"events\":[]}");
    kx_buf_fini(&b);

    /* A capped buffer that cannot hold the alert: error, and the buffer is left as it was. */
    kx_alert s = ssh_alert();
    kx_buf_init(&b, 100);
    assert_int_equal(kx_buf_puts(&b, "x"), 0);
    assert_int_equal(kx_alert_render(&s, "secops", &b), -E2BIG);
    assert_int_equal(b.len, 1);
    assert_string_equal(b.data, "x");
    kx_buf_fini(&b);
}

static void key_of(const kx_alert *a, char *out)
{
    kx_alert_dedup_key(a, out, 33);
}

static void test_dedup_key(void **state)
{
    (void)state;
    char k0[33], k1[33];
    kx_alert a = ssh_alert();
    key_of(&a, k0);
    assert_int_equal(strlen(k0), 32);
    assert_int_equal(strspn(k0, "0123456789abcdef"), 32);
    assert_string_equal(k0, "9da4dfdf0a6815a5449d6a09e366ed62");

    /* Not part of the key: count, last_seen, title, level, team, tags, evidence. */
    kx_alert b = a;
    b.count = 99;
    b.last_seen_ms += 1000;
    b.rule_title = "other";
    b.rule_level = "low";
    b.team = NULL;
    b.ntags = 0;
    b.nevents = 0;
    key_of(&b, k1);
    assert_string_equal(k1, k0);

    /* Part of it: rule, tenant, group keys and values, window start. */
    b = a;
    b.rule_id = "other-rule";
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);
    b = a;
    b.tenant = "globex";
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);
    b = a;
    b.first_seen_ms = T0 + 300000; /* the next window */
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);
    const kx_kv other_value[] = {{"user", "admin"}, {"src_ip", "10.0.0.5"}};
    b = a;
    b.group = other_value;
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);
    const kx_kv other_key[] = {{"account", "root"}, {"src_ip", "10.0.0.5"}};
    b = a;
    b.group = other_key;
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);
    /* Field boundaries count: ("user","root") vs ("use","rroot") must differ. */
    const kx_kv shifted[] = {{"use", "rroot"}, {"src_ip", "10.0.0.5"}};
    b = a;
    b.group = shifted;
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);
    b = a;
    b.ngroup = 1;
    key_of(&b, k1);
    assert_string_not_equal(k1, k0);

    /* Equal content in different storage gives the same key. */
    char rid[64], user[8];
    snprintf(rid, sizeof(rid), "%s", a.rule_id);
    snprintf(user, sizeof(user), "root");
    const kx_kv copy[] = {{"user", user}, {"src_ip", "10.0.0.5"}};
    b = a;
    b.rule_id = rid;
    b.group = copy;
    key_of(&b, k1);
    assert_string_equal(k1, k0);
}

static const char *category_of(const char *cat, const char *const *tags, size_t ntags)
{
    static char buf[64];
    kx_alert a = {.category = cat, .tags = tags, .ntags = ntags};
    return kx__alert_category(&a, buf, sizeof(buf));
}

static void test_category(void **state)
{
    (void)state;
    const char *const t1[] = {"attack.t1110", "attack.credential-access", "attack.impact"};
    const char *const t2[] = {"attack.t1562.001", "attack.Defense_Evasion"};
    const char *const t3[] = {"attack.t1110", "attack.g0016", "attack.s0002", "cve.2021-44228"};
    const char *const t4[] = {"attack.", "attack.lateral_movement"};
    assert_string_equal(category_of("auth", t1, 3), "auth");
    assert_string_equal(category_of(NULL, t1, 3), "credential-access");
    assert_string_equal(category_of("", t1, 3), "credential-access");
    assert_string_equal(category_of(NULL, t2, 2), "defense-evasion");
    assert_string_equal(category_of(NULL, t3, 4), "uncategorized");
    assert_string_equal(category_of(NULL, t4, 2), "lateral-movement");
    assert_string_equal(category_of(NULL, NULL, 0), "uncategorized");
}

static void add(kx_event *ev, const char *name, const char *value, kx_val_type t)
{
    assert_int_equal(kx_event_add(ev, name, strlen(name), value, strlen(value), t), 0);
}

static void test_evidence_types_and_arrays(void **state)
{
    (void)state;
    static const char raw[] = "{\"user\":\"root\",\"port\":22,\"ok\":false,\"tags\":[\"a\",\"b\"]}";
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = raw;
    ev.raw_len = strlen(raw);
    ev.time_ms = T0 + 7;
    add(&ev, "user", "root", KX_VAL_STR);
    add(&ev, "tags", "a", KX_VAL_STR);
    add(&ev, "port", "22", KX_VAL_NUM);
    add(&ev, "ok", "false", KX_VAL_BOOL);
    add(&ev, "tags", "b", KX_VAL_STR);
    add(&ev, "gone", "", KX_VAL_NULL);
    add(&ev, "n", "1.5e3", KX_VAL_NUM);
    add(&ev, "tags", "3", KX_VAL_NUM);
    add(&ev, "odd", "yes", KX_VAL_BOOL); /* not a JSON literal: falls back to a string */
    add(&ev, "hex", "0x1F", KX_VAL_NUM); /* not a JSON number: a string, never bad JSON */
    add(&ev, "neg", "-0.25E+2", KX_VAL_NUM);
    add(&ev, "lead0", "01", KX_VAL_NUM);
    add(&ev, "dot", "1.", KX_VAL_NUM);
    /* Valid JSON numbers out of int64/double range: strings, or jansson refuses the alert. */
    add(&ev, "min", "-9223372036854775808", KX_VAL_NUM);
    add(&ev, "u64", "18446744073709551616", KX_VAL_NUM);
    add(&ev, "dmax", "1.7976931348623157e308", KX_VAL_NUM);
    add(&ev, "inf", "1e400", KX_VAL_NUM);

    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_evidence_render(&ev, 4096, &b), 0);
    assert_string_equal(
        b.data, "{\"time\":\"2026-03-29T01:30:00.007Z\",\"raw\":\"{\\\"user\\\":\\\"root\\\","
                "\\\"port\\\":22,\\\"ok\\\":false,\\\"tags\\\":[\\\"a\\\",\\\"b\\\"]}\","
                "\"fields\":{\"user\":\"root\",\"tags\":[\"a\",\"b\",3],\"port\":22,"
                "\"ok\":false,\"gone\":null,\"n\":1.5e3,\"odd\":\"yes\","
                "\"hex\":\"0x1F\",\"neg\":-0.25E+2,\"lead0\":\"01\",\"dot\":\"1.\","
                "\"min\":-9223372036854775808,\"u64\":\"18446744073709551616\","
                "\"dmax\":1.7976931348623157e308,\"inf\":\"1e400\"}}");
    /* Every decode limit, named, in bit order, after the fields. */
    ev.limits = KX_EV_LIMIT_NUMBER | KX_EV_LIMIT_FIELDS | KX_EV_LIMIT_KEY | KX_EV_LIMIT_DEPTH;
    kx_buf limited;
    kx_buf_init(&limited, 0);
    assert_int_equal(kx_evidence_render(&ev, 0, &limited), 0);
    assert_int_equal(limited.len, b.len + strlen(",\"decode_limits\":[\"depth\",\"key\","
                                                 "\"fields\",\"number\"]"));
    assert_memory_equal(limited.data, b.data, b.len - 1);
    assert_string_equal(limited.data + b.len - 1,
                        ",\"decode_limits\":[\"depth\",\"key\",\"fields\",\"number\"]}");
    kx_buf_fini(&limited);
    ev.limits = 0;
    /* max_bytes 0 = no cap: same bytes. */
    size_t full = b.len;
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render(&ev, 0, &b), 0);
    assert_int_equal(b.len, full);
    /* Exactly max_bytes: not truncated. */
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render(&ev, full, &b), 0);
    assert_int_equal(b.len, full);
    assert_null(strstr(b.data, "truncated"));
    kx_buf_fini(&b);
    kx_event_fini(&ev);
}

static void test_evidence_escaping(void **state)
{
    (void)state;
    /* Control chars, a quote, a backslash, DEL, valid UTF-8 (é) and invalid bytes. */
    static const char raw[] = "a\tb\nc\x01\"\\\x7f\xc3\xa9\xff\xc3(";
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = raw;
    ev.raw_len = sizeof(raw) - 1;
    ev.time_ms = T0;
    add(&ev, "msg\x02", "x\xfey", KX_VAL_STR);
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_evidence_render(&ev, 4096, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\","
                                "\"raw\":\"a\\tb\\nc\\u0001\\\"\\\\\x7f\xc3\xa9\xef\xbf\xbd"
                                "\xef\xbf\xbd(\",\"fields\":{\"msg\\u0002\":\"x\xef\xbf\xbdy\"}}");
    kx_buf_fini(&b);
    kx_event_fini(&ev);
}

/* The reason a match was degraded follows the fields, escaped, and survives a cut. */
static void test_evidence_degraded(void **state)
{
    (void)state;
    static const char raw[] = "agent=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab";
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = raw;
    ev.raw_len = sizeof(raw) - 1;
    ev.time_ms = T0;
    add(&ev, "ua", "aab", KX_VAL_STR);
    kx_buf b;
    kx_buf_init(&b, 0);
    assert_int_equal(kx_evidence_render_degraded(&ev, "limit in \"ua\"|re", 4096, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"agent="
                                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab\",\"fields\":{\"ua\":"
                                "\"aab\"},\"degraded\":\"limit in \\\"ua\\\"|re\"}");
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render_degraded(&ev, "limit", 120, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"agent="
                                "aaaaaaaaaaaa\",\"fields\":{\"ua\":\"aab\"},"
                                "\"degraded\":\"limit\",\"truncated\":true}");
    kx_buf_reset(&b);
    /* Without a reason, exactly kx_evidence_render's bytes. */
    assert_int_equal(kx_evidence_render_degraded(&ev, NULL, 4096, &b), 0);
    kx_buf r;
    kx_buf_init(&r, 0);
    assert_int_equal(kx_evidence_render(&ev, 4096, &r), 0);
    assert_string_equal(b.data, r.data);
    kx_buf_fini(&r);
    kx_buf_fini(&b);
    kx_event_fini(&ev);
}

static void test_evidence_truncation(void **state)
{
    (void)state;
    char raw[200];
    memset(raw, 'x', sizeof(raw));
    kx_event ev;
    kx_event_init(&ev);
    ev.raw = raw;
    ev.raw_len = sizeof(raw);
    ev.time_ms = T0;
    add(&ev, "user", "root", KX_VAL_STR);
    kx_buf b;
    kx_buf_init(&b, 0);
    /* Fixed part: {"time":"...","raw":"","fields":{"user":"root"},"truncated":true} = 86. */
    assert_int_equal(kx_evidence_render(&ev, 100, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":\"xxxxxxxxxxxxxx\","
                                "\"fields\":{\"user\":\"root\"},\"truncated\":true}");
    assert_int_equal(b.len, 100);

    /* Escapes count at their rendered size: 7 newlines take 14 bytes. */
    memset(raw, '\n', sizeof(raw));
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render(&ev, 100, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\","
                                "\"raw\":\"\\n\\n\\n\\n\\n\\n\\n\","
                                "\"fields\":{\"user\":\"root\"},\"truncated\":true}");
    assert_int_equal(b.len, 100);

    /* A cut never splits a UTF-8 character. With 17 bytes for raw, 7 x "é" (2 bytes each)
     * fit, and so would the first byte of the 4-byte U+1F600 after them (as U+FFFD, 3
     * bytes); the cut backs off to the character boundary instead. */
    for (size_t i = 0; i < 14; i += 2) {
        raw[i] = '\xc3';
        raw[i + 1] = '\xa9';
    }
    for (size_t i = 14; i + 3 < sizeof(raw); i += 4)
        memcpy(raw + i, "\xf0\x9f\x98\x80", 4);
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render(&ev, 103, &b), 0);
    assert_string_equal(b.data,
                        "{\"time\":\"2026-03-29T01:30:00.000Z\","
                        "\"raw\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\","
                        "\"fields\":{\"user\":\"root\"},\"truncated\":true}");
    assert_int_equal(b.len, 100);

    /* Fields alone too big: trailing field names are dropped, then raw fills the rest. */
    add(&ev, "cmd", "0123456789012345678901234567890123456789", KX_VAL_STR);
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render(&ev, 100, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":"
                                "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\","
                                "\"fields\":{\"user\":\"root\"},\"truncated\":true}");
    assert_int_equal(b.len, 100);
    /* Decode limits (event.h) come after the fields, before "truncated", and count in the
     * size: the same raw needs 35 bytes more. */
    ev.limits = KX_EV_LIMIT_DEPTH | KX_EV_LIMIT_NUMBER;
    kx_buf_reset(&b);
    assert_int_equal(kx_evidence_render(&ev, 135, &b), 0);
    assert_string_equal(b.data, "{\"time\":\"2026-03-29T01:30:00.000Z\",\"raw\":"
                                "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\","
                                "\"fields\":{\"user\":\"root\"},"
                                "\"decode_limits\":[\"depth\",\"number\"],\"truncated\":true}");
    assert_int_equal(b.len, 135);
    ev.limits = 0;
    /* Not even the skeleton fits: error, buffer untouched. */
    kx_buf_reset(&b);
    assert_int_equal(kx_buf_puts(&b, "keep"), 0);
    assert_int_equal(kx_evidence_render(&ev, 40, &b), -E2BIG);
    assert_string_equal(b.data, "keep");
    kx_buf_fini(&b);
    kx_event_fini(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_severity),
        cmocka_unit_test(test_render_correlation),
        cmocka_unit_test(test_render_single),
        cmocka_unit_test(test_render_status),
        cmocka_unit_test(test_render_degraded),
        cmocka_unit_test(test_render_rule_context),
        cmocka_unit_test(test_render_nulls_and_cap),
        cmocka_unit_test(test_dedup_key),
        cmocka_unit_test(test_category),
        cmocka_unit_test(test_evidence_types_and_arrays),
        cmocka_unit_test(test_evidence_escaping),
        cmocka_unit_test(test_evidence_degraded),
        cmocka_unit_test(test_evidence_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
