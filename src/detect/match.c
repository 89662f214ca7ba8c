/*
 * The compiled rule set and its match: what kx_ruleset_match does for one event.
 *
 *   1. index the event's fields by interned id (fieldix.c): one hash per field;
 *   2. find the route of its logsource (route.c): the rules that apply, the fields to scan;
 *   3. prefilter (scan.c): scan each of those fields' values once with its field's
 *      Hyperscan database (or recall a recent identical value's hits); every atom hit marks
 *      the rules it triggers as candidates;
 *   4. evaluate the candidates, and the route's rules without triggers, exactly (condition.c,
 *      value.c), in rule order, reading exact atoms' hits instead of comparing again.
 *
 * With the prefilter off (kx_ruleset_set_prefilter, for the differential test and the
 * benchmark) none of this runs: match_reference is the plain interpreter (every rule, fields
 * by name, bytes compared), the oracle the compiled path must agree with.
 *
 * No allocation per event in steady state: the generation stamps, candidate bitset and
 * Hyperscan scratch are sized at load; only a new logsource (once) or an event with more
 * fields than any before (once per size) allocates.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "detect_set.h"
#include "klaxon/log.h"
#include "klaxon/metrics.h"

static int intern_detection(kx__cset *cs, const kx__detection *d)
{
    for (size_t s = 0; s < d->nsearches; s++) {
        const kx__search *se = &d->searches[s];
        for (size_t g = 0; g < se->ngroups; g++) {
            const kx__group *grp = &se->groups[g];
            for (size_t c = 0; c < grp->nconds; c++) {
                kx__fcond *f = (kx__fcond *)&grp->conds[c]; /* ours until the set is built */
                f->fid = KX__FID_KEYWORD;
                if (f->field) {
                    int rc = kx__fieldix_intern(&cs->fx, f->field, &f->fid);
                    if (rc)
                        return rc;
                }
                for (size_t v = 0; v < f->nvals; v++) {
                    kx__value *val = (kx__value *)&f->vals[v];
                    if (val->kind == KX__VAL_FIELDREF) {
                        int rc = kx__fieldix_intern(&cs->fx, val->ref, &val->ref_fid);
                        if (rc)
                            return rc;
                    }
                }
            }
        }
    }
    return 0;
}

int kx__cset_create(kx_arena *arena, kx_rule **rules, size_t n, kx__cset **out, kx_err *err)
{
    kx__cset *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        kx_err_set(err, NULL, 0, 0, "out of memory");
        return -ENOMEM;
    }
    cs->arena = arena;
    cs->rules = rules;
    cs->n = n;
    cs->words = (n + 63) / 64 ? (n + 63) / 64 : 1;
    cs->prefilter_on = true;
    cs->memo_on = true;
    cs->gen = 1;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const kx__detection *d = kx__rule_detection(rules[i]);
        if (d)
            rc = intern_detection(cs, d);
    }
    if (!rc)
        rc = kx__fieldix_ready(&cs->fx);
    if (rc)
        kx_err_set(err, NULL, 0, 0, "out of memory");
    if (!rc)
        rc = kx__prefilter_build(cs, rules, n, err);
    if (!rc) {
        cs->cand = calloc(cs->words, sizeof(uint64_t));
        if (!cs->cand) {
            kx_err_set(err, NULL, 0, 0, "out of memory");
            rc = -ENOMEM;
        }
    }
    if (rc) {
        kx__cset_destroy(cs);
        return rc;
    }
    cs->stats.atoms = cs->pf.natoms;
    cs->stats.fields = cs->fx.n;
    for (size_t i = 0; i < n; i++)
        if (kx__rule_detection(rules[i]) && !cs->pf.rule_trig[i])
            cs->stats.always++;
    *out = cs;
    return 0;
}

void kx__cset_destroy(kx__cset *cs)
{
    if (!cs)
        return;
    kx__routes_fini(cs);
    kx__prefilter_fini(&cs->pf, cs->n);
    kx__fieldix_fini(&cs->fx);
    free(cs->cand);
    free(cs);
}

static uint32_t next_gen(kx__cset *cs)
{
    if (++cs->gen == 0) {
        /* Wrapped: forget every stamp so none can look current. */
        kx__fieldix_reset_gen(&cs->fx);
        memset(cs->pf.atom_gen, 0, (cs->pf.natoms ? cs->pf.natoms : 1) * sizeof(uint32_t));
        cs->gen = 1;
    }
    return cs->gen;
}

static bool ls_ok(const char *want, const char *have)
{
    return !want || (have && strcasecmp(want, have) == 0);
}

/* One rule on one event, both modes: 1 when it matches (counted, reported), else 0. */
static size_t eval_rule(kx_rule *rule, const kx__detection *d, const kx__eval *x, kx_match_cb cb,
                        void *ud)
{
    if (!kx__detection_match(d, x))
        return 0;
    rule->matches++;
    if (cb)
        cb(rule, ud);
    return 1;
}

/* The interpreter klaxon had before the compiled set, kept as the reference the compiled
 * path is tested against: every rule's logsource compared, every detection rule evaluated,
 * fields looked up by name, every pattern compared byte by byte. */
static size_t match_reference(kx__cset *cs, const kx_event *ev, kx__rx *rx, kx_match_cb cb,
                              void *ud)
{
    kx__eval x = {.ev = ev, .rx = rx, .by_name = true};
    size_t hits = 0;
    cs->stats.events++;
    for (size_t i = 0; i < cs->n; i++) {
        kx_rule *rule = cs->rules[i];
        const kx__detection *d = kx__rule_detection(rule);
        if (!d || !ls_ok(d->product, ev->product) || !ls_ok(d->service, ev->service) ||
            !ls_ok(d->category, ev->category))
            continue;
        cs->stats.applicable++;
        cs->stats.evaluated++;
        hits += eval_rule(rule, d, &x, cb, ud);
    }
    return hits;
}

size_t kx__cset_match(kx__cset *cs, const kx_event *ev, kx__rx *rx, kx_match_cb cb, void *ud)
{
    static kx_ratelimit rl;
    if (!cs->prefilter_on)
        return match_reference(cs, ev, rx, cb, ud);
    uint32_t gen = next_gen(cs);
    bool full;
    kx__route *r = kx__route_get(cs, ev, &full);
    if (!r || kx__fieldix_index(&cs->fx, ev, gen) != 0) {
        /* No route (too many logsources: counted by route.c) or no memory for one: the plain
         * interpreter needs neither, so the event is still matched, exactly. */
        if (!full) {
            cs->stats.fallbacks++;
            kx_metric_inc(KX_M_DETECT_FALLBACKS);
            kx_log_limited(&rl, KX_LOG_ERROR, "detect",
                           "out of memory for the compiled rule set: event matched by the plain "
                           "interpreter");
        }
        return match_reference(cs, ev, rx, cb, ud);
    }
    kx__eval x = {
        .ev = ev,
        .rx = rx,
        .gen = gen,
        .nfid = cs->fx.n,
        .fgen = cs->fx.fgen,
        .first = cs->fx.first,
        .next = cs->fx.next,
        .atom_gen = cs->pf.atom_gen,
        .atoms_on = true,
    };
    memcpy(cs->cand, r->always, cs->words * sizeof(uint64_t));
    kx__scan(cs, r, &x);
    cs->stats.events++;
    cs->stats.applicable += r->napplies;
    size_t hits = 0, evaluated = 0;
    for (size_t w = 0; w < cs->words; w++) {
        for (uint64_t bits = cs->cand[w] & r->applies[w]; bits; bits &= bits - 1) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(bits);
            evaluated++;
            hits += eval_rule(cs->rules[i], kx__rule_detection(cs->rules[i]), &x, cb, ud);
        }
    }
    cs->stats.evaluated += evaluated;
    kx_metric_add(KX_M_RULES_EVALUATED, evaluated);
    return hits;
}
