/*
 * Time-of-day conditions: "was this event's own time inside a local-time window, in this
 * IANA zone, on these weekdays?"
 *
 * The window is [from, to) in local minutes of the day. When to < from it crosses midnight
 * and belongs to the day it starts on, so the weekday test for the part after midnight is
 * made against the previous day. from == to is the whole day. Matching converts the event
 * instant with the zone's own rules (klaxon/tz.h), so the same local hours hold across DST
 * changes; it allocates nothing.
 *
 * Ownership: kx_timeofday_parse returns a new object the caller destroys; the zone it points
 * at is borrowed from the tz cache (valid until kx_tz_cache_clear).
 */
#include "klaxon/timeofday.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "klaxon/tz.h"

#define MIN_PER_DAY (24 * 60)
#define ALL_DAYS 0x7f

struct kx_timeofday {
    const kx_tz *tz;
    uint8_t days; /* bit w set = weekday w allowed (0 = Sunday) */
    int from;     /* minutes after local midnight, 0..1439 */
    int to;       /* 0..1440 */
};

static const char *const day_names[7] = {"sunday",   "monday", "tuesday", "wednesday",
                                         "thursday", "friday", "saturday"};

/* "mon", "Monday", "MON" -> 1; -1 if not a day. Accepts the 3-letter prefix or the full
 * name, nothing in between ("mond" is a typo worth reporting). */
static int day_from_name(const char *s, size_t n)
{
    for (int w = 0; w < 7; w++) {
        size_t full = strlen(day_names[w]);
        if ((n == 3 || n == full) && strncasecmp(s, day_names[w], n) == 0)
            return w;
    }
    return -1;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/* One item of `days`: "mon" or a range "mon-fri" / "fri-mon" (wraps through Sunday). */
static int parse_day_item(const kx_yaml_node *n, const char *file, uint8_t *mask, kx_err *err)
{
    const char *s;
    if (kx_yaml_str(n, file, &s, err) < 0)
        return -EINVAL;
    size_t len = n->len;
    const char *dash = memchr(s, '-', len);
    const char *a = s, *b = NULL;
    size_t alen = dash ? (size_t)(dash - s) : len, blen = 0;
    if (dash) {
        b = dash + 1;
        blen = len - alen - 1;
        trim(&b, &blen);
    }
    trim(&a, &alen);
    int first = day_from_name(a, alen);
    int last = dash ? day_from_name(b, blen) : first;
    if (first < 0 || last < 0)
        return kx_yaml_err(err, file, n,
                           "invalid day \"%s\" (expected mon..sun or a range like mon-fri)", s);
    for (int w = first;; w = (w + 1) % 7) {
        *mask |= (uint8_t)(1u << w);
        if (w == last)
            break;
    }
    return 0;
}

static int parse_days(const kx_yaml_node *n, const char *file, uint8_t *mask, kx_err *err)
{
    *mask = 0;
    if (n->type == KX_YAML_SCALAR)
        return parse_day_item(n, file, mask, err);
    if (n->type != KX_YAML_SEQ)
        return kx_yaml_err(err, file, n, "days must be a day, a range or a list of them");
    if (n->n == 0)
        return kx_yaml_err(err, file, n, "days must not be empty");
    for (size_t i = 0; i < n->n; i++) {
        if (parse_day_item(n->vals[i], file, mask, err) < 0)
            return -EINVAL;
    }
    return 0;
}

/* "HH:MM" (or "H:MM") -> minutes; max_min is 1439 for `from`, 1440 for `to` ("24:00"). */
static int parse_hhmm(const kx_yaml_node *n, const char *file, int max_min, int *out, kx_err *err)
{
    const char *s;
    if (kx_yaml_str(n, file, &s, err) < 0)
        return -EINVAL;
    size_t len = n->len, i = 0;
    int h = 0, m = 0;
    while (i < len && i < 2 && isdigit((unsigned char)s[i]))
        h = h * 10 + (s[i++] - '0');
    bool ok = i >= 1 && i < len && s[i] == ':' && len == i + 3 &&
              isdigit((unsigned char)s[i + 1]) && isdigit((unsigned char)s[i + 2]);
    if (ok) {
        m = (s[i + 1] - '0') * 10 + (s[i + 2] - '0');
        ok = m < 60 && h * 60 + m <= max_min;
    }
    if (!ok)
        return kx_yaml_err(err, file, n, "invalid time \"%s\" (expected HH:MM from 00:00 to %s)", s,
                           max_min == MIN_PER_DAY ? "24:00" : "23:59");
    *out = h * 60 + m;
    return 0;
}

int kx_timeofday_parse(const kx_yaml_node *node, const char *file, kx_timeofday **out, kx_err *err)
{
    if (node->type != KX_YAML_MAP)
        return kx_yaml_err(err, file, node,
                           "timeofday must be a map with timezone, days, from and to");
    kx_timeofday t = {.tz = NULL, .days = ALL_DAYS, .from = 0, .to = MIN_PER_DAY};
    static const char *const keys[] = {"timezone", "days", "from", "to"};
    const kx_yaml_node *seen[KX_ARRAY_LEN(keys)] = {NULL};

    for (size_t i = 0; i < node->n; i++) {
        const kx_yaml_node *k = node->keys[i];
        size_t which = KX_ARRAY_LEN(keys);
        for (size_t j = 0; j < KX_ARRAY_LEN(keys); j++) {
            if (kx_yaml_is(k, keys[j]))
                which = j;
        }
        if (which == KX_ARRAY_LEN(keys)) {
            if (k->type != KX_YAML_SCALAR)
                return kx_yaml_err(err, file, k, "timeofday keys must be strings");
            return kx_yaml_err(err, file, k,
                               "unknown key \"%s\" (expected timezone, days, from or to)", k->str);
        }
        if (seen[which] != NULL)
            return kx_yaml_err(err, file, k, "duplicate key \"%s\"", keys[which]);
        seen[which] = node->vals[i];
    }

    const kx_yaml_node *zone = seen[0];
    if (zone == NULL)
        return kx_yaml_err(err, file, node,
                           "timeofday needs a timezone (an IANA name such as Europe/Madrid)");
    const char *zname;
    if (kx_yaml_str(zone, file, &zname, err) < 0)
        return -EINVAL;
    int rc = kx_tz_get(zname, &t.tz);
    if (rc == -ENOENT)
        return kx_yaml_err(err, file, zone, "unknown time zone \"%s\"", zname);
    if (rc < 0)
        return kx_yaml_err(err, file, zone, "cannot load time zone \"%s\": %s", zname,
                           rc == -ENOMEM ? "out of memory" : "invalid tzdata file");
    if (seen[1] != NULL && parse_days(seen[1], file, &t.days, err) < 0)
        return -EINVAL;
    if (seen[2] != NULL && parse_hhmm(seen[2], file, MIN_PER_DAY - 1, &t.from, err) < 0)
        return -EINVAL;
    if (seen[3] != NULL && parse_hhmm(seen[3], file, MIN_PER_DAY, &t.to, err) < 0)
        return -EINVAL;
    if (t.to == MIN_PER_DAY && t.from == 0)
        t.to = 0; /* 00:00-24:00 is the whole day, the same as from == to */

    kx_timeofday *res = malloc(sizeof(*res));
    if (res == NULL) {
        kx_err_set(err, file, node->line, node->col, "out of memory");
        return -ENOMEM;
    }
    *res = t;
    *out = res;
    return 0;
}

void kx_timeofday_destroy(kx_timeofday *t)
{
    free(t);
}

bool kx_timeofday_match(const kx_timeofday *t, int64_t time_ms)
{
    /* Floor, not truncate: -1 ms is 23:59:59.999 of the day before the epoch. */
    int64_t s = time_ms / 1000 - (time_ms % 1000 < 0);
    kx_civil c;
    kx_tz_local(t->tz, s, &c);
    int minute = c.hour * 60 + c.minute;
    bool today = (t->days >> c.wday) & 1u;
    if (t->from == t->to)
        return today;
    if (t->from < t->to)
        return today && minute >= t->from && minute < t->to;
    /* Crosses midnight: the evening part is today's window, the morning part yesterday's. */
    if (minute >= t->from)
        return today;
    bool yesterday = (t->days >> ((c.wday + 6) % 7)) & 1u;
    return yesterday && minute < t->to;
}

const char *kx_timeofday_zone(const kx_timeofday *t)
{
    return kx_tz_name(t->tz);
}

int kx_local_time_format(const char *zone, int64_t time_ms, char *out, size_t outlen)
{
    const kx_tz *tz;
    int rc = kx_tz_get(zone, &tz);
    if (rc)
        return rc;
    int64_t s = time_ms / 1000 - (time_ms % 1000 < 0);
    kx_civil c;
    kx_tz_local(tz, s, &c);
    int32_t off = c.utc_offset;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
        off = -off;
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", c.year, c.month, c.day,
             c.hour, c.minute, c.second, sign, (int)(off / 3600), (int)(off % 3600 / 60));
    return 0;
}
