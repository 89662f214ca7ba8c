/*
 * Syslog decoding: lines exactly as OpenSSH, PAM and sudo write them, RFC 5424 with
 * structured data, the RFC 3164 year and zone rules, and malformed lines. Expected UTC
 * times are worked out in the comments from one anchor: 2026-01-01T00:00:00Z is day 20454
 * since the epoch (56 years, 14 of them leap), i.e. 1767225600 s.
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

#define JAN1_2026 1767225600000LL
#define DAY 86400000LL
#define HOUR 3600000LL
#define MIN 60000LL

static char dumpbuf[16384];

static const char *dump(const kx_event *ev)
{
    size_t off = 0;
    dumpbuf[0] = '\0';
    for (size_t i = 0; i < ev->nfields && off < sizeof(dumpbuf); i++) {
        const kx_field *f = &ev->fields[i];
        assert_int_equal(f->type, KX_VAL_STR);
        assert_int_equal(strlen(f->value), f->value_len);
        off += (size_t)snprintf(dumpbuf + off, sizeof(dumpbuf) - off, "%s=%s\n", f->name, f->value);
    }
    return dumpbuf;
}

static kx_decoder *mk(const char *yaml)
{
    kx_yaml_doc *doc = NULL;
    kx_decoder *d = NULL;
    kx_err err;
    memset(&err, 0, sizeof(err));
    assert_int_equal(kx_yaml_load_mem("t.yaml", yaml, strlen(yaml), &doc, &err), 0);
    int rc = kx_decoder_create(doc->root, NULL, -1, "t.yaml", &d, &err);
    if (rc)
        fail_msg("kx_decoder_create: %s", err.msg);
    kx_yaml_free(doc);
    return d;
}

typedef struct fx {
    kx_decoder *utc;
    kx_decoder *madrid;
    kx_event ev;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->utc = mk("format: syslog\n");
    f->madrid = mk("format: syslog\nsyslog: {timezone: Europe/Madrid, year: auto}\n");
    assert_int_equal(kx_decoder_format(f->utc), KX_FMT_SYSLOG);
    kx_event_init(&f->ev);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kx_event_fini(&f->ev);
    kx_decoder_destroy(f->utc);
    kx_decoder_destroy(f->madrid);
    kx_tz_cache_clear();
    free(f);
    return 0;
}

static int dec(fx *f, kx_decoder *d, const char *line, int64_t ref_ms, const char **why)
{
    kx_event_reset(&f->ev);
    return kx_decode(d, line, strlen(line), ref_ms, &f->ev, why);
}

/* 2026-03-29T02:00:00Z: day 20454 + 87. */
#define REF_MAR29 (JAN1_2026 + 87 * DAY + 2 * HOUR)

static void test_sshd(void **state)
{
    fx *f = *state;
    const char *why;
    assert_int_equal(dec(f, f->utc,
                         "<38>Mar 29 01:30:00 web1 sshd[4242]: Failed password for invalid user "
                         "admin from 203.0.113.7 port 52144 ssh2\n",
                         REF_MAR29, &why),
                     0);
    assert_string_equal(dump(&f->ev), "facility=4\n"
                                      "severity=6\n"
                                      "host=web1\n"
                                      "program=sshd\n"
                                      "pid=4242\n"
                                      "message=Failed password for invalid user admin from "
                                      "203.0.113.7 port 52144 ssh2\n");
    assert_true(f->ev.time_from_log);
    assert_int_equal(f->ev.time_ms, REF_MAR29 - 30 * MIN);
    assert_string_equal(f->ev.tenant, "default");
}

static void test_pam(void **state)
{
    fx *f = *state;
    const char *why;
    /* As in /var/log/auth.log: no PRI, and pam_unix's double space before user=. */
    assert_int_equal(dec(f, f->utc,
                         "Mar 29 01:30:02 web1 sshd[4243]: pam_unix(sshd:auth): authentication "
                         "failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  "
                         "user=root\r\n",
                         REF_MAR29, &why),
                     0);
    assert_string_equal(dump(&f->ev), "host=web1\n"
                                      "program=sshd\n"
                                      "pid=4243\n"
                                      "message=pam_unix(sshd:auth): authentication failure; "
                                      "logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7  "
                                      "user=root\n");
    assert_int_equal(f->ev.time_ms, REF_MAR29 - 30 * MIN + 2000);
}

static void test_sudo(void **state)
{
    fx *f = *state;
    const char *why;
    /* sudo logs without a pid and pads the user name; the padding is the message's. */
    assert_int_equal(dec(f, f->utc,
                         "Mar 29 01:31:00 web1 sudo:   alice : TTY=pts/0 ; PWD=/home/alice ; "
                         "USER=root ; COMMAND=/bin/bash",
                         REF_MAR29, &why),
                     0);
    assert_string_equal(dump(&f->ev), "host=web1\n"
                                      "program=sudo\n"
                                      "message=  alice : TTY=pts/0 ; PWD=/home/alice ; "
                                      "USER=root ; COMMAND=/bin/bash\n");
    assert_int_equal(f->ev.time_ms, REF_MAR29 - 29 * MIN);
}

static void test_3164_shapes(void **state)
{
    fx *f = *state;
    const char *why;
    /* Space-padded day, no tag. */
    assert_int_equal(
        dec(f, f->utc, "<0>Jan  2 03:04:05 host-a just some text", JAN1_2026 + 2 * DAY, &why), 0);
    assert_string_equal(dump(&f->ev), "facility=0\nseverity=0\nhost=host-a\n"
                                      "message=just some text\n");
    assert_int_equal(f->ev.time_ms, JAN1_2026 + DAY + 3 * HOUR + 4 * MIN + 5000);
    /* Highest PRI, zero-padded day, program with a slash, empty pid. */
    assert_int_equal(dec(f, f->utc, "<191>Jan 02 03:04:05 mx postfix/smtpd[]: connect from x",
                         JAN1_2026 + 2 * DAY, &why),
                     0);
    assert_string_equal(dump(&f->ev), "facility=23\nseverity=7\nhost=mx\n"
                                      "program=postfix/smtpd\nmessage=connect from x\n");
    /* A local file without the host column. */
    assert_int_equal(dec(f, f->utc, "Jan  2 03:04:05 sshd[42]: hello", JAN1_2026 + 2 * DAY, &why),
                     0);
    assert_string_equal(dump(&f->ev), "program=sshd\npid=42\nmessage=hello\n");
    /* Host only: the message is empty. */
    assert_int_equal(dec(f, f->utc, "Jan  2 03:04:05 lonely", JAN1_2026 + 2 * DAY, &why), 0);
    assert_string_equal(dump(&f->ev), "host=lonely\nmessage=\n");
    /* rsyslog's high-precision timestamp in place of the BSD one. */
    assert_int_equal(
        dec(f, f->utc, "<13>2026-03-29T03:30:00.123456+02:00 web1 sshd[42]: x", REF_MAR29, &why),
        0);
    assert_string_equal(dump(&f->ev), "facility=1\nseverity=5\nhost=web1\nprogram=sshd\n"
                                      "pid=42\nmessage=x\n");
    assert_int_equal(f->ev.time_ms, REF_MAR29 - 30 * MIN + 123);
}

static void test_5424(void **state)
{
    fx *f = *state;
    const char *why;
    /* RFC 5424 section 6.5, example 1 (with its BOM). */
    assert_int_equal(dec(f, f->utc,
                         "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
                         "\xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8",
                         0, &why),
                     0);
    assert_string_equal(dump(&f->ev), "facility=4\nseverity=2\nhost=mymachine.example.com\n"
                                      "program=su\nmsgid=ID47\n"
                                      "message='su root' failed for lonvick on /dev/pts/8\n");
    assert_true(f->ev.time_from_log);
    assert_int_equal(f->ev.time_ms, 1065910455003LL);
    /* Example 2: a zone offset, microseconds, nil MSGID and SD. 05:14:15 -07:00 = 12:14:15Z
     * on 2003-08-24, day 12288 since the epoch. */
    assert_int_equal(dec(f, f->utc,
                         "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
                         "%% It's time to make the do-nuts.",
                         0, &why),
                     0);
    assert_string_equal(dump(&f->ev), "facility=20\nseverity=5\nhost=192.0.2.1\n"
                                      "program=myproc\npid=8710\n"
                                      "message=%% It's time to make the do-nuts.\n");
    assert_int_equal(f->ev.time_ms, (12288LL * 86400 + 12 * 3600 + 14 * 60 + 15) * 1000);
    /* Examples 3 and 4: structured data, with and without a message. */
    assert_int_equal(dec(f, f->utc,
                         "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
                         "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" "
                         "eventID=\"1011\"] \xEF\xBB\xBF"
                         "An application event log entry...",
                         0, &why),
                     0);
    assert_string_equal(dump(&f->ev), "facility=20\nseverity=5\nhost=mymachine.example.com\n"
                                      "program=evntslog\nmsgid=ID47\n"
                                      "sd.exampleSDID@32473.iut=3\n"
                                      "sd.exampleSDID@32473.eventSource=Application\n"
                                      "sd.exampleSDID@32473.eventID=1011\n"
                                      "message=An application event log entry...\n");
    assert_int_equal(dec(f, f->utc,
                         "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
                         "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" "
                         "eventID=\"1011\"][examplePriority@32473 class=\"high\"]",
                         0, &why),
                     0);
    assert_string_equal(dump(&f->ev), "facility=20\nseverity=5\nhost=mymachine.example.com\n"
                                      "program=evntslog\nmsgid=ID47\n"
                                      "sd.exampleSDID@32473.iut=3\n"
                                      "sd.exampleSDID@32473.eventSource=Application\n"
                                      "sd.exampleSDID@32473.eventID=1011\n"
                                      "sd.examplePriority@32473.class=high\n"
                                      "message=\n");
    /* Escapes \" \\ \] are undone, any other backslash stays; empty values and elements. */
    assert_int_equal(
        dec(f, f->utc,
            "<14>1 - h app - - [x@1 a=\"q\\\"b\\\\c\\]d\\n\" e=\"\"][timeQuality] msg ] \"", 777,
            &why),
        0);
    assert_string_equal(dump(&f->ev), "facility=1\nseverity=6\nhost=h\nprogram=app\n"
                                      "sd.x@1.a=q\"b\\c]d\\n\n"
                                      "sd.x@1.e=\n"
                                      "message=msg ] \"\n");
    /* Nil timestamp: the fallback time. All-nil header. */
    assert_false(f->ev.time_from_log);
    assert_int_equal(f->ev.time_ms, 777);
    assert_int_equal(dec(f, f->utc, "<14>1 - - - - - -", 5, &why), 0);
    assert_string_equal(dump(&f->ev), "facility=1\nseverity=6\nmessage=\n");
    assert_int_equal(f->ev.time_ms, 5);
}

/* The reference is the Kafka timestamp (run) or the file's modification time (replay). An
 * RFC 3164 line takes the latest year that does not date it after the reference by more than
 * the skew (syslog.skew, 15 minutes by default): never in the future. */
static void test_year_utc(void **state)
{
    fx *f = *state;
    const char *why;
    const int64_t ref = JAN1_2026 + 2 * DAY; /* 2026-01-03T00:00:00Z */
    /* December, read in January: last year. */
    assert_int_equal(dec(f, f->utc, "Dec 31 23:59:59 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 1000);
    /* Within the skew ahead: this year; one second past it: last year's. */
    assert_int_equal(dec(f, f->utc, "Jan  3 00:15:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, ref + 15 * MIN);
    assert_int_equal(dec(f, f->utc, "Jan  3 00:15:01 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, ref + 15 * MIN + 1000 - 365 * DAY);
    /* A day ahead (the week of slack the decoder once allowed): last year's, never future. */
    assert_int_equal(dec(f, f->utc, "Jan  4 00:00:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 + 3 * DAY - 365 * DAY);
    /* New Year against a reference of Dec 31 23:50 with the skew: next year's. */
    assert_int_equal(dec(f, f->utc, "Jan  1 00:05:00 h p: m", JAN1_2026 - 10 * MIN, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 + 5 * MIN);
    /* A replay a year later of a file whose mtime was kept: the mtime is the reference. */
    assert_int_equal(dec(f, f->utc, "Dec 10 08:00:00 h p: m", JAN1_2026 - 5 * DAY, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 22 * DAY + 8 * HOUR);
    /* Feb 29 does not exist in 2025: it can only be 2024's (2024-02-29 is 307 days before
     * 2025-01-01, itself 365 days before 2026-01-01). */
    assert_int_equal(dec(f, f->utc, "Feb 29 12:00:00 h p: m", JAN1_2026 - 361 * DAY, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 365 * DAY - 307 * DAY + 12 * HOUR);
    /* ... and read on 2028-03-01 it is 2028's; on 2028-02-28 (the day before) 2024's. */
    const int64_t jan1_2028 = JAN1_2026 + 730 * DAY;
    assert_int_equal(dec(f, f->utc, "Feb 29 12:00:00 h p: m", jan1_2028 + 60 * DAY, &why), 0);
    assert_int_equal(f->ev.time_ms, jan1_2028 + 59 * DAY + 12 * HOUR);
    assert_int_equal(dec(f, f->utc, "Feb 29 12:00:00 h p: m", jan1_2028 + 58 * DAY, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 365 * DAY - 307 * DAY + 12 * HOUR);
    /* A wider skew keeps a line a day ahead in the reference's year. */
    kx_decoder *d = mk("format: syslog\nsyslog: {skew: 2d}\n");
    assert_int_equal(dec(f, d, "Jan  4 00:00:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 + 3 * DAY);
    kx_decoder_destroy(d);
}

static void test_year_madrid(void **state)
{
    fx *f = *state;
    const char *why;
    /* 2025-12-31T23:30:00Z is already 00:30 on 2026-01-01 in Madrid (CET, +01:00): the
     * reference year is 2026 there, though it is still 2025 in UTC. */
    const int64_t ref = JAN1_2026 - 30 * MIN;
    /* Jan 1 00:10 CET 2026 = 2025-12-31T23:10:00Z. */
    assert_int_equal(dec(f, f->madrid, "Jan  1 00:10:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 50 * MIN);
    /* Dec 31 23:59 must be 2025 (2026's is a year ahead): 2025-12-31T22:59:00Z. */
    assert_int_equal(dec(f, f->madrid, "Dec 31 23:59:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 61 * MIN);
    /* In UTC the reference is still 2025: 23:40Z is 10 minutes ahead, within the skew;
     * 23:59Z is 29 minutes ahead, past it: 2024's. */
    assert_int_equal(dec(f, f->utc, "Dec 31 23:40:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 20 * MIN);
    assert_int_equal(dec(f, f->utc, "Dec 31 23:59:00 h p: m", ref, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 1 * MIN - 365 * DAY);
    /* Summer time (CEST, +02:00): 2026-07-15 12:00 local = 10:00Z; day 20454 + 195. */
    assert_int_equal(dec(f, f->madrid, "Jul 15 12:00:00 h p: m", JAN1_2026 + 200 * DAY, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 + 195 * DAY + 10 * HOUR);
    /* A zoneless ISO time is read in the zone too. 2026-03-29 is the day CET becomes CEST
     * (02:00 -> 03:00 local): 01:30 is CET (00:30Z), 03:30 is CEST (01:30Z). */
    assert_int_equal(dec(f, f->madrid, "2026-03-29T01:30:00 h p: m", REF_MAR29, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 + 87 * DAY + 30 * MIN);
    assert_int_equal(dec(f, f->madrid, "2026-03-29T03:30:00.5 h p: m", REF_MAR29, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 + 87 * DAY + 90 * MIN + 500);
}

static void test_year_fixed(void **state)
{
    fx *f = *state;
    const char *why;
    kx_decoder *d = mk("format: syslog\nsyslog:\n  year: 2024\n");
    /* Fixed year: no inference, even far from the reference. */
    assert_int_equal(dec(f, d, "Feb 29 12:00:00 h p: m", JAN1_2026, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 672 * DAY + 12 * HOUR);
    assert_int_equal(dec(f, d, "Dec 31 00:00:00 h p: m", 0, &why), 0);
    assert_int_equal(f->ev.time_ms, JAN1_2026 - 366 * DAY);
    kx_decoder_destroy(d);
    d = mk("format: syslog\nsyslog:\n  year: 2025\n");
    assert_int_equal(dec(f, d, "Feb 29 12:00:00 h p: m", JAN1_2026, &why), -EINVAL);
    assert_string_equal(why, "bad timestamp");
    kx_decoder_destroy(d);
}

static void expect_bad(fx *f, const char *line, size_t len, const char *reason)
{
    const char *why = NULL;
    kx_event_reset(&f->ev);
    assert_int_equal(kx_decode(f->utc, line, len, JAN1_2026, &f->ev, &why), -EINVAL);
    assert_non_null(why);
    assert_string_equal(why, reason);
    assert_string_equal(f->ev.tenant, "default");
}

#define BAD(f, lit, reason) expect_bad(f, lit, sizeof(lit) - 1, reason)

static void test_malformed(void **state)
{
    fx *f = *state;
    BAD(f, "", "empty");
    BAD(f, "\r\n", "empty");
    BAD(f, "<34>Oct 11 22:1", "bad timestamp");
    BAD(f, "<34>Oct 11 22:14", "bad timestamp");
    BAD(f, "<34>Oct 11", "bad timestamp");
    BAD(f, "<34>", "bad timestamp");
    BAD(f, "Foo 11 22:14:15 h p: m", "bad timestamp");
    BAD(f, "Oct 32 22:14:15 h p: m", "bad timestamp");
    BAD(f, "Oct 11 24:14:15 h p: m", "bad timestamp");
    BAD(f, "Oct 11 22:14:15", "truncated");
    BAD(f, "Oct 11 22:14:15 ", "truncated");
    BAD(f, "2026-13-01T00:00:00Z h p: m", "bad timestamp");
    BAD(f, "<34", "bad PRI");
    BAD(f, "<>Oct 11 22:14:15 h p: m", "bad PRI");
    BAD(f, "<192>Oct 11 22:14:15 h p: m", "bad PRI");
    BAD(f, "<1234>Oct 11 22:14:15 h p: m", "bad PRI");
    BAD(f, "<34>Oct 11 22:14:15 h p: a\0b", "NUL in message");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z host", "truncated");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z host app pid msgid", "truncated");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z h a p m [x a=b]", "bad structured data");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z h a p m [x a=\"b]", "bad structured data");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z h a p m [x a=\"b\"", "bad structured data");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z h a p m [] x", "bad structured data");
    BAD(f, "<165>1 2003-10-11T22:14:15.003Z h a p m -x", "bad structured data");
    BAD(f, "<165>1 2003-10-11 h a p m - x", "bad timestamp");
    BAD(f, "<165>1 yesterday h a p m - x", "bad timestamp");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sshd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pam, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sudo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_3164_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_5424, setup, teardown),
        cmocka_unit_test_setup_teardown(test_year_utc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_year_madrid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_year_fixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
