/*
 * Syslog lines -> fields: RFC 5424 and RFC 3164 (the BSD format most files still hold).
 *
 * RFC 5424: "<PRI>VER TIMESTAMP HOST APP PROCID MSGID SD [MSG]", "-" for nil values, MSG
 * may start with a UTF-8 BOM (dropped). Structured data becomes "sd.<id>.<param>" fields
 * with the \" \\ \] escapes undone; an element without params adds nothing.
 * RFC 3164: "[<PRI>]Mmm dd hh:mm:ss HOST TAG: MSG", where TAG is "program[pid]" or
 * "program". The PRI is optional (file exports drop it), and an RFC 3339 timestamp may
 * stand in for the BSD one (rsyslog's high-precision template). A line whose tag cannot
 * be found keeps the whole rest as the message, with no program.
 *
 * Fields, in this order: facility and severity (decimal text, only with a PRI), host,
 * program, pid, msgid (5424), sd.*, message (always present, "" when the line has none).
 * Nil or absent header values produce no field.
 *
 * RFC 3164 carries neither year nor zone: the zone is the input's configured one and the
 * year is fixed or inferred from the reference time (kx__syslog_bsd_time; the rule is in
 * docs/internals/decode.md). Everything is copied into the event's arena: the raw bytes are
 * not NUL-terminated, and fields must be.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "decode/decode_int.h"

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int add(kx_event *ev, const char *name, const char *v, size_t vlen)
{
    return kx_event_add(ev, name, strlen(name), v, vlen, KX_VAL_STR);
}

/* Reads a non-empty token up to the next space (or the end) at s[*i]. */
static int token(const char *s, size_t len, size_t *i, const char **tok, size_t *tlen)
{
    size_t start = *i;
    while (*i < len && s[*i] != ' ')
        (*i)++;
    if (*i == start)
        return -EINVAL;
    *tok = s + start;
    *tlen = *i - start;
    return 0;
}

static int space(const char *s, size_t len, size_t *i)
{
    if (*i >= len || s[*i] != ' ')
        return -EINVAL;
    (*i)++;
    return 0;
}

static bool is_nil(const char *tok, size_t tlen)
{
    return tlen == 1 && tok[0] == '-';
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int local_to_ms(const kx_tz *tz, int year, int month, int day, int hour, int minute,
                       int second, int64_t *out_ms)
{
    kx_civil c;
    if (day < 1 || day > kx__days_in_month(year, month))
        return -EINVAL;
    memset(&c, 0, sizeof(c));
    c.year = year;
    c.month = month;
    c.day = day;
    c.hour = hour;
    c.minute = minute;
    c.second = second;
    *out_ms = kx_tz_to_utc(tz, &c) * 1000;
    return 0;
}

int kx__syslog_bsd_time(const kx__syslog_cfg *cfg, int month, int day, int hour, int minute,
                        int second, int64_t ref_ms, int64_t *out_ms)
{
    kx_civil ref;
    int64_t ms;

    if (cfg->year)
        return local_to_ms(cfg->tz, cfg->year, month, day, hour, minute, second, out_ms);
    kx_tz_local(cfg->tz, floor_div(ref_ms, 1000), &ref);
    /* The latest year that does not put the line after the reference by more than the
     * allowed skew: a line is never placed in the future. From the year after the
     * reference's (a January line against a reference of Dec 31 with the skew) back to the
     * years before it (December lines read in January; Feb 29 back to a leap year). */
    int64_t skew = cfg->skew_ms ? cfg->skew_ms : KX_DECODE_SKEW_DEFAULT_MS;
    for (int year = ref.year + 1; year >= ref.year - 8; year--)
        if (local_to_ms(cfg->tz, year, month, day, hour, minute, second, &ms) == 0 &&
            ms <= ref_ms + skew) {
            *out_ms = ms;
            return 0;
        }
    return -EINVAL;
}

static int add_pri(kx_event *ev, int pri)
{
    char num[8];
    int rc;
    int n = snprintf(num, sizeof(num), "%d", pri >> 3);
    rc = add(ev, "facility", num, (size_t)n);
    if (rc)
        return rc;
    n = snprintf(num, sizeof(num), "%d", pri & 7);
    return add(ev, "severity", num, (size_t)n);
}

/* The ISO timestamp of RFC 5424 or rsyslog's RFC 3164 variant; zoneless means cfg's zone. */
static int iso_time(const kx__syslog_cfg *cfg, const char *tok, size_t tlen, int64_t *out_ms)
{
    kx__iso t;
    if (kx__parse_iso(tok, tlen, &t))
        return -EINVAL;
    if (t.has_zone) {
        *out_ms = kx__iso_to_ms(&t);
        return 0;
    }
    if (local_to_ms(cfg->tz, t.year, t.month, t.day, t.hour, t.minute, t.second, out_ms))
        return -EINVAL;
    *out_ms += t.ms;
    return 0;
}

/* One SD-PARAM value, from just after its opening quote; unescapes into the arena. */
static int sd_value(kx_event *ev, const char *s, size_t len, size_t *i, char **out, size_t *out_len)
{
    size_t start = *i, n = 0;
    while (*i < len && s[*i] != '"') {
        if (s[*i] == '\\' && *i + 1 < len)
            (*i)++;
        (*i)++;
    }
    if (*i >= len)
        return -EINVAL;
    char *v = kx_arena_alloc(&ev->arena, *i - start + 1);
    if (!v)
        return -ENOMEM;
    for (size_t k = start; k < *i; k++) {
        /* RFC 5424 6.3.3: only \" \\ \] are escapes; any other backslash is literal. */
        if (s[k] == '\\' && k + 1 < *i && (s[k + 1] == '"' || s[k + 1] == '\\' || s[k + 1] == ']'))
            k++;
        v[n++] = s[k];
    }
    v[n] = '\0';
    (*i)++; /* closing quote */
    *out = v;
    *out_len = n;
    return 0;
}

static bool sd_name_char(char c)
{
    return c != ' ' && c != '=' && c != ']' && c != '"';
}

static int structured_data(kx_event *ev, const char *s, size_t len, size_t *i)
{
    while (*i < len && s[*i] == '[') {
        size_t id_start = ++(*i);
        while (*i < len && sd_name_char(s[*i]))
            (*i)++;
        size_t id_len = *i - id_start;
        if (id_len == 0)
            return -EINVAL;
        while (*i < len && s[*i] == ' ') {
            size_t p_start = ++(*i);
            while (*i < len && sd_name_char(s[*i]))
                (*i)++;
            size_t p_len = *i - p_start;
            if (p_len == 0 || *i + 1 >= len || s[*i] != '=' || s[*i + 1] != '"')
                return -EINVAL;
            *i += 2;
            char *v;
            size_t vlen;
            int rc = sd_value(ev, s, len, i, &v, &vlen);
            if (rc)
                return rc;
            size_t nlen = 3 + id_len + 1 + p_len;
            char *name = kx_arena_alloc(&ev->arena, nlen + 1);
            if (!name)
                return -ENOMEM;
            memcpy(name, "sd.", 3);
            memcpy(name + 3, s + id_start, id_len);
            name[3 + id_len] = '.';
            memcpy(name + 4 + id_len, s + p_start, p_len);
            name[nlen] = '\0';
            rc = kx_event_add_ref(ev, name, nlen, v, vlen, KX_VAL_STR);
            if (rc)
                return rc;
        }
        if (*i >= len || s[*i] != ']')
            return -EINVAL;
        (*i)++;
    }
    return 0;
}

static int rfc5424(const kx__syslog_cfg *cfg, const char *s, size_t len, size_t i, kx_event *ev,
                   const char **why)
{
    static const char *const names[] = {"host", "program", "pid", "msgid"};
    const char *tok;
    size_t tlen;
    int64_t ms;
    int rc;

    if (token(s, len, &i, &tok, &tlen) || space(s, len, &i)) {
        *why = "truncated";
        return -EINVAL;
    }
    if (!is_nil(tok, tlen)) {
        if (iso_time(cfg, tok, tlen, &ms)) {
            *why = "bad timestamp";
            return -EINVAL;
        }
        ev->time_ms = ms;
        ev->time_from_log = true;
    }
    for (size_t k = 0; k < KX_ARRAY_LEN(names); k++) {
        if (token(s, len, &i, &tok, &tlen) || space(s, len, &i)) {
            *why = "truncated";
            return -EINVAL;
        }
        if (!is_nil(tok, tlen) && (rc = add(ev, names[k], tok, tlen)))
            return rc;
    }
    if (i < len && s[i] == '-') {
        i++;
    } else {
        rc = i < len && s[i] == '[' ? structured_data(ev, s, len, &i) : -EINVAL;
        if (rc == -ENOMEM)
            return rc;
        if (rc) {
            *why = "bad structured data";
            return -EINVAL;
        }
    }
    if (i < len) {
        if (s[i] != ' ') {
            *why = "bad structured data";
            return -EINVAL;
        }
        i++;
        if (len - i >= 3 && memcmp(s + i, "\xEF\xBB\xBF", 3) == 0)
            i += 3;
    }
    return add(ev, "message", s + i, len - i);
}

static int bsd_month(const char *s)
{
    static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
    char m[3];
    for (int k = 0; k < 3; k++)
        m[k] = (char)(s[k] | 0x20); /* ASCII lower case; digits never match anyway */
    for (int k = 0; k < 12; k++)
        if (memcmp(months + 3 * k, m, 3) == 0)
            return k + 1;
    return 0;
}

static int two_digits(const char *s, size_t len, size_t *i, int *out)
{
    if (*i + 2 > len || !is_digit(s[*i]) || !is_digit(s[*i + 1]))
        return -EINVAL;
    *out = (s[*i] - '0') * 10 + (s[*i + 1] - '0');
    *i += 2;
    return 0;
}

/* "Mmm dd hh:mm:ss" with the day space- or zero-padded ("Oct  1", "Oct 01"). */
static int bsd_time(const kx__syslog_cfg *cfg, const char *s, size_t len, size_t *i, int64_t ref_ms,
                    int64_t *out_ms)
{
    int month, day = 0, hh, mm, ss;
    if (*i + 3 > len || !(month = bsd_month(s + *i)))
        return -EINVAL;
    *i += 3;
    if (space(s, len, i))
        return -EINVAL;
    if (*i < len && s[*i] == ' ')
        (*i)++;
    size_t start = *i;
    while (*i < len && is_digit(s[*i]) && *i - start < 2)
        day = day * 10 + (s[(*i)++] - '0');
    if (*i == start || space(s, len, i))
        return -EINVAL;
    if (two_digits(s, len, i, &hh) || *i >= len || s[(*i)++] != ':' || two_digits(s, len, i, &mm) ||
        *i >= len || s[(*i)++] != ':' || two_digits(s, len, i, &ss))
        return -EINVAL;
    if (hh > 23 || mm > 59 || ss > 60)
        return -EINVAL;
    return kx__syslog_bsd_time(cfg, month, day, hh, mm, ss, ref_ms, out_ms);
}

typedef struct tag {
    size_t prog_start, prog_len;
    size_t pid_start, pid_len;
    size_t msg_start;
} tag;

/* "program[pid]: " or "program: " at s[i]; returns false when the rest has no tag. */
static bool bsd_tag(const char *s, size_t len, size_t i, tag *t)
{
    size_t j = i;
    while (j < len && s[j] != '[' && s[j] != ':' && s[j] != ' ')
        j++;
    if (j == i || j >= len)
        return false;
    t->prog_start = i;
    t->prog_len = j - i;
    t->pid_start = 0;
    t->pid_len = 0;
    if (s[j] == '[') {
        size_t k = j + 1;
        while (k < len && s[k] != ']' && s[k] != ' ')
            k++;
        if (k + 1 >= len || s[k] != ']' || s[k + 1] != ':')
            return false;
        t->pid_start = j + 1;
        t->pid_len = k - j - 1;
        t->msg_start = k + 2;
    } else if (s[j] == ':') {
        t->msg_start = j + 1;
    } else {
        return false;
    }
    /* The separator is ": "; anything after that one space belongs to the message (sudo
     * right-aligns its user name with leading spaces). */
    if (t->msg_start < len && s[t->msg_start] == ' ')
        t->msg_start++;
    return true;
}

static int rfc3164(const kx__syslog_cfg *cfg, const char *s, size_t len, size_t i,
                   int64_t fallback_ms, kx_event *ev, const char **why)
{
    const char *tok, *host;
    size_t tlen, host_len;
    tag t;
    int64_t ms;
    int rc;

    if (i < len && is_digit(s[i])) {
        if (token(s, len, &i, &tok, &tlen) || iso_time(cfg, tok, tlen, &ms)) {
            *why = "bad timestamp";
            return -EINVAL;
        }
    } else if (bsd_time(cfg, s, len, &i, fallback_ms, &ms)) {
        *why = "bad timestamp";
        return -EINVAL;
    }
    ev->time_ms = ms;
    ev->time_from_log = true;
    if (space(s, len, &i) || token(s, len, &i, &host, &host_len)) {
        *why = "truncated";
        return -EINVAL;
    }
    if (host[host_len - 1] == ':' && bsd_tag(s, len, (size_t)(host - s), &t)) {
        /* "Oct 11 22:14:15 sshd[42]: ..." - a local file without the host. */
    } else {
        if ((rc = add(ev, "host", host, host_len)))
            return rc;
        if (i < len)
            i++; /* the space after the host */
        if (!bsd_tag(s, len, i, &t))
            return add(ev, "message", s + i, len - i);
    }
    if ((rc = add(ev, "program", s + t.prog_start, t.prog_len)))
        return rc;
    if (t.pid_len && (rc = add(ev, "pid", s + t.pid_start, t.pid_len)))
        return rc;
    return add(ev, "message", s + t.msg_start, len - t.msg_start);
}

int kx__syslog_decode(const kx__syslog_cfg *cfg, const char *raw, size_t len, int64_t fallback_ms,
                      kx_event *ev, const char **why)
{
    size_t i = 0;
    int rc;

    while (len && (raw[len - 1] == '\n' || raw[len - 1] == '\r'))
        len--;
    if (!len) {
        *why = "empty";
        return -EINVAL;
    }
    if (memchr(raw, '\0', len)) {
        *why = "NUL in message";
        return -EINVAL;
    }
    if (raw[0] == '<') {
        int pri = 0;
        for (i = 1; i < len && is_digit(raw[i]) && i <= 3; i++)
            pri = pri * 10 + (raw[i] - '0');
        if (i == 1 || i >= len || raw[i] != '>' || pri > 191) {
            *why = "bad PRI";
            return -EINVAL;
        }
        i++;
        if ((rc = add_pri(ev, pri)))
            goto fail;
        /* RFC 5424 puts a version (1-3 digits, no leading zero) and a space after PRI;
         * RFC 3164 a month name or, from rsyslog, a four-digit year. */
        size_t j = i;
        while (j < len && is_digit(raw[j]) && j - i < 3)
            j++;
        if (j > i && raw[i] != '0' && j < len && raw[j] == ' ') {
            rc = rfc5424(cfg, raw, len, j + 1, ev, why);
            goto fail;
        }
    }
    rc = rfc3164(cfg, raw, len, i, fallback_ms, ev, why);
fail:
    if (rc == -ENOMEM)
        *why = "out of memory";
    return rc;
}
