/*
 * JSON object -> flat fields, in one pass over the raw bytes with a hand-written scanner.
 *
 * Why not jansson (used here until issue 7): it builds the whole tree first (an allocation per
 * value, a hash table per object) only for us to walk it once and copy every string again; it
 * gives no view of a value's raw bytes, so a subtree nested too deep could not be kept as its
 * JSON text and made the event malformed; and it keeps numbers only as int64 or double, so
 * "1e3" came back as "1000.0" and an integer beyond 64 bits (18446744073709551616) could not
 * be kept at all and dropped the whole event.
 *
 * The scanner validates RFC 8259 strictly (tokens, trailing bytes, raw control characters,
 * escapes, UTF-8) and emits a field per scalar as it reads it: object keys are joined with
 * dots ("userIdentity.arn"), array elements repeat their parent's name, members come out in
 * document order, and a key that occurs twice gives a field per occurrence (there is no tree
 * to replace a value in; both stay visible to the rules). Numbers keep their text as written.
 *
 * No valid input makes the event invisible: whoever controls one field (a user agent, a user
 * name) must not be able to hide the event from every rule. So
 * - invalid UTF-8 in a string becomes U+FFFD per byte, and "\u0000" and lone surrogate
 *   escapes ("\ud800", as Python's surrogateescape writes raw bytes) become U+FFFD
 *   (KX_M_EVENTS_SANITIZED);
 * - the limits below only cut the part they concern and set a bit in ev->limits
 *   (KX_EV_LIMIT_*; decoder.c counts and logs them): a container nested deeper than
 *   KX_DECODE_MAX_DEPTH becomes one field holding its raw JSON text, a field whose flattened
 *   name reaches KX_DECODE_NAME_MAX bytes is dropped with its subtree, fields past
 *   KX_DECODE_MAX_FIELDS are dropped, and a number beyond int64 or double range is kept as its
 *   text but flagged, because comparisons read it as a rounded (or infinite) double.
 *
 * Memory: field values must be NUL-terminated (event.h; detect's strtod relies on it) and the
 * raw bytes are not, so each value is copied into the event's arena: a string without escapes
 * is one memcpy, others are decoded straight into their arena slot (their exact length is
 * known from the validating pass). A field's name and value share one arena allocation, and
 * consecutive fields with the same name (array elements) share the name. Names are built in
 * one buffer on the stack, the scanner is a loop with an explicit container stack (so 10 MB
 * of '[' cannot exhaust the C stack), and that stack lives in the scan state up to 4096
 * levels and in the arena beyond. So decoding allocates nothing once the arena and the
 * event's field array have grown to their working size.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "decode/decode_int.h"
#include "klaxon/metrics.h"

typedef unsigned char uchar;

/* The name length of a value whose fields are not emitted: under a name that is too long,
 * inside a subtree kept as raw text, or in a top-level value that is not an object. */
#define NO_NAME SIZE_MAX
/* Container kinds the scan state keeps inline (bits): deeper documents grow into the arena. */
#define KINDS_INLINE 64

typedef struct scan {
    kx_event *ev;
    const uchar *end;
    size_t nfields;
    size_t bad;        /* invalid UTF-8 bytes seen in strings so far */
    uint32_t limits;   /* KX_EV_LIMIT_* */
    bool sanitized;    /* some U+FFFD was put in */
    const char *cname; /* arena copy of name[0..cname_len), NULL after the name changed */
    size_t cname_len;
    uint64_t *kinds; /* bit d: the container at depth d+1 is an array */
    size_t kinds_cap;
    /* parent[d]: the name length that members of the container at depth d start from */
    size_t parent[KX_DECODE_MAX_DEPTH + 1];
    uint64_t kinds_inline[KINDS_INLINE];
    char name[KX_DECODE_NAME_MAX];
} scan;

static inline const uchar *skip_ws(const uchar *p, const uchar *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* Bytes a string copies as they are: printable ASCII but the quote and the backslash. */
static inline bool plain_byte(uchar c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* The end of the run of plain bytes at p. Strings in logs are mostly plain runs, so eight
 * bytes are tested at once: a byte below 0x20 ((x - 0x20) borrows into its top bit while
 * x's is clear), a quote or backslash (a zero after the xor, same test), or a top bit set.
 * A borrow only carries upwards from a byte that really is special, so the lowest flagged
 * byte is the first special one (the first in memory on a little-endian machine). */
static inline const uchar *plain_run(const uchar *p, const uchar *end)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t v, q, b, m;
        memcpy(&v, p, 8);
        q = v ^ (ones * '"');
        b = v ^ (ones * '\\');
        m = (((v - ones * 0x20) & ~v) | ((q - ones) & ~q) | ((b - ones) & ~b) | v) & high;
        if (m) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return p + (__builtin_ctzll(m) >> 3);
#else
            break;
#endif
        }
        p += 8;
    }
    while (p < end && plain_byte(*p))
        p++;
    return p;
}

/* The value of the 4 hex digits at p (avail bytes there), or -1. */
static long hex4(const uchar *p, size_t avail)
{
    if (avail < 4)
        return -1;
    long v = 0;
    for (int k = 0; k < 4; k++) {
        uchar c = p[k];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* At a "\u" escape (p points at the backslash, end - p >= 6 and its hex checked): the code
 * point it stands for, how many bytes of input it takes (6, or 12 for a surrogate pair), and
 * 0xFFFD for "\u0000" and lone surrogates. */
static long u_escape(const uchar *p, const uchar *end, size_t *used, bool *replaced)
{
    long cp = hex4(p + 2, 4);
    *used = 6;
    *replaced = false;
    if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 12 && p[6] == '\\' && p[7] == 'u') {
        long lo = hex4(p + 8, 4);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            *used = 12;
            return 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
    }
    if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
        *replaced = true;
        return 0xFFFD;
    }
    return cp;
}

static inline size_t utf8_len(long cp)
{
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static char *utf8_put(char *o, long cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/*
 * Validates the string body at p (just after the opening quote). Returns the closing quote,
 * or NULL when the string is malformed (unterminated, a raw control character, a bad escape).
 * *dlen is the decoded length; *plain says the decoded bytes are the raw bytes (no escape, no
 * invalid UTF-8), so one memcpy copies it. str_decode writes exactly what this measures: keep
 * the two in step.
 */
static const uchar *str_scan(scan *s, const uchar *p, size_t *dlen, bool *plain)
{
    const uchar *end = s->end;
    size_t n = 0;
    bool pl = true;
    for (;;) {
        const uchar *q = plain_run(p, end);
        n += (size_t)(q - p);
        p = q;
        if (p == end)
            return NULL;
        uchar c = *p;
        if (c == '"') {
            *dlen = n;
            *plain = pl;
            return p;
        }
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            pl = false;
            if (end - p < 2)
                return NULL;
            switch (p[1]) {
            case '"':
            case '\\':
            case '/':
            case 'b':
            case 'f':
            case 'n':
            case 'r':
            case 't':
                n++;
                p += 2;
                continue;
            case 'u':
                break;
            default:
                return NULL;
            }
            if (hex4(p + 2, (size_t)(end - p - 2)) < 0)
                return NULL;
            size_t used;
            bool replaced;
            long cp = u_escape(p, end, &used, &replaced);
            s->sanitized |= replaced;
            n += utf8_len(cp);
            p += used;
            continue;
        }
        size_t l = kx_utf8_seq_len(p, (size_t)(end - p));
        if (l) {
            n += l;
            p += l;
            continue;
        }
        /* An invalid byte: U+FFFD shows the damage and keeps the value valid UTF-8. */
        pl = false;
        s->sanitized = true;
        s->bad++;
        n += 3;
        p++;
    }
}

/* Writes the decoded body of a string that str_scan accepted ([p, close)) to o. */
static void str_decode(const uchar *p, const uchar *close, char *o)
{
    while (p < close) {
        const uchar *q = plain_run(p, close);
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        p = q;
        if (p == close)
            break;
        if (*p == '\\') {
            char c;
            switch (p[1]) {
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                size_t used;
                bool replaced;
                o = utf8_put(o, u_escape(p, close, &used, &replaced));
                p += used;
                continue;
            }
            default: /* " \ / */
                c = (char)p[1];
                break;
            }
            *o++ = c;
            p += 2;
            continue;
        }
        size_t l = kx_utf8_seq_len(p, (size_t)(close - p));
        if (l) {
            memcpy(o, p, l);
            o += l;
            p += l;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
}

/* The end of the number at p (RFC 8259: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), or
 * NULL. */
static const uchar *num_scan(const uchar *p, const uchar *end)
{
    if (p < end && *p == '-')
        p++;
    if (p == end || *p < '0' || *p > '9')
        return NULL;
    if (*p++ != '0')
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    if (p < end && *p == '.') {
        if (++p == end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    return p;
}

/* Adds a field under name[0..name_len). value NULL: the value is vlen bytes the caller
 * writes into *buf (NUL already placed); otherwise value outlives the event (a literal).
 * Past the field cap the field is dropped (*buf NULL) and the limit noted. 0 or -ENOMEM. */
static int field(scan *s, size_t name_len, const char *value, size_t vlen, kx_val_type type,
                 char **buf)
{
    *buf = NULL;
    if (s->nfields >= KX_DECODE_MAX_FIELDS) {
        s->limits |= KX_EV_LIMIT_FIELDS;
        return 0;
    }
    bool new_name = !s->cname || s->cname_len != name_len;
    size_t need = (new_name ? name_len + 1 : 0) + (value ? 0 : vlen + 1);
    char *mem = NULL;
    if (need && !(mem = kx_arena_alloc(&s->ev->arena, need)))
        return -ENOMEM;
    if (new_name) {
        memcpy(mem, s->name, name_len);
        mem[name_len] = '\0';
        s->cname = mem;
        s->cname_len = name_len;
        mem += name_len + 1;
    }
    if (!value) {
        mem[vlen] = '\0';
        value = *buf = mem;
    }
    int rc = kx_event_add_ref(s->ev, s->cname, name_len, value, vlen, type);
    if (rc)
        return rc == -E2BIG ? -ENOMEM : rc;
    s->nfields++;
    return 0;
}

/* Marks the container at depth d (0-based) as an array or an object. 0 or -ENOMEM. */
static int set_kind(scan *s, size_t d, bool array)
{
    if (d >= s->kinds_cap) {
        /* Deeper than ever in this event: the stack moves to the arena (a document this
         * deep is a limit case already; the old copy is dropped with the arena). */
        size_t cap = s->kinds_cap * 2;
        uint64_t *k = kx_arena_alloc(&s->ev->arena, cap / 8);
        if (!k)
            return -ENOMEM;
        memcpy(k, s->kinds, s->kinds_cap / 8);
        s->kinds = k;
        s->kinds_cap = cap;
    }
    uint64_t bit = (uint64_t)1 << (d % 64);
    if (array)
        s->kinds[d / 64] |= bit;
    else
        s->kinds[d / 64] &= ~bit;
    return 0;
}

static inline bool is_array(const scan *s, size_t d)
{
    return (s->kinds[d / 64] >> (d % 64)) & 1;
}

/* The raw text of a subtree kept whole, [b, e), as a field: bad invalid UTF-8 bytes in it
 * become U+FFFD like everywhere else; escapes stay as written (it is JSON text). */
static int raw_field(scan *s, size_t name_len, const uchar *b, const uchar *e, size_t bad)
{
    char *o;
    int rc = field(s, name_len, NULL, (size_t)(e - b) + 2 * bad, KX_VAL_STR, &o);
    if (rc || !o)
        return rc;
    if (!bad) {
        memcpy(o, b, (size_t)(e - b));
        return 0;
    }
    while (b < e) {
        size_t l = kx_utf8_seq_len(b, (size_t)(e - b));
        if (l) {
            memcpy(o, b, l);
            o += l;
            b += l;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            b++;
        }
    }
    return 0;
}

#define BAD (-EINVAL)

/*
 * The scanner: one loop over the document with an explicit container stack. name_len is the
 * name of the value about to be read; depth counts the open containers (the top-level object
 * is depth 1). Returns 0, BAD or -ENOMEM; *is_object says the top-level value is an object.
 */
static int parse(scan *s, const uchar *p, bool *is_object)
{
    const uchar *end = s->end;
    size_t depth = 0, name_len;
    /* The subtree kept as raw text: its depth (0 = none), start, name and s->bad at start. */
    size_t raw_depth = 0, raw_name = 0, raw_bad = 0;
    const uchar *raw_start = NULL;
    const uchar *close;
    size_t dlen;
    bool plain;
    char *o;
    int rc;

    p = skip_ws(p, end);
    *is_object = p < end && *p == '{';
    name_len = *is_object ? 0 : NO_NAME;

value:
    p = skip_ws(p, end);
    if (p == end)
        return BAD;
    switch (*p) {
    case '{':
    case '[': {
        bool array = *p == '[';
        if (depth == KX_DECODE_MAX_DEPTH && name_len != NO_NAME) {
            s->limits |= KX_EV_LIMIT_DEPTH;
            raw_depth = depth + 1;
            raw_start = p;
            raw_name = name_len;
            raw_bad = s->bad;
            name_len = NO_NAME;
        }
        if ((rc = set_kind(s, depth, array)))
            return rc;
        depth++;
        if (depth <= KX_DECODE_MAX_DEPTH)
            s->parent[depth] = name_len;
        p = skip_ws(p + 1, end);
        if (p == end)
            return BAD;
        if (*p == (array ? ']' : '}')) {
            p++;
            goto closed;
        }
        if (array)
            goto value; /* elements repeat the array's name */
        goto key;
    }
    case '"':
        if (!(close = str_scan(s, p + 1, &dlen, &plain)))
            return BAD;
        if (name_len != NO_NAME) {
            if ((rc = field(s, name_len, NULL, dlen, KX_VAL_STR, &o)))
                return rc;
            if (o && plain)
                memcpy(o, p + 1, dlen);
            else if (o)
                str_decode(p + 1, close, o);
        }
        p = close + 1;
        break;
    case 't':
    case 'f':
    case 'n': {
        static const char *const lits[] = {"true", "false", "null"};
        size_t k = *p == 't' ? 0 : *p == 'f' ? 1 : 2;
        size_t l = strlen(lits[k]);
        if ((size_t)(end - p) < l || memcmp(p, lits[k], l) != 0)
            return BAD;
        if (name_len != NO_NAME && (rc = k == 2 ? field(s, name_len, "", 0, KX_VAL_NULL, &o)
                                                : field(s, name_len, lits[k], l, KX_VAL_BOOL, &o)))
            return rc;
        p += l;
        break;
    }
    default:
        if (!(close = num_scan(p, end)))
            return BAD;
        if (name_len != NO_NAME) {
            size_t n = (size_t)(close - p);
            if ((rc = field(s, name_len, NULL, n, KX_VAL_NUM, &o)))
                return rc;
            if (o) {
                memcpy(o, p, n);
                if (!kx_json_number_in_range(o, n))
                    s->limits |= KX_EV_LIMIT_NUMBER;
            }
        }
        p = close;
        break;
    }

next: /* after a value: a separator, the end of its container, or the end of the document */
    if (depth == 0)
        goto done;
    p = skip_ws(p, end);
    if (p == end)
        return BAD;
    if (*p == ',') {
        p = skip_ws(p + 1, end);
        if (!is_array(s, depth - 1))
            goto key;
        name_len = depth <= KX_DECODE_MAX_DEPTH ? s->parent[depth] : NO_NAME;
        goto value;
    }
    if (*p != (is_array(s, depth - 1) ? ']' : '}'))
        return BAD;
    p++;
closed:
    if (depth-- == raw_depth) {
        raw_depth = 0;
        if ((rc = raw_field(s, raw_name, raw_start, p, s->bad - raw_bad)))
            return rc;
    }
    goto next;

key: /* p at a member's key, whitespace skipped */
    if (p == end || *p != '"' || !(close = str_scan(s, p + 1, &dlen, &plain)))
        return BAD;
    {
        size_t parent = depth <= KX_DECODE_MAX_DEPTH ? s->parent[depth] : NO_NAME;
        size_t sep = parent ? 1 : 0;
        if (parent == NO_NAME) {
            name_len = NO_NAME;
        } else if (parent + sep + dlen >= KX_DECODE_NAME_MAX) {
            /* Cutting the name could forge another field's name; dropping only this member
             * keeps every other field. */
            s->limits |= KX_EV_LIMIT_KEY;
            name_len = NO_NAME;
        } else {
            if (sep)
                s->name[parent] = '.';
            if (plain)
                memcpy(s->name + parent + sep, p + 1, dlen);
            else
                str_decode(p + 1, close, s->name + parent + sep);
            name_len = parent + sep + dlen;
            s->cname = NULL;
        }
    }
    p = skip_ws(close + 1, end);
    if (p == end || *p != ':')
        return BAD;
    p++;
    goto value;

done:
    return skip_ws(p, end) == end ? 0 : BAD;
}

int kx__json_decode(const char *raw, size_t len, kx_event *ev, const char **why)
{
    scan s;
    bool is_object;

    s.ev = ev;
    s.end = (const uchar *)raw + len;
    s.nfields = 0;
    s.bad = 0;
    s.limits = 0;
    s.sanitized = false;
    s.cname = NULL;
    s.cname_len = 0;
    s.kinds = s.kinds_inline;
    s.kinds_cap = KINDS_INLINE * 64;
    int rc = parse(&s, (const uchar *)raw, &is_object);
    if (rc == BAD) {
        *why = "bad JSON";
        return rc;
    }
    if (rc) {
        *why = "out of memory";
        return rc;
    }
    if (s.sanitized)
        kx_metric_inc(KX_M_EVENTS_SANITIZED);
    if (!is_object) {
        *why = "not a JSON object";
        return -EINVAL;
    }
    ev->limits |= s.limits;
    return 0;
}
