/*
 * Timestamps: RFC 3339 / ISO 8601 date-times and epoch numbers, parsed by hand (no strptime,
 * no libc TZ) so that parsing is a pure function of the bytes and allocates nothing.
 *
 * Accepted: "YYYY-MM-DD", then 'T', 't' or ' ', then "hh:mm:ss", an optional fraction after
 * '.' or ',' (any number of digits, truncated to milliseconds), then an optional zone: 'Z',
 * 'z', "+HH:MM", "-HH:MM", "+HHMM", "+HH". A time without a zone is read as UTC by
 * kx_parse_rfc3339 (Elasticsearch does the same); the RFC 3164 decoder instead applies its
 * configured zone. Fields are range-checked, the day against the month (leap years too).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "decode/decode_int.h"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads exactly n digits at s[*i]. */
static int digits(const char *s, size_t len, size_t *i, int n, int *out)
{
    int v = 0;
    if (*i + (size_t)n > len)
        return -EINVAL;
    for (int k = 0; k < n; k++) {
        char c = s[*i + (size_t)k];
        if (!is_digit(c))
            return -EINVAL;
        v = v * 10 + (c - '0');
    }
    *i += (size_t)n;
    *out = v;
    return 0;
}

static int expect(const char *s, size_t len, size_t *i, char c)
{
    if (*i >= len || s[*i] != c)
        return -EINVAL;
    (*i)++;
    return 0;
}

int kx__days_in_month(int year, int month)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (month < 1 || month > 12)
        return 0;
    if (month == 2 && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
        return 29;
    return dim[month - 1];
}

int kx__parse_iso(const char *s, size_t len, kx__iso *t)
{
    size_t i = 0;
    memset(t, 0, sizeof(*t));
    if (digits(s, len, &i, 4, &t->year) || expect(s, len, &i, '-') ||
        digits(s, len, &i, 2, &t->month) || expect(s, len, &i, '-') ||
        digits(s, len, &i, 2, &t->day))
        return -EINVAL;
    if (i >= len || (s[i] != 'T' && s[i] != 't' && s[i] != ' '))
        return -EINVAL;
    i++;
    if (digits(s, len, &i, 2, &t->hour) || expect(s, len, &i, ':') ||
        digits(s, len, &i, 2, &t->minute) || expect(s, len, &i, ':') ||
        digits(s, len, &i, 2, &t->second))
        return -EINVAL;
    if (t->month < 1 || t->month > 12 || t->day < 1 ||
        t->day > kx__days_in_month(t->year, t->month) || t->hour > 23 || t->minute > 59 ||
        t->second > 60)
        return -EINVAL;
    if (i < len && (s[i] == '.' || s[i] == ',')) {
        size_t start = ++i;
        int ms = 0;
        while (i < len && is_digit(s[i])) {
            if (i - start < 3)
                ms = ms * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return -EINVAL;
        for (size_t k = i - start; k < 3; k++)
            ms *= 10;
        t->ms = ms;
    }
    if (i == len)
        return 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        t->has_zone = true;
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int sign = s[i] == '-' ? -1 : 1;
        int hh, mm = 0;
        i++;
        if (digits(s, len, &i, 2, &hh))
            return -EINVAL;
        if (i < len && s[i] == ':') {
            i++;
            if (digits(s, len, &i, 2, &mm))
                return -EINVAL;
        } else if (i < len && digits(s, len, &i, 2, &mm)) {
            return -EINVAL;
        }
        if (hh > 23 || mm > 59)
            return -EINVAL;
        t->has_zone = true;
        t->offset_s = sign * (hh * 3600 + mm * 60);
    } else {
        return -EINVAL;
    }
    return i == len ? 0 : -EINVAL;
}

int64_t kx__iso_to_ms(const kx__iso *t)
{
    int64_t days = kx_days_from_civil(t->year, (unsigned)t->month, (unsigned)t->day);
    int64_t secs = days * 86400 + t->hour * 3600 + t->minute * 60 + t->second;
    if (t->has_zone)
        secs -= t->offset_s;
    return secs * 1000 + t->ms;
}

int kx_parse_rfc3339(const char *s, size_t len, int64_t *out_ms)
{
    kx__iso t;
    if (kx__parse_iso(s, len, &t))
        return -EINVAL;
    *out_ms = kx__iso_to_ms(&t);
    return 0;
}

int kx_parse_epoch(const char *s, size_t len, int64_t *out_ms)
{
    char buf[64];
    char *end;
    size_t i = 0;
    bool any = false;
    /* Only plain decimal numbers: strtod alone would also take "inf", hex and spaces. */
    if (len == 0 || len >= sizeof(buf))
        return -EINVAL;
    if (s[i] == '-' || s[i] == '+')
        i++;
    for (; i < len; i++) {
        if (is_digit(s[i]))
            any = true;
        else if (s[i] != '.' && s[i] != 'e' && s[i] != 'E' && s[i] != '-' && s[i] != '+')
            return -EINVAL;
    }
    if (!any)
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    double x = strtod(buf, &end);
    if (errno || end != buf + len || !isfinite(x))
        return -EINVAL;
    /* 1e11 s is the year 5138, 1e11 ms is 1973: the two ranges barely meet. */
    if (fabs(x) < 1e11)
        x *= 1000.0;
    /* About ±285,000 years: anything further is nonsense, and must not overflow int64. */
    if (fabs(x) > 9e15)
        return -EINVAL;
    *out_ms = llround(x);
    return 0;
}
