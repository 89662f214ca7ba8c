/*
 * Field conditions: `field|mod|mod: value(s)` compiled at load time, matched per event.
 *
 * Load time turns each YAML value into a kx__value: string values become one or more
 * kx__pat (literal, prefix, suffix, substring, or a wildcard token list), lowercased once
 * unless |cased so the match is a plain byte loop with ASCII folding of the event side only;
 * `re` values become kx__regex objects (regex.c: Hyperscan or PCRE2); numbers, CIDR
 * networks and field references are parsed once. Value modifiers are applied in the order
 * written, as Sigma says; the shape modifiers contains/startswith/endswith only add wildcards
 * and so commute with everything else.
 *
 * Match time allocates nothing: the event's fields are walked with kx_event_next, patterns
 * compare lengths they already know, and regexes run with the ruleset's regex runtime.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "detect_int.h"
#include "klaxon/decode.h"
#include "klaxon/tz.h"

/* ---- load time ---- */

enum { XF_WIDE, XF_UTF16BE, XF_UTF16, XF_B64, XF_B64OFF, XF_WINDASH };

typedef struct mods {
    const char *kind; /* the one type modifier given (contains, re, exists, ...), or NULL */
    bool contains, startswith, endswith, re, exists, cidr, fieldref, num;
    bool all, cased, neq;
    bool expand;  /* %name% placeholders stand for the values of list `name` (lists.c) */
    int timepart; /* KX__TP_*: compare a part of the field's time */
    uint32_t re_flags;
    kx_cmp cmp;
    int xf[8];
    size_t nxf;
} mods;

/* One string value while it is being transformed: bytes plus a kind per byte. */
typedef struct chars {
    char *b;
    uint8_t *k; /* kx__tok_kind of each byte (LIT for literals) */
    size_t n;
} chars;

static bool seg_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static int set_kind(kx__ctx *c, const kx_yaml_node *key, mods *m, const char *kind)
{
    if (m->kind && strcmp(m->kind, kind) != 0)
        return kx_yaml_err(c->err, c->file, key, "modifier \"%s\" cannot be combined with \"%s\"",
                           kind, m->kind);
    m->kind = kind;
    return 0;
}

static int parse_mods(kx__ctx *c, const kx_yaml_node *key, size_t *field_len, mods *m)
{
    memset(m, 0, sizeof(*m));
    const char *s = key->str;
    const char *bar = memchr(s, '|', key->len);
    *field_len = bar ? (size_t)(bar - s) : key->len;
    const char *end = s + key->len;
    const char *p = bar;
    while (p && p < end) {
        const char *seg = p + 1;
        const char *next = memchr(seg, '|', (size_t)(end - seg));
        size_t n = (size_t)((next ? next : end) - seg);
        p = next;
        int rc = 0;
        if (n == 0)
            return kx_yaml_err(c->err, c->file, key, "empty modifier in \"%s\"", key->str);
        if (seg_is(seg, n, "contains"))
            rc = set_kind(c, key, m, "contains"), m->contains = true;
        else if (seg_is(seg, n, "startswith"))
            rc = set_kind(c, key, m, "startswith"), m->startswith = true;
        else if (seg_is(seg, n, "endswith"))
            rc = set_kind(c, key, m, "endswith"), m->endswith = true;
        else if (seg_is(seg, n, "re"))
            rc = set_kind(c, key, m, "re"), m->re = true;
        else if (seg_is(seg, n, "exists"))
            rc = set_kind(c, key, m, "exists"), m->exists = true;
        else if (seg_is(seg, n, "cidr"))
            rc = set_kind(c, key, m, "cidr"), m->cidr = true;
        else if (seg_is(seg, n, "fieldref"))
            rc = set_kind(c, key, m, "fieldref"), m->fieldref = true;
        else if (seg_is(seg, n, "lt") || seg_is(seg, n, "lte") || seg_is(seg, n, "gt") ||
                 seg_is(seg, n, "gte")) {
            rc = set_kind(c, key, m, "lt/lte/gt/gte");
            m->num = true;
            m->cmp = seg_is(seg, n, "lt")    ? KX_CMP_LT
                     : seg_is(seg, n, "lte") ? KX_CMP_LTE
                     : seg_is(seg, n, "gt")  ? KX_CMP_GT
                                             : KX_CMP_GTE;
        } else if (seg_is(seg, n, "i") || seg_is(seg, n, "m") || seg_is(seg, n, "s")) {
            if (!m->re)
                return kx_yaml_err(c->err, c->file, key,
                                   "modifier \"%.*s\" is only valid after \"re\"", (int)n, seg);
            m->re_flags |= seg[0] == 'i'   ? PCRE2_CASELESS
                           : seg[0] == 'm' ? PCRE2_MULTILINE
                                           : PCRE2_DOTALL;
        } else if (seg_is(seg, n, "all"))
            m->all = true;
        else if (seg_is(seg, n, "cased"))
            m->cased = true;
        else if (seg_is(seg, n, "neq"))
            m->neq = true;
        else if (seg_is(seg, n, "expand"))
            m->expand = true;
        else if (seg_is(seg, n, "minute") || seg_is(seg, n, "hour") || seg_is(seg, n, "day") ||
                 seg_is(seg, n, "week") || seg_is(seg, n, "month") || seg_is(seg, n, "year")) {
            if (m->timepart)
                return kx_yaml_err(c->err, c->file, key,
                                   "one time-part modifier (minute, hour, day, week, month, "
                                   "year) per field");
            m->timepart = seg_is(seg, n, "minute")  ? KX__TP_MINUTE
                          : seg_is(seg, n, "hour")  ? KX__TP_HOUR
                          : seg_is(seg, n, "day")   ? KX__TP_DAY
                          : seg_is(seg, n, "week")  ? KX__TP_WEEK
                          : seg_is(seg, n, "month") ? KX__TP_MONTH
                                                    : KX__TP_YEAR;
        } else {
            int xf = seg_is(seg, n, "wide") || seg_is(seg, n, "utf16le") ? XF_WIDE
                     : seg_is(seg, n, "utf16be")                         ? XF_UTF16BE
                     : seg_is(seg, n, "utf16")                           ? XF_UTF16
                     : seg_is(seg, n, "base64")                          ? XF_B64
                     : seg_is(seg, n, "base64offset")                    ? XF_B64OFF
                     : seg_is(seg, n, "windash")                         ? XF_WINDASH
                                                                         : -1;
            if (xf < 0)
                return kx_yaml_err(c->err, c->file, key, "unknown modifier \"%.*s\"", (int)n, seg);
            if (m->nxf == KX_ARRAY_LEN(m->xf))
                return kx_yaml_err(c->err, c->file, key, "too many modifiers");
            m->xf[m->nxf++] = xf;
        }
        if (rc)
            return rc;
    }
    /* A time part is a number: compared for equality, or by lt/lte/gt/gte after it. */
    if (m->timepart && ((m->kind && !m->num) || m->nxf || m->expand))
        return kx_yaml_err(c->err, c->file, key,
                           "a time-part modifier takes a number, compared as is or with "
                           "lt/lte/gt/gte: not with \"%s\"",
                           m->kind && !m->num ? m->kind
                           : m->nxf           ? "an encoding"
                                              : "expand");
    if (m->timepart && !m->num) {
        m->num = true;
        m->cmp = m->neq ? KX_CMP_NEQ : KX_CMP_EQ;
        m->neq = false; /* compared on the part: a value that is no time never matches */
    }
    bool stringy = !m->re && !m->exists && !m->cidr && !m->fieldref && !m->num;
    if (m->nxf && !stringy)
        return kx_yaml_err(c->err, c->file, key,
                           "modifier \"%s\" cannot be combined with encoding or windash "
                           "modifiers",
                           m->kind);
    if (m->neq && m->exists)
        return kx_yaml_err(c->err, c->file, key,
                           "modifier \"neq\" cannot be combined with \"exists\"");
    return 0;
}

static int chars_alloc(kx__ctx *c, chars *ch, size_t n)
{
    ch->b = malloc(n + 1);
    ch->k = malloc(n + 1);
    ch->n = 0;
    if (!ch->b || !ch->k) {
        free(ch->b);
        free(ch->k);
        ch->b = NULL;
        ch->k = NULL;
        return kx_err_set(c->err, c->file, 0, 0, "out of memory"), -ENOMEM;
    }
    return 0;
}

static void chars_free(chars *ch)
{
    free(ch->b);
    free(ch->k);
    ch->b = NULL;
    ch->k = NULL;
}

/* Sigma escapes: \* \? \\ are literal *, ? and \; any other backslash is itself. */
static int unescape(kx__ctx *c, const char *s, size_t n, chars *out)
{
    if (chars_alloc(c, out, n))
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        uint8_t k = KX__TOK_LIT;
        if (ch == '\\' && i + 1 < n && (s[i + 1] == '*' || s[i + 1] == '?' || s[i + 1] == '\\'))
            ch = s[++i];
        else if (ch == '*')
            k = KX__TOK_STAR;
        else if (ch == '?')
            k = KX__TOK_ONE;
        out->b[out->n] = ch;
        out->k[out->n++] = k;
    }
    return 0;
}

static bool all_literal(const chars *ch)
{
    for (size_t i = 0; i < ch->n; i++)
        if (ch->k[i] != KX__TOK_LIT)
            return false;
    return true;
}

static bool is_word(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch >= 0x80;
}

/* pySigma's windash: a - or / that starts a word ("\B[-/]\b") may be any dash or a slash. */
static void windash(chars *ch)
{
    for (size_t i = 0; i < ch->n; i++) {
        if (ch->k[i] != KX__TOK_LIT || (ch->b[i] != '-' && ch->b[i] != '/'))
            continue;
        bool before_word = i > 0 && ch->k[i - 1] == KX__TOK_LIT && is_word((uint8_t)ch->b[i - 1]);
        bool after_word =
            i + 1 < ch->n && ch->k[i + 1] == KX__TOK_LIT && is_word((uint8_t)ch->b[i + 1]);
        if (!before_word && after_word)
            ch->k[i] = KX__TOK_DASH;
    }
}

/* UTF-8 to UTF-16 (LE, BE, or LE with BOM); invalid bytes pass through as code points. */
static int utf16(kx__ctx *c, chars *ch, int xf)
{
    chars o;
    if (chars_alloc(c, &o, ch->n * 4 + 2))
        return -ENOMEM;
    if (xf == XF_UTF16) {
        o.b[o.n++] = (char)0xFF;
        o.b[o.n++] = (char)0xFE;
    }
    const uint8_t *s = (const uint8_t *)ch->b;
    for (size_t i = 0; i < ch->n;) {
        uint32_t cp = s[i];
        size_t len = 1;
        if (cp >= 0xF0 && i + 3 < ch->n && (s[i + 1] & 0xC0) == 0x80)
            cp = ((cp & 0x07) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) |
                 (s[i + 3] & 0x3Fu),
            len = 4;
        else if (cp >= 0xE0 && i + 2 < ch->n && (s[i + 1] & 0xC0) == 0x80)
            cp = ((cp & 0x0F) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu), len = 3;
        else if (cp >= 0xC0 && i + 1 < ch->n && (s[i + 1] & 0xC0) == 0x80)
            cp = ((cp & 0x1F) << 6) | (s[i + 1] & 0x3Fu), len = 2;
        i += len;
        uint16_t units[2];
        size_t nu = 1;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            units[0] = (uint16_t)(0xD800 | (cp >> 10));
            units[1] = (uint16_t)(0xDC00 | (cp & 0x3FF));
            nu = 2;
        } else {
            units[0] = (uint16_t)cp;
        }
        for (size_t u = 0; u < nu; u++) {
            char lo = (char)(units[u] & 0xFF), hi = (char)(units[u] >> 8);
            o.b[o.n++] = xf == XF_UTF16BE ? hi : lo;
            o.b[o.n++] = xf == XF_UTF16BE ? lo : hi;
        }
    }
    memset(o.k, KX__TOK_LIT, o.n);
    chars_free(ch);
    *ch = o;
    return 0;
}

static size_t b64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    return o;
}

/* base64 (one variant) or base64offset (three, as pySigma computes them: the value shifted
 * by 0, 1 and 2 bytes, with the characters that depend on the neighbours cut off). */
static int encode_b64(kx__ctx *c, chars *vars, size_t *nvars, bool offset)
{
    size_t nin = *nvars, nout = 0;
    chars out[9] = {{0}};
    for (size_t v = 0; v < nin; v++) {
        size_t n = vars[v].n;
        for (size_t shift = 0; shift < (offset ? 3u : 1u); shift++) {
            uint8_t *tmp = malloc(n + 3);
            chars *o = &out[nout];
            if (!tmp || chars_alloc(c, o, (n + 5) / 3 * 4 + 4)) {
                free(tmp);
                for (size_t j = 0; j < nout; j++)
                    chars_free(&out[j]);
                return kx_err_set(c->err, c->file, 0, 0, "out of memory"), -ENOMEM;
            }
            memset(tmp, ' ', shift);
            memcpy(tmp + shift, vars[v].b, n);
            size_t len = b64(tmp, n + shift, o->b);
            free(tmp);
            if (offset) {
                static const size_t start[3] = {0, 2, 3};
                static const size_t cut[3] = {0, 3, 2};
                size_t s = start[shift], e = cut[(n + shift) % 3];
                if (s + e > len)
                    s = len, e = 0;
                memmove(o->b, o->b + s, len - s - e);
                len = len - s - e;
            }
            o->n = len;
            memset(o->k, KX__TOK_LIT, len);
            nout++;
        }
        chars_free(&vars[v]);
    }
    memcpy(vars, out, nout * sizeof(out[0]));
    *nvars = nout;
    return 0;
}

static void lower_ascii(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 'A' && s[i] <= 'Z')
            s[i] = (char)(s[i] + 32);
}

/* Adds a leading and/or trailing * (no-op when the value already has one there). */
static int wrap(kx__ctx *c, chars *ch, bool lead, bool trail)
{
    bool add_l = lead && !(ch->n && ch->k[0] == KX__TOK_STAR);
    bool add_t = trail && !(ch->n && ch->k[ch->n - 1] == KX__TOK_STAR);
    if (!add_l && !add_t)
        return 0;
    chars o;
    if (chars_alloc(c, &o, ch->n + 2))
        return -ENOMEM;
    if (add_l)
        o.b[o.n] = '*', o.k[o.n++] = KX__TOK_STAR;
    memcpy(o.b + o.n, ch->b, ch->n);
    memcpy(o.k + o.n, ch->k, ch->n);
    o.n += ch->n;
    if (add_t)
        o.b[o.n] = '*', o.k[o.n++] = KX__TOK_STAR;
    chars_free(ch);
    *ch = o;
    return 0;
}

static int pat_compile(kx__ctx *c, const chars *ch, bool cased, kx__pat *p)
{
    size_t n = ch->n;
    bool lead = n && ch->k[0] == KX__TOK_STAR;
    bool trail = n > 1 && ch->k[n - 1] == KX__TOK_STAR;
    size_t lo = lead, hi = n - trail;
    bool plain = true, stars_only = n > 0;
    for (size_t i = 0; i < n; i++) {
        if (ch->k[i] != KX__TOK_STAR)
            stars_only = false;
        if (i >= lo && i < hi && ch->k[i] != KX__TOK_LIT)
            plain = false;
    }
    if (stars_only) {
        p->kind = KX__PAT_ANY;
        return 0;
    }
    if (plain) {
        char *s = kx__strndup(c, ch->b + lo, hi - lo);
        if (!s)
            return -ENOMEM;
        if (!cased)
            lower_ascii(s, hi - lo);
        p->s = s;
        p->len = hi - lo;
        p->kind = lead && trail ? KX__PAT_CONTAINS
                  : lead        ? KX__PAT_ENDS
                  : trail       ? KX__PAT_STARTS
                                : KX__PAT_EQ;
        return 0;
    }
    /* General wildcard pattern: runs of literals become one token, runs of * one *. */
    size_t nt = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || ch->k[i] != KX__TOK_LIT || ch->k[i - 1] != ch->k[i])
            nt++;
    kx__tok *toks = kx__alloc(c, nt * sizeof(*toks));
    char *s = kx__strndup(c, ch->b, n);
    if (!toks || !s)
        return -ENOMEM;
    if (!cased)
        lower_ascii(s, n);
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t k = ch->k[i];
        if (k == KX__TOK_LIT && t && toks[t - 1].kind == KX__TOK_LIT && ch->k[i - 1] == k) {
            toks[t - 1].len++;
            continue;
        }
        if (k == KX__TOK_STAR && t && toks[t - 1].kind == KX__TOK_STAR)
            continue;
        toks[t].kind = (kx__tok_kind)k;
        toks[t].s = s + i;
        toks[t].len = 1;
        t++;
    }
    p->kind = KX__PAT_GLOB;
    p->toks = toks;
    p->ntoks = t;
    return 0;
}

static int compile_string(kx__ctx *c, const mods *m, bool keyword, const kx_yaml_node *val,
                          kx__value *v)
{
    chars vars[9] = {{0}};
    size_t nvars = 1;
    int rc = unescape(c, val->str, val->len, &vars[0]);
    if (rc)
        return rc;
    for (size_t x = 0; x < m->nxf && !rc; x++) {
        int xf = m->xf[x];
        if (xf == XF_WINDASH) {
            for (size_t i = 0; i < nvars; i++)
                windash(&vars[i]);
            continue;
        }
        for (size_t i = 0; i < nvars && !rc; i++)
            if (!all_literal(&vars[i]))
                rc = kx_yaml_err(c->err, c->file, val,
                                 "%s cannot encode a value with wildcards: escape * and ? "
                                 "with a backslash",
                                 xf == XF_B64 || xf == XF_B64OFF ? "base64" : "utf16");
        if (rc)
            break;
        if (xf == XF_B64 || xf == XF_B64OFF) {
            if (nvars * (xf == XF_B64OFF ? 3 : 1) > KX_ARRAY_LEN(vars))
                rc = kx_yaml_err(c->err, c->file, val, "too many encoding modifiers");
            else
                rc = encode_b64(c, vars, &nvars, xf == XF_B64OFF);
        } else {
            for (size_t i = 0; i < nvars && !rc; i++)
                rc = utf16(c, &vars[i], xf);
        }
    }
    bool lead = m->contains || m->endswith || (keyword && !m->startswith);
    bool trail = m->contains || m->startswith || (keyword && !m->endswith);
    kx__pat *pats = rc ? NULL : kx__alloc(c, nvars * sizeof(*pats));
    if (!rc && !pats)
        rc = -ENOMEM;
    for (size_t i = 0; i < nvars && !rc; i++) {
        rc = wrap(c, &vars[i], lead, trail);
        if (!rc)
            rc = pat_compile(c, &vars[i], m->cased, &pats[i]);
    }
    for (size_t i = 0; i < nvars; i++)
        chars_free(&vars[i]);
    if (rc)
        return rc;
    v->kind = KX__VAL_PAT;
    v->pats = pats;
    v->npats = nvars;
    return 0;
}

static int compile_re(kx__ctx *c, const mods *m, const kx_yaml_node *key, const kx_yaml_node *val,
                      kx__value *v)
{
    char msg[200];
    size_t off = 0;
    kx__regex_opts o = {
        .flags = m->re_flags, .where = key->str, .rule = c->rule, .fail_closed = c->re_fail_closed};
    kx__regex *re = NULL;
    int rc = kx__regex_create(c->rx, val->str, val->len, &o, &re, msg, sizeof(msg), &off);
    if (rc == -EINVAL)
        return kx_yaml_err(c->err, c->file, val, "invalid regular expression at offset %zu: %s",
                           off, msg);
    if (rc)
        return kx_err_set(c->err, c->file, 0, 0, "%s", msg), rc;
    if ((rc = kx__res_add_regex(c, re)))
        return rc;
    /* For the analyst (lint only: a load would log it for every such rule on every reload):
     * a pattern Hyperscan cannot answer runs on PCRE2, whose time depends on the input. */
    if (c->dg && !kx__regex_linear(re))
        kx__warn(c, c->file, val->line, val->col,
                 "this regular expression is not answered in linear time: it runs on PCRE2 "
                 "under limits and may be given up on long values (docs/rules.md, \"Regular "
                 "expressions\")");
    v->kind = KX__VAL_RE;
    v->re = re;
    return 0;
}

static int compile_cidr(kx__ctx *c, const kx_yaml_node *val, kx__value *v)
{
    char buf[64];
    if (val->len >= sizeof(buf))
        goto bad;
    memcpy(buf, val->str, val->len + 1);
    char *slash = strchr(buf, '/');
    long prefix = -1;
    if (slash) {
        char *end;
        *slash = '\0';
        errno = 0;
        prefix = strtol(slash + 1, &end, 10);
        if (errno || end == slash + 1 || *end || prefix < 0)
            goto bad;
    }
    if (inet_pton(AF_INET, buf, v->addr) == 1) {
        v->family = AF_INET;
        if (prefix > 32)
            goto bad;
        v->prefix = prefix < 0 ? 32 : (unsigned)prefix;
    } else if (inet_pton(AF_INET6, buf, v->addr) == 1) {
        v->family = AF_INET6;
        if (prefix > 128)
            goto bad;
        v->prefix = prefix < 0 ? 128 : (unsigned)prefix;
    } else {
        goto bad;
    }
    v->kind = KX__VAL_CIDR;
    return 0;
bad:
    return kx_yaml_err(c->err, c->file, val, "invalid CIDR network \"%s\"", val->str);
}

static int compile_value(kx__ctx *c, const mods *m, bool keyword, const kx_yaml_node *key,
                         const kx_yaml_node *val, kx__value *v)
{
    if (val->type != KX_YAML_SCALAR)
        return kx_yaml_err(c->err, c->file, val, "expected a value or a list of values");
    if (!(v->src = kx__strndup(c, val->str, val->len)))
        return -ENOMEM;
    v->cased = m->cased;
    v->negate = m->neq;
    if (keyword && (m->exists || m->cidr || m->num || m->fieldref))
        return kx_yaml_err(c->err, c->file, key, "modifier \"%s\" needs a field name", m->kind);
    if (m->exists) {
        bool b;
        if (kx_yaml_bool(val, c->file, &b, c->err))
            return kx_yaml_err(c->err, c->file, val, "exists expects true or false");
        v->kind = KX__VAL_EXISTS;
        v->exists = b;
        return 0;
    }
    if (kx_yaml_is_null(val)) {
        if (keyword)
            return kx_yaml_err(c->err, c->file, val, "a keyword cannot be null");
        v->kind = KX__VAL_NULL;
        return 0;
    }
    if (m->re)
        return compile_re(c, m, key, val, v);
    if (m->cidr)
        return compile_cidr(c, val, v);
    if (m->num) {
        char *end;
        errno = 0;
        double d = strtod(val->str, &end);
        if (errno || end == val->str || *end || !isfinite(d))
            return kx_yaml_err(c->err, c->file, val, "expected a number, got \"%s\"", val->str);
        v->kind = KX__VAL_NUM;
        v->cmp = m->cmp;
        v->num = d;
        v->timepart = (uint8_t)m->timepart;
        if (m->timepart && !(v->tz = c->time_zone) && kx_tz_get("UTC", &v->tz))
            return kx_yaml_err(c->err, c->file, val, "the UTC zone is not installed (tzdata)");
        return 0;
    }
    if (m->fieldref) {
        v->kind = KX__VAL_FIELDREF;
        v->ref = kx__strndup(c, val->str, val->len);
        return v->ref ? 0 : -ENOMEM;
    }
    return compile_string(c, m, keyword, val, v);
}

/* ---- expand: placeholders ---- */

#define KX__EXPAND_MAX 100000 /* values one field's placeholders may expand to */

typedef struct expansion {
    kx_yaml_node *nodes; /* scalars standing for the expanded values, in the arena */
    size_t n, cap;
} expansion;

static bool name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/* The first placeholder "%name%" in s[0..n): its start, or NULL. */
static const char *placeholder(const char *s, size_t n, size_t *plen)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%')
            continue;
        size_t j = i + 1;
        while (j < n && name_char(s[j]))
            j++;
        if (j < n && s[j] == '%' && j > i + 1) {
            *plen = j + 1 - i;
            return s + i;
        }
    }
    return NULL;
}

static int push_node(kx__ctx *c, expansion *out, const kx_yaml_node *node)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        kx_yaml_node *v = kx__alloc(c, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        if (out->n)
            memcpy(v, out->nodes, out->n * sizeof(*v));
        out->nodes = v;
        out->cap = cap;
    }
    out->nodes[out->n++] = *node;
    return 0;
}

/* Appends every value of `prefix + s` with each placeholder of s replaced by each value of
 * its list (every combination). */
static int expand_into(kx__ctx *c, const kx_yaml_node *item, kx_buf *prefix, const char *s,
                       size_t n, expansion *out)
{
    size_t plen;
    const char *p = placeholder(s, n, &plen);
    size_t mark = prefix->len;
    if (!p) {
        if (kx_buf_append(prefix, s, n))
            return kx_err_set(c->err, c->file, item->line, item->col, "out of memory"), -ENOMEM;
        char *str = kx__strndup(c, prefix->data, prefix->len);
        prefix->len = mark;
        if (!str)
            return -ENOMEM;
        return push_node(c, out,
                         &(kx_yaml_node){.type = KX_YAML_SCALAR,
                                         .line = item->line,
                                         .col = item->col,
                                         .str = str,
                                         .len = strlen(str),
                                         .quoted = true});
    }
    const kx__list *l = kx__list_find(c->lists, p + 1, plen - 2);
    if (!l)
        return kx_yaml_err(c->err, c->file, item,
                           "placeholder %.*s names no list (a file %.*s.list in the rules tree)",
                           (int)plen, p, (int)(plen - 2), p + 1);
    int rc = 0;
    for (size_t i = 0; i < l->n && !rc; i++) {
        prefix->len = mark;
        if (kx_buf_append(prefix, s, (size_t)(p - s)) || kx_buf_puts(prefix, l->vals[i]))
            return kx_err_set(c->err, c->file, item->line, item->col, "out of memory"), -ENOMEM;
        rc = expand_into(c, item, prefix, p + plen, n - (size_t)(p - s) - plen, out);
    }
    prefix->len = mark;
    return rc;
}

/* How many values item expands to (the product of its lists' sizes), counted before any is
 * built: an empty list after large ones must not make the load walk every combination. */
static int count_expansion(kx__ctx *c, const kx_yaml_node *item, size_t *total)
{
    const char *s = item->str;
    size_t n = item->len, plen;
    *total = 1;
    for (const char *p; (p = placeholder(s, n, &plen)) != NULL;) {
        const kx__list *l = kx__list_find(c->lists, p + 1, plen - 2);
        if (!l)
            return kx_yaml_err(c->err, c->file, item,
                               "placeholder %.*s names no list (a file %.*s.list in the rules "
                               "tree)",
                               (int)plen, p, (int)(plen - 2), p + 1);
        /* an empty list makes it nothing, whatever the others hold: no error for them */
        if (l->n == 0 || *total == 0)
            *total = 0;
        else if (*total > (size_t)KX__EXPAND_MAX / l->n)
            *total = (size_t)KX__EXPAND_MAX + 1;
        else
            *total *= l->n;
        n -= (size_t)(p - s) + plen;
        s = p + plen;
    }
    if (*total > KX__EXPAND_MAX)
        return kx_yaml_err(c->err, c->file, item, "placeholders expand to more than %d values",
                           KX__EXPAND_MAX);
    return 0;
}

/* `expand`: the items with their placeholders replaced; an item without one stays as written
 * (null stays null). */
static int expand_items(kx__ctx *c, const kx_yaml_node *const *items, size_t n, expansion *out)
{
    kx_buf prefix;
    kx_buf_init(&prefix, 0);
    int rc = 0;
    size_t sum = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        size_t total = 0, plen;
        if (items[i]->type != KX_YAML_SCALAR)
            rc = kx_yaml_err(c->err, c->file, items[i], "expected a value");
        else if (!placeholder(items[i]->str, items[i]->len, &plen))
            rc = (sum += 1) > KX__EXPAND_MAX ? kx_yaml_err(c->err, c->file, items[i],
                                                           "placeholders expand to more than %d "
                                                           "values",
                                                           KX__EXPAND_MAX)
                                             : push_node(c, out, items[i]);
        else if (!(rc = count_expansion(c, items[i], &total)) && total &&
                 (sum += total) > KX__EXPAND_MAX)
            rc = kx_yaml_err(c->err, c->file, items[i],
                             "placeholders expand to more than %d values", KX__EXPAND_MAX);
        else if (!rc && total)
            rc = expand_into(c, items[i], &prefix, items[i]->str, items[i]->len, out);
    }
    kx_buf_fini(&prefix);
    return rc;
}

/* The live list item names (a Redis-backed list, lists.c), or NULL for any other item. A live
 * list is a set matched by whole value, as it stands when the event comes: the item must be
 * the placeholder alone, under `expand` (and `cased`) only. */
static int live_item(kx__ctx *c, const mods *m, bool keyword, const kx_yaml_node *item,
                     const kx__list **out)
{
    size_t plen;
    *out = NULL;
    const char *p = item->type == KX_YAML_SCALAR ? placeholder(item->str, item->len, &plen) : NULL;
    for (const char *s = item->str; p;
         p = placeholder(p + plen, item->len - (size_t)(p + plen - s), &plen)) {
        const kx__list *l = kx__list_find(c->lists, p + 1, plen - 2);
        if (!l || !l->redis_key)
            continue;
        if (p != s || plen != item->len)
            return kx_yaml_err(c->err, c->file, item,
                               "list %s is read from Redis: it is matched as a whole value, "
                               "write '%%%s%%' alone",
                               l->name, l->name);
        if (keyword || m->kind || m->nxf || m->all || m->neq)
            return kx_yaml_err(c->err, c->file, item,
                               "list %s is read from Redis: it is matched by equality, only "
                               "with |expand (and |cased), on a field",
                               l->name);
        *out = l;
        return 0;
    }
    return 0;
}

static int compile_values(kx__ctx *c, const mods *m, bool keyword, const kx_yaml_node *key,
                          const kx_yaml_node *const *items, size_t n, kx__fcond *f)
{
    if (n == 0)
        return kx_yaml_err(c->err, c->file, key, "empty list of values");
    const kx_yaml_node **expanded = NULL;
    const kx__list **live = NULL;
    const kx_yaml_node **live_src = NULL;
    size_t nlive = 0;
    if (m->expand) {
        /* Live lists become one value each; the other items are expanded here. */
        const kx_yaml_node **rest = kx__alloc(c, n * sizeof(*rest));
        if (!rest || !(live = kx__alloc(c, n * sizeof(*live))) ||
            !(live_src = kx__alloc(c, n * sizeof(*live_src))))
            return -ENOMEM;
        size_t nrest = 0;
        for (size_t i = 0; i < n; i++) {
            int rc = live_item(c, m, keyword, items[i], &live[nlive]);
            if (rc)
                return rc;
            if (live[nlive])
                live_src[nlive++] = items[i];
            else
                rest[nrest++] = items[i];
        }
        expansion x = {0};
        int rc = expand_items(c, rest, nrest, &x);
        if (rc)
            return rc;
        /* An empty list matches nothing: no values (with `all` too: no vacuous truth). */
        if (!(expanded = kx__alloc(c, (x.n ? x.n : 1) * sizeof(*expanded))))
            return -ENOMEM;
        for (size_t i = 0; i < x.n; i++)
            expanded[i] = &x.nodes[i];
        items = expanded;
        n = x.n;
        if (n + nlive == 0) {
            f->vals = kx__alloc(c, sizeof(kx__value));
            f->nvals = 0;
            f->all = false;
            return f->vals ? 0 : -ENOMEM;
        }
    }
    kx__value *vals = kx__alloc(c, (n + nlive) * sizeof(*vals));
    if (!vals)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = compile_value(c, m, keyword, key, items[i], &vals[i]);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < nlive; i++) {
        kx__value *v = &vals[n + i];
        v->kind = KX__VAL_LIST;
        v->list = live[i];
        v->cased = m->cased;
        if (!(v->src = kx__strndup(c, live_src[i]->str, live_src[i]->len)))
            return -ENOMEM;
    }
    f->vals = vals;
    f->nvals = n + nlive;
    f->all = m->all;
    return 0;
}

int kx__fcond_compile(kx__ctx *c, const kx_yaml_node *key, const kx_yaml_node *val, kx__fcond *f)
{
    if (key->type != KX_YAML_SCALAR)
        return kx_yaml_err(c->err, c->file, key, "expected a field name");
    mods m;
    size_t flen;
    int rc = parse_mods(c, key, &flen, &m);
    if (rc)
        return rc;
    bool keyword = flen == 0;
    if (!keyword) {
        char *name = kx__strndup(c, key->str, flen);
        if (!name)
            return -ENOMEM;
        f->field = name;
    }
    if (!(f->key = kx__strndup(c, key->str, key->len)))
        return -ENOMEM;
    if (val->type == KX_YAML_MAP)
        return kx_yaml_err(c->err, c->file, val, "expected a value or a list of values");
    if (val->type == KX_YAML_SEQ)
        return compile_values(c, &m, keyword, key, (const kx_yaml_node *const *)val->vals, val->n,
                              f);
    return compile_values(c, &m, keyword, key, &val, 1, f);
}

int kx__keywords_compile(kx__ctx *c, const kx_yaml_node *const *items, size_t n, kx__fcond *f)
{
    mods m;
    memset(&m, 0, sizeof(m));
    return compile_values(c, &m, true, items[0], items, n, f);
}

/* ---- match time ---- */

static inline unsigned char lc(unsigned char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch;
}

/* s (event side, any case) equals p (pattern, already lowercase) for n bytes. */
static inline bool ci_eq(const char *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lc((unsigned char)s[i]) != (unsigned char)p[i])
            return false;
    return true;
}

static inline bool bytes_eq(const char *s, const char *p, size_t n, bool cased)
{
    return cased ? memcmp(s, p, n) == 0 : ci_eq(s, p, n);
}

static bool find(const char *h, size_t hn, const char *p, size_t pn, bool cased)
{
    if (pn == 0)
        return true;
    if (hn < pn)
        return false;
    if (cased)
        return memmem(h, hn, p, pn) != NULL;
    unsigned char first = (unsigned char)p[0];
    for (size_t i = 0; i + pn <= hn; i++)
        if (lc((unsigned char)h[i]) == first && ci_eq(h + i + 1, p + 1, pn - 1))
            return true;
    return false;
}

/* Bytes the single token t consumes at s[i], or 0 when it does not match there. */
static size_t tok_at(const kx__tok *t, const char *s, size_t n, size_t i, bool cased)
{
    const unsigned char *u = (const unsigned char *)s;
    switch (t->kind) {
    case KX__TOK_LIT:
        return n - i >= t->len && bytes_eq(s + i, t->s, t->len, cased) ? t->len : 0;
    case KX__TOK_ONE: {
        size_t len = u[i] >= 0xF0 ? 4 : u[i] >= 0xE0 ? 3 : u[i] >= 0xC0 ? 2 : 1;
        return len <= n - i ? len : 1;
    }
    case KX__TOK_DASH:
        if (u[i] == '-' || u[i] == '/')
            return 1;
        if (n - i >= 3 && u[i] == 0xE2 && u[i + 1] == 0x80 && u[i + 2] >= 0x93 && u[i + 2] <= 0x95)
            return 3;
        return 0;
    case KX__TOK_STAR:
        break;
    }
    return 0;
}

/* Wildcard match: greedy with backtracking to the last *, which is exact because every other
 * token matches at most one way at a given position. O(len * tokens) worst case. */
static bool glob(const kx__tok *toks, size_t nt, const char *s, size_t n, bool cased)
{
    size_t p = 0, i = 0, star = SIZE_MAX, star_i = 0;
    while (i < n) {
        size_t k;
        if (p < nt && toks[p].kind == KX__TOK_STAR) {
            star = p++;
            star_i = i;
        } else if (p < nt && (k = tok_at(&toks[p], s, n, i, cased)) > 0) {
            p++;
            i += k;
        } else if (star != SIZE_MAX) {
            p = star + 1;
            i = ++star_i;
        } else {
            return false;
        }
    }
    while (p < nt && toks[p].kind == KX__TOK_STAR)
        p++;
    return p == nt;
}

static bool pat_match(const kx__pat *p, bool cased, const char *s, size_t n)
{
    switch (p->kind) {
    case KX__PAT_EQ:
        return n == p->len && bytes_eq(s, p->s, n, cased);
    case KX__PAT_CONTAINS:
        return find(s, n, p->s, p->len, cased);
    case KX__PAT_STARTS:
        return n >= p->len && bytes_eq(s, p->s, p->len, cased);
    case KX__PAT_ENDS:
        return n >= p->len && bytes_eq(s + n - p->len, p->s, p->len, cased);
    case KX__PAT_ANY:
        return true;
    case KX__PAT_GLOB:
        return glob(p->toks, p->ntoks, s, n, cased);
    }
    return false;
}

static bool cidr_match(const kx__value *v, const char *s, size_t n)
{
    char buf[64];
    uint8_t a[16];
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(v->family, buf, a) != 1)
        return false;
    unsigned full = v->prefix / 8, rest = v->prefix % 8;
    if (memcmp(a, v->addr, full) != 0)
        return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xFF << (8 - rest));
        return (a[full] & mask) == (v->addr[full] & mask);
    }
    return true;
}

/* ISO 8601 weeks in year y: 53 when it starts on a Thursday, or is a leap year starting on
 * a Wednesday (p below is Dec 31's weekday, 4 = Thursday). */
static int iso_weeks(int y)
{
    int p = (y + y / 4 - y / 100 + y / 400) % 7;
    int q = (y - 1 + (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400) % 7;
    return 52 + (p == 4 || q == 3);
}

/* ISO 8601 week number (1..53) of a civil date: weeks start on Monday, week 1 holds the
 * year's first Thursday. */
static int iso_week(const kx_civil *t)
{
    static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    bool leap = (t->year % 4 == 0 && t->year % 100 != 0) || t->year % 400 == 0;
    int yday = before[t->month - 1] + t->day + (leap && t->month > 2); /* 1-based */
    int wday = t->wday ? t->wday : 7;                                  /* Monday 1 .. Sunday 7 */
    int week = (yday - wday + 10) / 7;
    if (week < 1)
        return iso_weeks(t->year - 1);
    if (week > iso_weeks(t->year))
        return 1;
    return week;
}

/* The field's time: RFC 3339 text, or a number of seconds (below 10^11) or ms since the
 * epoch, read as the decoders read a time_field (kx_parse_epoch). */
static bool field_time_ms(const kx_field *f, int64_t *ms)
{
    return kx_parse_epoch(f->value, f->value_len, ms) == 0 ||
           kx_parse_rfc3339(f->value, f->value_len, ms) == 0;
}

static bool timepart_match(const kx__value *v, const kx_field *f)
{
    int64_t ms;
    if (!field_time_ms(f, &ms))
        return false;
    int64_t s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    kx_civil t;
    kx_tz_local(v->tz, s, &t);
    int part = v->timepart == KX__TP_MINUTE  ? t.minute
               : v->timepart == KX__TP_HOUR  ? t.hour
               : v->timepart == KX__TP_DAY   ? t.day
               : v->timepart == KX__TP_WEEK  ? iso_week(&t)
               : v->timepart == KX__TP_MONTH ? t.month
                                             : t.year;
    return kx_cmp_one(v->cmp, (double)part, v->num);
}

static bool num_match(const kx__value *v, const kx_field *f)
{
    if (f->type == KX_VAL_BOOL || f->value_len == 0)
        return false;
    if (v->timepart)
        return timepart_match(v, f);
    char *end;
    double d = strtod(f->value, &end); /* value is NUL-terminated (event.h) */
    if (end != f->value + f->value_len || isnan(d))
        return false;
    return kx_cmp_one(v->cmp, d, v->num);
}

/* One string (a field value or the raw text) against one value. */
static bool str_match(const kx__value *v, const char *s, size_t n, kx__rx *rx)
{
    switch (v->kind) {
    case KX__VAL_PAT:
        for (size_t i = 0; i < v->npats; i++)
            if (pat_match(&v->pats[i], v->cased, s, n))
                return true;
        return false;
    case KX__VAL_RE:
        return kx__regex_match(v->re, s, n, rx);
    case KX__VAL_CIDR:
        return cidr_match(v, s, n);
    default:
        return false;
    }
}

/* A live list's value: O(1) in the set as it stands. Not read yet, klaxon cannot say: the
 * rule's answer is degraded (kx__detection_match fails closed on it). */
static bool list_match(const kx__value *v, const kx_field *f, kx__rx *rx)
{
    const kx__live *live = v->list->live;
    if (live->set)
        return kx__liveset_has(live->set, f->value, f->value_len, v->cased);
    if (rx->force >= 0)
        return rx->force == 1;
    if (!rx->reason)
        rx->reason = live->why;
    rx->list_unknown = true;
    return false;
}

static bool field_value_match(const kx__value *v, const kx_field *f, const kx__eval *x)
{
    if (v->kind == KX__VAL_NUM)
        return num_match(v, f);
    if (v->kind == KX__VAL_LIST)
        return list_match(v, f, x->rx);
    if (v->kind == KX__VAL_FIELDREF) {
        for (const kx_field *g = kx__field_first(x, v->ref_fid, v->ref); g;
             g = kx__field_next(x, g, v->ref)) {
            if (g->type == KX_VAL_NULL || g->value_len != f->value_len)
                continue;
            bool eq = v->cased ? memcmp(f->value, g->value, f->value_len) == 0
                               : strncasecmp(f->value, g->value, f->value_len) == 0;
            if (eq)
                return true;
        }
        return false;
    }
    return str_match(v, f->value, f->value_len, x->rx);
}

/* The prefilter scanned every value of the field (or, for keywords, the raw text and every
 * value) for each of v's patterns; an exact atom's hit is the pattern's answer. */
static bool atoms_match(const kx__value *v, const kx__eval *x)
{
    for (size_t i = 0; i < v->natoms; i++)
        if (kx__atom_hit(x, v->atoms[i]))
            return true;
    return false;
}

static bool value_match(const kx__value *v, const kx__fcond *fc, const kx__eval *x)
{
    if (v->exact && x->atoms_on)
        return atoms_match(v, x);
    const kx_field *f = kx__field_first(x, fc->fid, fc->field);
    if (v->kind == KX__VAL_EXISTS)
        return (f != NULL) == v->exists;
    if (v->kind == KX__VAL_NULL) {
        if (!f)
            return !v->negate;
        for (; f; f = kx__field_next(x, f, fc->field))
            if (f->type == KX_VAL_NULL)
                return !v->negate;
        return v->negate;
    }
    /* JSON null fields take part only in null tests. neq: some value present, none equal. */
    bool seen = false;
    for (; f; f = kx__field_next(x, f, fc->field)) {
        if (f->type == KX_VAL_NULL)
            continue;
        seen = true;
        if (field_value_match(v, f, x))
            return !v->negate;
    }
    return v->negate && seen;
}

/* Keywords: the raw text, then each field value (so an escaped JSON string still matches). */
static bool keyword_match(const kx__value *v, const kx__eval *x)
{
    if (v->exact && x->atoms_on)
        return atoms_match(v, x) != v->negate;
    const kx_event *ev = x->ev;
    if (ev->raw && str_match(v, ev->raw, ev->raw_len, x->rx))
        return !v->negate;
    for (size_t i = 0; i < ev->nfields; i++) {
        const kx_field *f = &ev->fields[i];
        if (f->type != KX_VAL_NULL && str_match(v, f->value, f->value_len, x->rx))
            return !v->negate;
    }
    return v->negate;
}

/* A live list not read yet under a field the event has with a value: unknown. */
static bool list_unread(const kx__value *v)
{
    return v->kind == KX__VAL_LIST && !v->list->live->set;
}

static bool has_value(const kx__fcond *f, const kx__eval *x)
{
    for (const kx_field *g = kx__field_first(x, f->fid, f->field); g;
         g = kx__field_next(x, g, f->field))
        if (g->type != KX_VAL_NULL)
            return true;
    return false;
}

int kx__fcond_match3(const kx__fcond *f, const kx__eval *x)
{
    bool unknown = false;
    for (size_t i = 0; i < f->nvals; i++) {
        const kx__value *v = &f->vals[i];
        int m;
        if (f->field && list_unread(v))
            m = has_value(f, x) ? -1 : 0; /* no value: no list can hold it */
        else
            m = f->field ? value_match(v, f, x) : keyword_match(v, x);
        if (m < 0)
            unknown = true;
        else if ((bool)m != f->all)
            return m;
    }
    return unknown ? -1 : f->all;
}

bool kx__fcond_match(const kx__fcond *f, const kx__eval *x)
{
    for (size_t i = 0; i < f->nvals; i++) {
        const kx__value *v = &f->vals[i];
        bool m = f->field ? value_match(v, f, x) : keyword_match(v, x);
        if (m != f->all)
            return m;
    }
    return f->all;
}
