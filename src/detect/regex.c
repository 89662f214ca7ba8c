/*
 * Regular expressions of `re` values: one compiled object per pattern, two engines.
 *
 * A Sigma rule asks only "does this field match", never where or what was captured, so a
 * pattern that Hyperscan accepts is answered by Hyperscan: its automata run in time linear in
 * the subject whatever the pattern, so no step limit is needed and no field length can make
 * a legitimate rule miss. Patterns Hyperscan refuses (back-references, lookaround, atomic
 * groups, possessive quantifiers, \R, \X, ...) stay on PCRE2 JIT under a match limit and a
 * depth limit per run and a step budget per event (docs/rules.md, docs/internals/detect.md).
 *
 * The PCRE2 code is compiled for every pattern, Hyperscan or not: it validates the syntax
 * (PCRE2's syntax is the rule language's), and it answers subjects that are not valid UTF-8,
 * which Hyperscan in UTF-8 mode must never be given (PCRE2_MATCH_INVALID_UTF matches them as
 * far as they are valid).
 *
 * Invariants: a kx__regex is immutable after kx__regex_create except its PCRE2 match data,
 * which is scratch for one match at a time (the detect stage is single-threaded per ruleset),
 * and its UTF-8 database, set once at its first non-ASCII subject (need_udb). The Hyperscan
 * scratch and the per-event budget live in the ruleset's kx__rx, shared by all of its
 * patterns: hs_alloc_scratch grows the one scratch to fit each new database at load time, so
 * matching allocates only then, once per pattern (need_udb).
 *
 * Ownership: kx__regex_create returns a new object (kx__regex_destroy frees it; the detect
 * stage registers it in the ruleset's resource list). The rule pointer given in its options
 * is borrowed: the ruleset that owns the regex owns the rule too. Hyperscan databases are
 * shared through a process-wide cache by pattern and flags, reference-counted by the regexes
 * that use them (hs_get / hs_put), so a reload compiles only the patterns that changed (the
 * routes' multi-pattern regex databases, prefilter.c, are compiled anew with their routes).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect_int.h"
#include "klaxon/metrics.h"

struct kx__regex {
    pcre2_code *code;
    pcre2_match_data *md;
    /* Hyperscan's databases (hs_entry): byte mode for ASCII subjects, UTF-8 mode for the
     * others; udb is NULL until a non-ASCII subject needs it (then this ruleset's scratch is
     * grown for it). Both NULL: the pattern stays on PCRE2. */
    hs_database_t *db, *udb;
    bool utf_failed;     /* udb could not be had: non-ASCII subjects go to PCRE2 */
    struct hs_entry *hs; /* the shared databases' cache entry (a reference), or NULL */
    /* No anchors and no empty match: invalid UTF-8 subjects are scanned fragment by fragment
     * (run_hs_fragments). */
    bool fragments;
    const kx_rule *rule;
    bool fail_closed;
    /* Reasons an alert carries when this regex could not be answered ("degraded"), made
     * once here so that a given-up match formats nothing. */
    char *why_limit;
    char *why_budget;
};

/* ---- runtime shared by a ruleset's patterns ---- */

int kx__rx_init(kx__rx *rx)
{
    memset(rx, 0, sizeof(*rx));
    rx->mctx = pcre2_match_context_create(NULL);
    if (!rx->mctx)
        return -ENOMEM;
    pcre2_set_depth_limit(rx->mctx, KX__RE_DEPTH_LIMIT);
    rx->budget = KX__RE_EVENT_BUDGET;
    rx->utf_ms_left = KX__RE_UTF_COMPILE_MS;
    rx->force = -1;
    return 0;
}

void kx__rx_fini(kx__rx *rx)
{
    hs_free_scratch(rx->scratch);
    pcre2_match_context_free(rx->mctx);
    memset(rx, 0, sizeof(*rx));
}

void kx__rx_event_begin(kx__rx *rx)
{
    rx->budget = KX__RE_EVENT_BUDGET;
    rx->utf_ms_left = KX__RE_UTF_COMPILE_MS;
    rx->reason = NULL;
    rx->match_reason = NULL;
}

/* ---- compile ---- */

/* A pattern for which Hyperscan's answer could differ from PCRE2's is kept off Hyperscan
 * even when Hyperscan would compile it. Caseless matching beyond ASCII is the one place the
 * two libraries' Unicode tables (and versions) could disagree, so a caseless pattern that
 * names a non-ASCII character, by its bytes or by an escape, stays on PCRE2. An embedded NUL
 * cannot reach hs_compile, which takes a C string. */
/* True when an inline option group such as (?i) or (?mi: sets option letter opt. */
static bool inline_option(const char *pat, char opt)
{
    for (const char *p = strstr(pat, "(?"); p; p = strstr(p + 2, "(?")) {
        for (const char *q = p + 2; *q && *q != ')' && *q != ':'; q++) {
            if (*q == opt)
                return true;
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '-' || *q == '^'))
                break;
        }
    }
    return false;
}

/* True when the pattern may assert a position relative to the subject's start or end or a
 * line's (^ $ \A \z \Z \G), judged conservatively: anything this scanner does not follow
 * (\Q quoting, (?x) comments) counts as an anchor. */
static bool has_anchor(const char *p, size_t n)
{
    if (inline_option(p, 'x'))
        return true;
    bool cls = false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\\') {
            if (i + 1 >= n || p[i + 1] == 'Q')
                return true;
            char e = p[++i];
            if (!cls && (e == 'A' || e == 'z' || e == 'Z' || e == 'G'))
                return true;
        } else if (cls) {
            if (ch == '[' && i + 1 < n && p[i + 1] == ':') {
                const char *end = strstr(p + i + 2, ":]");
                if (!end)
                    return true;
                i = (size_t)(end - p) + 1;
            } else if (ch == ']') {
                cls = false;
            }
        } else if (ch == '[') {
            cls = true;
            if (i + 1 < n && p[i + 1] == '^')
                i++;
            if (i + 1 < n && p[i + 1] == ']') /* a ] first in a class is literal */
                i++;
        } else if (ch == '^' || ch == '$') {
            return true;
        }
    }
    return false;
}

static bool hs_suitable(const char *pat, size_t len, uint32_t flags)
{
    if (strlen(pat) != len)
        return false;
    if (!(flags & PCRE2_CASELESS) && !inline_option(pat, 'i'))
        return true;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)pat[i];
        if (ch >= 0x80)
            return false;
        if (ch == '\\' && i + 1 < len) {
            char e = pat[++i];
            if (e == 'x' || e == 'o' || e == 'p' || e == 'P' || e == 'N' || e == 'u' ||
                (e >= '0' && e <= '9'))
                return false;
        }
    }
    return true;
}

/* SINGLEMATCH because one match answers the question; ALLOWEMPTY so that a pattern that can
 * match the empty string (x*, ^) is accepted, and then, as in PCRE2, it matches every
 * subject. No HS_FLAG_UTF8: that is the byte-mode database (see hs_entry); the UTF-8 one adds
 * it. */
static unsigned hs_flags(uint32_t flags)
{
    unsigned hf = HS_FLAG_SINGLEMATCH | HS_FLAG_ALLOWEMPTY;
    if (flags & PCRE2_CASELESS)
        hf |= HS_FLAG_CASELESS;
    if (flags & PCRE2_MULTILINE)
        hf |= HS_FLAG_MULTILINE;
    if (flags & PCRE2_DOTALL)
        hf |= HS_FLAG_DOTALL;
    return hf;
}

/* Hyperscan databases by pattern and flags, shared by every regex of the process that has the
 * same ones. hs_compile is slow, and a rule reload builds the new ruleset while the old one is
 * alive: with the cache, only the patterns that changed are compiled again. A database is
 * immutable, so sharing it is safe; each ruleset still grows its own scratch for it. Refused
 * patterns are remembered too. Rules are loaded, matched and destroyed on the loop thread
 * only, so the cache has no lock.
 *
 * Two databases per pattern. PCRE2 runs in UTF mode (. and classes see characters), and
 * Hyperscan's UTF-8 mode is the same, but compiling in it is about four times slower (a
 * `.` becomes an automaton over multi-byte sequences): 5.6 s for the 382 regexes of the
 * 3,000-rule bench set, against 1.4 s in byte mode. For a pattern written in ASCII (escapes
 * such as \xe9 are one byte in byte mode and one character in UTF-8 mode: one atom either
 * way), on a subject that is all ASCII, the two modes give the same answer: every byte is a
 * whole character, classes without UCP (\w \d \s \b, POSIX) are ASCII-only in both, and
 * caseless patterns are ASCII-only (hs_suitable). So the byte-mode database is compiled at
 * load and answers ASCII subjects, nearly all of a log stream; the UTF-8 database is
 * compiled the first time a subject with other bytes meets the pattern (a one-off pause on
 * the loop, logged with its duration: 1 ms to 0.5 s a pattern; at most about
 * KX__RE_UTF_COMPILE_MS of them per event), and kept. A pattern with a non-ASCII character in
 * its text, or that byte mode refuses (\x{100}: a code point above one byte), gets its UTF-8
 * database at load, for all subjects. */
typedef struct hs_entry {
    struct hs_entry *next;
    uint64_t hash;
    unsigned flags; /* byte mode; udb adds HS_FLAG_UTF8 */
    size_t refs;
    hs_database_t *db;  /* byte mode, for ASCII subjects; NULL: byte mode refused it */
    hs_database_t *udb; /* UTF-8 mode: NULL until first needed (or at load when db is NULL) */
    bool utf_refused;   /* udb failed to compile: non-ASCII subjects go to PCRE2 */
    bool fragments;     /* see kx__regex.fragments */
    char pat[];
} hs_entry;

static hs_entry *g_hs;

/* The UTF-8 database of e; false when Hyperscan refuses the pattern in that mode. */
static bool hs_compile_utf(hs_entry *e)
{
    if (e->udb)
        return true;
    if (e->utf_refused)
        return false;
    hs_compile_error_t *ce = NULL;
    if (hs_compile(e->pat, e->flags | HS_FLAG_UTF8, HS_MODE_BLOCK, NULL, &e->udb, &ce) !=
        HS_SUCCESS) {
        kx_log(KX_LOG_DEBUG, "detect", "regex \"%s\" stays on PCRE2%s: %s", e->pat,
               e->db ? " for non-ASCII subjects" : "",
               ce && ce->message ? ce->message : "refused by Hyperscan");
        hs_free_compile_error(ce);
        e->udb = NULL;
        e->utf_refused = true;
        return false;
    }
    return true;
}

static void hs_compile_entry(hs_entry *e, size_t len)
{
    hs_compile_error_t *ce = NULL;
    /* A pattern with a non-ASCII character in its text gets no byte-mode form: there the
     * character is several atoms, and a quantifier after it (é?, é*, é{0,2}) binds to its
     * last byte only, so "fooé?bar" would miss "foobar". Its UTF-8 form answers every
     * subject. So does that of a pattern byte mode refuses (\x{100}). */
    if (!kx__is_ascii(e->pat, len) ||
        hs_compile(e->pat, e->flags, HS_MODE_BLOCK, NULL, &e->db, &ce) != HS_SUCCESS) {
        hs_free_compile_error(ce);
        e->db = NULL;
        if (!hs_compile_utf(e))
            return;
    }
    hs_expr_info_t *info = NULL;
    ce = NULL;
    unsigned fl = e->db ? e->flags : e->flags | HS_FLAG_UTF8;
    if (!has_anchor(e->pat, len) && hs_expression_info(e->pat, fl, &info, &ce) == HS_SUCCESS)
        e->fragments = info->min_width > 0;
    free(info); /* allocated by Hyperscan's default allocator, malloc */
    hs_free_compile_error(ce);
}

/* The entry for pat (len bytes, no NUL inside) and Hyperscan flags hf, compiled on first use;
 * a new reference. NULL when out of memory. */
static hs_entry *hs_get(const char *pat, size_t len, unsigned hf)
{
    uint64_t h = kx_hash64(pat, len, hf);
    for (hs_entry *e = g_hs; e; e = e->next) {
        if (e->hash == h && e->flags == hf && !strcmp(e->pat, pat)) {
            e->refs++;
            return e;
        }
    }
    hs_entry *e = calloc(1, sizeof(*e) + len + 1);
    if (!e)
        return NULL;
    memcpy(e->pat, pat, len + 1);
    e->hash = h;
    e->flags = hf;
    e->refs = 1;
    hs_compile_entry(e, len);
    e->next = g_hs;
    g_hs = e;
    return e;
}

static void hs_put(hs_entry *e)
{
    if (!e || --e->refs)
        return;
    for (hs_entry **pp = &g_hs; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    hs_free_database(e->db);
    hs_free_database(e->udb);
    free(e);
}

size_t kx__regex_cache_size(void)
{
    size_t n = 0;
    for (const hs_entry *e = g_hs; e; e = e->next)
        n++;
    return n;
}

size_t kx__regex_cache_utf8(void)
{
    size_t n = 0;
    for (const hs_entry *e = g_hs; e; e = e->next)
        n += e->udb != NULL;
    return n;
}

static char *dup_cat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

int kx__regex_create(kx__rx *rx, const char *pat, size_t len, const kx__regex_opts *o,
                     kx__regex **out, char *msg, size_t msglen, size_t *erroff)
{
    kx__regex *re = calloc(1, sizeof(*re));
    if (!re)
        return snprintf(msg, msglen, "out of memory"), -ENOMEM;
    int ec;
    PCRE2_SIZE off = 0;
    /* UTF so . and classes see characters; MATCH_INVALID_UTF so a log line with broken
     * UTF-8 is matched as far as it is valid rather than rejected. */
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | o->flags;
    re->code = pcre2_compile((PCRE2_SPTR)pat, len, opts, &ec, &off, NULL);
    if (!re->code) {
        PCRE2_UCHAR m[200];
        pcre2_get_error_message(ec, m, sizeof(m));
        snprintf(msg, msglen, "%s", (const char *)m);
        *erroff = (size_t)off;
        free(re);
        return -EINVAL;
    }
    /* JIT failure is not fatal: the interpreter gives the same answers under the same limits. */
    (void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    re->md = pcre2_match_data_create(1, NULL);
    const char *where = o->where ? o->where : "re";
    re->why_limit = dup_cat("regex match limit reached in ", where);
    re->why_budget = dup_cat("regex budget exceeded in ", where);
    if (!re->md || !re->why_limit || !re->why_budget) {
        kx__regex_destroy(re);
        return snprintf(msg, msglen, "out of memory"), -ENOMEM;
    }
    re->rule = o->rule;
    re->fail_closed = o->fail_closed;
    if (hs_suitable(pat, len, o->flags) && !o->pcre2_only) {
        if (!(re->hs = hs_get(pat, len, hs_flags(o->flags)))) {
            kx__regex_destroy(re);
            return snprintf(msg, msglen, "out of memory"), -ENOMEM;
        }
        /* Grows the ruleset's one scratch to fit this database too; should that fail, the
         * pattern stays on PCRE2 rather than failing the load. */
        if (re->hs->db && hs_alloc_scratch(re->hs->db, &rx->scratch) == HS_SUCCESS)
            re->db = re->hs->db;
        if (re->hs->udb && hs_alloc_scratch(re->hs->udb, &rx->scratch) == HS_SUCCESS)
            re->udb = re->hs->udb;
        re->fragments = re->hs->fragments;
    }
    if (re->db || re->udb)
        rx->nlinear++;
    else
        rx->npcre2++;
    *out = re;
    return 0;
}

void kx__regex_destroy(kx__regex *re)
{
    if (!re)
        return;
    hs_put(re->hs);
    pcre2_match_data_free(re->md);
    pcre2_code_free(re->code);
    free(re->why_limit);
    free(re->why_budget);
    free(re);
}

bool kx__regex_linear(const kx__regex *re)
{
    return re->db || re->udb;
}

bool kx__regex_byte_form(const kx__regex *re, const char **pat, unsigned *flags)
{
    if (!re->db || !re->hs)
        return false;
    *pat = re->hs->pat;
    *flags = re->hs->flags;
    return true;
}

/* ---- match ---- */

/* Length of the longest prefix of str that is strict UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), the definition both Hyperscan and PCRE2 use. ASCII,
 * the common case in logs, is checked eight bytes at a time. */
static size_t utf8_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return i;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
        i += len;
    }
    return n;
}

bool kx__utf8_valid(const char *s, size_t n)
{
    return utf8_prefix(s, n) == n;
}

static int on_hs_match(unsigned int id, unsigned long long from, unsigned long long to,
                       unsigned int flags, void *ctx)
{
    (void)id, (void)from, (void)to, (void)flags, (void)ctx;
    return 1; /* one match answers the question: stop the scan */
}

static int run_hs(const hs_database_t *db, const char *s, size_t n, kx__rx *rx)
{
    if (n > UINT32_MAX)
        return -ERANGE;
    hs_error_t rc = hs_scan(db, s, (unsigned int)n, 0, rx->scratch, on_hs_match, NULL);
    if (rc == HS_SCAN_TERMINATED)
        return 1;
    return rc == HS_SUCCESS ? 0 : -EIO;
}

/* One PCRE2 run with the given match limit: 1 match, 0 no match, -E2BIG the match limit was
 * hit, -ELOOP the depth, heap or JIT stack limit was (those do not grow with the match limit,
 * so retrying after them would only spend the budget again). */
static int run_pcre2(const kx__regex *re, const char *s, size_t n, pcre2_match_context *mctx,
                     uint32_t limit, uint32_t opts)
{
    pcre2_set_match_limit(mctx, limit);
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, 0, opts, re->md, mctx);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_MATCHLIMIT)
        return -E2BIG;
    if (rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
        rc == PCRE2_ERROR_JIT_STACKLIMIT)
        return -ELOOP;
    return 0; /* no match (or an error no subject can cause with these options) */
}

/* PCRE2 under the per-run limit and the event's budget. PCRE2 does not say how many steps a
 * finished match took, so each run is charged the limit it was given, and the limit starts
 * small and grows tenfold only when hit: a run is charged at most about 1.1 times the limit
 * it ended up needing (plus KX__RE_FIRST_LIMIT), the budget is a true bound on the event's
 * work, and the common quick answer is charged only KX__RE_FIRST_LIMIT. */
static int pcre2_budgeted(const kx__regex *re, const char *s, size_t n, kx__rx *rx,
                          const char **why)
{
    uint32_t limit = KX__RE_FIRST_LIMIT;
    for (;;) {
        bool capped = false;
        if (rx->budget < limit) {
            limit = (uint32_t)rx->budget;
            capped = true;
        }
        if (limit == 0) {
            *why = re->why_budget;
            return -E2BIG;
        }
        rx->budget -= limit;
        int rc = run_pcre2(re, s, n, rx->mctx, limit, 0);
        if (rc >= 0)
            return rc;
        if (rc == -E2BIG && capped) {
            *why = re->why_budget;
            return rc;
        }
        if (rc == -ELOOP || limit >= KX__RE_MATCH_LIMIT) {
            *why = re->why_limit;
            return rc;
        }
        limit = limit > KX__RE_MATCH_LIMIT / 10 ? KX__RE_MATCH_LIMIT : limit * 10;
    }
}

/* A subject that is not valid UTF-8, for a pattern without anchors that cannot match the
 * empty string. PCRE2_MATCH_INVALID_UTF reads the subject as fragments of valid UTF-8
 * separated by barriers that nothing matches and no match crosses, \b and \B seeing a barrier
 * as the start or end of a subject; only ^ $ \A \z \Z \G could tell an internal fragment
 * from a whole subject. So the answer is whether some fragment, scanned as a subject of its
 * own, matches. Empty matches are left to PCRE2: which positions next to a barrier it tries
 * is its own business (its JIT and interpreter even differ at the end of a subject). */
static int run_hs_fragments(const kx__regex *re, const char *s, size_t n, kx__rx *rx)
{
    size_t i = 0;
    while (i < n) {
        size_t v = utf8_prefix(s + i, n - i);
        if (v > 0) {
            int rc = run_hs(re->udb, s + i, v, rx);
            if (rc != 0)
                return rc;
            i += v;
        } else {
            i++; /* one byte of a barrier; the next byte is judged again */
        }
    }
    return 0;
}

/* re's UTF-8 database, compiled now if no ruleset needed it before (see hs_entry), with this
 * ruleset's scratch grown for it. False when it cannot be had: PCRE2 answers instead. */
static bool need_udb(kx__regex *re, kx__rx *rx)
{
    if (re->udb)
        return true;
    if (re->utf_failed || !re->hs)
        return false;
    bool compiled = re->hs->udb != NULL;
    if (!compiled && rx->utf_ms_left <= 0)
        return false; /* this event compiled enough: PCRE2 answers, a later event compiles */
    int64_t t0 = kx_mono_ms();
    if (!hs_compile_utf(re->hs) || hs_alloc_scratch(re->hs->udb, &rx->scratch) != HS_SUCCESS) {
        re->utf_failed = true;
        return false;
    }
    if (!compiled) {
        int64_t ms = kx_mono_ms() - t0;
        rx->utf_ms_left -= ms > 0 ? ms : 1;
        kx_log(KX_LOG_INFO, "detect",
               "rule %s: regex \"%s\" met its first non-ASCII subject: its UTF-8 form compiled "
               "in %lld ms",
               re->rule ? re->rule->id : "?", re->hs->pat, (long long)ms);
    }
    re->udb = re->hs->udb;
    return true;
}

/* Hyperscan's answer, or -ENOTSUP when it cannot give one for this pattern and subject. */
static int hs_answer(kx__regex *re, const char *s, size_t n, kx__rx *rx)
{
    if (!re->db && !re->udb)
        return -ENOTSUP;
    if (kx__is_ascii(s, n))
        return run_hs(re->db ? re->db : re->udb, s, n, rx);
    if (!need_udb(re, rx))
        return -ENOTSUP;
    if (utf8_prefix(s, n) == n)
        return run_hs(re->udb, s, n, rx);
    return re->fragments ? run_hs_fragments(re, s, n, rx) : -ENOTSUP;
}

int kx__regex_exec(kx__regex *re, const char *s, size_t n, kx__rx *rx, kx__rx_engine engine)
{
    switch (engine) {
    case KX__RX_HS:
        return hs_answer(re, s, n, rx);
    case KX__RX_PCRE2_UNLIMITED: {
        /* The reference answer: the interpreter (its backtracking frames are on the heap, so
         * no JIT stack limit applies) with the match and depth limits lifted. */
        pcre2_set_depth_limit(rx->mctx, UINT32_MAX);
        int rc = run_pcre2(re, s, n, rx->mctx, UINT32_MAX, PCRE2_NO_JIT);
        pcre2_set_depth_limit(rx->mctx, KX__RE_DEPTH_LIMIT);
        return rc;
    }
    case KX__RX_PCRE2: {
        const char *why = NULL;
        return pcre2_budgeted(re, s, n, rx, &why);
    }
    }
    return -EINVAL;
}

bool kx__regex_match(kx__regex *re, const char *s, size_t n, kx__rx *rx)
{
    /* Hyperscan cannot fail on a valid database and scratch; should it, PCRE2 answers. */
    int hrc = hs_answer(re, s, n, rx);
    if (hrc >= 0)
        return hrc == 1;
    const char *why = NULL;
    int rc = pcre2_budgeted(re, s, n, rx, &why);
    if (rc >= 0)
        return rc == 1;
    /* Given up: the rule's evaluation is degraded. The value counts as no match here (or as
     * rx->force while kx__detection_match asks whether the answer depends on it, when it is
     * not counted again); the rule's policy is applied there, from rx->reason. */
    if (rx->force >= 0)
        return rx->force == 1;
    kx_metric_inc(KX_M_REGEX_GIVEN_UP);
    if (!rx->reason)
        rx->reason = why;
    kx_log_limited(&rx->rl, KX_LOG_WARN, "detect",
                   "rule %s (%s): %s; if its answer depends on it, %s",
                   re->rule ? re->rule->id : "?", re->rule ? re->rule->title : "?", why,
                   re->fail_closed ? "failing closed (reported as a match)"
                                   : "failing open (counted as no match)");
    return false;
}
