/*
 * Private to the detect stage: the compiled rule set, built once per load (match.c
 * kx__cset_create) from the rules' compiled detections, and what matching one event uses.
 *
 *   fieldix.c   interned field names, and the per-event field index by id
 *   prefilter.c literal and regex atoms of every rule, the atoms a rule needs (its
 *               triggers), and the compile of a field's literal and regex databases
 *   route.c     per logsource: which rules apply, which fields to scan, their databases
 *   scan.c      the per-event scan of those fields (and its memo): which rules are candidates
 *   match.c     kx_ruleset_match: index, route, scan, evaluate the candidates exactly
 *
 * A rule is evaluated only when one of its trigger atoms hit or it has none (an "always"
 * rule, e.g. one made only of numbers or PCRE2-only regexes). Triggers are a necessary condition of
 * the rule's condition, so skipping a rule never changes a result: the prefilter-off mode
 * (kx_ruleset_set_prefilter) is the plain interpreter and must give the same matches, which
 * tests/unit/test_prefilter.c checks on a generated corpus (docs/internals/detect.md).
 *
 * Ownership: everything here belongs to the ruleset and is freed by kx__cset_destroy; the
 * per-event scratch (generation stamps, candidate bitset, Hyperscan scratch) is written by
 * matching, which is single-threaded per ruleset.
 */
#ifndef KLAXON_DETECT_SET_H
#define KLAXON_DETECT_SET_H

#include <hs/hs.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "detect_int.h"

/* Word-at-a-time hash of field names (fieldix.c) and scanned values (scan.c), both hashed
 * once per event and field. Not collision resistant, and need not be: a collision costs a
 * longer probe or a memo miss, never a wrong answer (bytes are compared). */
static inline uint64_t kx__hash_bytes(const char *s, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h * 0xbf58476d1ce4e5b9ull;
}

/* ---- fieldix.c ---- */

typedef struct kx__fieldix {
    const char **names; /* by id; borrowed from the ruleset's arena */
    uint32_t *lens;
    uint32_t n, cap;
    uint32_t *slots; /* open addressing: id + 1, 0 = empty */
    uint32_t mask;
    /* per-event index (see kx__eval) */
    uint32_t *fgen;
    uint32_t *first;
    uint32_t *next;
    size_t next_cap;
} kx__fieldix;

int kx__fieldix_intern(kx__fieldix *fx, const char *name, uint32_t *id);
uint32_t kx__fieldix_find(const kx__fieldix *fx, const char *name, size_t len);
/* After the last intern: allocates the per-id scratch. */
int kx__fieldix_ready(kx__fieldix *fx);
/* Indexes ev's fields for generation gen. -ENOMEM only when next[] must grow and cannot. */
int kx__fieldix_index(kx__fieldix *fx, const kx_event *ev, uint32_t gen);
void kx__fieldix_reset_gen(kx__fieldix *fx);
void kx__fieldix_fini(kx__fieldix *fx);

/* ---- prefilter.c ---- */

/* The kind of a regex atom (the others are kx__pat_kind values). */
#define KX__ATOM_RE 0xff

typedef struct kx__atom {
    uint32_t fid; /* KX__FID_KEYWORD: scanned over the raw text and every field value */
    uint8_t kind; /* kx__pat_kind: EQ, STARTS, ENDS or CONTAINS; or KX__ATOM_RE */
    bool cased;
    const char *s; /* lowercase unless cased; borrowed from the rule's pattern (a regex's:
                    * its pattern, NUL-terminated, from regex.c's cache) */
    uint32_t len;
    unsigned re_flags; /* KX__ATOM_RE: the byte-mode Hyperscan flags */
    uint32_t *rules;   /* rules (by index) this atom is a trigger of */
    uint32_t nrules, cap;
} kx__atom;

typedef struct kx__prefilter {
    kx__atom *atoms;
    uint32_t natoms, cap;
    uint32_t *slots; /* dedup of atoms: id + 1 */
    uint32_t mask;
    hs_scratch_t *scratch; /* grown for every route's databases */
    uint32_t *atom_gen;
    /* per rule (by index): its atoms (trigger or not), whether it has triggers */
    uint32_t **rule_atoms;
    uint32_t *rule_natoms;
    bool *rule_trig;
} kx__prefilter;

typedef struct kx__cset kx__cset;

/* Atomizes every detection rule's values and chooses each rule's triggers. err gets a
 * message on failure. */
int kx__prefilter_build(kx__cset *cs, kx_rule **rules, size_t n, kx_err *err);
/* The literal database of field fid's atoms marked in use (KX__FID_KEYWORD: keyword atoms);
 * *out NULL when there are none. Grows pf->scratch for it. */
int kx__prefilter_compile(kx__prefilter *pf, const bool *use, uint32_t fid, hs_database_t **out,
                          kx_err *err);
/* The regex database of field fid's regex atoms marked in use that trigger some rule, in
 * byte mode (it answers ASCII values; scan.c counts every regex atom of the field as hit on
 * any other value); their ids in *ids (malloc'd, *nids of them). *out NULL when there are
 * none. -EINVAL when Hyperscan refuses them together: *out NULL, the ids still given, so the
 * caller can count them all as hit. */
int kx__prefilter_compile_re(kx__prefilter *pf, const bool *use, uint32_t fid, hs_database_t **out,
                             uint32_t **ids, uint32_t *nids, kx_err *err);
void kx__prefilter_fini(kx__prefilter *pf, size_t nrules);

/* ---- scan.c ---- */

/* Per field: the atom hits of recently scanned values, so a value seen again (the same
 * Image, User, IntegrityLevel...) costs a hash and a compare instead of a scan. Direct
 * mapped; allocated on a field's first scan. */
#define KX__MEMO_SLOTS 128
#define KX__MEMO_VAL 120 /* longer values are scanned every time */
#define KX__MEMO_HITS 14 /* a value with more hits is scanned every time */

typedef struct kx__memo_slot {
    uint64_t hash;
    uint16_t len; /* 0: empty */
    uint16_t nhits;
    uint32_t hits[KX__MEMO_HITS];
    char val[KX__MEMO_VAL];
} kx__memo_slot;

/* A memo pays only where values repeat: a table whose values are unique (CommandLine,
 * ProcessGuid) costs a cache miss per lookup and a store per value, for nothing. Each table
 * counts its lookups and hits per window of KX__MEMO_WINDOW lookups; one that recalled fewer
 * than 1 in KX__MEMO_MIN_RATIO of them is freed and its field scanned without a memo from
 * then on (until the routes are built again, at reload). */
#define KX__MEMO_WINDOW 4096
#define KX__MEMO_MIN_RATIO 4

typedef struct kx__memo {
    kx__memo_slot *slots; /* NULL until first used, or after it was turned off */
    uint32_t looks, hits; /* in the current window */
    bool off;
} kx__memo;

typedef struct kx__route kx__route;

/* Step 3 of kx_ruleset_match: marks the candidates of x's event in cs->cand. */
void kx__scan(kx__cset *cs, kx__route *r, const kx__eval *x);

/* ---- route.c ---- */

#define KX__MAX_ROUTES 64

struct kx__route {
    char *product, *service, *category; /* copies; NULL = not set on the event */
    uint64_t *applies;                  /* bitset over rule indices */
    uint64_t *always;                   /* applies and without triggers */
    uint32_t *scan;                     /* field ids with atoms of applying rules */
    hs_database_t **db;                 /* per scan[k]: those rules' literal atoms of that field */
    hs_database_t **rdb;                /* per scan[k]: their regex atoms of that field, or NULL */
    uint32_t **rx_atoms;                /* per scan[k]: the ids of those regex atoms */
    uint32_t *nrx;                      /* per scan[k]: how many */
    uint32_t nscan;
    hs_database_t *kwdb; /* the applying rules' keyword atoms, or NULL */
    kx__memo *memo;      /* per scan[k], then keywords (scan.c) */
    uint32_t napplies;
};

/* The route of ev's logsource: found, or built on first sight (its databases compiled: the
 * one pause a new logsource costs, logged). NULL when it cannot be built: *full when
 * KX__MAX_ROUTES routes exist already, else out of memory (or a database refused). The
 * caller then matches with the plain interpreter. */
kx__route *kx__route_get(kx__cset *cs, const kx_event *ev, bool *full);
/* Builds the route of one logsource now (kx_ruleset_prepare). */
int kx__route_prepare(kx__cset *cs, const char *product, const char *service, const char *category);
/* Builds in cs the routes old has (the logsources seen so far), so that a reloaded set does
 * not pause on the first event of each input. */
void kx__routes_prepare_like(kx__cset *cs, const kx__cset *old);
void kx__routes_fini(kx__cset *cs);

/* ---- the set ---- */

struct kx__cset {
    kx_arena *arena; /* the ruleset's: value atoms live there */
    kx_rule **rules; /* the ruleset's, borrowed */
    size_t n;
    size_t words; /* 64-bit words of a rule bitset */
    kx__fieldix fx;
    kx__prefilter pf;
    kx__route routes[KX__MAX_ROUTES];
    size_t nroutes;
    size_t last_route;
    uint64_t *cand; /* candidate bitset of the current event */
    bool memo_on;
    uint32_t gen;
    bool prefilter_on;
    kx_ruleset_stats stats;
};

/* The compiled set of a loaded ruleset (ruleset.c), for tests that generate events from it. */
const kx__cset *kx__ruleset_cset(const kx_ruleset *rs);

int kx__cset_create(kx_arena *arena, kx_rule **rules, size_t n, kx__cset **out, kx_err *err);
void kx__cset_destroy(kx__cset *cs);
/* kx_ruleset_match's work (match.c). */
size_t kx__cset_match(kx__cset *cs, const kx_event *ev, kx__rx *rx, kx_match_cb cb, void *ud);

#endif
