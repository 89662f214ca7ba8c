/*
 * kx_tz against the system tzdata (Debian ships "fat" files with transitions up to 2037, so
 * 2026 exercises the transition table and 2100 the POSIX footer rule) and against TZif
 * files written here byte by byte (footer-only "slim" zones, version 1 files, corrupt ones).
 * Expected values were cross-checked with Python's zoneinfo and glibc's date(1).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "klaxon/tz.h"
#include "kx_test.h"

/* --- a tiny TZif writer ------------------------------------------------------------------ */

typedef struct tzif_spec {
    int version; /* 1, 2 or 3 */
    size_t ntrans;
    const int64_t *trans;
    const uint8_t *idx;
    size_t ntypes;
    const int32_t *offs;
    const uint8_t *isdst;
    const char *footer; /* v2+ only */
    uint32_t leapcnt;   /* > 0 writes that many (zero) leap records */
} tzif_spec;

static unsigned char *put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
    return p + 4;
}

static unsigned char *put64(unsigned char *p, int64_t v)
{
    p = put32(p, (uint32_t)((uint64_t)v >> 32));
    return put32(p, (uint32_t)v);
}

static unsigned char *put_block(unsigned char *p, const tzif_spec *s, int tsize)
{
    memcpy(p, "TZif", 4);
    p[4] = s->version == 1 ? 0 : (unsigned char)('0' + s->version);
    memset(p + 5, 0, 15);
    p += 20;
    p = put32(p, 0);
    p = put32(p, 0);
    p = put32(p, s->leapcnt);
    p = put32(p, (uint32_t)s->ntrans);
    p = put32(p, (uint32_t)s->ntypes);
    p = put32(p, 4);
    for (size_t i = 0; i < s->ntrans; i++)
        p = tsize == 8 ? put64(p, s->trans[i]) : put32(p, (uint32_t)s->trans[i]);
    for (size_t i = 0; i < s->ntrans; i++)
        *p++ = s->idx[i];
    for (size_t i = 0; i < s->ntypes; i++) {
        p = put32(p, (uint32_t)s->offs[i]);
        *p++ = s->isdst ? s->isdst[i] : 0;
        *p++ = 0;
    }
    memcpy(p, "XXX", 4);
    p += 4;
    for (uint32_t i = 0; i < s->leapcnt; i++) {
        memset(p, 0, (size_t)tsize + 4);
        p += tsize + 4;
    }
    return p;
}

static size_t tzif_build(const tzif_spec *s, unsigned char *out)
{
    unsigned char *p = put_block(out, s, 4);
    if (s->version >= 2) {
        p = put_block(p, s, 8);
        size_t n = strlen(s->footer);
        *p++ = '\n';
        memcpy(p, s->footer, n);
        p += n;
        *p++ = '\n';
    }
    return (size_t)(p - out);
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Writes TZDIR/name from spec. */
static void write_zone(const char *dir, const char *name, const tzif_spec *s)
{
    unsigned char buf[8192];
    size_t len = tzif_build(s, buf);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    write_bytes(path, buf, len);
}

/* A footer-only zone with one type of offset off. */
static void write_footer_zone(const char *dir, const char *name, int32_t off, const char *footer)
{
    tzif_spec s = {.version = 2, .ntypes = 1, .offs = &off, .footer = footer};
    write_zone(dir, name, &s);
}

/* --- fixtures ---------------------------------------------------------------------------- */

typedef struct fixture {
    char *dir;
} fixture;

static int setup_tmp(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->dir = kx_test_tmpdir("tz");
    assert_non_null(f->dir);
    *state = f;
    return 0;
}

static int teardown_tmp(void **state)
{
    fixture *f = *state;
    kx_tz_cache_clear();
    unsetenv("TZDIR");
    kx_test_rmrf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static int teardown_sys(void **state)
{
    (void)state;
    kx_tz_cache_clear();
    return 0;
}

static const kx_tz *zone(const char *name)
{
    const kx_tz *tz = NULL;
    assert_int_equal(kx_tz_get(name, &tz), 0);
    assert_non_null(tz);
    assert_string_equal(kx_tz_name(tz), name);
    return tz;
}

static void civil_str(const kx_tz *tz, int64_t t, char *out, size_t outlen)
{
    kx_civil c;
    kx_tz_local(tz, t, &c);
    snprintf(out, outlen, "%04d-%02d-%02d %02d:%02d:%02d w%d %+d", c.year, c.month, c.day, c.hour,
             c.minute, c.second, c.wday, (int)c.utc_offset);
}

#define assert_local(tz, t, expect)                                                                \
    do {                                                                                           \
        char got_[64];                                                                             \
        civil_str((tz), (t), got_, sizeof(got_));                                                  \
        assert_string_equal(got_, (expect));                                                       \
    } while (0)

static int64_t to_utc(const kx_tz *tz, int y, int mo, int d, int h, int mi, int s)
{
    kx_civil c = {.year = y, .month = mo, .day = d, .hour = h, .minute = mi, .second = s};
    return kx_tz_to_utc(tz, &c);
}

/* --- system tzdata ----------------------------------------------------------------------- */

static void test_madrid_2026(void **state)
{
    (void)state;
    const kx_tz *tz = zone("Europe/Madrid");
    /* Spring forward 2026-03-29 01:00 UTC: 02:00 CET becomes 03:00 CEST. */
    assert_int_equal(kx_tz_offset(tz, 1774745999), 3600);
    assert_int_equal(kx_tz_offset(tz, 1774746000), 7200);
    assert_local(tz, 1774745999, "2026-03-29 01:59:59 w0 +3600");
    assert_local(tz, 1774746000, "2026-03-29 03:00:00 w0 +7200");
    /* Fall back 2026-10-25 01:00 UTC: 03:00 CEST becomes 02:00 CET. */
    assert_int_equal(kx_tz_offset(tz, 1792889999), 7200);
    assert_int_equal(kx_tz_offset(tz, 1792890000), 3600);
    assert_local(tz, 1792889999, "2026-10-25 02:59:59 w0 +7200");
    assert_local(tz, 1792890000, "2026-10-25 02:00:00 w0 +3600");
    /* Before the first transition: LMT, -0:14:44. */
    assert_int_equal(kx_tz_offset(tz, -3786825600), -884);
    /* The same pointer comes back from the cache. */
    assert_ptr_equal(zone("Europe/Madrid"), tz);
}

static void test_new_york_2026(void **state)
{
    (void)state;
    const kx_tz *tz = zone("America/New_York");
    assert_local(tz, 1772953199, "2026-03-08 01:59:59 w0 -18000");
    assert_local(tz, 1772953200, "2026-03-08 03:00:00 w0 -14400");
    assert_local(tz, 1793512799, "2026-11-01 01:59:59 w0 -14400");
    assert_local(tz, 1793512800, "2026-11-01 01:00:00 w0 -18000");
    assert_int_equal(kx_tz_offset(tz, -3786825600), -17762);
}

static void test_lord_howe_half_hour_dst(void **state)
{
    (void)state;
    const kx_tz *tz = zone("Australia/Lord_Howe");
    /* DST ends 2026-04-05 02:00 +11 -> 01:30 +1030; starts 2026-10-04 02:00 -> 02:30. */
    assert_local(tz, 1775314799, "2026-04-05 01:59:59 w0 +39600");
    assert_local(tz, 1775314800, "2026-04-05 01:30:00 w0 +37800");
    assert_local(tz, 1791041399, "2026-10-04 01:59:59 w0 +37800");
    assert_local(tz, 1791041400, "2026-10-04 02:30:00 w0 +39600");
}

static void test_kolkata(void **state)
{
    (void)state;
    const kx_tz *tz = zone("Asia/Kolkata");
    assert_local(tz, 1780272000, "2026-06-01 05:30:00 w1 +19800");
    assert_int_equal(kx_tz_offset(tz, -852076800), 23400);  /* 1943: +0630 war time */
    assert_int_equal(kx_tz_offset(tz, -3786825600), 21208); /* 1850: LMT */
}

/* 2100 is past the last transition of every file (2037): only the footer rule answers. */
static void test_far_future_footer(void **state)
{
    (void)state;
    const kx_tz *madrid = zone("Europe/Madrid");
    assert_local(madrid, 4109878799, "2100-03-28 01:59:59 w0 +3600");
    assert_local(madrid, 4109878800, "2100-03-28 03:00:00 w0 +7200");
    assert_local(madrid, 4128627599, "2100-10-31 02:59:59 w0 +7200");
    assert_local(madrid, 4128627600, "2100-10-31 02:00:00 w0 +3600");
    assert_local(zone("America/New_York"), 4118385600, "2100-07-04 08:00:00 w0 -14400");
    const kx_tz *lh = zone("Australia/Lord_Howe");
    assert_local(lh, 4102444800, "2100-01-01 11:00:00 w5 +39600");
    assert_local(lh, 4118083200, "2100-07-01 10:30:00 w4 +37800");
    assert_int_equal(kx_tz_offset(zone("Asia/Kolkata"), 4102444800), 19800);
    /* Footer gap and overlap through kx_tz_to_utc too. */
    assert_int_equal(to_utc(madrid, 2100, 3, 28, 2, 30, 0), 4109878800 + 1800);
    assert_int_equal(to_utc(madrid, 2100, 10, 31, 2, 30, 0), 4128627600 - 1800);
}

static void test_to_utc(void **state)
{
    (void)state;
    const kx_tz *madrid = zone("Europe/Madrid");
    assert_int_equal(to_utc(madrid, 2026, 7, 1, 12, 0, 0), 1782900000);  /* 10:00 UTC */
    assert_int_equal(to_utc(madrid, 2026, 1, 15, 12, 0, 0), 1768474800); /* 11:00 UTC */
    /* 02:30 does not exist on 2026-03-29: read with +01:00 (before the gap) -> 01:30 UTC,
     * which is 03:30 CEST. */
    assert_int_equal(to_utc(madrid, 2026, 3, 29, 2, 30, 0), 1774747800);
    assert_int_equal(to_utc(madrid, 2026, 3, 29, 2, 0, 0), 1774746000);
    assert_int_equal(to_utc(madrid, 2026, 3, 29, 1, 59, 59), 1774745999);
    assert_int_equal(to_utc(madrid, 2026, 3, 29, 3, 0, 0), 1774746000);
    /* 02:30 happens twice on 2026-10-25: the earlier (CEST) one, 00:30 UTC. */
    assert_int_equal(to_utc(madrid, 2026, 10, 25, 2, 30, 0), 1792888200);
    assert_int_equal(to_utc(madrid, 2026, 10, 25, 2, 0, 0), 1792886400);
    assert_int_equal(to_utc(madrid, 2026, 10, 25, 3, 0, 0), 1792893600);

    const kx_tz *ny = zone("America/New_York");
    assert_int_equal(to_utc(ny, 2026, 3, 8, 2, 30, 0), 1772953200 + 1800);
    assert_int_equal(to_utc(ny, 2026, 11, 1, 1, 30, 0), 1793512800 - 1800);

    const kx_tz *lh = zone("Australia/Lord_Howe");
    assert_int_equal(to_utc(lh, 2026, 4, 5, 1, 45, 0), 1775314800 - 900);  /* overlap, +11 */
    assert_int_equal(to_utc(lh, 2026, 10, 4, 2, 15, 0), 1791041400 + 900); /* gap, +1030 */
}

/* local -> utc -> local round trip every 15 minutes of 2026: the only instants that do not
 * come back are the second pass through Madrid's repeated hour (02:00..02:45 CET). */
static void test_to_utc_round_trip(void **state)
{
    (void)state;
    const kx_tz *tz = zone("Europe/Madrid");
    int mismatches = 0;
    for (int64_t t = 1767225600; t < 1798761600; t += 900) {
        kx_civil c;
        kx_tz_local(tz, t, &c);
        int64_t back = kx_tz_to_utc(tz, &c);
        if (back != t) {
            assert_int_equal(t - back, 3600);
            assert_true(t >= 1792890000 && t < 1792893600);
            mismatches++;
        }
    }
    assert_int_equal(mismatches, 4);
}

static void test_unknown_and_bad_names(void **state)
{
    (void)state;
    const kx_tz *tz = NULL;
    assert_int_equal(kx_tz_get("Europe/Madird", &tz), -ENOENT);
    assert_int_equal(kx_tz_get("Europe", &tz), -ENOENT); /* a directory */
    assert_int_equal(kx_tz_get("../../etc/passwd", &tz), -ENOENT);
    assert_int_equal(kx_tz_get("/etc/passwd", &tz), -ENOENT);
    assert_int_equal(kx_tz_get("Europe/../Europe/Madrid", &tz), -ENOENT);
    assert_int_equal(kx_tz_get("Europe/Madrid ", &tz), -ENOENT);
    assert_int_equal(kx_tz_get("", &tz), -ENOENT);
    assert_int_equal(kx_tz_get(NULL, &tz), -ENOENT);
    assert_null(tz);
}

/* --- TZif files written by the test ------------------------------------------------------ */

static void test_utc_without_tzdata(void **state)
{
    fixture *f = *state;
    setenv("TZDIR", f->dir, 1); /* empty directory */
    const kx_tz *tz = NULL;
    assert_int_equal(kx_tz_get("Europe/Madrid", &tz), -ENOENT);
    const kx_tz *utc = zone("UTC");
    const kx_tz *etc = zone("Etc/UTC");
    assert_local(utc, 0, "1970-01-01 00:00:00 w4 +0");
    assert_local(etc, -1, "1969-12-31 23:59:59 w3 +0");
    assert_local(utc, 1774746000, "2026-03-29 01:00:00 w0 +0");
    assert_int_equal(to_utc(etc, 2026, 3, 29, 2, 30, 0), 1774751400);
    assert_local(utc, 4102444800, "2100-01-01 00:00:00 w5 +0");
    assert_local(utc, -62135596800, "0001-01-01 00:00:00 w1 +0");
}

/* A slim zone carries no transitions after it last changed rules; the footer must give the
 * same answers as the fat file's table. Compare every hour of 1997..2037. */
static void test_slim_zone_matches_fat(void **state)
{
    fixture *f = *state;
    write_footer_zone(f->dir, "SlimMadrid", 3600, "CET-1CEST,M3.5.0,M10.5.0/3");
    /* "Half slim": real transitions until 1996, footer after. 1996-03-31 01:00 UTC -> CEST,
     * 1996-10-27 01:00 UTC -> CET. */
    int64_t trans[] = {828234000, 846378000};
    uint8_t idx[] = {1, 0};
    int32_t offs[] = {3600, 7200};
    uint8_t isdst[] = {0, 1};
    tzif_spec half = {.version = 3,
                      .ntrans = 2,
                      .trans = trans,
                      .idx = idx,
                      .ntypes = 2,
                      .offs = offs,
                      .isdst = isdst,
                      .footer = "CET-1CEST,M3.5.0,M10.5.0/3"};
    write_zone(f->dir, "HalfMadrid", &half);

    const kx_tz *fat = zone("Europe/Madrid"); /* loaded before TZDIR changes */
    setenv("TZDIR", f->dir, 1);
    const kx_tz *slim = zone("SlimMadrid");
    const kx_tz *halfz = zone("HalfMadrid");
    assert_local(slim, 1774745999, "2026-03-29 01:59:59 w0 +3600");
    assert_local(slim, 1774746000, "2026-03-29 03:00:00 w0 +7200");
    assert_local(slim, 1792889999, "2026-10-25 02:59:59 w0 +7200");
    assert_local(slim, 1792890000, "2026-10-25 02:00:00 w0 +3600");
    assert_int_equal(to_utc(slim, 2026, 3, 29, 2, 30, 0), 1774747800);
    assert_int_equal(to_utc(slim, 2026, 10, 25, 2, 30, 0), 1792888200);
    assert_int_equal(to_utc(halfz, 2026, 10, 25, 2, 30, 0), 1792888200);
    assert_int_equal(kx_tz_offset(halfz, 828233999), 3600);
    assert_int_equal(kx_tz_offset(halfz, 828234000), 7200);

    long checked = 0, differ = 0;
    for (int64_t t = 852076800; t < 2145916800; t += 3600) { /* 1997-01-01 .. 2038-01-01 */
        int32_t want = kx_tz_offset(fat, t);
        differ += kx_tz_offset(slim, t) != want;
        differ += kx_tz_offset(halfz, t) != want;
        checked++;
    }
    assert_int_equal(checked, 359400);
    assert_int_equal(differ, 0);
}

typedef struct footer_case {
    const char *footer;
    int32_t type0;
    int64_t t;
    int32_t want;
} footer_case;

/* Footer grammar: quoted names, negative and >24 h rule times, negative DST (Dublin), all
 * year DST, Jn vs n around February 29. Values cross-checked with zoneinfo / glibc. */
static void test_footer_rules(void **state)
{
    fixture *f = *state;
    static const footer_case cases[] = {
        {"<+03>-3", 10800, 1767225600, 10800},
        {"<+0330>-3:30", 12600, 1782864000, 12600},
        {"IST-1GMT0,M10.5.0,M3.5.0/1", 3600, 1768435200, 0},
        {"IST-1GMT0,M10.5.0,M3.5.0/1", 3600, 1774745940, 0},
        {"IST-1GMT0,M10.5.0,M3.5.0/1", 3600, 1774746000, 3600},
        {"IST-1GMT0,M10.5.0,M3.5.0/1", 3600, 1792889940, 3600},
        {"IST-1GMT0,M10.5.0,M3.5.0/1", 3600, 1792890000, 0},
        {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, 1774745940, -7200},
        {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, 1774746000, -3600},
        {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, 1792889940, -3600},
        {"<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, 1792890000, -7200},
        {"IST-2IDT,M3.4.4/26,M10.5.0", 7200, 1774569540, 7200},
        {"IST-2IDT,M3.4.4/26,M10.5.0", 7200, 1774569600, 10800},
        {"IST-2IDT,M3.4.4/26,M10.5.0", 7200, 1792882740, 10800},
        {"IST-2IDT,M3.4.4/26,M10.5.0", 7200, 1792882800, 7200},
        {"EST5EDT,0/0,J365/25", -18000, 1767227400, -14400},
        {"EST5EDT,0/0,J365/25", -18000, 1780272000, -14400},
        {"EST5EDT,0/0,J365/25", -18000, 1798761540, -14400},
        {"AAA3BBB,J60/2,J300/2", -10800, 1835438400, -10800}, /* 2028-02-29: J60 is Mar 1 */
        {"AAA3BBB,J60/2,J300/2", -10800, 1835524800, -7200},
        {"AAA3BBB,59/2,299/2", -10800, 1835438400, -7200},  /* n59 is Feb 29 in 2028 */
        {"AAA3BBB,59/2,299/2", -10800, 1803816000, -10800}, /* and Mar 1 in 2027 */
        {"AAA3BBB,59/2,299/2", -10800, 1803902400, -7200},
        {"XXX0YYY,M3.1.0/167,M10.1.0/-167", 0, 1767225600, 0}, /* RFC 8536 extremes parse */
        {"EST5EDT", -18000, 1782864000, -14400},               /* no rule: US default */
        {"EST5EDT", -18000, 1768435200, -18000},
    };
    setenv("TZDIR", f->dir, 1);
    for (size_t i = 0; i < KX_ARRAY_LEN(cases); i++) {
        char name[32];
        snprintf(name, sizeof(name), "F%zu", i);
        write_footer_zone(f->dir, name, cases[i].type0, cases[i].footer);
        const kx_tz *tz = zone(name);
        if (kx_tz_offset(tz, cases[i].t) != cases[i].want)
            fail_msg("footer \"%s\" at %lld: got %d want %d", cases[i].footer,
                     (long long)cases[i].t, (int)kx_tz_offset(tz, cases[i].t), (int)cases[i].want);
    }
}

static void test_version1_file(void **state)
{
    fixture *f = *state;
    int64_t trans[] = {1774746000, 1792890000};
    uint8_t idx[] = {1, 0};
    int32_t offs[] = {3600, 7200};
    tzif_spec s = {
        .version = 1, .ntrans = 2, .trans = trans, .idx = idx, .ntypes = 2, .offs = offs};
    write_zone(f->dir, "V1", &s);
    setenv("TZDIR", f->dir, 1);
    const kx_tz *tz = zone("V1");
    assert_int_equal(kx_tz_offset(tz, 0), 3600);
    assert_int_equal(kx_tz_offset(tz, 1774746000), 7200);
    assert_int_equal(kx_tz_offset(tz, 1792890000), 3600);
    assert_int_equal(kx_tz_offset(tz, 4102444800), 3600); /* no footer: last type stays */
}

/* The last transition changes the standard offset (+01:00 -> +02:00, as zones that moved
 * for good do) and the footer has no DST. Walking the stretches for kx_tz_to_utc, the
 * footer's stretch must start at that transition, not at the beginning of time, or the gap
 * it opens would be read with the new offset. */
static void test_last_transition_before_footer(void **state)
{
    fixture *f = *state;
    int64_t trans[] = {1774746000};
    uint8_t idx[] = {1};
    int32_t offs[] = {3600, 7200};
    tzif_spec s = {.version = 2,
                   .ntrans = 1,
                   .trans = trans,
                   .idx = idx,
                   .ntypes = 2,
                   .offs = offs,
                   .footer = "<+02>-2"};
    write_zone(f->dir, "Moved", &s);
    setenv("TZDIR", f->dir, 1);
    const kx_tz *tz = zone("Moved");
    assert_int_equal(kx_tz_offset(tz, 1774745999), 3600);
    assert_int_equal(kx_tz_offset(tz, 1774746000), 7200);
    assert_int_equal(kx_tz_offset(tz, 4102444800), 7200);
    /* 02:30 local never happened: read with +01:00 -> 01:30 UTC. */
    assert_int_equal(to_utc(tz, 2026, 3, 29, 2, 30, 0), 1774747800);
    assert_int_equal(to_utc(tz, 2026, 3, 29, 1, 30, 0), 1774744200);
    assert_int_equal(to_utc(tz, 2026, 3, 29, 3, 30, 0), 1774747800);
}

static void test_corrupt_files(void **state)
{
    fixture *f = *state;
    int64_t trans[] = {1000, 500};
    uint8_t idx_ok[] = {0, 0};
    uint8_t idx_bad[] = {0, 2};
    int32_t offs[] = {3600, 7200};
    int32_t huge[] = {100000};
    tzif_spec desc = {.version = 2,
                      .ntrans = 2,
                      .trans = trans,
                      .idx = idx_ok,
                      .ntypes = 2,
                      .offs = offs,
                      .footer = ""};
    int64_t asc[] = {500, 1000};
    tzif_spec badidx = desc;
    badidx.trans = asc;
    badidx.idx = idx_bad;
    tzif_spec leap = {.version = 2, .ntypes = 1, .offs = offs, .footer = "", .leapcnt = 1};
    tzif_spec bigoff = {.version = 2, .ntypes = 1, .offs = huge, .footer = ""};
    write_zone(f->dir, "Desc", &desc);
    write_zone(f->dir, "BadIdx", &badidx);
    write_zone(f->dir, "Leap", &leap);
    write_zone(f->dir, "BigOff", &bigoff);
    static const char *const bad_footers[] = {
        "CET-1CEST,M13.5.0,M10.5.0/3",
        "CET-1CEST,M3.6.0,M10.5.0/3",
        "CET-1CEST,M3.5.7,M10.5.0",
        "CET-1CEST,M3.5.0",
        "CET-1CEST,M3.5.0,M10.5.0/168",
        "CE-1",
        "<+0>-1",
        "CET-25",
        "CET-1CEST,J0,J365",
        "CET-1CEST,366,1",
        "CET-1CEST,M3.5.0,M10.5.0x",
        "CET",
    };
    for (size_t i = 0; i < KX_ARRAY_LEN(bad_footers); i++) {
        char name[32];
        snprintf(name, sizeof(name), "BadFooter%zu", i);
        write_footer_zone(f->dir, name, 3600, bad_footers[i]);
    }
    /* Truncations of a good file at every length must all be rejected, never read past. */
    unsigned char good[512];
    tzif_spec ok = {.version = 2,
                    .ntrans = 2,
                    .trans = asc,
                    .idx = idx_ok,
                    .ntypes = 2,
                    .offs = offs,
                    .footer = "CET-1"};
    size_t good_len = tzif_build(&ok, good);
    char path[512];
    snprintf(path, sizeof(path), "%s/Good", f->dir);
    write_bytes(path, good, good_len);
    snprintf(path, sizeof(path), "%s/NotTzif", f->dir);
    assert_int_equal(kx_test_write_file(path, "root:x:0:0:root:/root:/bin/bash\n"), 0);

    setenv("TZDIR", f->dir, 1);
    const kx_tz *tz = NULL;
    assert_int_equal(kx_tz_get("Desc", &tz), -EINVAL);
    assert_int_equal(kx_tz_get("BadIdx", &tz), -EINVAL);
    assert_int_equal(kx_tz_get("Leap", &tz), -EINVAL);
    assert_int_equal(kx_tz_get("BigOff", &tz), -EINVAL);
    assert_int_equal(kx_tz_get("NotTzif", &tz), -EINVAL);
    for (size_t i = 0; i < KX_ARRAY_LEN(bad_footers); i++) {
        char name[32];
        snprintf(name, sizeof(name), "BadFooter%zu", i);
        if (kx_tz_get(name, &tz) != -EINVAL)
            fail_msg("footer \"%s\" was accepted", bad_footers[i]);
    }
    for (size_t len = 0; len < good_len; len++) {
        char name[32];
        snprintf(name, sizeof(name), "Trunc%zu", len);
        snprintf(path, sizeof(path), "%s/%s", f->dir, name);
        write_bytes(path, good, len);
        if (kx_tz_get(name, &tz) != -EINVAL)
            fail_msg("file truncated to %zu bytes was accepted", len);
    }
    assert_null(tz);
    assert_int_equal(kx_tz_offset(zone("Good"), 0), 3600);
}

/* The name check keeps lookups inside TZDIR even when a valid TZif file sits next to it. */
static void test_no_path_traversal(void **state)
{
    fixture *f = *state;
    char zi[512];
    snprintf(zi, sizeof(zi), "%s/zi", f->dir);
    assert_int_equal(mkdir(zi, 0700), 0);
    write_footer_zone(f->dir, "Outside", 3600, "CET-1");
    write_footer_zone(zi, "Inside", 3600, "CET-1");
    setenv("TZDIR", zi, 1);
    const kx_tz *tz = NULL;
    assert_int_equal(kx_tz_get("../Outside", &tz), -ENOENT);
    assert_int_equal(kx_tz_get("./Inside", &tz), -ENOENT);
    assert_null(tz);
    assert_int_equal(kx_tz_offset(zone("Inside"), 0), 3600);
}

/* The cache holds at most 512 zones; the 513th distinct name is refused, known ones still
 * resolve, and clearing the cache makes room again. */
static void test_cache_bound(void **state)
{
    fixture *f = *state;
    write_footer_zone(f->dir, "Z0", 0, "UTC0");
    setenv("TZDIR", f->dir, 1);
    char target[512], path[512];
    snprintf(target, sizeof(target), "%s/Z0", f->dir);
    for (int i = 1; i <= 512; i++) {
        snprintf(path, sizeof(path), "%s/Z%d", f->dir, i);
        assert_int_equal(symlink(target, path), 0);
    }
    const kx_tz *first = zone("Z0");
    for (int i = 1; i < 512; i++) {
        char name[16];
        snprintf(name, sizeof(name), "Z%d", i);
        zone(name);
    }
    const kx_tz *tz = NULL;
    assert_int_equal(kx_tz_get("Z512", &tz), -ENOMEM);
    assert_null(tz);
    assert_ptr_equal(zone("Z0"), first);
    kx_tz_cache_clear();
    zone("Z512");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_madrid_2026, teardown_sys),
        cmocka_unit_test_teardown(test_new_york_2026, teardown_sys),
        cmocka_unit_test_teardown(test_lord_howe_half_hour_dst, teardown_sys),
        cmocka_unit_test_teardown(test_kolkata, teardown_sys),
        cmocka_unit_test_teardown(test_far_future_footer, teardown_sys),
        cmocka_unit_test_teardown(test_to_utc, teardown_sys),
        cmocka_unit_test_teardown(test_to_utc_round_trip, teardown_sys),
        cmocka_unit_test_teardown(test_unknown_and_bad_names, teardown_sys),
        cmocka_unit_test_setup_teardown(test_utc_without_tzdata, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_slim_zone_matches_fat, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_footer_rules, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_version1_file, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_last_transition_before_footer, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_corrupt_files, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_no_path_traversal, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_cache_bound, setup_tmp, teardown_tmp),
    };
    unsetenv("TZDIR");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
