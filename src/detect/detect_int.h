/*
 * Private to the detect stage: the compiled form of a Sigma rule.
 *
 * A detection rule compiles to a kx__detection: its logsource filter, its search identifiers
 * (each an OR of groups, each group an AND of field conditions, each field condition an OR
 * -- or with |all an AND -- of values) and a condition AST over the identifiers. Everything
 * is built at load time in the ruleset's arena; the few objects that need their own free
 * (compiled regular expressions, time-of-day objects) are registered in the ruleset's resource
 * list, so one kx_ruleset_destroy frees a complete or a half-built ruleset alike.
 *
 * Matching reads only this structure and the event: no allocation, no strlen of patterns,
 * no regex compile. The only state it writes is the ruleset's regex runtime (kx__rx: PCRE2
 * match data, the Hyperscan scratch, the event's regex budget; klaxon is single-threaded per
 * ruleset) and counters.
 */
#ifndef KLAXON_DETECT_INT_H
#define KLAXON_DETECT_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <hs.h>
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "klaxon/common.h"
#include "klaxon/detect.h"
#include "klaxon/event.h"
#include "klaxon/log.h"
#include "klaxon/timeofday.h"
#include "klaxon/yaml.h"

/* Limits for `re` patterns that stay on PCRE2 (Hyperscan's are linear-time and need none), so
 * one hostile log line cannot stall the loop (docs/rules.md). The match limit bounds the
 * backtracking steps of one run (interpreter and JIT); the depth limit bounds the
 * interpreter's backtracking depth (JIT ignores it and uses its fixed stack instead). A run
 * starts with KX__RE_FIRST_LIMIT and retries with ten times more when it hits it, up to
 * KX__RE_MATCH_LIMIT; every run is charged the limits it was given against the event's
 * KX__RE_EVENT_BUDGET, shared by all PCRE2 runs of all rules on that event. */
#define KX__RE_MATCH_LIMIT 100000u
#define KX__RE_DEPTH_LIMIT 1000u
#define KX__RE_FIRST_LIMIT 1000u
#define KX__RE_EVENT_BUDGET 2000000u
/* Milliseconds one event may spend compiling regexes' UTF-8 forms (regex.c need_udb): past
 * them, the event's other non-ASCII subjects are answered by PCRE2 (under the budget) and
 * their patterns compiled on later events, so no single event stalls the loop for long. */
#define KX__RE_UTF_COMPILE_MS 20
/* Condition nesting beyond this is surely a mistake and would make evaluation recurse deep. */
#define KX__COND_MAX_DEPTH 64

/* ---- regular expressions (regex.c) ---- */

/* The ruleset's regex runtime, one per ruleset: what all of its patterns share. */
typedef struct kx__rx {
    pcre2_match_context *mctx; /* the limits above */
    hs_scratch_t *scratch;     /* grown at load time to fit every Hyperscan database */
    uint64_t budget;           /* PCRE2 steps left for the current event */
    /* The first "degraded" reason of the rule being evaluated (a regex given up at its limit
     * or for the budget), NULL when every regex was answered. */
    const char *reason;
    /* The reason of the match being reported to kx_match_cb (kx_ruleset_match_reason). */
    const char *match_reason;
    /* The degraded reason came from a live list not read yet (value.c): such an answer
     * always fails closed, whatever the rule's regex_budget policy. */
    bool list_unknown;
    /* While kx__detection_match asks whether a rule's answer depends on a given-up regex:
     * what every given-up regex answers (1 match, 0 no match); -1 otherwise. */
    int force;
    int64_t utf_ms_left; /* of KX__RE_UTF_COMPILE_MS, for the current event */
    kx_ratelimit rl;     /* log lines about given-up regexes, per ruleset */
    size_t nlinear;      /* patterns compiled: answered by Hyperscan */
    size_t npcre2;       /* patterns compiled: PCRE2 only */
} kx__rx;

int kx__rx_init(kx__rx *rx); /* -ENOMEM */
void kx__rx_fini(kx__rx *rx);
void kx__rx_event_begin(kx__rx *rx); /* a new event: full budget, no reason */

typedef struct kx__regex kx__regex;

typedef struct kx__regex_opts {
    uint32_t flags;      /* PCRE2_CASELESS / PCRE2_MULTILINE / PCRE2_DOTALL (|i |m |s) */
    const char *where;   /* the key as written, e.g. "CommandLine|re", for the reason */
    const kx_rule *rule; /* borrowed, named in log lines; may be NULL */
    bool fail_closed;    /* named in log lines (the policy itself is the detection's) */
    bool pcre2_only;     /* tests and benchmarks: never use Hyperscan */
} kx__regex_opts;

/* Compiles pat (len bytes) for both engines: PCRE2 always, Hyperscan when it accepts the
 * pattern and can give the same answers. New, caller destroys. On a syntax error returns
 * -EINVAL with PCRE2's message in msg and the offset in *erroff; -ENOMEM. */
int kx__regex_create(kx__rx *rx, const char *pat, size_t len, const kx__regex_opts *o,
                     kx__regex **out, char *msg, size_t msglen, size_t *erroff);
void kx__regex_destroy(kx__regex *re);
/* True when Hyperscan answers this pattern (for valid UTF-8 subjects). */
bool kx__regex_linear(const kx__regex *re);
/* re's byte-mode Hyperscan form: its pattern (NUL-terminated) and flags, for a multi-pattern
 * database that answers ASCII subjects only (the prefilter's regex atoms, scan.c). False when
 * re has none (PCRE2 only, or UTF-8 mode only). */
bool kx__regex_byte_form(const kx__regex *re, const char **pat, unsigned *flags);
/* Does s match? Hyperscan when it can, else PCRE2 under the limits and the event budget.
 * A PCRE2 run given up counts as no match and sets rx->reason (if not yet set), counts
 * klaxon_regex_given_up_total and logs (rate-limited) naming the rule. */
bool kx__regex_match(kx__regex *re, const char *s, size_t n, kx__rx *rx);

/* One engine, for tests and benchmarks: 1 match, 0 no match, -ENOTSUP (no Hyperscan
 * database, or s is not valid UTF-8 and the pattern has anchors), -E2BIG / -ELOOP (a PCRE2
 * limit or the budget). */
typedef enum {
    KX__RX_HS,              /* Hyperscan */
    KX__RX_PCRE2,           /* PCRE2 JIT as kx__regex_match runs it: limits and budget */
    KX__RX_PCRE2_UNLIMITED, /* PCRE2 interpreter without match or depth limit: the reference */
} kx__rx_engine;
int kx__regex_exec(kx__regex *re, const char *s, size_t n, kx__rx *rx, kx__rx_engine engine);
/* Hyperscan databases alive in the process (shared by pattern and flags; tests). */
size_t kx__regex_cache_size(void);
/* Of those, the patterns whose UTF-8 form is compiled (at the first non-ASCII subject; tests). */
size_t kx__regex_cache_utf8(void);
/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF). */
bool kx__utf8_valid(const char *s, size_t n);
/* True when every byte of s is below 0x80 (eight at a time). */
static inline bool kx__is_ascii(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & 0x8080808080808080ULL)
            return false;
    }
    for (; i < n; i++)
        if (s[i] >= 0x80)
            return false;
    return true;
}

/* ---- values ---- */

#define KX__FID_KEYWORD UINT32_MAX

typedef enum {
    KX__TOK_LIT,  /* s/len: literal bytes (lowercase unless cased) */
    KX__TOK_STAR, /* any run of bytes */
    KX__TOK_ONE,  /* exactly one character (one UTF-8 sequence) */
    KX__TOK_DASH, /* windash: one of - / en-dash em-dash horizontal-bar */
} kx__tok_kind;

typedef struct kx__tok {
    kx__tok_kind kind;
    uint32_t len;
    const char *s;
} kx__tok;

typedef enum {
    KX__PAT_EQ,       /* whole value equals s */
    KX__PAT_CONTAINS, /* *s* */
    KX__PAT_STARTS,   /* s* */
    KX__PAT_ENDS,     /* *s */
    KX__PAT_ANY,      /* a lone *: any value, even empty */
    KX__PAT_GLOB,     /* general wildcard pattern: toks */
} kx__pat_kind;

typedef struct kx__pat {
    kx__pat_kind kind;
    const char *s;
    size_t len;
    const kx__tok *toks;
    size_t ntoks;
} kx__pat;

typedef struct kx__list kx__list;

typedef enum {
    KX__VAL_PAT,      /* string patterns (several when base64offset expands a value) */
    KX__VAL_RE,       /* regular expression (regex.c) */
    KX__VAL_NULL,     /* field missing or JSON null */
    KX__VAL_EXISTS,   /* field present (exists: true) or absent (exists: false) */
    KX__VAL_NUM,      /* numeric comparison lt/lte/gt/gte */
    KX__VAL_CIDR,     /* IPv4/IPv6 network */
    KX__VAL_FIELDREF, /* equal to another field of the same event */
    KX__VAL_LIST,     /* one of a live list's values (`expand` of a Redis-backed list) */
} kx__val_kind;

typedef struct kx__value {
    kx__val_kind kind;
    const char *src; /* the value as written (expanded, for `expand`): what explain shows */
    bool cased;
    bool negate; /* neq */
    /* PAT */
    const kx__pat *pats;
    size_t npats;
    /* RE */
    kx__regex *re;
    /* EXISTS */
    bool exists;
    /* NUM */
    kx_cmp cmp;
    double num;
    /* NUM with a time-part modifier (minute ... year, KX__TP_*): the field is a time (RFC
     * 3339, or seconds / ms since the epoch) and this part of it, in zone tz, is compared */
    uint8_t timepart;
    const struct kx_tz *tz;
    /* CIDR */
    int family; /* AF_INET or AF_INET6 */
    unsigned prefix;
    uint8_t addr[16];
    /* FIELDREF */
    const char *ref;
    uint32_t ref_fid; /* ref's interned id (match.c, at load) */
    /* LIST: the live list (its values swap while the rule stays) */
    const kx__list *list;
    /* Prefilter atoms (prefilter.c), when every pattern has a literal to scan for, else NULL:
     * a hit of one is necessary for the value to match. exact: a hit is also sufficient
     * ("some value matches one of the patterns"), so evaluation reads the hits instead of
     * comparing bytes again. */
    const uint32_t *atoms;
    size_t natoms;
    bool exact;
} kx__value;

typedef struct kx__fcond {
    const char *field; /* NULL: keyword search over the raw text and every field value */
    const char *key;   /* the key as written, modifiers and all ("CommandLine|contains") */
    uint32_t fid;      /* field's interned id (match.c, at load); KX__FID_KEYWORD: keywords */
    bool all;          /* AND of the values instead of OR */
    const kx__value *vals;
    size_t nvals;
} kx__fcond;

typedef struct kx__group { /* AND of field conditions: one YAML map */
    const kx__fcond *conds;
    size_t nconds;
} kx__group;

typedef struct kx__search { /* a search identifier: OR of groups, or a time-of-day test */
    const char *name;
    const kx__group *groups;
    size_t ngroups;
    kx_timeofday *tod;
} kx__search;

/* ---- condition AST ---- */

typedef enum {
    KX__C_ID,     /* ids[0] */
    KX__C_ONE_OF, /* any of ids */
    KX__C_ALL_OF, /* all of ids */
    KX__C_AND,    /* all kids */
    KX__C_OR,     /* any kid */
    KX__C_NOT,    /* !kids[0] */
} kx__cop;

typedef struct kx__cnode kx__cnode;
struct kx__cnode {
    kx__cop op;
    kx__cnode **kids;
    size_t nkids;
    const uint32_t *ids;
    size_t nids;
};

typedef struct kx__detection {
    const char *product; /* logsource filter; NULL = any */
    const char *service;
    const char *category;
    /* A rule whose regex could not be answered (kx__rx.reason): reported as a match (fail
     * closed) or evaluated with that regex as no match (fail open). */
    bool re_fail_closed;
    const struct kx_tz *tz; /* the rule's `timezone` (time-part modifiers); NULL: UTC */
    const kx__search *searches;
    size_t nsearches;
    const kx__cnode *cond;
} kx__detection;

/* The compiled detection of a detection rule, NULL for a correlation (ruleset.c). */
const kx__detection *kx__rule_detection(const kx_rule *r);

/* ---- build context ---- */

typedef struct kx__res kx__res; /* something to free with the ruleset */

/* ---- live lists (liveset.c): the values read from a list's Redis set ---- */

typedef struct kx__liveset kx__liveset;
/* A set of the n NUL-ended values back to back in vals[0..len) (copied). The first nhead are
 * the list file's, the rest the Redis set's (kx__liveset_tail). -ENOMEM, -E2BIG. */
int kx__liveset_build(const char *vals, size_t len, size_t n, size_t nhead, kx__liveset **out);
/* The values given after the first nhead, as given (a reload carries them to the new list). */
void kx__liveset_tail(const kx__liveset *ls, const char **vals, size_t *len, size_t *n);
void kx__liveset_free(kx__liveset *ls);
/* Is s[0..n) one of the values? Caseless (ASCII letters) unless cased. */
bool kx__liveset_has(const kx__liveset *ls, const char *s, size_t n, bool cased);
size_t kx__liveset_size(const kx__liveset *ls);

/* What a live list holds now: swapped whole by kx_ruleset_live_list_set. Owned by the
 * ruleset (freed by kx_ruleset_destroy); the list in the arena points at it. */
typedef struct kx__live {
    kx__liveset *set; /* NULL until first read: its rules answer degraded (value.c) */
    int64_t loaded_ms;
    char *why; /* "list NAME is not read from Redis yet": the degraded reason */
} kx__live;

/* A named list of values (NAME.list or NAME.list.yml in the rules tree): what %NAME% stands
 * for under the `expand` modifier (lists.c, value.c). A list with a Redis key is live: its
 * values (with the file's) are read while klaxon runs and matched as a set, not expanded. */
struct kx__list {
    const char *name;
    const char *file;
    const char *const *vals; /* the file's values */
    size_t n;
    const char *redis_key; /* live: the Redis set; NULL for a plain list */
    int64_t refresh_ms;
    kx__live *live; /* live lists only */
};
typedef struct kx__lists {
    kx__list *v;
    size_t n;
} kx__lists;
/* The list called name[0..n), or NULL (lists.c). */
const kx__list *kx__list_find(const kx__lists *ls, const char *name, size_t n);

typedef struct kx__ctx {
    kx_arena *arena;
    kx__res **res;
    const char *file;
    kx_err *err;
    kx__rx *rx;                    /* the ruleset's: Hyperscan scratch grown per pattern */
    const kx_rule *rule;           /* the rule being compiled, named by its regexes' log lines */
    bool re_fail_closed;           /* its regex_budget policy */
    struct kx__diag *dg;           /* a lint's: warnings go there; NULL: to the log */
    const kx__lists *lists;        /* what `expand` placeholders stand for */
    const struct kx_tz *time_zone; /* the rule's `timezone` (time-part modifiers); NULL: UTC */
} kx__ctx;

/* The time-part modifiers (kx__value.timepart). */
enum {
    KX__TP_NONE = 0,
    KX__TP_MINUTE,
    KX__TP_HOUR,
    KX__TP_DAY,
    KX__TP_WEEK,
    KX__TP_MONTH,
    KX__TP_YEAR
};

void *kx__alloc(kx__ctx *c, size_t n); /* zeroed, arena; NULL sets err to out of memory */
/* A problem that does not stop the load ("file:line:col: message"): to the lint, else the
 * log (ruleset.c). */
void kx__warn(kx__ctx *c, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
char *kx__strndup(kx__ctx *c, const char *s, size_t n);
int kx__res_add_regex(kx__ctx *c, kx__regex *re); /* takes ownership, also on failure */
int kx__res_add_tod(kx__ctx *c, kx_timeofday *t);
void kx__res_free(kx__res *r);

/* ---- evaluation context: one event, against the compiled set ---- */

/* What matching one event reads besides the compiled rules: the event, its fields indexed
 * by interned id (fieldix.c), the atom hits of the scan (scan.c) and the regex runtime
 * (regex.c). Owned by the ruleset (scratch reused for every event: klaxon is single-threaded
 * per ruleset), valid for one kx_ruleset_match call. */
typedef struct kx__eval {
    const kx_event *ev;
    kx__rx *rx;               /* the ruleset's regex runtime (budget, scratch, degraded reason) */
    uint32_t gen;             /* this event's generation: stamps below equal it when set */
    uint32_t nfid;            /* interned field ids */
    const uint32_t *fgen;     /* per id: gen when the event has a field of that id */
    const uint32_t *first;    /* per id: index of its first field in ev->fields */
    const uint32_t *next;     /* per event field: index of the next of the same id, or NONE */
    const uint32_t *atom_gen; /* per atom: gen when it hit in this event */
    bool atoms_on;            /* atom hits are valid (prefilter ran) */
    bool by_name;             /* reference mode: fields looked up by name, no index */
} kx__eval;

#define KX__IX_NONE UINT32_MAX

/* The event's first field of id fid (called name), and the next of the same name. */
static inline const kx_field *kx__field_first(const kx__eval *x, uint32_t fid, const char *name)
{
    if (x->by_name)
        return kx_event_next(x->ev, name, NULL);
    if (fid >= x->nfid || x->fgen[fid] != x->gen)
        return NULL;
    return &x->ev->fields[x->first[fid]];
}

static inline const kx_field *kx__field_next(const kx__eval *x, const kx_field *f, const char *name)
{
    if (x->by_name)
        return kx_event_next(x->ev, name, f);
    uint32_t n = x->next[f - x->ev->fields];
    return n == KX__IX_NONE ? NULL : &x->ev->fields[n];
}

static inline bool kx__atom_hit(const kx__eval *x, uint32_t atom)
{
    return x->atom_gen[atom] == x->gen;
}

/* value.c: compiles one `field|mods: value(s)` entry into f. key is the YAML key node
 * (for positions), val its value node. field_len is the length of the field part. */
int kx__fcond_compile(kx__ctx *c, const kx_yaml_node *key, const kx_yaml_node *val, kx__fcond *f);
/* Keyword list items (plain scalars of a list search identifier) into one OR condition. */
int kx__keywords_compile(kx__ctx *c, const kx_yaml_node *const *items, size_t n, kx__fcond *f);
bool kx__fcond_match(const kx__fcond *f, const kx__eval *x);
/* The same in three values: 1, 0, or -1 when a live list not read yet decides it. */
int kx__fcond_match3(const kx__fcond *f, const kx__eval *x);

/* condition.c: parses a condition (scalar or list of scalars) over d's search identifiers. */
int kx__cond_compile(kx__ctx *c, const kx_yaml_node *cond, kx__detection *d);
bool kx__cond_eval(const kx__cnode *n, const kx__detection *d, const kx__eval *x);
bool kx__search_match(const kx__search *s, const kx__eval *x);
/* The rule's answer for x's event: its condition, with the regex_budget policy applied when a
 * regex was given up; sets x->rx->match_reason to the reason when it reports a degraded
 * match. */
bool kx__detection_match(const kx__detection *d, const kx__eval *x);

#endif
