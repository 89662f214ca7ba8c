/*
 * IANA time zones read from TZif files (RFC 8536, versions 1 to 4) and kept in a small
 * process-wide cache.
 *
 * Why not TZ/localtime: libc converts through one process-global zone selected by the TZ
 * variable; switching it per rule would mean setenv + tzset on every event (slow, and not
 * thread-safe), and glibc may re-stat /etc/localtime on every call. A zone here is an
 * immutable value: the transition table (UTC instant -> offset) and the POSIX TZ footer
 * rule that extends it past the last transition. Every conversion is integer arithmetic on
 * that value; nothing here allocates or does I/O after kx_tz_get.
 *
 * Invariants of a loaded zone: transitions strictly ascending; every transition has its
 * offset resolved (no type index at lookup time); offsets fit in +-26 h, the window
 * kx_tz_to_utc scans.
 *
 * Ownership: the cache owns every kx_tz; callers borrow them until kx_tz_cache_clear. The
 * cache is not locked: klaxon is single-threaded (rules load on the loop thread).
 */
#include "klaxon/tz.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"
#define TZ_NAME_MAX 255
#define TZ_FILE_MAX (1u << 20)    /* real files are < 4 KiB; refuse anything absurd */
#define TZ_CACHE_MAX 512          /* bound on distinct zones per process */
#define TZ_MAX_OFFSET (26 * 3600) /* RFC 8536 says utoff SHOULD be in -89999..93599 */
#define SECS_PER_DAY 86400
/* Instants are clamped to +-2^50 s (35 million years) so no calendar sum can overflow. */
#define TZ_T_LIMIT ((int64_t)1 << 50)

/* One end of a DST period in a POSIX TZ rule. */
typedef enum { RULE_JULIAN1, RULE_JULIAN0, RULE_MWD } rule_kind;
typedef struct tz_rule {
    rule_kind kind;
    int day;      /* J: 1..365, n: 0..365, M: weekday 0..6 */
    int week;     /* M: 1..5 */
    int month;    /* M: 1..12 */
    int32_t time; /* seconds after local midnight, may be negative or > 24 h */
} tz_rule;

/* The POSIX TZ string from the TZif footer, e.g. "CET-1CEST,M3.5.0,M10.5.0/3". */
typedef struct tz_footer {
    bool present;
    bool has_dst;
    int32_t std_off; /* seconds east of UTC (POSIX writes them west, we flip) */
    int32_t dst_off;
    tz_rule start, end;
} tz_footer;

struct kx_tz {
    char *name;
    size_t ntrans;
    int64_t *trans;     /* UTC instants, ascending */
    int32_t *trans_off; /* offset in force from trans[i] on */
    int32_t first_off;  /* before trans[0]: type 0 (RFC 8536 section 3.2) */
    tz_footer footer;
};

static struct {
    kx_tz **zones;
    size_t n;
    size_t cap;
} cache;

/* --- civil calendar (Howard Hinnant's algorithms, proleptic Gregorian) ------------------ */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return len[m - 1] + (m == 2 && is_leap(y));
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday(int64_t days)
{
    return (int)(((days % 7) + 11) % 7);
}

/* --- POSIX TZ footer --------------------------------------------------------------------- */

/* Local midnight (as days since the epoch) of the day a rule names in year y. */
static int64_t rule_day(const tz_rule *r, int64_t y)
{
    int64_t jan1 = days_from_civil(y, 1, 1);
    switch (r->kind) {
    case RULE_JULIAN1:
        /* Jn never counts February 29: day 60 is always March 1. */
        return jan1 + r->day - 1 + (is_leap(y) && r->day >= 60);
    case RULE_JULIAN0:
        return jan1 + r->day;
    case RULE_MWD:
    default: {
        int64_t first = days_from_civil(y, r->month, 1);
        int64_t d = first + (r->day - weekday(first) + 7) % 7 + 7 * (int64_t)(r->week - 1);
        if (d >= first + month_days(y, r->month)) /* week 5 = "last": at most 7 days over */
            d -= 7;
        return d;
    }
    }
}

/* UTC instants at which DST starts and ends in year y. Start times are written in standard
 * time, end times in daylight time (POSIX). */
static void footer_year(const tz_footer *f, int64_t y, int64_t *start, int64_t *end)
{
    *start = rule_day(&f->start, y) * SECS_PER_DAY + f->start.time - f->std_off;
    *end = rule_day(&f->end, y) * SECS_PER_DAY + f->end.time - f->dst_off;
}

/* Offset at t under the footer rule, and the bounds [*seg_lo, *seg_hi) of the constant
 * offset stretch around t (bounds may be INT64_MIN/MAX when the rule has no DST).
 * Looks at the transitions of the neighbouring years as well, because rule times up to
 * +-167 h can move a transition across a year boundary. On a tie a start wins, which makes
 * "all year DST" rules (",0/0,J365/25") come out as DST throughout. */
static int32_t footer_offset(const tz_footer *f, int64_t t, int64_t *seg_lo, int64_t *seg_hi)
{
    if (t > TZ_T_LIMIT)
        t = TZ_T_LIMIT;
    else if (t < -TZ_T_LIMIT)
        t = -TZ_T_LIMIT;
    if (!f->has_dst) {
        *seg_lo = INT64_MIN;
        *seg_hi = INT64_MAX;
        return f->std_off;
    }
    int64_t y;
    int m, d;
    civil_from_days(floor_div(t + f->std_off, SECS_PER_DAY), &y, &m, &d);
    int64_t best = INT64_MIN, next = INT64_MAX;
    bool best_is_dst = false;
    for (int64_t yy = y - 1; yy <= y + 1; yy++) {
        int64_t s, e;
        footer_year(f, yy, &s, &e);
        if (e <= t && (e > best)) {
            best = e;
            best_is_dst = false;
        }
        if (s <= t && (s > best || (s == best && !best_is_dst))) {
            best = s;
            best_is_dst = true;
        }
        if (s > t && s < next)
            next = s;
        if (e > t && e < next)
            next = e;
    }
    *seg_lo = best;
    *seg_hi = next;
    return best_is_dst ? f->dst_off : f->std_off;
}

/* Zone abbreviation: alphabetic run of 3+, or <...> of [A-Za-z0-9+-] (3+ inside). */
static int parse_tz_name(const char **pp)
{
    const char *p = *pp;
    size_t n = 0;
    if (*p == '<') {
        p++;
        while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
               *p == '+' || *p == '-') {
            p++;
            n++;
        }
        if (*p != '>' || n < 3)
            return -EINVAL;
        *pp = p + 1;
        return 0;
    }
    while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) {
        p++;
        n++;
    }
    if (n < 3)
        return -EINVAL;
    *pp = p;
    return 0;
}

/* [+-]hh[:mm[:ss]] with |hh| <= max_h. */
static int parse_hms(const char **pp, int max_h, int32_t *out)
{
    const char *p = *pp;
    int sign = 1;
    if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
    }
    int32_t parts[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        if (i > 0) {
            if (*p != ':')
                break;
            p++;
        }
        int digits = 0;
        int32_t v = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            v = v * 10 + (*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || (i > 0 && (digits != 2 || v > 59)))
            return -EINVAL;
        parts[i] = v;
    }
    if (parts[0] > max_h)
        return -EINVAL;
    *out = sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
    *pp = p;
    return 0;
}

static int parse_num(const char **pp, int lo, int hi, int *out)
{
    const char *p = *pp;
    int v = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) {
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || v < lo || v > hi)
        return -EINVAL;
    *out = v;
    *pp = p;
    return 0;
}

static int parse_rule(const char **pp, tz_rule *r)
{
    const char *p = *pp;
    if (*p == 'J') {
        p++;
        r->kind = RULE_JULIAN1;
        if (parse_num(&p, 1, 365, &r->day) < 0)
            return -EINVAL;
    } else if (*p == 'M') {
        p++;
        r->kind = RULE_MWD;
        if (parse_num(&p, 1, 12, &r->month) < 0 || *p++ != '.' ||
            parse_num(&p, 1, 5, &r->week) < 0 || *p++ != '.' || parse_num(&p, 0, 6, &r->day) < 0)
            return -EINVAL;
    } else {
        r->kind = RULE_JULIAN0;
        if (parse_num(&p, 0, 365, &r->day) < 0)
            return -EINVAL;
    }
    r->time = 2 * 3600;
    if (*p == '/') {
        p++;
        /* RFC 8536 section 3.3.1: hours may be signed and range over -167..167. */
        if (parse_hms(&p, 167, &r->time) < 0)
            return -EINVAL;
    }
    *pp = p;
    return 0;
}

/* Parses a POSIX TZ string (NUL-terminated). An empty string means "no footer". */
static int parse_footer(const char *s, tz_footer *f)
{
    memset(f, 0, sizeof(*f));
    if (*s == '\0')
        return 0;
    const char *p = s;
    int32_t off;
    if (parse_tz_name(&p) < 0 || parse_hms(&p, 24, &off) < 0)
        return -EINVAL;
    f->present = true;
    f->std_off = -off;
    if (*p == '\0')
        return 0;
    if (parse_tz_name(&p) < 0)
        return -EINVAL;
    f->has_dst = true;
    f->dst_off = f->std_off + 3600;
    if (*p != ',' && *p != '\0') {
        if (parse_hms(&p, 24, &off) < 0)
            return -EINVAL;
        f->dst_off = -off;
    }
    if (*p == '\0') {
        /* No rule: tzcode's default (TZDEFRULESTRING), the US rules since 2007. */
        p = ",M3.2.0,M11.1.0";
    }
    if (*p++ != ',' || parse_rule(&p, &f->start) < 0 || *p++ != ',' ||
        parse_rule(&p, &f->end) < 0 || *p != '\0')
        return -EINVAL;
    return 0;
}

/* --- TZif -------------------------------------------------------------------------------- */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

typedef struct tzif_counts {
    uint32_t isut, isstd, leap, time, type, chars;
} tzif_counts;

static int tzif_header(const unsigned char *p, size_t len, int *version, tzif_counts *c)
{
    if (len < 44 || memcmp(p, "TZif", 4) != 0)
        return -EINVAL;
    if (p[4] == 0)
        *version = 1;
    else if (p[4] >= '2' && p[4] <= '4')
        *version = p[4] - '0';
    else
        return -EINVAL;
    c->isut = be32(p + 20);
    c->isstd = be32(p + 24);
    c->leap = be32(p + 28);
    c->time = be32(p + 32);
    c->type = be32(p + 36);
    c->chars = be32(p + 40);
    /* RFC 8536 section 3.1 constraints; the caps keep the size sums below from overflowing. */
    if (c->type == 0 || c->type > 256 || (c->isut != 0 && c->isut != c->type) ||
        (c->isstd != 0 && c->isstd != c->type) || c->time > TZ_FILE_MAX || c->leap > TZ_FILE_MAX ||
        c->chars > TZ_FILE_MAX)
        return -EINVAL;
    return 0;
}

static size_t tzif_block_len(const tzif_counts *c, size_t tsize)
{
    return c->time * tsize + c->time + (size_t)c->type * 6 + c->chars + c->leap * (tsize + 4) +
           c->isstd + c->isut;
}

static void tz_free(kx_tz *tz)
{
    if (tz == NULL)
        return;
    free(tz->name);
    free(tz->trans);
    free(tz->trans_off);
    free(tz);
}

/* Builds tz from the bytes of a TZif file. */
static int tzif_parse(const unsigned char *buf, size_t len, kx_tz *tz)
{
    int version;
    tzif_counts c;
    if (tzif_header(buf, len, &version, &c) < 0)
        return -EINVAL;
    size_t tsize = 4;
    const unsigned char *p = buf + 44;
    size_t rest = len - 44;
    if (tzif_block_len(&c, 4) > rest)
        return -EINVAL;
    if (version >= 2) {
        /* Skip the 32-bit block: the 64-bit one after the second header supersedes it. */
        size_t skip = tzif_block_len(&c, 4);
        int v2;
        if (tzif_header(p + skip, rest - skip, &v2, &c) < 0)
            return -EINVAL;
        p += skip + 44;
        rest -= skip + 44;
        tsize = 8;
        if (tzif_block_len(&c, 8) > rest)
            return -EINVAL;
    }
    /* Leap-second ("right/") zones count TAI-like seconds; converting them would need the
     * leap table applied to every instant. Nobody runs logs on them: refuse. */
    if (c.leap != 0)
        return -EINVAL;

    const unsigned char *times = p;
    const unsigned char *idx = times + c.time * tsize;
    const unsigned char *types = idx + c.time;
    int32_t type_off[256] = {0}; /* typecnt >= 1 is checked; the init quiets cppcheck */
    for (uint32_t i = 0; i < c.type; i++) {
        int32_t off = (int32_t)be32(types + 6 * (size_t)i);
        if (off < -TZ_MAX_OFFSET || off > TZ_MAX_OFFSET || types[6 * i + 4] > 1)
            return -EINVAL;
        type_off[i] = off;
    }
    tz->first_off = type_off[0];
    if (c.time > 0) {
        tz->trans = malloc(c.time * sizeof(*tz->trans));
        tz->trans_off = malloc(c.time * sizeof(*tz->trans_off));
        if (tz->trans == NULL || tz->trans_off == NULL)
            return -ENOMEM;
    }
    for (uint32_t i = 0; i < c.time; i++) {
        int64_t t = tsize == 8 ? be64(times + 8 * (size_t)i) : (int32_t)be32(times + 4 * (size_t)i);
        if (idx[i] >= c.type || (i > 0 && t <= tz->trans[i - 1]))
            return -EINVAL;
        tz->trans[i] = t;
        tz->trans_off[i] = type_off[idx[i]];
    }
    tz->ntrans = c.time;

    if (version >= 2) {
        const unsigned char *foot = p + tzif_block_len(&c, 8);
        size_t flen = rest - tzif_block_len(&c, 8);
        char str[256];
        if (flen < 2 || foot[0] != '\n')
            return -EINVAL;
        const unsigned char *nl = memchr(foot + 1, '\n', flen - 1);
        if (nl == NULL || (size_t)(nl - foot - 1) >= sizeof(str))
            return -EINVAL;
        memcpy(str, foot + 1, (size_t)(nl - foot - 1));
        str[nl - foot - 1] = '\0';
        if (parse_footer(str, &tz->footer) < 0)
            return -EINVAL;
    }
    return 0;
}

/* [A-Za-z0-9_+-/] only, so no ".." component and no absolute path can reach open(). */
static bool name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TZ_NAME_MAX || name[0] == '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        bool ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '+' || ch == '-' || ch == '/';
        if (!ok)
            return false;
    }
    return strstr(name, "..") == NULL; /* unreachable given the set above; kept as a guard */
}

static int read_file(const char *path, unsigned char **out, size_t *outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOMEM ? -ENOMEM : -ENOENT;
    int rc = -EINVAL;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = -ENOENT; /* a directory ("Europe") is not a zone */
        goto out;
    }
    if (st.st_size <= 0 || (uint64_t)st.st_size > TZ_FILE_MAX)
        goto out;
    size_t len = (size_t)st.st_size, got = 0;
    buf = malloc(len);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            goto out;
        got += (size_t)r;
    }
    *out = buf;
    *outlen = len;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

static int tz_load(const char *name, kx_tz **out)
{
    kx_tz *tz = calloc(1, sizeof(*tz));
    unsigned char *buf = NULL;
    int rc = -ENOMEM;
    if (tz == NULL)
        goto fail;
    tz->name = strdup(name);
    if (tz->name == NULL)
        goto fail;
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0) {
        /* Built in, so rules in UTC load on hosts without tzdata (containers). */
        tz->footer.present = true;
        *out = tz;
        return 0;
    }
    const char *dir = getenv("TZDIR");
    if (dir == NULL || dir[0] == '\0')
        dir = TZ_DEFAULT_DIR;
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        rc = -ENOENT;
        goto fail;
    }
    size_t len;
    rc = read_file(path, &buf, &len);
    if (rc < 0)
        goto fail;
    rc = tzif_parse(buf, len, tz);
    if (rc < 0)
        goto fail;
    free(buf);
    *out = tz;
    return 0;
fail:
    free(buf);
    tz_free(tz);
    return rc;
}

int kx_tz_get(const char *name, const kx_tz **out)
{
    if (name == NULL || !name_ok(name))
        return -ENOENT;
    for (size_t i = 0; i < cache.n; i++) {
        if (strcmp(cache.zones[i]->name, name) == 0) {
            *out = cache.zones[i];
            return 0;
        }
    }
    if (cache.n == TZ_CACHE_MAX)
        return -ENOMEM;
    if (cache.n == cache.cap) {
        size_t cap = cache.cap ? cache.cap * 2 : 16;
        kx_tz **z = realloc(cache.zones, cap * sizeof(kx_tz *));
        if (z == NULL)
            return -ENOMEM;
        cache.zones = z;
        cache.cap = cap;
    }
    kx_tz *tz;
    int rc = tz_load(name, &tz);
    if (rc < 0)
        return rc; /* unknown zones are not cached: lookups happen at rule load only */
    cache.zones[cache.n++] = tz;
    *out = tz;
    return 0;
}

void kx_tz_cache_clear(void)
{
    for (size_t i = 0; i < cache.n; i++)
        tz_free(cache.zones[i]);
    free(cache.zones);
    cache.zones = NULL;
    cache.n = cache.cap = 0;
}

const char *kx_tz_name(const kx_tz *tz)
{
    return tz->name;
}

/* Offset at t and the constant-offset stretch [*lo, *hi) containing t. */
static int32_t tz_segment(const kx_tz *tz, int64_t t, int64_t *lo, int64_t *hi)
{
    size_t n = tz->ntrans;
    if (n == 0) {
        if (tz->footer.present)
            return footer_offset(&tz->footer, t, lo, hi);
        *lo = INT64_MIN;
        *hi = INT64_MAX;
        return tz->first_off;
    }
    if (t < tz->trans[0]) {
        *lo = INT64_MIN;
        *hi = tz->trans[0];
        return tz->first_off;
    }
    if (t >= tz->trans[n - 1]) {
        if (!tz->footer.present) {
            *lo = tz->trans[n - 1];
            *hi = INT64_MAX;
            return tz->trans_off[n - 1];
        }
        int32_t off = footer_offset(&tz->footer, t, lo, hi);
        if (*lo < tz->trans[n - 1])
            *lo = tz->trans[n - 1];
        return off;
    }
    /* Largest i with trans[i] <= t; trans[0] <= t < trans[n-1] holds here. */
    size_t a = 0, b = n - 1;
    while (b - a > 1) {
        size_t mid = a + (b - a) / 2;
        if (tz->trans[mid] <= t)
            a = mid;
        else
            b = mid;
    }
    *lo = tz->trans[a];
    *hi = tz->trans[a + 1];
    return tz->trans_off[a];
}

int32_t kx_tz_offset(const kx_tz *tz, int64_t utc_s)
{
    int64_t lo, hi;
    return tz_segment(tz, utc_s, &lo, &hi);
}

void kx_tz_local(const kx_tz *tz, int64_t utc_s, kx_civil *out)
{
    if (utc_s > TZ_T_LIMIT)
        utc_s = TZ_T_LIMIT;
    else if (utc_s < -TZ_T_LIMIT)
        utc_s = -TZ_T_LIMIT;
    int32_t off = kx_tz_offset(tz, utc_s);
    int64_t local = utc_s + off;
    int64_t days = floor_div(local, SECS_PER_DAY);
    int64_t secs = local - days * SECS_PER_DAY;
    int64_t y;
    civil_from_days(days, &y, &out->month, &out->day);
    out->year = (int)y;
    out->hour = (int)(secs / 3600);
    out->minute = (int)(secs / 60 % 60);
    out->second = (int)(secs % 60);
    out->wday = weekday(days);
    out->utc_offset = off;
}

int64_t kx_tz_to_utc(const kx_tz *tz, const kx_civil *local)
{
    int64_t wall = days_from_civil(local->year, local->month, local->day) * SECS_PER_DAY +
                   (int64_t)local->hour * 3600 + (int64_t)local->minute * 60 + local->second;
    /* Any solution u of u + offset(u) == wall lies within TZ_MAX_OFFSET of wall. Walk the
     * constant-offset stretches over that window in order: the first stretch that contains
     * wall - its offset is the earliest solution. A wall time in no stretch fell into a gap
     * between two stretches; read it with the offset of the stretch before. */
    int64_t t = wall - (int64_t)TZ_MAX_OFFSET - 1;
    int64_t end = wall + (int64_t)TZ_MAX_OFFSET + 1;
    int32_t prev_off = 0;
    bool have_prev = false;
    for (int i = 0; i < 64 && t <= end; i++) {
        int64_t lo, hi;
        int32_t off = tz_segment(tz, t, &lo, &hi);
        int64_t u = wall - off;
        if (u >= lo && u < hi)
            return u;
        if (have_prev && u < lo && wall - prev_off >= lo)
            return wall - prev_off; /* in the gap just before this stretch */
        prev_off = off;
        have_prev = true;
        if (hi == INT64_MAX)
            break;
        t = hi;
    }
    return wall - kx_tz_offset(tz, wall);
}
