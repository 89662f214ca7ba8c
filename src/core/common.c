/*
 * Small shared pieces: error records, growable capped buffers, the per-event bump arena,
 * time formatting and hashing. None of these allocate once warmed up (reset keeps memory).
 */
#include "klaxon/common.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int kx_err_set(kx_err *err, const char *file, int line, int col, const char *fmt, ...)
{
    if (!err)
        return -EINVAL;
    snprintf(err->file, sizeof(err->file), "%s", file ? file : "");
    err->line = line;
    err->col = col;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

void kx_err_format(const kx_err *err, char *out, size_t outlen)
{
    if (!outlen)
        return;
    if (err->file[0] && err->line > 0 && err->col > 0)
        snprintf(out, outlen, "%s:%d:%d: %s", err->file, err->line, err->col, err->msg);
    else if (err->file[0] && err->line > 0)
        snprintf(out, outlen, "%s:%d: %s", err->file, err->line, err->msg);
    else if (err->file[0])
        snprintf(out, outlen, "%s: %s", err->file, err->msg);
    else
        snprintf(out, outlen, "%s", err->msg);
}

/* ---- kx_buf ---- */

void kx_buf_init(kx_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void kx_buf_fini(kx_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void kx_buf_reset(kx_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int kx_buf_reserve(kx_buf *b, size_t extra)
{
    /* +1 keeps room for the terminating NUL. */
    if (extra > SIZE_MAX - b->len - 1)
        return -E2BIG;
    size_t need = b->len + extra + 1;
    if (b->max && need > b->max + 1)
        return -E2BIG;
    if (need <= b->cap)
        return 0;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (b->max && ncap > b->max + 1)
        ncap = b->max + 1;
    char *p = realloc(b->data, ncap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int kx_buf_append(kx_buf *b, const void *p, size_t n)
{
    int rc = kx_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int kx_buf_puts(kx_buf *b, const char *s)
{
    return kx_buf_append(b, s, strlen(s));
}

int kx_buf_putc(kx_buf *b, char c)
{
    return kx_buf_append(b, &c, 1);
}

void kx_hex64(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        out[i] = digits[v & 15];
        v >>= 4;
    }
}

/* The digits of v, right-aligned in tmp[20]; returns where they start. */
static size_t u64_digits(char tmp[20], uint64_t v)
{
    size_t i = 20;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return i;
}

size_t kx_fmt_i64(char *out, int64_t v)
{
    char tmp[20];
    size_t n = 0;
    /* -(v + 1) + 1: INT64_MIN has no positive twin. */
    uint64_t u = v >= 0 ? (uint64_t)v : (uint64_t)(-(v + 1)) + 1;
    if (v < 0)
        out[n++] = '-';
    size_t i = u64_digits(tmp, u);
    memcpy(out + n, tmp + i, 20 - i);
    return n + 20 - i;
}

int kx_buf_put_u64(kx_buf *b, uint64_t v)
{
    char tmp[20];
    size_t i = u64_digits(tmp, v);
    return kx_buf_append(b, tmp + i, sizeof(tmp) - i);
}

int kx_buf_put_i64(kx_buf *b, int64_t v)
{
    char tmp[21];
    return kx_buf_append(b, tmp, kx_fmt_i64(tmp, v));
}

int kx_buf_put_g17(kx_buf *b, double v)
{
    /* An integer of at most 16 digits: "%.17g" prints exactly its digits. -0 keeps its sign
     * through printf. */
    if (fabs(v) < 9007199254740992.0 && v == trunc(v) && !(v == 0 && signbit(v)))
        return kx_buf_put_i64(b, (int64_t)v);
    return kx_buf_printf(b, "%.17g", v);
}

int kx_buf_printf(kx_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(tmp))
        return kx_buf_append(b, tmp, (size_t)n);
    int rc = kx_buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if the bytes are not valid UTF-8
 * (overlongs, surrogates and code points past U+10FFFF are invalid). */
bool kx_json_number_in_range(const char *s, size_t n)
{
    bool neg = n && s[0] == '-';
    const char *d = s + neg;
    size_t nd = n - neg;
    size_t int_digits = strcspn(d, ".eE");
    if (int_digits == nd) {
        /* An integer: no leading zeros in the grammar, so the digit count decides. */
        if (nd != 19)
            return nd < 19;
        return memcmp(d, neg ? "9223372036854775808" : "9223372036854775807", 19) <= 0;
    }
    /* Cheap bound first: only a magnitude near DBL_MAX (1.8e308) is worth a strtod. */
    const char *e = strpbrk(d, "eE");
    long pow10 = 0; /* saturates: past 100000 the answer no longer depends on it */
    if (e) {
        bool eneg = e[1] == '-';
        for (const char *x = e + 1 + (e[1] == '-' || e[1] == '+'); *x && pow10 < 100000; x++)
            pow10 = pow10 * 10 + (*x - '0');
        pow10 = eneg ? -pow10 : pow10;
    }
    if ((long)int_digits + pow10 < 300)
        return true;
    return isfinite(strtod(s, NULL));
}

size_t kx_utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

int kx_buf_json_str(kx_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    /* Worst case every byte becomes \u00XX (6 bytes) or U+FFFD (3 bytes); reserve once. */
    int rc = kx_buf_reserve(b, n * 6 + 2);
    if (rc)
        return rc;
    char *o = b->data + b->len;
    const unsigned char *p = (const unsigned char *)s;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x80) {
            *o++ = '\\';
            switch (c) {
            case '"':
                *o++ = '"';
                break;
            case '\\':
                *o++ = '\\';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
            i++;
            continue;
        }
        size_t l = kx_utf8_seq_len(p + i, n - i);
        if (l == 0) {
            /* Invalid byte: U+FFFD keeps the output valid JSON and shows the damage. */
            *o++ = (char)0xEF;
            *o++ = (char)0xBF;
            *o++ = (char)0xBD;
            i++;
            continue;
        }
        memcpy(o, p + i, l);
        o += l;
        i += l;
    }
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->data);
    return 0;
}

/* ---- kx_arena ---- */

struct kx_arena_block {
    kx_arena_block *next;
    size_t size;
    size_t used;
    _Alignas(8) unsigned char data[];
};

void kx_arena_init(kx_arena *a, size_t block_size)
{
    a->head = NULL;
    a->block_size = block_size ? block_size : 4096;
}

void kx_arena_fini(kx_arena *a)
{
    kx_arena_block *b = a->head;
    while (b) {
        kx_arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
}

/* A block larger than this is not kept across resets: one huge event must not pin its
 * memory for the life of the process. */
#define KX_ARENA_KEEP_MAX (1u << 20)

void kx_arena_reset(kx_arena *a)
{
    /* Keep the largest block (the newest; blocks grow) so the next event reuses it. */
    kx_arena_block *keep = a->head;
    if (!keep)
        return;
    if (keep->size > KX_ARENA_KEEP_MAX) {
        kx_arena_fini(a);
        return;
    }
    kx_arena_block *b = keep->next;
    while (b) {
        kx_arena_block *n = b->next;
        free(b);
        b = n;
    }
    keep->next = NULL;
    keep->used = 0;
}

void *kx_arena_alloc(kx_arena *a, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    kx_arena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = a->block_size;
        if (b && b->size * 2 > size)
            size = b->size * 2;
        while (size < n)
            size *= 2;
        kx_arena_block *nb = malloc(sizeof(*nb) + size);
        if (!nb)
            return NULL;
        nb->size = size;
        nb->used = 0;
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

char *kx_arena_strndup(kx_arena *a, const char *s, size_t n)
{
    char *p = kx_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- time ---- */

int64_t kx_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t kx_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic Gregorian
 * calendar without libc or TZ. */
int64_t kx_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void kx_time_format(int64_t ms, char *out, size_t outlen)
{
    int64_t secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int msec = (int)(ms - secs * 1000);
    int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    int64_t rem = secs - days * 86400;
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999 || outlen < 25) {
        snprintf(out, outlen, "%04lld-%02u-%02uT%02d:%02d:%02d.%03dZ", (long long)y, m, d,
                 (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), msec);
        return;
    }
    /* The same digits by hand: evidence carries one time per matching event. */
    const unsigned v[] = {(unsigned)y,
                          m,
                          d,
                          (unsigned)(rem / 3600),
                          (unsigned)(rem / 60 % 60),
                          (unsigned)(rem % 60),
                          (unsigned)msec};
    static const unsigned char width[] = {4, 2, 2, 2, 2, 2, 3};
    static const char after[] = "--T::.Z";
    size_t n = 0;
    for (size_t i = 0; i < 7; i++) {
        unsigned x = v[i];
        for (size_t k = width[i]; k-- > 0;) {
            out[n + k] = (char)('0' + x % 10);
            x /= 10;
        }
        n += width[i];
        out[n++] = after[i];
    }
    out[n] = '\0';
}

uint64_t kx_hash64(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    /* Final avalanche (splitmix64) so nearby inputs differ in every hex digit. */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}
